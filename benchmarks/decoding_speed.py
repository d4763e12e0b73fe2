"""Trie-constrained beam search throughput: semrec.decoding.beam_search against transformers'
generate(num_beams=K, prefix_allowed_tokens_fn=...) on the same model, same inputs, same thread count, and
TIGER's users/s against a FLOP-count bound.

Catalogue: the 9,913 items of the bundled Office data (protocol T) with semantic IDs of TIGER's shape
(3 levels x 256 codes + a collision digit; codes drawn at random with seed 0 -- decoding cost depends on
the shape of the trie, not on what the codes mean). Inputs: the histories of the first test rows
(10 items -> 40 encoder / prompt tokens). Models are randomly initialised (speed does not depend on
training): TIGER's T5 (4+4 layers, d_model 128, 6 heads, d_kv 64, d_ff 1024) and a decoder-only
Llama-style model (4 layers, d_model 128, 4 heads, d_ff 512).

The baseline's prefix_allowed_tokens_fn is the usual fast one: a dict from every catalogue prefix
(tuple) to its list of allowed next tokens, built once. Contenders decode the same users with length_penalty
0 and no early stopping; the tables report the share of users whose top-K items are identical.

TIGER, before and after (`tiger_*` rows), the contenders alternating round by round:
  before        the decoding code of commit --before-rev (the configuration of the earlier committed results:
                transformers' T5 encoder module, float32, 256 users per call), unpacked with `git archive`
                and run in a child process on the same model (same seed) and users;
  after fp32    this tree, float32, at each batch size of --tiger-batches; the best one is `after`;
  after bf16    this tree under bf16 autocast (a CPU with native bf16 only), at the same batch sizes;
  generate()    transformers, float32, 256 users per call.
FLOP bound: matmul FLOPs, 2*m*n*k for every product, per user (S source tokens, D d_model, I heads*d_kv,
F d_ff, V vocabulary, Le/Ld encoder/decoder layers, K beams, L decoding steps):
  encoder  Le * (S*8*D*I  [q, k, v, o]  + 4*S*S*I  [scores, weighted values]  + S*4*D*F  [wi, wo])
  cross    Ld * S*4*D*I  (each decoder layer's cross-attention keys and values of the source, once per user)
  a decoder row at step t (t + 1 self-attention keys):
           Ld * (12*D*I  [self q, k, v, o; cross q, o]  + 4*(t+1)*I + 4*S*I  [attention]  + 4*D*F) + 2*D*V
  steps    one row at t = 0 (all beams are the empty prefix), K rows at t = 1 .. L-1.
The achievable matmul rate is measured in the same run: torch.mm over the model's own product shapes (one
encoder layer and one decoder step at the contender's batch), FLOP-weighted, float32 and bf16, the best
batch's rate taken as the machine's; bound users/s = achievable FLOP/s / FLOPs per user. bf16 agreement is
also measured on the same TIGER after --train-steps steps of NTP training (a trained model's distributions
are peakier than a random one's, so fewer near-ties flip).

Run: nice -n 10 python benchmarks/decoding_speed.py [--llm] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from semrec.artifacts import atomic_file, write_json
from semrec.data import load_builtin
from semrec.data.examples import ExampleTable
from semrec.decoding import beam_search
from semrec.itemtok.artifact import ItemTokenization
from semrec.models import build_model
from semrec.runtime import cpu_bf16_native, describe_machine, git_commit

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
# main before this benchmark's TIGER work: transformers' T5 encoder module in TIGER's prefill
BEFORE_REV = "df2f40814a386e2bcdae3e3ce0319c390c48b3ba"
# TIGER without its item-recency embeddings: generate() feeds token ids only, so both read the same input
CONFIGS = {"tiger": {"max_history": 20, "item_positions": False, "eos_anchor": False}, "decoder": {"max_history": 20}}


def tiger_shaped_codes(n: int, seed: int = 0) -> ItemTokenization:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (n, 3))
    seen: dict[tuple, int] = {}
    digit = np.zeros(n, dtype=np.int64)
    for i, row in enumerate(map(tuple, raw)):
        digit[i] = seen.get(row, 0)
        seen[row] = digit[i] + 1
    raw = np.concatenate([raw, digit[:, None]], 1)
    return ItemTokenization.from_raw_codes(raw, [256, 256, 256, int(digit.max()) + 1], scheme="random-tiger-shape")


def prefix_table(codes: torch.Tensor, pad_id: int) -> dict[tuple, list[int]]:
    """Every prefix of every item's token row -> sorted allowed next tokens (the baseline's trie)."""
    table: dict[tuple, set] = {}
    for row in codes.tolist():
        row = [t for t in row if t != pad_id]
        for j in range(len(row)):
            table.setdefault(tuple(row[:j]), set()).add(row[j])
    return {k: sorted(v) for k, v in table.items()}


def timed(fn):
    """(CPU seconds of this process, wall seconds, fn())."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - c0, time.perf_counter() - w0, out


