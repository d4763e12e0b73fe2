"""Issue 7 robustness: kill -9 then resume, tampered/truncated artifacts, bad inputs, safe loading.

The kill test also proves determinism across fresh directories: the interrupted run (its own output
directory, three processes) must end with exactly the metrics of an uninterrupted in-process run.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from semrec.cli import main
from semrec.errors import SemrecError
from semrec.artifacts import read_json, write_json
from helpers.serving import TIGER_TINY, tiny_dataset, write_tiny_inputs

REPO = Path(__file__).resolve().parents[2]
TIMING_KEYS = re.compile(r"wall_time|seconds|time_s")


def write_recipe(root: Path, *, teacher_epochs: int = 12, model_epochs: int = 4) -> Path:
    """The tiny dataset of helpers.serving, rqkmeans 4x4 codes of attribute vectors (no text encoder),
    a SASRec teacher and one TIGER+TCA row; training long enough (epochs) to be killed in the middle."""
    data = write_tiny_inputs(root)
    recipe = {"name": "tiny", "data": str(data), "seeds": [0], "device": "cpu", "tokenizer": "scheme.yaml",
              "teacher": {"model": "sasrec", "config": {"max_len": 5, "hidden": 16, "layers": 1, "heads": 1},
                          "train": {"epochs": teacher_epochs, "batch_size": 16, "patience": 100}},
              "teachers_in_table": [],
              "train": {"epochs": model_epochs, "batch_size": 16, "lr": 0.01, "warmup_steps": 1,
                        "progress": False},
              "models": [{"name": "TIGER+TCA", "model": "tiger", "config": TIGER_TINY, "examples": "rows",
                          "train": {"loss": "tca", "alpha": 0.5}}],
              "eval": {"num_beams": 10, "batch_size": 64}}
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return root / "recipe.yaml"


def metrics_of(result: dict) -> list[dict]:
    """results.json rows without timings (which differ between runs by nature)."""
    return [{k: v for k, v in row.items() if not TIMING_KEYS.search(k)} for row in result["rows"]]


def _start(recipe: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "semrec", "run", str(recipe), "--out", str(out), "--no-progress"],
                            cwd=recipe.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _kill_when(proc: subprocess.Popen, pattern: str, root: Path, timeout: float = 60.0) -> Path:
    """SIGKILL `proc` as soon as a file matching `root.glob(pattern)` exists; return that file."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        hits = sorted(root.glob(pattern))
        if hits:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return hits[0]
        if proc.poll() is not None:
            raise AssertionError(f"run ended (rc {proc.returncode}) before {pattern} appeared:\n"
                                 f"{proc.stdout.read()}")
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    raise AssertionError(f"{pattern} did not appear within {timeout} s")


def _json_lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by the kill
            pass
    return out


def _visible_stages(out: Path, stage: str) -> list[Path]:
    return sorted(p for p in (out / "stages").glob(f"{stage}-*") if p.is_dir())


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    return write_recipe(tmp_path_factory.mktemp("robust"))


@pytest.fixture(scope="module")
def reference(recipe) -> Path:
    """An uninterrupted run of the recipe (in process), in its own fresh directory."""
    from semrec.pipeline import load_recipe, run_recipe

    out = recipe.parent / "reference"
    run_recipe(load_recipe(recipe), out, log=lambda s: None, progress=False)
    return out


