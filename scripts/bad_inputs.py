"""Every bad input we try, run through the real `semrec` CLI, and the one-line message it gets.

    python scripts/bad_inputs.py                 # runs every case, writes docs/bad_input.md
    python scripts/bad_inputs.py --out FILE.md

Each case builds its broken input in a temporary directory, from tiny fixtures made here (a 40-item
office-supplies catalogue, a dataset directory, a finished `semrec run` of a tiny recipe, CF teachers)
or from CSV text, then calls `semrec.cli.main(argv)` in this process and records the exit code and what
was printed on stderr. Paths in the messages are shown relative to that directory (`<tmp>/...`).
`tests/pipeline/test_failure_handling.py` imports CASES and Workspace and checks that every case exits with code 2 and
a one-line message containing its `expect` text. The cases marked "simulated" make a function inside
the real command raise what a GPU raises (no GPU is needed to produce the table).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]

LOG = "user_id,item_id,timestamp\n" + "".join(f"u{u},i{(u + k) % 4},{100 * k + u}\n"
                                              for u in range(4) for k in range(4))
ITEMS = "item_id,title\n" + "".join(f"i{k},Item {k}\n" for k in range(4))
WORDS = ["red", "blue", "green", "stapler", "pen", "paper", "notebook", "marker", "folder", "clip", "tape", "ink"]
TIGER_TINY = dict(num_layers=1, num_decoder_layers=1, d_model=32, num_heads=2, d_kv=16, d_ff=64, max_history=5)
SASREC_TINY = {"max_len": 5, "hidden": 16, "layers": 1, "heads": 1}


def tiny_dataset(n_items: int = 40, n_users: int = 60):
    """Users walk the catalogue in steps of 1 or 2; leave-one-out splits; 'Blue Pen' and 'Blue Pen Refill'
    make the title 'pen' ambiguous."""
    from semrec.data.dataset import Examples, SeqDataset

    rng = np.random.default_rng(0)
    titles = ["Blue Pen", "Blue Pen Refill", "Red Stapler Deluxe"]
    while len(titles) < n_items:
        titles.append(" ".join(w.capitalize() for w in rng.choice(WORDS, 3, replace=False)) + f" {len(titles)}")
    seqs = []
    for _ in range(n_users):
        start, length = int(rng.integers(0, n_items)), int(rng.integers(5, 9))
        seqs.append([(start + int(s)) % n_items for s in np.cumsum(rng.integers(1, 3, length))])
    users = np.arange(n_users)
    splits = {name: Examples.from_lists(users, [s[:cut] for s in seqs], [s[cut] for s in seqs])
              for name, cut in (("train", -3), ("valid", -2), ("test", -1))}
    items = pd.DataFrame({"raw_id": [f"A{i:04d}" for i in range(n_items)], "title": titles,
                          "brand": [t.split()[0] for t in titles], "category": [t.split()[1] for t in titles]})
    return SeqDataset("tiny", items, splits, users=pd.DataFrame({"raw_id": [f"u{u}" for u in users]}),
                      protocol="T")


class Workspace:
    """A temporary directory and the fixtures cases need, each built once on first use."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._n = 0

    def path(self, name: str) -> Path:
        """A fresh path under the workspace (numbered so cases never collide)."""
        self._n += 1
        return self.root / f"c{self._n:02d}" / name

    def write(self, name: str, content: str | bytes) -> str:
        p = self.path(name)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
        return str(p)

    def import_argv(self, log: str | bytes = LOG, items: str | bytes = ITEMS, *flags: str) -> list[str]:
        return ["data", "import", "--interactions", self.write("log.csv", log), "--items",
                self.write("items.csv", items), "--out", str(self.path("out")), *flags]

    @cached_property
    def dataset(self) -> Path:
        return tiny_dataset().save_pretrained(self.root / "data")

    def broken_copy(self, src: Path, rel: str, how: str) -> Path:
        """A copy of directory `src` whose file `rel` is truncated to half ("half"), emptied ("empty"),
        deleted ("missing"), or has bytes flipped in its middle, same size ("flip")."""
        dst = self.path(src.name)
        shutil.copytree(src, dst)
        f = dst / rel
        data = f.read_bytes()
        if how == "missing":
            f.unlink()
        elif how == "half":
            f.write_bytes(data[: len(data) // 2])
        elif how == "empty":
            f.write_bytes(b"")
        elif how == "flip":
            mid = len(data) // 2
            f.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 8]) + data[mid + 8:])
        else:
            raise ValueError(how)
        return dst

    @cached_property
    def recipe(self) -> Path:
        scheme = {"scheme": "rqkmeans", "embedding": {"content": "attributes", "attribute_dim": 8,
                                                       "attribute_min_count": 1},
                  "quantizer": {"codebook_sizes": [4, 4], "niter": 5, "seed": 0},
                  "collisions": {"method": "extra_code"}}
        (self.root / "scheme.yaml").write_text(yaml.safe_dump(scheme))
        recipe = {"name": "tiny", "data": str(self.dataset), "seeds": [0], "device": "cpu",
                  "tokenizer": "scheme.yaml", "teachers_in_table": [],
                  "teacher": {"model": "sasrec", "config": SASREC_TINY, "train": {"epochs": 1}},
                  "train": {"epochs": 1, "batch_size": 64, "lr": 0.01, "warmup_steps": 1, "progress": False},
                  "models": [{"name": "TIGER", "model": "tiger", "config": TIGER_TINY}],
                  "eval": {"num_beams": 10, "batch_size": 64}}
        (self.root / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        return self.root / "recipe.yaml"

    def recipe_with(self, **changes) -> str:
        recipe = yaml.safe_load(self.recipe.read_text())
        recipe.update(changes)
        p = self.recipe.parent / f"recipe-{self._n + 1}.yaml"
        self._n += 1
        p.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return str(p)

    @cached_property
    def run(self) -> Path:
        """A finished `semrec run` of the tiny recipe."""
        from semrec.cli import main

        out = self.root / "run"
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            if main(["run", str(self.recipe), "--out", str(out), "--no-progress"]) != 0:
                raise RuntimeError(f"building the tiny run failed: {err.getvalue()}")
        return out

    def run_stage(self, run: Path, stage: str) -> Path:
        return next((run / "stages").glob(f"{stage}-*"))

    def mismatched_run(self) -> Path:
        """A copy of the run whose model directory holds another item tokenization (codes permuted)."""
        dst = self.path("run")
        shutil.copytree(self.run, dst)
        f = self.run_stage(dst, "model") / "model" / "tokenization" / "codes.npy"
        codes = np.load(f, allow_pickle=False)
        np.save(f, codes[::-1].copy(), allow_pickle=False)
        return dst

    def teacher(self, num_items: int = 40, *, nan: bool = False) -> Path:
        """An (untrained) SASRec teacher directory; with `nan`, one item embedding is NaN."""
        import torch

        from semrec.cf import TEACHERS
        from semrec.config import load_config

        klass = TEACHERS["sasrec"]
        torch.manual_seed(0)
        model = klass(num_items, load_config(klass.config_class, SASREC_TINY))
        if nan:
            with torch.no_grad():
                model.item_emb.weight[3, 0] = float("nan")
        return model.save_pretrained(self.path("teacher"))


@contextlib.contextmanager
def gpu_out_of_memory() -> Iterator[None]:
    """Make CF teacher training raise what CUDA raises when an allocation fails."""
    import torch

    import semrec.training.teacher

    def fail(*args, **kwargs):
        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 7.81 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
            "3.12 GiB is free. Of the allocated memory 70.2 GiB is allocated by PyTorch.")

    saved = semrec.training.teacher.train_teacher
    semrec.training.teacher.train_teacher = fail
    try:
        yield
    finally:
        semrec.training.teacher.train_teacher = saved