def run_ours(model, batches, k, **kw):
    """Item ids (users, k). kw: beam_search options (none for the before-revision's code)."""
    return torch.cat([beam_search(model, b, num_beams=k, **kw).items for b in batches])


def run_prefill(model, batches, bf16: bool = False):
    """The source pass alone (T5 encoder / decoder-only prompt): work every contender must do."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for b in batches:
            model.prefill(b)


def run_generate(model, batches, k, allowed):
    start_of = (lambda b: 1) if model.is_encoder_decoder else (lambda b: b.input_ids.shape[1])
    index = model.prefix_index()
    eos = model.eos_id
    fallback = model.pad_id if eos is None else eos  # what generate() gets for a finished title
    items = []
    for b in batches:
        start = start_of(b)

        def fn(_, ids, start=start):
            return allowed.get(tuple(ids[start:].tolist()), [fallback])

        with torch.no_grad():
            out = model.hf.generate(input_ids=b.input_ids, attention_mask=b.attention_mask, num_beams=k,
                                    num_return_sequences=k, length_penalty=0.0, early_stopping=False,
                                    do_sample=False, max_new_tokens=index.max_len, prefix_allowed_tokens_fn=fn)
        seqs = out[:, start:]
        if eos is not None:  # generate() fills a finished hypothesis with pad/EOS: cut after the first EOS
            is_eos = (seqs == eos).long()
            seqs = seqs.masked_fill((is_eos.cumsum(1) - is_eos) > 0, model.pad_id)
        seqs = torch.nn.functional.pad(seqs, (0, index.max_len - seqs.shape[1]), value=model.pad_id)
        items.append(index.items_of(seqs).view(len(b), k))
    return torch.cat(items)


def agreement(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Top-K lists (E, K) of two contenders on the same users: identical lists, same top-1, set overlap."""
    overlap = [len(set(x) & set(y)) / len(x) for x, y in zip(a.tolist(), b.tolist())]
    return {"same_lists": float((a == b).all(1).float().mean()), "same_top1": float((a[:, 0] == b[:, 0]).float().mean()),
            "overlap": float(np.mean(overlap))}


# ------------------------------------------------------------------------------------------------ TIGER
def tiger_setup(ds, users: int, bsz: int):
    """The benchmark's TIGER (seed 0), its test table and `users` users collated `bsz` per call."""
    model = build_model("tiger", tiger_shaped_codes(ds.num_items), CONFIGS["tiger"], seed=0).eval()
    table = ExampleTable.from_examples(ds.test, model.max_history)
    return model, table, collated(model, table, 0, users, bsz)


def collated(model, table, lo: int, hi: int, bsz: int) -> list:
    return [model.collate(table, torch.arange(a, min(a + bsz, hi)), with_targets=False) for a in range(lo, hi, bsz)]


