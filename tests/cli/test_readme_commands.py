"""Every command in README.md's bash blocks, run in order through the real CLI, so the README stays runnable.

The commands run as written, in one working directory, except for what makes them fast:
- the input files they name (log.csv, the Amazon dumps, RecBole files, row files, index.json) are
  written first from small fixtures in the same formats;
- commands that train or fit on a built-in dataset (`train-cf`, `eval-cf`, `tokenize`, `tokenizers
  compare`, `run`) get `office-mini`: the whole Office catalogue (so the README's titles and ids resolve)
  with 200/100/100 rows; `embed` gets a 40-item catalogue (text embedding of every Office title takes
  minutes on a CPU);
- tokenizer schemes keep their type but use attribute vectors (of the titles), 8 codes per level and
  2 epochs (k-means: 5 iterations), and
  recipes get `--set` overrides: that data and scheme, one seed, one epoch (2 where the README says
  so), tiny TIGERs (the alpha sweep kept).
Skipped, with the reason in SKIPPED: the setup script (creates a virtualenv and installs from the
package index), the test suite itself, torchrun (4 processes of a GPU-sized recipe;
tests/test_distributed.py runs DDP on CPU), `semrec llm prepare` (dequantises a 135M model: about a
minute; tests/test_llm.py covers it) and the LLM benchmark script (trains an LLM for minutes).
"""

import contextlib
import importlib.util
import io
import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from semrec.cli import main

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SKIPPED = {
    "bash scripts/setup.sh": "creates a virtualenv and installs the package from the index (network, minutes)",
    "python -m pytest": "the test suite this test belongs to",
    "torchrun": "4 processes training a GPU-sized recipe; tests/test_distributed.py runs DDP on CPU",
    "semrec llm prepare": "dequantises the 135M-parameter GGUF (about a minute); tests/test_llm.py covers it",
    "python benchmarks/llm_smoke.py": "trains SmolLM2 + LoRA for minutes: a benchmark, not a test",
}
BUILTIN = {"toys-t", "sports-t", "office-t", "toys-p", "sports-p", "beauty-p"}
TRAINS = ("train-cf", "eval-cf", "tokenize", "tokenizers", "run")
TINY_TIGER = dict(num_layers=1, num_decoder_layers=1, d_model=32, num_heads=2, d_kv=16, d_ff=64, max_history=10)


def readme_commands() -> list[list[str]]:
    """Every command of the README's bash blocks: continuation lines joined, comments dropped, `&&` split."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            tokens = shlex.split(line, comments=True)
            cmd: list[str] = []
            for t in tokens + ["&&"]:
                if t == "&&":
                    if cmd:
                        out.append(cmd)
                    cmd = []
                else:
                    cmd.append(t.removeprefix(".venv/bin/"))
    return out


def skip_reason(cmd: list[str]) -> str | None:
    text = " ".join(cmd)
    return next((why for k, why in SKIPPED.items() if text.startswith(k)), None)


def _bad_inputs_script():
    spec = importlib.util.spec_from_file_location("bad_inputs", REPO / "scripts" / "bad_inputs.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def write_inputs(root: Path) -> dict[str, Path]:
    """The files the README's commands read, in their real formats, and the small datasets."""
    from semrec.data import load_builtin
    from semrec.data.dataset import SPLITS

    from helpers.external_formats import ROWS, write_benchmark, write_dumps, write_minionerec

    for d in ("recipes", "tokenizers", "scripts", "benchmarks"):
        (root / d).symlink_to(REPO / d)
    # semrec data import: a user/item/ts log and a JSONL catalogue
    (root / "log.csv").write_text("user,item,ts\n" + "".join(f"u{u},i{(u + k) % 6},{1000 * k + u}\n"
                                                              for u in range(8) for k in range(5)))
    (root / "items.jsonl").write_text("".join(json.dumps({"item_id": f"i{k}", "title": f"Item {k}"}) + "\n"
                                              for k in range(6)))
    shutil.copy(FIXTURES / "amazon2018" / "Toys_5.json.gz", root / "Toys_and_Games.json.gz")
    shutil.copy(FIXTURES / "amazon2018" / "meta_Toys.json.gz", root / "meta_Toys_and_Games.json.gz")
    write_dumps(root)
    write_benchmark(root)
    (root / "dataset" / "ml-100k").mkdir(parents=True)
    for ext in ("inter", "item", "user"):
        shutil.copy(FIXTURES / "recbole" / "ml-mini" / f"ml-mini.{ext}",
                    root / "dataset" / "ml-100k" / f"ml-100k.{ext}")
    write_minionerec(root, ROWS, stem="Industrial")
    (root / "Industrial.index.json").write_text(json.dumps(
        {str(i): [f"<a_{i % 3}>", f"<b_{i % 4}>", f"<c_{i}>"] for i in range(10)}))
    # small datasets and schemes for the commands that train
    office = load_builtin("office-t")
    office.name = "office-mini"
    office.splits = {s: office.splits[s].subset(np.arange(n)) for s, n in zip(SPLITS, (200, 100, 100))}
    mini = office.save_pretrained(root / "office-mini")
    tiny = _bad_inputs_script().tiny_dataset().save_pretrained(root / "tiny40")
    (root / "tiny_tokenizers").mkdir()
    for scheme in (REPO / "tokenizers").glob("*.yaml"):
        cfg = yaml.safe_load(scheme.read_text())
        if cfg["scheme"] == "title":
            continue
        cfg["embedding"] = {"content": "attributes", "attribute_fields": ["title"], "attribute_dim": 8,
                            "attribute_min_count": 1}  # Office items have titles only
        cfg["quantizer"]["codebook_sizes"] = [8, 8, 8]
        cfg["quantizer"].update({"epochs": 2} if "epochs" in cfg["quantizer"] else {"niter": 5})
        (root / "tiny_tokenizers" / scheme.name).write_text(yaml.safe_dump(cfg))
    return {"mini": mini, "tiny": tiny}