@dataclass
class Case:
    command: str  # the subcommand, as typed
    bad: str  # what is wrong with the input
    argv: Callable[[Workspace], list[str]]
    expect: str  # text the one-line message must contain
    patch: Callable[[], contextlib.AbstractContextManager] | None = field(default=None, repr=False)


def _train_cf(ws: Workspace, data: str, *sets: str) -> list[str]:
    argv = ["train-cf", "--data", data, "--model", "sasrec", "--out", str(ws.path("teacher")), "--device", "cpu",
            "--no-progress"]
    for s in (*[f"model.{k}={v}" for k, v in SASREC_TINY.items()], "train.epochs=2", *sets):
        argv += ["--set", s]
    return argv


def _eval_cf(ws: Workspace, teacher: Path | str) -> list[str]:
    return ["eval-cf", "--teacher", str(teacher), "--data", str(ws.dataset), "--device", "cpu"]


def _recommend(run: Path | str, *history: str) -> list[str]:
    return ["recommend", "--run", str(run), "--device", "cpu", "--history", *history]


def _model_file(ws: Workspace, rel: str, how: str) -> Path:
    """A copy of the tiny run with file `rel` of its model stage broken by `how`."""
    stage = ws.run_stage(ws.run, "model").name
    return ws.broken_copy(ws.run, f"stages/{stage}/{rel}", how)