def tiger_flops(model, source_len: int, beams: int) -> dict[str, float]:
    """Matmul FLOPs per user of our beam search (the formula of the module docstring)."""
    c = model.config
    d, i, f, s, v = c.d_model, c.num_heads * c.d_kv, c.d_ff, source_len, model.vocab_size
    encoder = c.num_layers * (s * 8 * d * i + 4 * s * s * i + s * 4 * d * f)
    cross = c.num_decoder_layers * s * 4 * d * i

    def row(t: int) -> int:
        return c.num_decoder_layers * (12 * d * i + 4 * (t + 1) * i + 4 * s * i + 4 * d * f) + 2 * d * v

    steps = model.prefix_index().max_len
    decode = row(0) + sum(beams * row(t) for t in range(1, steps))
    return {"encoder": encoder, "cross": cross, "decode": decode, "total": encoder + cross + decode}


def matmul_rate(model, source_len: int, users: int, beams: int, dtype: torch.dtype, reps: int = 3) -> float:
    """FLOP/s of torch.mm over one encoder layer's and one decoder step's products at this batch."""
    c = model.config
    d, i, f, v = c.d_model, c.num_heads * c.d_kv, c.d_ff, model.vocab_size
    enc, dec = users * source_len, users * beams
    shapes = [(enc, d, 3 * i), (enc, i, d), (enc, d, f), (enc, f, d),
              (dec, d, 3 * i), (dec, i, d), (dec, d, i), (dec, i, d), (dec, d, f), (dec, f, d), (dec, d, v)]
    ops = [(torch.randn(m, kk, dtype=dtype), torch.randn(n, kk, dtype=dtype).t()) for m, kk, n in shapes]
    flops = sum(2 * m * kk * n for m, kk, n in shapes)
    for a, b in ops:  # warm-up
        torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        c0 = time.process_time()
        for a, b in ops:
            torch.mm(a, b)
        best = min(best, time.process_time() - c0)
    return flops / best


