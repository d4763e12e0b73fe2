"""Training throughput of semrec's Trainer (NTP and TCA) against a minimal hand-written loop on the same
Hugging Face model, and float32 against bf16 autocast on the CPU.

Throughput (samples/s; CPU time of this process, one torch thread, so other jobs on a shared machine do not
inflate it; the contenders alternate, `--repeats` rounds, best round kept):
  minimal      the smallest correct loop: the Trainer's batches (its seeded shuffle of the rows, so the
               same histories and padding in every step) collated once before timing, then per step
               hf(input_ids, attention_mask, decoder_input_ids, labels).loss, backward, AdamW step;
  trainer_ntp  semrec.training.Trainer.fit (loss "ntp"): batches collated on the fly, loss through
               semrec.tca's token losses, gradient clipping, warm-up + cosine schedule, logging;
  trainer_tca  the same with loss "tca" (alpha 0.1): a frozen SASRec teacher's item logits for every batch
               and the Collaborative Tokenizer (sparse) feeding Soft-NTP;
  cornac       cornac's TIGER.fit (optional: skipped with a note when cornac is not installed), its own
               loop and network (a T5Stack encoder and decoder, one output head per code level) at the same
               size, batch, learning rate and dropout, handed the same semantic IDs through its tokenizer hook
               (benchmarks/peer_tiger.py); one epoch over the same rows is the same number of steps, its
               set-up (trie, network) included as the Trainer's is.
The semrec contenders train the same model from the same initial weights on the same rows (batch 256, AdamW
lr 1e-3, float32). The minimal loop also runs under bf16 autocast (the Trainer autocasts on CUDA only).
Rows: every prefix of the training sequences of beauty-p users in a seeded random order, the last user's
sequence cut so that there are exactly steps x 256 (cornac's loop enumerates a sequence's prefixes itself).
Model: the small TIGER of the CPU recipes (2+2 layers, d_model 128, 4 heads,
d_kv 32, d_ff 512) or `--models tiger` (TIGER's published size); catalogue: beauty-p (12,101 items,
RQ-KMeans IDs from benchmarks/gpu_artifacts), histories of up to 20 items.

Run: nice -n 10 python benchmarks/train_throughput.py [--threads 1] [--steps 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from semrec.cf import TEACHERS, SASRecConfig
from semrec.data import load_builtin
from semrec.artifacts import atomic_file, write_json
from semrec.itemtok.artifact import ItemTokenization
from semrec.data.dataset import Examples
from semrec.data.examples import ExampleTable
from semrec.models import build_model
from semrec.training import Trainer, TrainConfig
from semrec.runtime import cpu_bf16_native, describe_machine, git_commit

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ARTIFACTS = REPO / "benchmarks" / "gpu_artifacts" / "beauty-p"
MODELS = {"small": dict(num_layers=2, num_decoder_layers=2, d_model=128, num_heads=4, d_kv=32, d_ff=512,
                        max_history=20),
          "tiger": dict(num_layers=4, num_decoder_layers=4, d_model=128, num_heads=6, d_kv=64, d_ff=1024,
                        max_history=20)}
BATCH = 256


def setup(model_name: str, steps: int):
    ds = load_builtin("beauty-p")
    tok = ItemTokenization.from_pretrained(ARTIFACTS / "codes", load_quantizer=False)
    model = build_model("tiger", tok, MODELS[model_name], seed=0)
    users, seqs = user_sequences(ds, steps * BATCH)
    rows = Examples.from_lists(np.repeat(ds.train.users[users], [len(q) - 1 for q in seqs]),
                               [q[:t] for q in seqs for t in range(1, len(q))], [q[t] for q in seqs for t in range(1, len(q))])
    torch.manual_seed(0)
    teacher = TEACHERS["sasrec"](ds.num_items, SASRecConfig(max_len=20)).eval()
    return ds, tok, model, rows, teacher, (users, seqs)


def user_sequences(ds, n_rows: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Train rows (users) in a seeded random order and their training sequences (history + target), the last
    one cut, holding `n_rows` prefixes (history, next item) in all."""
    users, seqs, left = [], [], n_rows
    for e in np.random.default_rng(seed).permutation(len(ds.train)):
        seq = np.append(ds.train.history(e), ds.train.targets[e])[: left + 1]
        if len(seq) > 1:
            users.append(e)
            seqs.append(seq)
            left -= len(seq) - 1
        if left == 0:
            return np.array(users), seqs
    raise ValueError(f"{ds.name}: fewer than {n_rows} training prefixes")


