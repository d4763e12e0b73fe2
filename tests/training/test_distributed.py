"""DDP on CPU: a 2-process gloo run equals a 1-process run with the same global batch.

One spawn of two gloo processes (module fixture) trains a tiny TIGER (with TCA, gradient accumulation and a
final global batch smaller than the world size), a tiny decoder on variable-length title targets, and a
tiny SASRec teacher, and evaluates sharded; the tests compare with the same work done in this process.
Dropout is 0 in every model here: with dropout each rank draws its own masks (the per-rank streams differ
from the single process's), so only the dropout-free computation can match within float tolerance.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.generative import GPT2_TINY, TIGER_TINY, examples, semantic_ids, titles

from semrec import distributed
from semrec.cf import SASRec, SASRecConfig, evaluate_teacher
from semrec.training.teacher import train_teacher
from semrec.training.teacher import TeacherTrainConfig
from semrec.cf.base import CFTeacher
from semrec.data.dataset import Examples, SeqDataset
from semrec.errors import SemrecError
from semrec.evaluation import evaluate
from semrec.models import build_model, load_model
from semrec.training import TrainConfig, Trainer

N = 40
WORLD = 2
TIGER_CFG = dict(TIGER_TINY, dropout=0.0)
GPT2_CFG = dict(GPT2_TINY, dropout=0.0)
SAS_CFG = SASRecConfig(hidden=16, heads=2, ffn=32, max_len=8, dropout=0.0, attn_dropout=0.0)
# 33 rows, global batch 8: the last batch holds 1 row, so rank 1 gets an empty slice there
GEN = dict(epochs=2, batch_size=8, lr=5e-3, warmup_steps=2, progress=False, num_beams=10, eval_batch_size=4,
           monitor="hr@10", patience=0, log_every=1)
WRITES = ("open", "os.mkdir", "os.rename", "os.replace", "os.remove", "os.unlink", "os.rmdir", "shutil.rmtree")


def tiger_data():
    return examples(33, N, seed=0), examples(10, N, seed=1)


def title_data():
    return titles(N), examples(25, N, seed=2), examples(6, N, seed=3)


def cf_dataset() -> SeqDataset:
    rng = np.random.default_rng(0)

    def rows(n, user0):
        users, hists, targets = [], [], []
        for u in range(n):
            s, length = int(rng.integers(0, N)), int(rng.integers(3, 10))
            seq = [(s + k) % N for k in range(length)]
            users.append(user0 + u)
            hists.append(seq[:-1])
            targets.append(seq[-1])
        return Examples.from_lists(users, hists, targets)

    splits = {"train": rows(60, 0), "valid": rows(21, 60), "test": rows(9, 81)}
    return SeqDataset("syn", pd.DataFrame({"title": [f"item {i}" for i in range(N)]}), splits,
                      users=pd.DataFrame({"raw_id": [f"u{i}" for i in range(90)]}), protocol="custom")


def sas_teacher(seed=0) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(N, SAS_CFG)


def cf_config() -> TeacherTrainConfig:
    return TeacherTrainConfig(epochs=3, batch_size=4, lr=0.005, patience=5, ks=(1, 5, 10), eval_batch_size=8)


def train_tiger(out_dir):
    train, valid = tiger_data()
    model = build_model("tiger", semantic_ids(N), TIGER_CFG, seed=0)
    cfg = TrainConfig(**GEN, loss="tca", alpha=0.3, grad_accum=2)
    res = Trainer(model, cfg, train, valid=valid, teacher=sas_teacher(1), out_dir=out_dir).fit()
    return model, res


def train_titles(out_dir):
    tok, train, valid = title_data()
    model = build_model("decoder", tok, GPT2_CFG, seed=0)
    cfg = TrainConfig(**{**GEN, "epochs": 1}, train_eos=False)
    res = Trainer(model, cfg, train, valid=valid, out_dir=out_dir).fit()
    return model, res


def train_sasrec(out_dir):
    model = sas_teacher()
    res = train_teacher(model, cf_dataset(), cf_config(), device="cpu", checkpoint_dir=out_dir / "ck",
                        progress=False)
    return model, res


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _worker(rank: int, port: int, base: str) -> None:
    """One DDP rank: the environment torchrun would set, then the same calls a 1-process run makes."""
    from safetensors.torch import save_file

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    base_p = Path(base)
    runs = base_p / "runs"
    writes: list[str] = []

    def audit(event, args):
        if event not in WRITES or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
            return
        path = os.fsdecode(args[0])
        if event == "open" and not (set(str(args[1] or "")) & set("wax+") or (args[2] or 0) & (os.O_WRONLY | os.O_RDWR)):
            return
        if path.startswith(str(runs)):
            writes.append(f"{event} {path}")

    sys.addaudithook(audit)
    assert distributed.init("cpu") and distributed.world_size() == WORLD and distributed.rank() == rank
    out: dict = {"rank": rank}
    tiger, res_t = train_tiger(runs / "tiger")
    titles_model, res_d = train_titles(runs / "titles")
    sas, res_s = train_sasrec(runs / "sasrec")
    out["tiger_history"] = res_t.history
    out["titles_history"] = res_d.history
    out["sasrec_history"] = res_s.history
    # sharded evaluation of the DDP-trained models (the test re-evaluates them in one process)
    _, valid = tiger_data()
    out["tiger_eval"] = evaluate(tiger, valid, teacher=sas, num_beams=10, batch_size=3, protocol="T")
    out["sasrec_eval"] = evaluate_teacher(sas, cf_dataset().test, ks=(1, 5, 10), batch_size=4)
    try:
        distributed.check_batch_size(7)
    except SemrecError as e:
        out["batch_error"] = str(e)
    distributed.barrier()
    out["writes"] = writes  # recorded before the harness below writes its own files
    tensors = {f"tiger.{k}": v for k, v in _state(tiger).items()}
    tensors.update({f"titles.{k}": v for k, v in _state(titles_model).items()})
    tensors.update({f"sasrec.{k}": v for k, v in _state(sas).items()})
    save_file(tensors, str(base_p / f"rank{rank}.safetensors"))
    (base_p / f"rank{rank}.json").write_text(json.dumps(out, default=str))
    if rank == 0:
        sas.save_pretrained(base_p / "sasrec_ddp")
    distributed.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    """Run the 2-process job once; return each rank's tensors and records."""
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    base = tmp_path_factory.mktemp("ddp")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        assert key not in os.environ, "run the tests outside torchrun"
    mp.spawn(_worker, args=(_free_port(), str(base)), nprocs=WORLD, join=True)
    ranks = [(load_file(str(base / f"rank{r}.safetensors")), json.loads((base / f"rank{r}.json").read_text()))
             for r in range(WORLD)]
    return {"base": base, "ranks": ranks}