RB_INTER = "user_id:token\titem_id:token\ttimestamp:float\n" + "".join(
    f"{u}\t{(u + k) % 4}\t{100 * k + u}\n" for u in range(4) for k in range(4))
ROWS_ITEMS = "item_id,title\n" + "".join(f"{k},Item {k}\n" for k in range(4))
ROWS_OK = 'user_id,history_item_id,item_id\n0,"[0, 1]",2\n1,"[1]",3\n'
B23 = "user_id,parent_asin,rating,timestamp\nAGKH,B01,5.0,1588687728923\n"
META23 = '{"main_category": "All Beauty", "title": "Leather Conditioner", "parent_asin": "B01"}\n'


def _recbole(ws: Workspace, files: dict[str, str], *flags: str) -> list[str]:
    """RecBole files DIR/x.<ext> written from `files` ({ext: text}); argv of `data import --recbole DIR/x`."""
    folder = ws.path("rb")
    folder.mkdir(parents=True)
    for ext, text in files.items():
        (folder / f"x.{ext}").write_text(text)
    return ["data", "import", "--recbole", str(folder / "x"), "--out", str(ws.path("out")), *flags]


def _rows(ws: Workspace, train: str, *flags: str) -> list[str]:
    return ["data", "import-rows", "--train", ws.write("train.csv", train), "--valid", ws.write("valid.csv", ROWS_OK),
            "--test", ws.write("test.csv", ROWS_OK), "--items", ws.write("items.csv", ROWS_ITEMS),
            "--out", str(ws.path("out")), *flags]


def _amazon23(ws: Workspace, valid: str, *, test: bool = True) -> list[str]:
    argv = ["data", "amazon", "--year", "2023", "--meta", ws.write("meta_All_Beauty.jsonl", META23),
            "--train", ws.write("All_Beauty.train.csv", B23), "--valid", ws.write("All_Beauty.valid.csv", valid)]
    return argv + (["--test", ws.write("All_Beauty.test.csv", B23)] if test else []) + ["--out", str(ws.path("o"))]


def _from_codes(ws: Workspace, name: str, content: str, *flags: str) -> list[str]:
    """`tokenize --from-codes` on the 40-item dataset (raw ids A0000..A0039)."""
    return ["tokenize", "--data", str(ws.dataset), "--from-codes", ws.write(name, content), "--out",
            str(ws.path("tok")), *flags]