def test_kill9_during_training_then_resume_matches_uninterrupted(recipe, reference):
    out = recipe.parent / "killed"
    # 1. kill during CF teacher training, after its first epoch checkpoint
    ckpt = _kill_when(_start(recipe, out), "killed/checkpoints/teacher-*/checkpoints/last/trainer_state.json",
                      recipe.parent)
    done_epochs = read_json(ckpt)["epoch"] + 1
    teacher_history = [r for r in _json_lines(ckpt.parents[2] / "metrics.jsonl") if r.get("kind") == "epoch"]
    teacher_history = teacher_history[:done_epochs]
    assert len(teacher_history) == done_epochs
    assert not _visible_stages(out, "teacher"), "a killed stage must never appear as finished"
    assert not (out / "results.json").exists()

    # 2. rerun; kill during generative-model training, after its first epoch checkpoint
    state = _kill_when(_start(recipe, out), "killed/checkpoints/model-*/checkpoints/last/trainer_state.json",
                       recipe.parent)
    done_epochs = read_json(state)["epoch"] + 1
    log = state.parent.parent.parent / "metrics.jsonl"
    before = [r for r in _json_lines(log) if r.get("kind") == "epoch" and r["epoch"] < done_epochs]
    [teacher_stage] = _visible_stages(out, "teacher")
    assert not _visible_stages(out, "model")
    # no stale temporaries of the killed teacher attempt remain; the teacher resumed from its checkpoint
    assert not list((out / "stages").glob(".teacher-*"))
    stage_log = [json.loads(line) for line in (teacher_stage / "train_log.jsonl").read_text().splitlines()]
    assert stage_log[:len(teacher_history)] == teacher_history

    # 3. rerun to the end: same metrics as the uninterrupted run, exactly
    proc = _start(recipe, out)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text
    assert "[teacher] reusing" in text and "[model] computing" in text
    got, want = read_json(out / "results.json"), read_json(reference / "results.json")
    assert metrics_of(got) == metrics_of(want)
    assert [r for r in got["rows"] if r["name"] == "TIGER+TCA"][0]["epochs_run"] == 4
    # the model resumed: the epochs finished before the kill keep their original log records
    history = read_json(next((out / "stages").glob("model-*")) / "train.json")["history"]
    assert before and history[:len(before)] == before
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())
    assert not [p for p in (out / "stages").iterdir() if p.name.startswith(".")]


def test_train_cf_twice_gives_the_same_teacher(recipe, tmp_path, capsys):
    """Initial weights are seeded too (torch's default generator state differs between calls/processes)."""
    torch.manual_seed(12345)  # whatever state the process is in must not matter
    for out in ("a", "b"):
        argv = ["train-cf", "--data", str(recipe.parent / "data"), "--model", "sasrec", "--out", str(tmp_path / out),
                "--device", "cpu", "--no-progress", "--set", "train.epochs=1"]
        for kv in ("max_len=5", "hidden=16", "layers=1", "heads=1"):
            argv += ["--set", f"model.{kv}"]
        assert main(argv) == 0, capsys.readouterr().err
        torch.rand(7)
    from semrec.artifacts import load_safetensors

    a, b = (load_safetensors(tmp_path / out / "model.safetensors") for out in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # (header key order may vary)


# ---- tampered, truncated and missing artifacts -------------------------------------------------------------
def _stage(run: Path, name: str) -> Path:
    return next((run / "stages").glob(f"{name}-*"))


def _flip(f: Path) -> None:
    data = f.read_bytes()
    mid = len(data) // 2
    f.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 4]) + data[mid + 4:])