def before_child(rev: str, lo: int, hi: int, widths: list[int], threads: int) -> dict:
    """Decode users lo..hi with the package at commit `rev` (float32, 256 users per call) in a child process:
    {beams: {"cpu", "wall", "prefill_cpu", "items"}}."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(f"git -C '{REPO}' archive {rev} semrec | tar -x -C '{tmp}'", shell=True, check=True)
        out = Path(tmp) / "before.json"
        env = dict(os.environ, PYTHONPATH=tmp, SEMREC_DATA_DIR=str(REPO / "data"))
        cmd = [sys.executable, __file__, "--child", str(out), "--child-users", str(lo), str(hi),
               "--threads", str(threads), "--child-widths", *map(str, widths)]
        subprocess.run(cmd, env=env, check=True)
        return {int(k): v for k, v in json.loads(out.read_text()).items()}


def child_main(args) -> None:
    """The before-revision's side of `before_child` (imports resolve to that revision's package)."""
    import semrec

    if not str(semrec.__file__).startswith(tempfile.gettempdir()):
        raise SystemExit(f"child: semrec imported from {semrec.__file__}, not the unpacked revision")
    lo, hi = args.child_users
    model, table, _ = tiger_setup(load_builtin("office-t"), 0, 256)
    batches = collated(model, table, lo, hi, 256)
    run_ours(model, batches[:1], 10)  # warm-up
    res = {}
    for k in args.child_widths:
        cpu, wall, items = timed(lambda: run_ours(model, batches, k))
        pre, _, _ = timed(lambda: run_prefill(model, batches))
        res[k] = {"cpu": cpu, "wall": wall, "prefill_cpu": pre, "items": items.tolist()}
    Path(args.child).write_text(json.dumps(res))


def trained_agreement(ds, steps: int, users: int, bsz: int, widths: list[int]) -> dict:
    """bf16 against float32 top-K on the benchmark TIGER after `steps` NTP steps (batch 256, lr 1e-3)."""
    from semrec.data.examples import training_examples
    from semrec.training import Trainer, TrainConfig

    model, table, batches = tiger_setup(ds, users, bsz)
    ex = training_examples(ds, model.max_history)
    rows = ex.subset(np.random.default_rng(0).permutation(len(ex))[: steps * 256])
    cfg = TrainConfig(loss="ntp", epochs=1, batch_size=256, lr=1e-3, warmup_steps=max(1, steps // 10),
                      progress=False, log_every=10_000, device="cpu")
    cpu, _, res = timed(lambda: Trainer(model, cfg, rows, protocol="T").fit())
    model.eval()
    return {"steps": res.steps, "train_cpu_s": cpu, "final_loss": res.history[-1].get("train_loss"),
            "agreement": [{"beams": k, **agreement(run_ours(model, batches, k, bf16=True), run_ours(model, batches, k))}
                          for k in widths]}


def tiger_section(args, ds) -> dict:
    """Before / after (float32, bf16 at each batch size) / generate(), alternating round by round."""
    widths, n_round = args.widths, args.round_users
    model, table, _ = tiger_setup(ds, 0, 256)
    allowed = prefix_table(model.codes, model.pad_id)
    src_len = collated(model, table, 0, 1, 1)[0].input_ids.shape[1]
    dtypes = ["fp32"] + (["bf16"] if cpu_bf16_native() else [])
    configs = [(dt, b) for dt in dtypes for b in args.tiger_batches]
    cpu = {key: {k: [0.0, 0.0] for k in widths} for key in [("before", 256), *configs, ("generate", 256)]}
    items = {key: {k: [] for k in widths} for key in cpu}
    pre = {key: 0.0 for key in [("before", 256), *configs]}
    warm = collated(model, table, 0, 2, 2)
    for k in widths:
        run_ours(model, warm, k, bf16=True)
        run_generate(model, warm, k, allowed)
    for r in range(args.rounds):
        lo, hi = r * n_round, (r + 1) * n_round
        print(f"[tiger round {r}] before (child, {args.before_rev[:8]})", flush=True)
        for k, got in before_child(args.before_rev, lo, hi, widths, args.threads).items():
            cpu[("before", 256)][k][0] += got["cpu"]
            cpu[("before", 256)][k][1] += got["wall"]
            pre[("before", 256)] += got["prefill_cpu"] / len(widths)
            items[("before", 256)][k].append(torch.tensor(got["items"]))
        for dt, b in configs:
            batches = collated(model, table, lo, hi, b)
            for k in widths:
                c, w, out = timed(lambda: run_ours(model, batches, k, bf16=dt == "bf16"))
                cpu[(dt, b)][k][0] += c
                cpu[(dt, b)][k][1] += w
                items[(dt, b)][k].append(out)
            pre[(dt, b)] += timed(lambda: run_prefill(model, batches, bf16=dt == "bf16"))[0]
            print(f"[tiger round {r}] {dt} batch {b}: " + ", ".join(
                f"{k} beams {n_round * (r + 1) / cpu[(dt, b)][k][0]:.1f} users/CPU s" for k in widths), flush=True)
        batches = collated(model, table, lo, hi, 256)
        for k in widths:
            c, w, out = timed(lambda: run_generate(model, batches, k, allowed))
            cpu[("generate", 256)][k][0] += c
            cpu[("generate", 256)][k][1] += w
            items[("generate", 256)][k].append(out)
    users = n_round * args.rounds
    rates = {dt: max(matmul_rate(model, src_len, b, max(widths), torch.float32 if dt == "fp32" else torch.bfloat16)
                     for b in args.tiger_batches) for dt in dtypes}
    best = {dt: min(args.tiger_batches, key=lambda b: sum(cpu[(dt, b)][k][0] for k in widths)) for dt in dtypes}
    rows = [tiger_row(key, k, users, cpu, items, pre, tiger_flops(model, src_len, k), rates, best)
            for key in cpu for k in widths]
    return {"source_tokens": src_len, "matmul_flops_per_s": rates, "best_batch": best, "rows": rows,
            "model_config": {k: getattr(model.config, k) for k in ("num_layers", "num_decoder_layers", "d_model",
                                                                    "num_heads", "d_kv", "d_ff")},
            "vocab_size": model.vocab_size}


def tiger_row(key, k, users, cpu, items, pre, flops, rates, best) -> dict:
    """One contender x beam width of `tiger_section`: users/s, against before and generate(), the bound."""
    name, bsz = key
    dt = "bf16" if name == "bf16" else "fp32"
    ups = users / cpu[key][k][0]
    got = torch.cat(items[key][k])
    row = {"contender": name, "dtype": dt, "batch": bsz, "beams": k, "users": users, "users_per_s": ups,
           "users_per_wall_s": users / cpu[key][k][1],
           "vs_generate": ups * cpu[("generate", 256)][k][0] / users,
           "vs_before": ups * cpu[("before", 256)][k][0] / users,
           "best_batch": best.get(name) == bsz,
           "agreement_with_before": agreement(got, torch.cat(items[("before", 256)][k])),
           "agreement_with_generate": agreement(got, torch.cat(items[("generate", 256)][k]))}
    if key in pre:  # ours: the source pass's share and the FLOP bound
        bound = rates[dt] / flops["total"]
        row.update(source_pass_share=pre[key] / cpu[key][k][0], flops_per_user=flops, bound_users_per_s=bound,
                   share_of_bound=ups / bound)
    return row


# ------------------------------------------------------------------------------------ decoder-only, LLM
def versus_generate(name, model, test, bsz, n_ours_users, n_base_users, widths) -> list[dict]:
    """Ours (float32) against generate() batch by batch, the contenders alternating."""
    model.eval()
    allowed = prefix_table(model.codes, model.pad_id)
    table = ExampleTable.from_examples(test, model.max_history)
    batches = collated(model, table, 0, max(n_ours_users, n_base_users), bsz)
    n_base, n_ours = -(-n_base_users // bsz), -(-n_ours_users // bsz)
    rows = []
    for k in widths:
        warm = collated(model, table, 0, 2, 2)
        run_ours(model, warm, k)  # warm-up
        run_generate(model, warm, k, allowed)
        t = {key: [0.0, 0.0] for key in ("ours", "base", "pre")}
        ours, base = [], []
        for i, bt in enumerate(batches[:max(n_ours, n_base)]):
            jobs = []
            if i < n_ours:
                jobs += [("ours", lambda: run_ours(model, [bt], k), ours),
                         ("pre", lambda: run_prefill(model, [bt]), None)]
            if i < n_base:
                jobs.append(("base", lambda: run_generate(model, [bt], k, allowed), base))
            for key, fn, sink in jobs:
                cpu, wall, out = timed(fn)
                t[key][0] += cpu
                t[key][1] += wall
                if sink is not None:
                    sink.append(out)
        ours, base = torch.cat(ours), torch.cat(base)
        u_ours, u_base = sum(len(b) for b in batches[:n_ours]), sum(len(b) for b in batches[:n_base])
        row = {"model": name, "beams": k, "batch": bsz, "users_ours": u_ours, "users_generate": u_base,
               "ours_users_per_s": u_ours / t["ours"][0], "generate_users_per_s": u_base / t["base"][0],
               "speedup": (u_ours / t["ours"][0]) / (u_base / t["base"][0]),
               "speedup_wall": (u_ours / t["ours"][1]) / (u_base / t["base"][1]),
               "same_top_k_share": agreement(ours[:u_base], base)["same_lists"],
               "source_pass_share_of_ours": t["pre"][0] / t["ours"][0],
               "speedup_bound": (u_ours / t["pre"][0]) / (u_base / t["base"][0])}
        rows.append(row)
        print(f"{name:8s} beams {k:2d}: ours {row['ours_users_per_s']:8.2f} users/CPU s, generate "
              f"{row['generate_users_per_s']:7.2f} users/CPU s, x{row['speedup']:.1f}", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------- report
def markdown(meta: dict, args) -> str:
    tg = meta.get("tiger")
    lines = ["# Trie-constrained beam search: users/s against generate() and against the FLOP bound", "",
             f"CPU, {args.threads} torch thread(s); {meta['dataset']}; codes: {meta['codes']}; randomly initialised "
             "models (TIGER T5 4+4 layers d_model 128; decoder-only Llama-style 4 layers d_model 128). "
             f"Commit `{meta['commit']}`, {meta['machine']}; native CPU bf16: {meta['cpu_bf16_native']}. "
             f"Produced by `{meta['command']}`.", "",
             "Users per CPU second of the benchmark process (1 thread: the compute each contender needs, which other "
             "jobs on the machine do not change); contenders alternate (TIGER: round by round; the others: batch by "
             "batch), so a change in machine load hits them alike.", ""]
    if tg:
        lines += tiger_markdown(tg)
    if meta["rows"]:
        lines += ["## Decoder-only and title LLM: ours (float32) against generate()", "",
                  f"{args.batch} users per call; {args.ours_users} users decoded by ours, {args.baseline_users} by "
                  "generate()." + (
                      f" `llm`: SmolLM2-135M-Instruct (offline backbone) + freshly initialised LoRA, float32, decoding "
                      f"the catalogue titles of toys-t (titles + EOS in the trie) from prompts listing 10 history "
                      f"titles; {args.llm_batch} users per call, {args.llm_users} users each." if args.llm else ""), "",
                  "| model | beams | ours users / CPU s | generate() users / CPU s | speed-up | speed-up (wall) "
                  "| same top-K | source pass share of ours | bound (decoding free) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in meta["rows"]:
            lines.append(f"| {r['model']} | {r['beams']} | {r['ours_users_per_s']:.2f} | "
                         f"{r['generate_users_per_s']:.2f} | {r['speedup']:.1f}x | {r['speedup_wall']:.1f}x | "
                         f"{r['same_top_k_share']:.3f} | {r['source_pass_share_of_ours']:.0%} | "
                         f"{r['speedup_bound']:.1f}x |")
        lines += ["", "`source pass share`: the prompt prefill alone, which every contender must run, as a share of "
                  "our total. `bound`: the speed-up over generate() if everything after that pass were free. The "
                  "gain comes from the single-row first step, the prompt's keys/values shared by a user's beams "
                  "(`semrec/models/shared_prompt.py`) where generate() repeats them per beam and copies them at "
                  "every reorder, and no per-beam Python callback.", ""]
    lines.append(f"1-minute load average when the run ended: {meta['load_average_1m_at_end']:.1f} on "
                 f"{os.cpu_count()} cores (other jobs slow all contenders alike; the ratios are what is compared).")
    return "\n".join(lines) + "\n"


def find_row(rows: list[dict], contender: str, batch: int, beams: int) -> dict:
    return next(r for r in rows if (r["contender"], r["batch"], r["beams"]) == (contender, batch, beams))


def tiger_markdown(tg: dict) -> list[str]:
    rows, rates, best = tg["rows"], tg["matmul_flops_per_s"], tg["best_batch"]
    pick = [r for r in rows if r["contender"] in ("before", "generate") or r["best_batch"] or r["batch"] == 256]
    lines = ["## TIGER: before and after, against generate() and the FLOP bound", "",
             f"{tg['users']} users per contender ({tg['rounds']} rounds); source {tg['source_tokens']} tokens; "
             f"vocabulary {tg['vocab_size']}. `before`: commit `{tg['before_rev'][:10]}` (transformers' T5 encoder "
             "module in the prefill, float32, 256 users per call: the configuration of the earlier results) in a "
             "child process. `fp32` / `bf16`: this tree in float32 / under bf16 autocast, at the batch size that was "
             "fastest for that dtype (the sweep below) and at 256, the evaluation's default. Achievable matmul rate (torch.mm over the model's own "
             "product shapes, one thread): " + ", ".join(f"{dt} {v / 1e9:.1f} GFLOP/s" for dt, v in rates.items())
             + ". FLOPs per user and the bound: the formula in the script's docstring.", "",
             "| contender | batch | beams | users / CPU s | vs before | vs generate() | MFLOP / user | bound users / s "
             "| share of bound | source pass share | top-K as before (lists / overlap) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in pick:
        fl = r.get("flops_per_user")
        ag = r["agreement_with_before"]
        lines.append(f"| {r['contender']} | {r['batch']} | {r['beams']} | {r['users_per_s']:.1f} | "
                     f"{r['vs_before']:.2f}x | {r['vs_generate']:.1f}x | "
                     + (f"{fl['total'] / 1e6:.0f} | {r['bound_users_per_s']:.0f} | {r['share_of_bound']:.0%} | "
                        f"{r['source_pass_share']:.0%} | " if fl else "- | - | - | - | ")
                     + f"{ag['same_lists']:.3f} / {ag['overlap']:.3f} |")
    widths = sorted({r["beams"] for r in rows})
    lines += ["", "Batch sweep (users / CPU s of ours; `*` = the fastest, used above):", "",
              "| dtype | batch | " + " | ".join(f"beams {k}" for k in widths) + " |",
              "|---|---|" + "---|" * len(widths)]
    for dt in best:
        for b in sorted({r["batch"] for r in rows if r["contender"] == dt}):
            ups = [find_row(rows, dt, b, k)["users_per_s"] for k in widths]
            lines.append(f"| {dt} | {b}{'*' if best[dt] == b else ''} | " + " | ".join(f"{u:.1f}" for u in ups) + " |")
    lines.append("")
    for k in widths:
        fl = next(r["flops_per_user"] for r in rows if r.get("flops_per_user") and r["beams"] == k)
        lines.append(f"FLOPs per user at {k} beams: encoder {fl['encoder'] / 1e6:.0f}M, cross-attention keys/values "
                     f"{fl['cross'] / 1e6:.0f}M, decoding steps {fl['decode'] / 1e6:.0f}M.")
    at256 = ", ".join(f"{dt} {k} beams {find_row(rows, dt, 256, k)['users_per_s'] / find_row(rows, dt, best[dt], k)['users_per_s']:.0%}"
                      for dt in best for k in widths)
    lines += ["", f"256 users per call against the fastest batch: {at256}."]
    tr = tg.get("trained")
    if tr:
        lines += ["", f"bf16 against float32 top-K, same users: the random model above and the same TIGER after "
                  f"{tr['steps']} NTP training steps (batch 256, {tr['train_cpu_s']:.0f} CPU s, final train loss "
                  f"{tr['final_loss']:.2f}):", "",
                  "| model | beams | identical lists | same top-1 | top-K overlap |", "|---|---|---|---|---|"]
        for r in rows:
            if r["contender"] == "bf16" and r["best_batch"]:
                ag = r["agreement_with_before"]
                lines.append(f"| random init | {r['beams']} | {ag['same_lists']:.3f} | {ag['same_top1']:.3f} | "
                             f"{ag['overlap']:.3f} |")
        for ag in tr["agreement"]:
            lines.append(f"| trained | {ag['beams']} | {ag['same_lists']:.3f} | {ag['same_top1']:.3f} | "
                         f"{ag['overlap']:.3f} |")
        lines += ["", "bf16 is therefore an option (`beam_search(..., bf16=True)`, `evaluate(..., bf16=True)`, a recipe's "
                  "`eval: {bf16: true}`), not the default: its top-K is not float32's (near-ties, which a trained "
                  "model has many of, flip)." if min(ag["same_top1"] for ag in tr["agreement"]) < 0.99 else
                  "bf16's top-K is nearly float32's on the trained model."]
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256, help="users per decoding call (decoder-only, LLM)")
    ap.add_argument("--ours-users", type=int, default=512)
    ap.add_argument("--baseline-users", type=int, default=256)
    ap.add_argument("--widths", type=int, nargs="+", default=[10, 20], help="beam widths")
    ap.add_argument("--tiger-batches", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--rounds", type=int, default=2, help="TIGER: rounds of --round-users users per contender")
    ap.add_argument("--round-users", type=int, default=256)
    ap.add_argument("--before-rev", default=BEFORE_REV, help="TIGER's before: the package at this commit")
    ap.add_argument("--train-steps", type=int, default=60, help="TIGER bf16 agreement after training (0: skip)")
    ap.add_argument("--llm", action="store_true",
                    help="also a title-token LLM (SmolLM2-135M-Instruct + LoRA, float32) on Toys titles")
    ap.add_argument("--llm-users", type=int, default=16)
    ap.add_argument("--llm-batch", type=int, default=16)
    ap.add_argument("--models", nargs="+", default=["tiger", "decoder"], choices=["tiger", "decoder"])
    ap.add_argument("--quick", action="store_true", help="a few users only (smoke run; results not written)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-users", type=int, nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--child-widths", type=int, nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        return child_main(args)
    if args.quick:
        args.ours_users, args.baseline_users, args.round_users, args.rounds = 32, 32, 32, 1
        args.tiger_batches, args.train_steps = [16, 256], min(args.train_steps, 2)

    ds = load_builtin("office-t")
    meta = {"benchmark": "decoding_speed", "dataset": "office-t (9,913 items; test-row histories)",
            "protocol": "T", "codes": "random, TIGER shape 3x256 + collision digit, seed 0", "seeds": [0],
            "threads": args.threads, "commit": git_commit(), "machine": describe_machine("cpu"),
            "cpu_bf16_native": cpu_bf16_native(),
            "command": "python benchmarks/decoding_speed.py " + " ".join(sys.argv[1:]), "rows": []}
    if "tiger" in args.models:
        meta["tiger"] = {**tiger_section(args, ds), "before_rev": args.before_rev, "rounds": args.rounds,
                         "users": args.rounds * args.round_users}
        if args.train_steps and meta["tiger"]["best_batch"].get("bf16"):
            meta["tiger"]["trained"] = trained_agreement(ds, args.train_steps, args.rounds * args.round_users,
                                                         meta["tiger"]["best_batch"]["bf16"], args.widths)
    if "decoder" in args.models:
        model = build_model("decoder", tiger_shaped_codes(ds.num_items), CONFIGS["decoder"], seed=0)
        meta["rows"] += versus_generate("decoder", model, ds.test, args.batch, args.ours_users, args.baseline_users,
                                        args.widths)
    if args.llm:
        from semrec.itemtok.titles import title_tokenization_for_llm
        from semrec.llm_assets import resolve_backbone

        toys = load_builtin("toys-t")
        title_tok = title_tokenization_for_llm(toys, resolve_backbone(None, log=print))
        llm = build_model("llm", title_tok, {"dtype": "float32", "domain": "toys"}, seed=0)
        n = 2 if args.quick else args.llm_users
        meta["rows"] += versus_generate("llm", llm, toys.test, args.llm_batch, n, n, [10])
    meta["load_average_1m_at_end"] = os.getloadavg()[0]
    text = markdown(meta, args)
    print(text)
    if args.quick:
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "decoding_speed.json", meta)
    with atomic_file(RESULTS / "decoding_speed.md") as f:
        f.write(text)


if __name__ == "__main__":
    main()