def trainer_batches(model, rows) -> list[torch.Tensor]:
    """The row indices of the Trainer's batches in its first epoch (its seeded shuffle)."""
    cfg = TrainConfig(epochs=1, batch_size=BATCH, device="cpu", progress=False)
    return Trainer(model, cfg, rows).task.batches(0)


def run_minimal(model, rows, batch_rows: list[torch.Tensor], bf16: bool) -> float:
    """CPU seconds per step of the hand-written loop over the given batches (collation before the clock)."""
    table = ExampleTable.from_examples(rows, model.max_history)
    batches = []
    for idx in batch_rows:
        b = model.collate(table, idx)
        dec = torch.cat([torch.full_like(b.target_tokens[:, :1], model.start_id), b.target_tokens[:, :-1]], 1)
        batches.append((b.input_ids, b.attention_mask, dec, b.labels))
    hf = model.hf.train()
    opt = torch.optim.AdamW(hf.parameters(), lr=1e-3)
    c = time.process_time()
    for ids, mask, dec, labels in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.process_time() - c) / len(batches)


def run_trainer(model, rows, steps: int, loss: str, teacher) -> float:
    """CPU seconds per step of Trainer.fit over `steps` batches (its set-up included)."""
    cfg = TrainConfig(loss=loss, alpha=0.1, epochs=1, batch_size=BATCH, lr=1e-3, progress=False,
                      log_every=10_000, device="cpu", warmup_steps=2)
    trainer = Trainer(model, cfg, rows, teacher=teacher if loss == "tca" else None, protocol="P")
    c = time.process_time()
    res = trainer.fit()
    assert res.steps == steps
    return (time.process_time() - c) / steps


def cornac_setup(ds, tok, model_name: str, users: np.ndarray, seqs: list[np.ndarray]):
    """cornac's evaluation split over the same training sequences and a builder of its TIGER (the given codes,
    our model's size, batch, learning rate and dropout, one epoch, no validation); None without cornac."""
    try:
        import peer_tiger
        peer_tiger.check_cornac_recipes()
    except ImportError:
        return None
    from semrec.models.tiger import TigerConfig

    m = MODELS[model_name]
    recipe = dict(peer_tiger.CORNAC_RECIPES["grid"], num_enc_layers=m["num_layers"],
                  num_dec_layers=m["num_decoder_layers"], d_model=m["d_model"], num_heads=m["num_heads"],
                  d_kv=m["d_kv"], d_ff=m["d_ff"], max_len=m["max_history"], dropout=TigerConfig().dropout,
                  batch_size=BATCH, learning_rate=1e-3, n_epochs=1, model_selection="last")
    valid, test = ds.valid.subset(users), ds.test.subset(users)
    split = peer_tiger.Split(np.arange(ds.num_items), tok, np.zeros((ds.num_items, 1), np.float32), seqs, None,
                             valid, test, test)
    ev = peer_tiger.cornac_eval_method(split, split.features, seed=0)  # cornac's train set: exactly `seqs`
    raw = tok.raw_codes[peer_tiger.item_order(ev)]
    return ev, lambda: peer_tiger.cornac_model(recipe, raw, max(tok.codebook_sizes), seed=0), recipe


def run_cornac(cornac, steps: int) -> float:
    """CPU seconds per step of cornac's TIGER.fit over the same rows (one epoch: `steps` batches)."""
    ev, build, _ = cornac
    model = build()
    c = time.process_time()
    model.fit(ev.train_set, ev.val_set)
    return (time.process_time() - c) / steps


def throughput(model_name: str, steps: int, repeats: int) -> dict:
    ds, tok, model0, rows, teacher, (users, seqs) = setup(model_name, steps)
    cornac = cornac_setup(ds, tok, model_name, users, seqs)
    batch_rows = trainer_batches(model0, rows)
    contenders = {"minimal_fp32": lambda m: run_minimal(m, rows, batch_rows, False),
                  "minimal_bf16": lambda m: run_minimal(m, rows, batch_rows, True),
                  "trainer_ntp_fp32": lambda m: run_trainer(m, rows, steps, "ntp", teacher),
                  "trainer_tca_fp32": lambda m: run_trainer(m, rows, steps, "tca", teacher)}
    if cornac is not None:
        contenders["cornac_fp32"] = lambda m: run_cornac(cornac, steps)
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(repeats + 1):  # round 0 warms up every code path and is not kept
        for name, fn in contenders.items():
            secs = fn(copy.deepcopy(model0))
            if r:
                times[name].append(secs)
            print(f"[round {r}] {name}: {secs:.3f} s/step", file=sys.stderr, flush=True)
    best = {k: min(v) for k, v in times.items()}
    rows_out = []
    for k, v in times.items():
        dtype = k.rsplit("_", 1)[1]
        rows_out.append({"contender": k.rsplit("_", 1)[0], "dtype": dtype, "step_s": best[k],
                         "median_step_s": statistics.median(v), "samples_per_s": BATCH / best[k],
                         "vs_minimal_same_dtype": best[f"minimal_{dtype}"] / best[k],
                         "bf16_speedup": best["minimal_fp32"] / best[k] if k == "minimal_bf16" else None})
    return {"model": model_name, "config": MODELS[model_name], "batch": BATCH, "steps_per_round": steps,
            "rounds": repeats, "num_items": int(tok.codes.shape[0]), "rows": rows_out,
            "training_rows": {"users": len(users), "rows": len(rows), "mean_history_items_read": float(
                np.minimum(np.diff(rows.hist_offsets), MODELS[model_name]["max_history"]).mean())},
            "cornac": None if cornac is None else {"version": __import__("cornac").__version__,
                                                   "config": {k: v for k, v in cornac[2].items() if k != "n_beams"}}}