def _part(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _assert_close(ddp_state: dict, ref: dict, loose: tuple[str, ...] = ()) -> None:
    """Within float tolerance; `loose` names parameters whose exact gradient is 0 (attention key biases:
    softmax ignores a shift shared by all keys), so Adam turns float noise (~1e-9) into updates of
    ~lr x noise / (|noise| + eps) that differ between any two summation orders."""
    assert ddp_state.keys() == ref.keys()
    for k in ref:
        atol = 1e-3 if any(s in k for s in loose) else 2e-5
        torch.testing.assert_close(ddp_state[k], ref[k], atol=atol, rtol=1e-4, msg=k)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_ranks_end_identical(ddp):
    (a, _), (b, _) = ddp["ranks"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_tiger_tca_with_accumulation_matches_one_process(ddp, tmp_path):
    model, res = train_tiger(tmp_path / "tiger")
    _assert_close(_part(ddp["ranks"][0][0], "tiger"), _state(model))
    ddp_hist = ddp["ranks"][0][1]["tiger_history"]
    assert [h["epoch"] for h in ddp_hist] == [h["epoch"] for h in res.history] == [0, 1]
    for h1, h2 in zip(ddp_hist, res.history):  # the logged loss is the global batch's mean
        assert h1["train_loss"] == pytest.approx(h2["train_loss"], rel=1e-5)
        assert h1["valid_hr@10"] == h2["valid_hr@10"] and h1["step"] == h2["step"] == 3 * (h1["epoch"] + 1)


def test_decoder_on_variable_length_titles_matches_one_process(ddp, tmp_path):
    model, res = train_titles(tmp_path / "titles")
    _assert_close(_part(ddp["ranks"][0][0], "titles"), _state(model))
    assert ddp["ranks"][0][1]["titles_history"][0]["train_loss"] == pytest.approx(res.history[0]["train_loss"],
                                                                                  rel=1e-5)


def test_sasrec_teacher_matches_one_process(ddp, tmp_path):
    model, res = train_sasrec(tmp_path / "sasrec")
    _assert_close(_part(ddp["ranks"][0][0], "sasrec"), _state(model), loose=("qkv.bias",))
    hist = ddp["ranks"][0][1]["sasrec_history"]
    assert [h["train_targets"] for h in hist] == [h["train_targets"] for h in res.history]
    for h1, h2 in zip(hist, res.history):
        assert h1["train_loss"] == pytest.approx(h2["train_loss"], rel=1e-5)


def test_sharded_evaluation_equals_one_process_exactly(ddp):
    """Each rank decodes/scores whole batches; gathered ranks give exactly the 1-process metrics."""
    base = ddp["base"]
    sas = CFTeacher.from_pretrained(base / "sasrec_ddp")
    _, r0 = ddp["ranks"][0]
    assert r0["sasrec_eval"] == ddp["ranks"][1][1]["sasrec_eval"]
    assert r0["sasrec_eval"] == evaluate_teacher(sas, cf_dataset().test, ks=(1, 5, 10), batch_size=4)
    tiger = build_model("tiger", semantic_ids(N), TIGER_CFG, seed=0)
    tiger.load_state_dict(_part(ddp["ranks"][0][0], "tiger"))
    _, valid = tiger_data()
    one = evaluate(tiger, valid, teacher=sas, num_beams=10, batch_size=3, protocol="T")
    for metrics in (r0["tiger_eval"], ddp["ranks"][1][1]["tiger_eval"]):
        got = {k: v for k, v in metrics.items() if k != "wall_time_s"}
        assert got == {k: v for k, v in one.items() if k != "wall_time_s"}
    assert one["n_rows"] == 10 and "cc" in one


def test_only_rank_zero_writes(ddp):
    (_, r0), (_, r1) = ddp["ranks"]
    assert r1["writes"] == []
    written = " ".join(r0["writes"])
    for part in ("tiger", "titles", "metrics.jsonl", "sasrec"):
        assert part in written
    runs = ddp["base"] / "runs"
    assert load_model(runs / "tiger" / "best").training_info["loss"] == "tca"
    assert (runs / "tiger" / "checkpoints" / "last" / "trainer_state.json").is_file()
    assert (runs / "sasrec" / "ck" / "checkpoints" / "last" / "trainer_state.json").is_file()
    assert len((runs / "sasrec" / "ck" / "metrics.jsonl").read_text().splitlines()) == 3
    recs = [json.loads(x) for x in (runs / "tiger" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == [0, 1]  # one writer: no duplicated lines


def test_batch_size_must_divide_world_size(ddp):
    msg = ddp["ranks"][0][1]["batch_error"]
    assert "batch_size 7 is not divisible by the world size 2" in msg


def test_single_process_helpers_are_no_ops():
    assert not distributed.is_distributed() and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.init("cpu") is False  # not launched by torchrun
    rows = torch.arange(5)
    assert distributed.local_rows(rows)[0] is rows and distributed.shard_bounds(7, chunk=3) == (0, 7)
    t = torch.arange(4)
    assert distributed.gather_cat(t) is t and distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert torch.equal(distributed.all_reduce_sum(t), t)
    distributed.barrier()
    distributed.check_batch_size(7)
    assert distributed.main_first(lambda: 3) == 3


def test_shard_bounds_cover_whole_batches(monkeypatch):
    """Shares are contiguous, in rank order, cut at batch boundaries, and cover every row once."""
    for world in (2, 3, 5):
        for n, chunk in ((0, 4), (3, 4), (10, 3), (33, 8), (100, 7)):
            spans = []
            for r in range(world):
                monkeypatch.setattr(distributed, "is_distributed", lambda: True)
                monkeypatch.setattr(distributed, "world_size", lambda w=world: w)
                monkeypatch.setattr(distributed, "rank", lambda r=r: r)
                spans.append(distributed.shard_bounds(n, chunk=chunk))
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            assert all(lo % chunk == 0 and lo <= hi for lo, hi in spans)
            sizes = [-(-(hi - lo) // chunk) for lo, hi in spans]
            assert max(sizes) - min(sizes) <= 1  # batches spread evenly