@pytest.mark.parametrize("stage", ["teacher", "ids", "model", "eval-test"])
def test_edited_stage_is_refused_never_reused(recipe, reference, tmp_path, capsys, stage):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    target = max((p for p in _stage(run, stage).rglob("*") if p.is_file() and p.name != "stage.json"),
                 key=lambda p: p.stat().st_size)
    _flip(target)
    before = (run / "results.json").read_bytes()
    assert main(["run", str(recipe), "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stage files do not match their manifest" in err
    assert _stage(run, stage).name in err and str(target.relative_to(_stage(run, stage))) in err
    assert (run / "results.json").read_bytes() == before  # nothing written lost


def test_stage_without_its_record_is_recomputed_and_extra_files_are_refused(recipe, reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    ev = _stage(run, "eval-test")
    (ev / "stage.json").unlink()  # e.g. copied by hand without its record: not trusted, recomputed
    (ev / "metrics.json").write_text("{}")
    assert main(["run", str(recipe), "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    assert metrics_of(read_json(run / "results.json")) == metrics_of(read_json(reference / "results.json"))
    (_stage(run, "ids") / "notes.txt").write_text("added by hand")
    assert main(["run", str(recipe), "--out", str(run), "--no-progress"]) == 2
    assert "notes.txt" in capsys.readouterr().err


def test_killed_stage_temporaries_are_removed_only_when_their_process_is_gone(tmp_path):
    from semrec.pipeline.cache import OWNER_FILE, StageCache, content_key

    cache = StageCache(tmp_path)
    key = content_key({"stage": "emb", "config": {}, "inputs": {}})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    owners = {"dead": f"{os.uname().nodename} {int(dead.stdout)}", "own": f"{os.uname().nodename} {os.getpid()}",
              "other-host": "elsewhere 1", "none": None}
    for name, owner in owners.items():
        d = tmp_path / f".emb-{key}.tmp-{name}"
        d.mkdir()
        if owner:
            (d / OWNER_FILE).write_text(owner)
        os.utime(d, (time.time() - 3600,) * 2)  # an ownerless temporary is stale only once it is not recent
    out = cache.run("emb", {}, {}, lambda d: (d / "x").write_text("1"), log=lambda s: None)
    left = sorted(p.name.rsplit("-", 1)[1] for p in tmp_path.glob(".emb-*"))
    assert left == ["host"]  # .tmp-other-host: its process cannot be checked from here
    assert sorted(p.name for p in out.iterdir()) == ["stage.json", "x"]  # the owner file is not published


def test_a_stage_computed_by_another_live_run_is_awaited_and_reused(tmp_path):
    """Two runs sharing an output directory: the second waits for the first's stage instead of redoing it,
    and computes the stage itself if the other run dies without finishing it."""
    from semrec.pipeline.cache import STAGE_FILE, StageCache, content_key

    other = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from semrec.pipeline.cache import StageCache\n"
        "def fn(d):\n"
        "    Path(sys.argv[2]).touch()\n"
        "    for _ in range(1200):\n"  # finish once the test's run is waiting (load-proof), or after 60 s
        "        if Path(sys.argv[3]).exists():\n"
        "            break\n"
        "        time.sleep(0.05)\n"
        "    (d / 'x').write_text('from the other run')\n"
        "StageCache(sys.argv[1]).run('emb', {}, {}, fn, log=lambda s: None)\n"),
        str(tmp_path), str(tmp_path / "started"), str(tmp_path / "go")])
    try:
        for _ in range(600):
            if (tmp_path / "started").exists() or other.poll() is not None:
                break
            time.sleep(0.05)
        assert (tmp_path / "started").exists(), "the other run did not start"

        def must_not_run(d):
            raise AssertionError("recomputed a stage another live run was computing")
        logs: list[str] = []

        def log(msg: str) -> None:
            logs.append(msg)
            if "waiting for another run" in msg:
                (tmp_path / "go").touch()
        out = StageCache(tmp_path, poll_s=0.05).run("emb", {}, {}, must_not_run, log=log)
        assert other.wait(timeout=60) == 0
    finally:
        other.kill()
    assert (out / "x").read_text() == "from the other run"
    assert any("waiting for another run" in m for m in logs) and "computed by another run" in logs[-1]

    # a live owner that dies without finishing: its temporary is removed and the stage computed here
    key = content_key({"stage": "ids", "config": {}, "inputs": {}})
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    tmp = tmp_path / f".ids-{key}.tmp-dying"
    tmp.mkdir()
    (tmp / ".owner").write_text(f"{socket.gethostname()} {owner.pid}")
    threading.Timer(0.3, lambda: (owner.kill(), owner.wait())).start()  # reaped: a zombie would count as alive
    out = StageCache(tmp_path, poll_s=0.05).run("ids", {}, {}, lambda d: (d / "y").write_text("here"), log=logs.append)
    assert (out / "y").read_text() == "here" and (out / STAGE_FILE).is_file() and not tmp.exists()


def test_a_recent_temporary_without_owner_is_awaited_not_deleted(tmp_path):
    """The owner file is written just after a temporary is made and removed just before it is renamed: in
    those windows another run must wait for it, not delete it (the killed-run case is one an hour old)."""
    from semrec.pipeline.cache import StageCache, content_key

    key = content_key({"stage": "emb", "config": {}, "inputs": {}})
    tmp = tmp_path / f".emb-{key}.tmp-publishing"
    tmp.mkdir()
    (tmp / "x").write_text("the other run's")
    seen: list[str] = []
    threading.Timer(0.5, lambda: (seen.extend(p.name for p in tmp.iterdir()), shutil.rmtree(tmp))).start()
    logs: list[str] = []
    StageCache(tmp_path, poll_s=0.05).run("emb", {}, {}, lambda d: (d / "y").write_text("here"), log=logs.append)
    assert "waiting for another run" in logs[0] and "computing" in logs[1]
    assert seen == ["x"]  # still there half a second later: not taken for a killed run's


def _truncate(f: Path, how: str) -> None:
    data = f.read_bytes()
    if how == "missing":
        f.unlink()
    else:
        f.write_bytes(data[: len(data) // 2] if how == "half" else b"")


@pytest.fixture(scope="module")
def artifacts(recipe, reference, tmp_path_factory):
    """Loaders of every artifact a user may hand us, each with the directory it reads."""
    from semrec.cf import TEACHERS, CFTeacher
    from semrec.training.teacher import TeacherTrainConfig
    from semrec.training.teacher import train_teacher
    from semrec.config import load_config
    from semrec.data.dataset import SeqDataset
    from semrec.itemtok.artifact import ItemTokenization
    from semrec.data.examples import training_examples
    from semrec.models import build_model, load_model
    from semrec.serving import Recommender
    from semrec.training import TrainConfig, Trainer

    root = tmp_path_factory.mktemp("artifacts")
    ds = SeqDataset.from_pretrained(recipe.parent / "data")
    tok = ItemTokenization.from_pretrained(_stage(reference, "ids") / "tokenization")
    tcfg = TrainConfig(epochs=1, batch_size=64, progress=False, device="cpu")

    def new_trainer(out):
        return Trainer(build_model("tiger", tok, TIGER_TINY, seed=0), tcfg, training_examples(ds), out_dir=out)

    new_trainer(root / "trainer").fit()
    klass = TEACHERS["sasrec"]
    mcfg = load_config(klass.config_class, {"max_len": 5, "hidden": 16, "layers": 1, "heads": 1})
    ccfg = TeacherTrainConfig(epochs=1)
    train_teacher(klass(40, mcfg), ds, ccfg, device="cpu", checkpoint_dir=root / "cf", progress=False)
    return {
        "dataset": (recipe.parent / "data", SeqDataset.from_pretrained),
        "tokenization": (_stage(reference, "ids") / "tokenization", ItemTokenization.from_pretrained),
        "teacher": (_stage(reference, "teacher") / "teacher", CFTeacher.from_pretrained),
        "model": (_stage(reference, "model") / "model", load_model),
        "trainer checkpoint": (root / "trainer", lambda d: new_trainer(d).fit()),
        "CF checkpoint": (root / "cf", lambda d: train_teacher(klass(40, mcfg), ds, ccfg, device="cpu",
                                                               checkpoint_dir=d, progress=False)),
        "run": (reference, lambda d: Recommender.from_run(d, device="cpu")),
    }


# files a loader does not read, or whose absence means "nothing to resume" (a fresh start)
NOT_READ = {"trainer checkpoint": ("checkpoints/last/model/tokenization/", "metrics.", "best/"),
            "CF checkpoint": ("metrics.", "best/config.json"),
            "run": ("results.md", "checkpoints/", "stages/teacher-", "stages/ids-", "stages/eval-")}
MISSING_MEANS_FRESH = {"trainer checkpoint": "checkpoints/last/trainer_state.json",
                       "CF checkpoint": "checkpoints/last/trainer_state.json"}


@pytest.mark.parametrize("kind", ["dataset", "tokenization", "teacher", "model", "trainer checkpoint",
                                  "CF checkpoint", "run"])
def test_truncated_or_missing_files_give_one_line_errors_naming_them(artifacts, tmp_path, kind):
    src, load = artifacts[kind]
    files = [str(p.relative_to(src)) for p in sorted(src.rglob("*")) if p.is_file()]
    files = [f for f in files if not f.startswith(NOT_READ.get(kind, ())) and "train_log" not in f]
    assert len(files) >= 2
    for rel in files:
        for how in ("half", "empty", "missing"):
            if how == "missing" and rel == MISSING_MEANS_FRESH.get(kind):
                continue
            d = tmp_path / f"{len(list(tmp_path.iterdir()))}"
            shutil.copytree(src, d)
            _truncate(d / rel, how)
            if (d / rel).is_file() and (d / rel).stat().st_size == 0 and how == "half":
                continue
            with pytest.raises(SemrecError) as e:
                load(d)
            msg = str(e.value)
            assert "\n" not in msg, (kind, rel, how, msg)
            assert Path(rel).name in msg, (kind, rel, how, msg)


def test_teacher_weights_of_another_shape_are_refused(artifacts, tmp_path):
    from semrec.cf import CFTeacher

    d = tmp_path / "t"
    shutil.copytree(artifacts["teacher"][0], d)
    cfg = read_json(d / "config.json")
    cfg["model"]["hidden"] = 32
    write_json(d / "config.json", cfg)
    with pytest.raises(SemrecError, match="model.safetensors: weights do not match the config"):
        CFTeacher.from_pretrained(d)


# ---- NaN / inf teacher logits --------------------------------------------------------------------------------
def _nan_teacher():
    from semrec.cf import TEACHERS
    from semrec.config import load_config

    klass = TEACHERS["sasrec"]
    t = klass(40, load_config(klass.config_class, {"max_len": 5, "hidden": 16, "layers": 1, "heads": 1}))
    with torch.no_grad():
        t.item_emb.weight[5, 2] = float("nan")
    return t


def test_nan_or_inf_teacher_logits_are_refused_naming_the_teacher(artifacts):
    from semrec.cf.base import check_logits
    from semrec.evaluation import evaluate
    from semrec.itemtok.artifact import ItemTokenization
    from semrec.data.examples import training_examples
    from semrec.models import build_model
    from semrec.training import TrainConfig, Trainer
    from semrec.training.trainer import precompute_teacher_logits

    ds = tiny_dataset()
    tok = ItemTokenization.from_pretrained(artifacts["tokenization"][0])
    model = build_model("tiger", tok, TIGER_TINY, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=64, loss="tca", alpha=0.5, progress=False, device="cpu")
    teacher = _nan_teacher()
    with pytest.raises(SemrecError, match="CF teacher 'sasrec': item logits contain NaN or inf"):
        Trainer(model, cfg, training_examples(ds), teacher=teacher).fit()
    with pytest.raises(SemrecError, match="CF teacher 'sasrec'"):
        precompute_teacher_logits(teacher, ds.train, history=5)
    with pytest.raises(SemrecError, match="CF teacher 'sasrec'"):
        evaluate(model, ds.test, teacher=teacher)
    table = np.zeros((len(ds.train), 40), dtype=np.float32)
    table[7, 3] = np.inf
    with pytest.raises(SemrecError, match="precomputed teacher logits: item logits contain NaN or inf"):
        Trainer(model, cfg, ds.train, teacher_logits=table).fit()
    # -inf alone marks an excluded item; a row without any finite score is refused
    x = torch.zeros(3, 5)
    x[0, 1] = -math.inf
    assert check_logits(x, "t") is x
    x[2] = -math.inf
    with pytest.raises(SemrecError, match=r"t: item logits contain NaN or inf \(1 of 3 rows\)"):
        check_logits(x, "t")


def test_cf_training_that_diverges_stops_with_one_line(tmp_path):
    from semrec.training.teacher import TeacherTrainConfig
    from semrec.training.teacher import train_teacher

    t = _nan_teacher()
    with pytest.raises(SemrecError, match="sasrec: training diverged: loss is nan in epoch 1"):
        train_teacher(t, tiny_dataset(), TeacherTrainConfig(epochs=1), device="cpu", progress=False)


# ---- out of memory, recipes, logs ----------------------------------------------------------------------------
@pytest.mark.parametrize("exc, where", [
    (lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
                                    "of 79.1 GiB of which 1.5 GiB is free.\nSee documentation"),
     "GPU: tried to allocate 2.00 GiB"),
    (lambda: MemoryError(), "CPU: MemoryError"),
    (lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                          "memory: you tried to allocate 3221225472 bytes. Error code 12"),
     "CPU: tried to allocate 3.0 GiB"),
])
def test_out_of_memory_is_one_line_exit_2(monkeypatch, capsys, exc, where):
    import semrec.cli.data

    def handler(args):
        raise exc()

    monkeypatch.setattr(semrec.cli.data, "_stats", handler)
    assert main(["data", "stats", "office-t"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"semrec: error: out of memory ({where}): reduce batch_size") and err.count("\n") == 1
    with pytest.raises(type(exc())):  # --debug shows the traceback
        main(["--debug", "data", "stats", "office-t"])


def test_unexpected_error_is_still_one_line(monkeypatch, capsys):
    import semrec.cli.data

    def handler(args):
        raise ValueError("first line\nsecond line")

    monkeypatch.setattr(semrec.cli.data, "_stats", handler)
    assert main(["data", "stats", "office-t"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error ValueError: first line second line" in err


def test_numbers_written_with_an_exponent_are_numbers(recipe):
    from semrec.pipeline import load_recipe
    from semrec.pipeline.recipe import train_config

    r = load_recipe(recipe, ["train.lr=1e-3"])  # YAML 1.1 reads 1e-3 as a string
    assert train_config(r, r.models[0], seed=0).lr == 0.001
    with pytest.raises(SemrecError, match="train.lr: expected a number, got 'fast'"):
        load_recipe(recipe, ["train.lr=fast"])


def test_metrics_log_survives_a_line_cut_short_by_a_kill(tmp_path):
    from semrec.training.metrics_log import MetricsLog

    recs = [{"kind": "epoch", "epoch": 0, "loss": 1.0}, {"kind": "train", "epoch": 1, "loss": 0.5}]
    text = "".join(json.dumps(r) + "\n" for r in recs) + '{"kind": "ep'
    (tmp_path / "metrics.jsonl").write_text(text)
    assert MetricsLog(tmp_path, keep_epochs=2, write=False).records == recs  # every complete line, file untouched
    assert (tmp_path / "metrics.jsonl").read_text() == text
    log = MetricsLog(tmp_path, keep_epochs=1)  # resuming after epoch 0: epoch 1's records go
    assert log.epochs == recs[:1]
    assert (tmp_path / "metrics.jsonl").read_text() == json.dumps(recs[0]) + "\n"


# ---- safe loading: no pickles anywhere in the package --------------------------------------------------------
BANNED_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
BANNED_KEYWORDS = {"allow_pickle": True, "weights_only": False, "trust_remote_code": True}


def unpickling_sites(source: str, name: str) -> list[str]:
    """Code (not docstrings) that could unpickle: pickle-family imports, torch.load, pandas read_pickle,
    allow_pickle=True, weights_only=False, trust_remote_code=True."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source, name)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            found += [f"{where} import {a.name}" for a in node.names if a.name.split(".")[0] in BANNED_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in BANNED_MODULES:
            found.append(f"{where} from {node.module} import")
        elif isinstance(node, ast.Attribute) and node.attr in ("read_pickle", "to_pickle"):
            found.append(f"{where} .{node.attr}")
        elif (isinstance(node, ast.Attribute) and node.attr == "load" and isinstance(node.value, ast.Name)
              and node.value.id == "torch"):
            found.append(f"{where} torch.load")
        elif (isinstance(node, ast.keyword) and node.arg in BANNED_KEYWORDS and isinstance(node.value, ast.Constant)
              and node.value.value is BANNED_KEYWORDS[node.arg]):
            found.append(f"{where} {node.arg}={node.value.value}")
    return found


def test_package_never_unpickles():
    found = [hit for f in sorted((REPO / "semrec").rglob("*.py"))
             for hit in unpickling_sites(f.read_text(), str(f.relative_to(REPO)))]
    assert not found, found
    probe = ('"""torch.load(f) in a docstring is fine"""\nimport pickle\nfrom joblib import load\n'
             'x = np.load(f, allow_pickle=True)\ny = torch.load(f, weights_only=False)\nz = pd.read_pickle(f)\n')
    assert [h.split(" ", 1)[1] for h in unpickling_sites(probe, "probe")] == [
        "import pickle", "from joblib import", "allow_pickle=True", "torch.load", "weights_only=False", ".read_pickle"]


# ---- the bad-input table -------------------------------------------------------------------------------------
def _bad_inputs_script():
    spec = importlib.util.spec_from_file_location("bad_inputs", REPO / "scripts" / "bad_inputs.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_every_bad_input_case_exits_2_with_one_line(tmp_path):
    script = _bad_inputs_script()
    ws = script.Workspace(tmp_path)
    failures = []
    for case in script.CASES:
        rc, err = script.run_case(case, ws)
        if not (rc == 2 and err.startswith("semrec: error: ") and err.count("\n") == 1
                and "Traceback" not in err and case.expect in err):
            failures.append((case.command, case.bad, rc, err))
    assert not failures, failures
    # docs/bad_input.md was generated from these very cases
    table = (REPO / "docs" / "bad_input.md").read_text()
    rows = [line.split(" | ")[:2] for line in table.splitlines() if line.startswith("| `")]
    assert [(c.strip("|` "), b) for c, b in rows] == [(c.command, c.bad) for c in script.CASES]