def throughput_notes(tp: dict) -> list[str]:
    """What the rows are, what cornac's row runs, and the Trainer (TCA) against cornac."""
    tr = tp["training_rows"]
    notes = [f"Rows: every prefix of {tr['users']} users' training sequences ({tr['rows']} rows, "
             f"{tr['mean_history_items_read']:.1f} history items read on average); the minimal loop trains on "
             "the Trainer's shuffled batches."]
    if tp["cornac"] is None:
        return notes + ["cornac: not installed, its row is skipped (`pip install -e .[peers]`)."]
    c = tp["cornac"]["config"]
    sps = {r["contender"]: r["samples_per_s"] for r in tp["rows"] if r["dtype"] == "fp32"}
    ratio = sps["trainer_tca"] / sps["cornac"]
    notes += [f"cornac {tp['cornac']['version']}: `TIGER.fit` (its GRID_CONFIG recipe with {c['num_enc_layers']}+"
              f"{c['num_dec_layers']} layers, d_model {c['d_model']}, {c['num_heads']} heads, d_kv {c['d_kv']}, "
              f"d_ff {c['d_ff']}, dropout {c['dropout']}, batch {c['batch_size']}, lr {c['learning_rate']}, one epoch, "
              "no validation), the same semantic IDs. Its encoder reads max_len x (levels + 1) tokens for every row "
              "(histories left-padded to max_len items; its collision level adds a 4th code) and its decoder "
              "levels + 1 positions; semrec's reads the batch's longest history x 3 codes (+ an anchor) and 3.",
              f"Trainer (TCA) at {ratio:.0%} of cornac's samples/s: target (at or above cornac) "
              + ("met." if ratio >= 1 else "missed.")]
    return notes


def write_markdown(res: dict, path: Path) -> None:
    lines = ["# Trainer throughput and CPU precision", "",
             f"Machine: {res['machine']}; native CPU bf16 (avx512_bf16 / AMX): {res['cpu_bf16_native']}; "
             f"commit `{res['commit']}`; {res['threads']} torch thread(s); CPU time of the process.", "",
             f"Produced by `{res['command']}`.", ""]
    for tp in res.get("throughput", []):
        lines += [f"## Throughput: {tp['model']} TIGER, batch {tp['batch']}, {tp['num_items']:,} items "
                  f"({tp['steps_per_round']} steps per round, best of {tp['rounds']} rounds)", "",
                  "| contender | dtype | s/step | samples/s | vs minimal (same dtype) | bf16 speed-up |",
                  "|---|---|---|---|---|---|"]
        for r in tp["rows"]:
            sp = f"{r['bf16_speedup']:.2f}x" if r["bf16_speedup"] else "-"
            lines.append(f"| {r['contender']} | {r['dtype']} | {r['step_s']:.3f} | {r['samples_per_s']:.0f} | "
                         f"{r['vs_minimal_same_dtype']:.0%} | {sp} |")
        lines += ["", *throughput_notes(tp), ""]
    if res.get("notes"):
        lines += res["notes"] + [""]
    with atomic_file(path) as f:
        f.write("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--models", default="small")
    p.add_argument("--out", default=str(RESULTS / "train_throughput"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    res = {"benchmark": "train_throughput", "machine": describe_machine("cpu"), "commit": git_commit(),
           "threads": args.threads, "cpu_bf16_native": cpu_bf16_native(), "seeds": {"model": 0, "rows": 0},
           "command": "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:]), "throughput": []}
    for name in args.models.split(","):
        if name:
            res["throughput"].append(throughput(name, args.steps, args.repeats))
            write_json(out.with_suffix(".json"), res)
            write_markdown(res, out.with_suffix(".md"))
    write_json(out.with_suffix(".json"), res)
    write_markdown(res, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