def _index_json(codes: dict[int, list[str]] | None = None, drop: int | None = None) -> str:
    table = {f"A{i:04d}": [f"<a_{i % 4}>", f"<b_{i // 4}>"] for i in range(40) if i != drop}
    table.update({f"A{i:04d}": c for i, c in (codes or {}).items()})
    return json.dumps(table)


CASES: list[Case] = [
    # ---- data import / stats
    Case("data import", "interactions file lacks a column (header says `userid`)",
         lambda ws: ws.import_argv(LOG.replace("user_id", "userid")), "no column 'user_id'; did you mean 'userid'?"),
    Case("data import", "row with an extra field", lambda ws: ws.import_argv(LOG.replace("u0,i1,100", "u0,i1,100,x")),
         "line 3: expected 3 fields, saw 4"),
    Case("data import", "unparsable timestamp",
         lambda ws: ws.import_argv(LOG.replace("u1,i1,1\n", "u1,i1,yesterday\n")), "cannot read timestamp 'yesterday'"),
    Case("data import", "interactions name an item missing from the items file",
         lambda ws: ws.import_argv(LOG, ITEMS.replace("i3,Item 3\n", "")), "are not in"),
    Case("data import", "duplicate item ids in the items file", lambda ws: ws.import_argv(LOG, ITEMS + "i2,Again\n"),
         "duplicate item id 'i2'"),
    Case("data import", "empty interactions file", lambda ws: ws.import_argv(""), "empty file"),
    Case("data import", "k-core filter removes every interaction",
         lambda ws: ws.import_argv(LOG, ITEMS, "--kcore", "5"), "no interactions left after k-core filtering"),
    Case("data import", "interactions file does not exist",
         lambda ws: ["data", "import", "--interactions", str(ws.path("nope.csv")), "--items", ws.write("i.csv", ITEMS),
                     "--out", str(ws.path("out"))], "nope.csv"),
    Case("data stats", "dataset directory does not exist", lambda ws: ["data", "stats", str(ws.path("missing"))],
         "unknown dataset"),
    Case("data stats", "dataset split file truncated",
         lambda ws: ["data", "stats", str(ws.broken_copy(ws.dataset, "train.npz", "half"))],
         "train.npz: corrupt or truncated split file"),
    Case("data stats", "dataset items table truncated",
         lambda ws: ["data", "stats", str(ws.broken_copy(ws.dataset, "items.parquet", "half"))],
         "items.parquet: corrupt or truncated parquet file"),
    # ---- CF teachers
    Case("train-cf", "dataset directory does not exist", lambda ws: _train_cf(ws, str(ws.path("nodata"))),
         "unknown dataset"),
    Case("train-cf", "dataset meta.json missing",
         lambda ws: _train_cf(ws, str(ws.broken_copy(ws.dataset, "meta.json", "missing"))), "meta.json: no such file"),
    Case("train-cf", "config key typo (`model.hiden`)", lambda ws: _train_cf(ws, str(ws.dataset), "model.hiden=8"),
         "unknown key 'hiden'"),
    Case("train-cf", "learning rate so large that training diverges (`train.lr=1e30`)",
         lambda ws: _train_cf(ws, str(ws.dataset), "train.lr=1e30"), "NaN or inf"),
    Case("train-cf", "model too large for memory (`model.hidden=2**44`, CPU)",
         lambda ws: _train_cf(ws, str(ws.dataset), f"model.hidden={2 ** 44}"), "out of memory (CPU"),
    Case("train-cf", "GPU out of memory during training (simulated: torch.OutOfMemoryError)",
         lambda ws: _train_cf(ws, str(ws.dataset)), "out of memory (GPU: tried to allocate 7.81 GiB)",
         patch=gpu_out_of_memory),
    Case("eval-cf", "teacher directory does not exist", lambda ws: _eval_cf(ws, ws.path("noteacher")),
         "not a CF teacher directory"),
    Case("eval-cf", "teacher weights truncated",
         lambda ws: _eval_cf(ws, ws.broken_copy(ws.teacher(), "model.safetensors", "half")),
         "model.safetensors: truncated or corrupt safetensors file"),
    Case("eval-cf", "teacher config.json truncated",
         lambda ws: _eval_cf(ws, ws.broken_copy(ws.teacher(), "config.json", "half")), "config.json: malformed JSON"),
    Case("eval-cf", "teacher weights hold NaN", lambda ws: _eval_cf(ws, ws.teacher(nan=True)),
         "CF teacher 'sasrec': item logits contain NaN or inf"),
    Case("eval-cf", "teacher trained on another catalogue (30 items, dataset has 40)",
         lambda ws: _eval_cf(ws, ws.teacher(30)), "teacher scores 30 items"),
    # ---- item tokenization
    Case("tokenize", "scheme YAML key typo (`codebook_size`)",
         lambda ws: ["tokenize", "--data", str(ws.dataset), "--out", str(ws.path("tok")), "--scheme",
                     ws.write("scheme.yaml", "scheme: rqkmeans\nquantizer: {codebook_size: [4, 4]}\n")],
         "unknown key 'codebook_size'"),
    Case("tokenize", "scheme file does not exist",
         lambda ws: ["tokenize", "--data", str(ws.dataset), "--out", str(ws.path("tok")), "--scheme",
                     str(ws.path("nope.yaml"))], "nope.yaml"),
    # ---- RecBole atomic files, row datasets, Amazon Reviews 2023, export
    Case("data import --recbole", "header fields without their `:type`",
         lambda ws: _recbole(ws, {"inter": RB_INTER.replace(":token", "").replace(":float", "")}),
         "header field 'user_id' is not 'name:type'"),
    Case("data import --recbole", "unknown field type (`tokn`)",
         lambda ws: _recbole(ws, {"inter": RB_INTER.replace("item_id:token", "item_id:tokn")}),
         "has type 'tokn'; RecBole types are token, token_seq, float, float_seq"),
    Case("data import --recbole", "only two of the three benchmark files",
         lambda ws: _recbole(ws, {"train.inter": RB_INTER, "test.inter": RB_INTER}),
         "benchmark split files come in threes; missing"),
    Case("data import --recbole", "no NAME.inter and no benchmark files", lambda ws: _recbole(ws, {}),
         "x.inter: no such file"),
    Case("data import --recbole", "a float field holds text",
         lambda ws: _recbole(ws, {"inter": RB_INTER.replace("\t301\n", "\tlater\n")}),
         "timestamp 'later' is not a number"),
    Case("data import --recbole", "--recbole and --interactions together",
         lambda ws: _recbole(ws, {"inter": RB_INTER}, "--interactions", "log.csv"),
         "--recbole reads DIR/NAME.inter/.item/.user itself"),
    Case("data import-rows", "history names an item missing from the items file",
         lambda ws: _rows(ws, ROWS_OK.replace("[0, 1]", "[0, 9]")), "line 2: history item '9' is not in"),
    Case("data import-rows", "empty history", lambda ws: _rows(ws, ROWS_OK.replace("[0, 1]", "[]")),
         "line 2: empty history in column history_item_id"),
    Case("data import-rows", "malformed list literal", lambda ws: _rows(ws, ROWS_OK.replace("[0, 1]", "[0, 1")),
         "line 2: column history_item_id: not a list literal: '[0, 1'"),
    Case("data import-rows", "stated history length disagrees (`--length-col n`)",
         lambda ws: _rows(ws, 'user_id,history_item_id,item_id,n\n0,"[0, 1]",2,3\n', "--length-col", "n"),
         "line 2: history has 2 items but n is '3'"),
    Case("data import-rows", "history column misnamed",
         lambda ws: _rows(ws, ROWS_OK.replace("history_item_id", "history")),
         "no column 'history_item_id'"),
    Case("data amazon --year 2023", "benchmark split without parent_asin",
         lambda ws: _amazon23(ws, B23.replace("parent_asin", "asin")),
         "missing column(s) parent_asin"),
    Case("data amazon --year 2023", "benchmark timestamp is not a number",
         lambda ws: _amazon23(ws, B23.replace("1588687728923", "May 2020")),
         "timestamp 'May 2020' is not a number (milliseconds)"),
    Case("data amazon --year 2023", "--test missing", lambda ws: _amazon23(ws, B23, test=False),
         "give all three benchmark splits (--train, --valid, --test); missing --test"),
    Case("data export", "RecBole output directory already exists",
         lambda ws: ["data", "export", "--data", str(ws.dataset), "--recbole", str(ws.root / "data" / "x")],
         "already exists (pass --overwrite to replace it)"),
    # ---- semantic IDs made elsewhere
    Case("tokenize --from-codes", "an item has no codes",
         lambda ws: _from_codes(ws, "x.index.json", _index_json(drop=7)),
         "1 of the dataset's 40 items have no codes, e.g. raw id 'A0007'"),
    Case("tokenize --from-codes", "ragged levels",
         lambda ws: _from_codes(ws, "x.index.json", _index_json({3: ["<a_3>", "<b_0>", "<c_1>"]})),
         "ragged levels: item 'A0000' has 2 codes but item 'A0003' has 3"),
    Case("tokenize --from-codes", "token of the wrong level (`<c_1>` second)",
         lambda ws: _from_codes(ws, "x.index.json", _index_json({5: ["<a_1>", "<c_1>"]})),
         "item 'A0005': token '<c_1>' at position 2 should be level 'b'"),
    Case("tokenize --from-codes", "code out of range (`--codebook-sizes 4`)",
         lambda ws: _from_codes(ws, "codes.json", json.dumps({f"A{i:04d}": [i % 4, i] for i in range(40)}),
                                "--codebook-sizes", "4"),
         "item 'A0004': code 4 at level 2 is out of range 0..3 (codebook size 4)"),
    Case("tokenize --from-codes", "collisions with `--collisions error`",
         lambda ws: _from_codes(ws, "x.index.json", _index_json({9: ["<a_0>", "<b_0>"]}), "--collisions", "error"),
         "items share their codes with another item"),
    Case("tokenize --from-codes", "unknown file format (`codes.txt`)", lambda ws: _from_codes(ws, "codes.txt", "1 2\n"),
         "unknown codes format"),
    Case("tokenize --export", "output name of no codes format (`codes.txt`)", lambda ws: [
        "tokenize", "--export", str(ws.run_stage(ws.run, "ids") / "tokenization"), "--out", str(ws.path("codes.txt"))],
         "unknown codes format (expected *.index.json"),
    Case("tokenize --export", "directory is not an item tokenization", lambda ws: [
        "tokenize", "--export", str(ws.dataset), "--out", str(ws.path("codes.index.json"))],
         "tokenization.json: no such file"),
    # ---- run
    Case("run", "recipe has an unknown key (`trian`)", lambda ws: ["run", ws.recipe_with(trian={}), "--out",
                                                                   str(ws.path("out"))],
         "unknown key 'trian'; did you mean 'train'?"),
    Case("run", "recipe value of the wrong type (`train.epochs: many`)",
         lambda ws: ["run", ws.recipe_with(train={"epochs": "many"}), "--out", str(ws.path("out"))],
         "expected an integer"),
    Case("run", "recipe file does not exist", lambda ws: ["run", str(ws.path("nope.yaml"))], "nope.yaml"),
    Case("run", "recipe names a tokenizer scheme file that does not exist",
         lambda ws: ["run", ws.recipe_with(tokenizer="missing.yaml"), "--out", str(ws.path("out"))],
         "tokenizer scheme file 'missing.yaml' not found"),
    Case("run", "a finished stage's file was edited (same size) since it was written",
         lambda ws: ["run", str(ws.recipe), "--no-progress", "--out",
                     str(ws.broken_copy(ws.run, f"stages/{ws.run_stage(ws.run, 'teacher').name}/teacher/"
                                                "model.safetensors", "flip"))],
         "stage files do not match their manifest"),
    # ---- recommend
    Case("recommend", "history with an empty item", lambda ws: _recommend(ws.run, " "), "--history: empty item"),
    Case("recommend", "history file without any history",
         lambda ws: ["recommend", "--run", str(ws.run), "--history-file", ws.write("h.txt", "\n  \n")],
         "no histories"),
    Case("recommend", "unknown item id", lambda ws: _recommend(ws.run, "1", "400"), "unknown item id 400"),
    Case("recommend", "title matching no item", lambda ws: _recommend(ws.run, "quantum flux capacitor"),
         "unknown item 'quantum flux capacitor'"),
    Case("recommend", "ambiguous title (`pen`)", lambda ws: _recommend(ws.run, "pen"), "'pen' is ambiguous"),
    Case("recommend", "model directory holds another item tokenization than the model was trained for",
         lambda ws: _recommend(ws.mismatched_run(), "1"), "model was trained for item tokenization"),
    Case("recommend", "model weights truncated", lambda ws: _recommend(_model_file(ws, "model/model.safetensors",
                                                                                   "half"), "1"),
         "model.safetensors: truncated or corrupt safetensors file"),
    Case("recommend", "model weights edited (same size)",
         lambda ws: _recommend(_model_file(ws, "model/model.safetensors", "flip"), "1"),
         "stage files do not match their manifest"),
    Case("recommend", "model config.json missing", lambda ws: _recommend(_model_file(ws, "model/config.json",
                                                                                     "missing"), "1"),
         "config.json: no such file"),
    Case("recommend", "run directory does not exist", lambda ws: _recommend(ws.path("norun"), "1"),
         "no such run directory"),
]