def adapt(argv: list[str], root: Path, data: dict[str, Path]) -> list[str]:
    """The README's argv with the speed substitutions of the module docstring."""
    argv = list(argv)
    if argv[0] not in TRAINS and argv[0] != "embed":
        return argv
    for k, a in enumerate(argv):
        if a in BUILTIN and k and argv[k - 1] == "--data":
            argv[k] = str(data["tiny" if argv[0] == "embed" else "mini"])
        elif a.startswith("tokenizers/") and a.endswith(".yaml"):
            argv[k] = str(root / ("tiny_" + a))
    if argv[0] == "train-cf":
        argv += ["--set", "train.epochs=1", "--no-progress"]
    if argv[0] == "run":
        recipe = yaml.safe_load((root / argv[1]).read_text())
        scheme = Path(recipe["tokenizer"]).name
        models = [{"name": m["name"], "model": m["model"], "config": dict(TINY_TIGER),
                   "train": {**m.get("train", {}), **({"alpha": 0.1} if m.get("train", {}).get("loss") == "tca"
                                                      and "sweep" not in m else {})},
                   **({"sweep": {"alpha": [0.1, 0.5]}} if "sweep" in m else {})} for m in recipe["models"]]
        sets = {"data": str(data["mini"]), "tokenizer": str(root / "tiny_tokenizers" / scheme), "seeds": "[0]",
                "teacher.train.epochs": "1", "train.epochs": "1", "train.batch_size": "64",
                "models": yaml.safe_dump(models, default_flow_style=True, width=10_000).strip()}
        given = [argv[k + 1].split("=")[0] for k, a in enumerate(argv) if a == "--set"]
        argv[2:2] = [x for key, v in sets.items() if key not in given for x in ("--set", f"{key}={v}")]
        argv.append("--no-progress")
    return argv


@pytest.mark.filterwarnings("ignore")
def test_every_readme_command_runs(tmp_path, monkeypatch):
    commands = readme_commands()
    assert len(commands) >= 25, "the README's command tour was not found"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEMREC_CACHE_DIR", str(tmp_path / "cache"))
    data = write_inputs(tmp_path)
    ran, skipped = [], []
    for cmd in commands:
        why = skip_reason(cmd)
        if why is not None:
            skipped.append(" ".join(cmd))
            continue
        assert cmd[0] == "semrec", f"README command without a runner in this test: {' '.join(cmd)}"
        argv = adapt(cmd[1:], tmp_path, data)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
        assert rc == 0, f"README command failed: {' '.join(cmd)}\n(ran: semrec {shlex.join(argv)})\n{err.getvalue()}"
        ran.append((cmd, out.getvalue()))
    assert len(skipped) == len(SKIPPED), f"SKIPPED entries no longer in the README: {skipped}"
    # what the README promises of a few of them
    printed: dict[str, str] = {}
    for c, o in ran:  # the first command of each kind
        printed.setdefault(" ".join(c[:3]), o)
    rec = printed["semrec recommend --run"]
    assert rec.startswith("history: Post-it Super Sticky Notes, 3 in x 3 in, Assorted | 17  (model TIGER+TCA)")
    assert len(re.findall(r"^\s+\d\. \[\d+\]", rec, re.M)) == 5
    corrected = next(o for c, o in ran if "--popularity-correction" in c)
    assert corrected.startswith("history: 17  (model TIGER)") and corrected.count("  5. [") == 1
    assert (tmp_path / "exported" / "ml-100k" / "ml-100k.train.inter").is_file()
    assert (tmp_path / "toys_rqvae.index.json").is_file() and (tmp_path / "reports" / "report.md").is_file()