def run_case(case: Case, ws: Workspace) -> tuple[int, str]:
    """Run one case through the CLI in this process; return (exit code, stderr)."""
    from semrec.cli import main

    argv = case.argv(ws)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), \
            (case.patch() if case.patch else contextlib.nullcontext()):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse usage errors
            rc = int(e.code or 0)
    return rc, err.getvalue()


def shown(text: str, ws: Workspace) -> str:
    """A message as shown in the table: workspace and repository paths made relative."""
    for root, name in ((ws.root.resolve(), "<tmp>"), (ws.root, "<tmp>"), (REPO, "<repo>")):
        text = text.replace(str(root), name)
    return text.strip()


def markdown(rows: list[tuple[Case, int, str]]) -> str:
    lines = ["# Bad input: what each command says", "",
             "Generated by `python scripts/bad_inputs.py` (do not edit by hand): every case is run through the "
             "real CLI (`semrec.cli.main`) on broken copies of tiny fixtures; `<tmp>` is the temporary directory "
             "the script works in. Every error is one line on stderr, exit code 2, no traceback (`semrec --debug "
             "...` shows it). `tests/pipeline/test_failure_handling.py` runs the same cases.", "",
             "| command | bad input | exit code | message |", "|---|---|---|---|"]
    for case, rc, msg in rows:
        cell = msg.replace("|", "\\|").replace("\n", " / ")
        lines.append(f"| `{case.command}` | {case.bad} | {rc} | `{cell}` |" if "`" not in cell
                     else f"| `{case.command}` | {case.bad} | {rc} | {cell} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "docs" / "bad_input.md"), help="Markdown file to write")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="semrec-bad-") as tmp:
        ws = Workspace(tmp)
        for case in CASES:
            rc, err = run_case(case, ws)
            rows.append((case, rc, shown(err, ws)))
            ok = rc == 2 and case.expect in err and err.count("\n") == 1
            print(f"{'ok ' if ok else 'BAD'} {case.command}: {case.bad} -> {rc}", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(rows))
    print(f"wrote {out} ({len(rows)} cases)")
    bad = [c for c, rc, msg in rows if rc != 2 or c.expect not in msg]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
