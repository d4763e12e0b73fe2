"""How cost grows with the catalogue: time and peak memory at N = 10k, 100k and 1M items.

Measures (each case in a fresh process, 1 torch thread by default; peak memory = the process's peak RSS
(VmHWM, reset once the inputs exist) above its RSS at that moment):
  index_build  building the PrefixIndex: semantic IDs (4 levels: 3 skewed RQ-like levels of 256 codes and a
               collision digit, as in benchmarks/tca_throughput.py) at 10k / 100k / 1M items, and title tries
               of 100k / 1M synthetic titles (4..24 word pieces drawn Zipf-like from a 49,152-token
               vocabulary, then EOS);
  ct           the Collaborative Tokenizer (sparse, the training path) at B=256 semantic-ID targets, teacher
               logits N(0, 3^2) (the (B, N) logits are the input, allocated before the reset);
  beam_step    one step of the trie-constrained beam search for 256 users x 20 beams, averaged over the
               search's steps, with a stand-in model that returns fixed random logits (so the time is the
               search's own: masks, top-k, trie steps); semantic IDs (whole search) and title tries (the first
               3 steps);
  cf_eval      full-ranking evaluation (semrec.cf.evaluate.teacher_ranks) of a randomly initialised SASRec
               (d=64) over all N items for 512 users with 20-item histories.

Times are the process's CPU seconds (one thread: the work's own time, not inflated by other jobs on a
shared machine); wall seconds are stored next to them in the JSON.

Growth: the exponent k of time ~ N^k between successive sizes (log ratio of times over log ratio of sizes).

Run: nice -n 10 python benchmarks/scaling.py [--threads 1] [--quick] [--only ct,cf_eval]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import torch

from semrec.artifacts import atomic_file, write_json
from semrec.runtime import describe_machine, git_commit

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SIZES = {"semantic": [10_000, 100_000, 1_000_000], "title": [100_000, 1_000_000]}
TITLE_VOCAB = 49_152
BATCH, USERS, BEAMS, CF_USERS = 256, 256, 20, 512
LIMIT_GIB = 8.0
TITLE_STEPS = 3  # title searches are cut after this many tokens (the per-step cost is what is measured)


# ------------------------------------------------------------------ catalogues
def semantic_tokens(n: int) -> tuple[torch.Tensor, int, int]:
    from tca_throughput import semantic_case

    return semantic_case(n, seed=0)


def title_tokens(n: int, seed: int = 0) -> tuple[torch.Tensor, int, int]:
    """(n, 25) synthetic titles: 4..24 word pieces, Zipf-like over the vocabulary, then EOS; pad = V - 1."""
    g = torch.Generator().manual_seed(seed)
    eos, pad = TITLE_VOCAB - 2, TITLE_VOCAB - 1
    lengths = torch.randint(4, 25, (n,), generator=g)
    p = 1.0 / (torch.arange(TITLE_VOCAB - 2, dtype=torch.float64) + 10)
    words = torch.multinomial(p, n * 24, replacement=True, generator=g).view(n, 24)
    col = torch.arange(25)
    toks = torch.full((n, 25), pad, dtype=torch.long)
    toks[:, :24] = torch.where(col[:24] < lengths[:, None], words, pad)
    toks[torch.arange(n), lengths] = eos
    return toks, TITLE_VOCAB, pad


def catalogue(kind: str, n: int):
    return semantic_tokens(n) if kind == "semantic" else title_tokens(n)


# ------------------------------------------------------------------ measurement in a fresh process
def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> float:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak RSS (VmHWM) restarts from the current RSS
    return _status_mb("VmRSS")


@contextlib.contextmanager
def clock(res: dict, key: str = "seconds"):
    """res[key] = CPU seconds of this process inside the block (with 1 thread: the work's own time, robust to
    other jobs on a shared machine); res[key + '_wall'] = wall seconds."""
    c, w = time.process_time(), time.perf_counter()
    yield
    res[key], res[key + "_wall"] = time.process_time() - c, time.perf_counter() - w


class StandInModel:
    """The hooks beam_search drives, returning fixed random logits (B*K, V): the search's own cost only."""

    def __init__(self, tokens: torch.Tensor, pad: int, vocab: int, eos: int | None, users: int, beams: int):
        from semrec.trie import PrefixIndex

        self.codes, self.pad_id, self.eos_id, self.training = tokens, pad, eos, False
        self._index = PrefixIndex(tokens, pad, vocab)
        g = torch.Generator().manual_seed(0)
        self._first = torch.randn(users, vocab, generator=g)
        self._step = torch.randn(users * beams, vocab, generator=g)
        self.steps = 0

    def prefix_index(self):
        return self._index

    def eval(self):
        return self

    def prefill(self, batch):
        return self._first, {}

    def expand_state(self, state, beams):
        return state

    def step(self, state, tokens, parent):
        self.steps += 1
        return self._step, state


def probe(measure: str, kind: str, n: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    from semrec.tca import CollaborativeTokenizer
    from semrec.trie import PrefixIndex

    tokens, vocab, pad = catalogue(kind, n)
    res = {"measure": measure, "kind": kind, "num_items": n, "max_len": tokens.shape[1], "vocab_size": vocab}
    g = torch.Generator().manual_seed(1)
    if measure == "index_build":
        before = _reset_peak()
        with clock(res):
            index = PrefixIndex(tokens, pad, vocab)
        res["edges"] = index.num_edges
    elif measure == "ct":
        ct = CollaborativeTokenizer(PrefixIndex(tokens, pad, vocab))
        logits = torch.randn(BATCH, n, generator=g) * 3
        targets = tokens[torch.randint(0, n, (BATCH,), generator=g)]
        ct(logits[:4], targets[:4], sparse=True)  # warm-up
        before = _reset_peak()
        with clock(res):
            out = ct(logits, targets, sparse=True)
        sums = torch.zeros(BATCH * tokens.shape[1]).index_add_(0, out.rows(), out.values)
        real = (targets != pad).reshape(-1)
        res["rows_sum_to_one"] = bool(((sums[real] - 1).abs() < 1e-4).all())
        res["batch"] = BATCH
    elif measure == "beam_step":
        from semrec.decoding import beam_search

        eos = None if kind == "semantic" else TITLE_VOCAB - 2
        max_len = None if kind == "semantic" else TITLE_STEPS
        model = StandInModel(tokens, pad, vocab, eos, USERS, BEAMS)
        beam_search(model, None, num_beams=BEAMS, max_len=2)  # warm-up
        model.steps = 0
        before = _reset_peak()
        with clock(res, "search_s"):
            out = beam_search(model, None, num_beams=BEAMS, max_len=max_len)
        res.update(seconds=res["search_s"] / (model.steps + 1), steps=model.steps + 1, users=USERS,
                   beams=BEAMS, valid_items=bool((out.items[out.found] >= 0).all()))
    elif measure == "cf_eval":
        from semrec.cf import TEACHERS, SASRecConfig
        from semrec.cf.evaluate import teacher_ranks
        from semrec.data.dataset import Examples

        torch.manual_seed(0)
        teacher = TEACHERS["sasrec"](n, SASRecConfig(max_len=20)).eval()
        hists = torch.randint(0, n, (CF_USERS, 20), generator=g).tolist()
        ex = Examples.from_lists(list(range(CF_USERS)), hists, torch.randint(0, n, (CF_USERS,), generator=g).tolist())
        before = _reset_peak()
        with clock(res):
            ranks = teacher_ranks(teacher, ex)
        res["users"] = CF_USERS
        res["ranks_in_range"] = bool(((ranks >= 1) & (ranks <= n)).all())
    else:
        raise ValueError(measure)
    res["peak_increase_mib"] = _status_mb("VmHWM") - before
    res["peak_rss_mib"] = _status_mb("VmHWM")
    return res


def run_probe(measure: str, kind: str, n: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--probe", f"{measure}:{kind}:{n}", "--threads", str(threads)]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if p.returncode != 0:
        return {"measure": measure, "kind": kind, "num_items": n, "error": p.stderr.strip().splitlines()[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ report
def growth(rows: list[dict]) -> list[dict]:
    """Exponent k of time ~ N^k between successive sizes of each (measure, kind)."""
    out = []
    for a, b in zip(rows, rows[1:]):
        if "seconds" in a and "seconds" in b and a["measure"] == b["measure"] and a["kind"] == b["kind"]:
            k = math.log(b["seconds"] / a["seconds"]) / math.log(b["num_items"] / a["num_items"])
            out.append({"measure": a["measure"], "kind": a["kind"], "from": a["num_items"], "to": b["num_items"],
                        "time_ratio": b["seconds"] / a["seconds"], "exponent": k,
                        "memory_ratio": b["peak_increase_mib"] / max(a["peak_increase_mib"], 1e-9)})
    return out


def write_markdown(res: dict, path: Path) -> None:
    lines = ["# Cost against catalogue size", "",
             f"Machine: {res['machine']}; commit `{res['commit']}`; seeds 0/1 (catalogues / inputs); "
             f"{res['threads']} torch thread(s); each case in a fresh process.", "",
             f"Produced by `{res['command']}`.", "",
             "| measure | catalogue | N | CPU seconds | peak increase (MiB) | peak RSS (MiB) | notes |",
             "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        if "error" in r:
            lines.append(f"| {r['measure']} | {r['kind']} | {r['num_items']:,} | error | | | {r['error']} |")
            continue
        notes = {"index_build": lambda: f"{r['edges']:,} edges",
                 "ct": lambda: f"B={r['batch']}, rows sum to 1: {r['rows_sum_to_one']}",
                 "beam_step": lambda: f"{r['users']} users x {r['beams']} beams, {r['steps']} steps, "
                                      f"search {r['search_s']:.3f} s",
                 "cf_eval": lambda: f"{r['users']} users, ranks valid: {r['ranks_in_range']}"}[r["measure"]]()
        lines.append(f"| {r['measure']} | {r['kind']} | {r['num_items']:,} | {r['seconds']:.4f} | "
                     f"{r['peak_increase_mib']:.0f} | {r['peak_rss_mib']:.0f} | {notes} |")
    lines += ["", "Growth (time ~ N^k between successive sizes):", "",
              "| measure | catalogue | N | time ratio | k | memory ratio |", "|---|---|---|---|---|---|"]
    for gr in res["growth"]:
        lines.append(f"| {gr['measure']} | {gr['kind']} | {gr['from']:,} -> {gr['to']:,} | {gr['time_ratio']:.2f} | "
                     f"{gr['exponent']:.2f} | {gr['memory_ratio']:.2f} |")
    worst = max((r.get("peak_rss_mib", 0) for r in res["rows"]), default=0)
    lines += ["", f"Largest peak RSS of any case: {worst / 1024:.2f} GiB (limit {LIMIT_GIB:.0f} GiB at 1M items).", ""]
    if res["replaced_rows"]:
        lines += ["Earlier measurements of re-measured cases (before the change of the commit named):", "",
                  "| measure | catalogue | N | CPU seconds | peak increase (MiB) | commit |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['measure']} | {r['kind']} | {r['num_items']:,} | {r['seconds']:.4f} | "
                  f"{r['peak_increase_mib']:.0f} | `{r['commit'][:10]}` |" for r in res["replaced_rows"]] + [""]
    if res.get("notes"):
        lines += res["notes"] + [""]
    with atomic_file(path) as f:
        f.write("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="10k and 100k only")
    p.add_argument("--only", default="", help="comma-separated measures")
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(RESULTS / "scaling"))
    args = p.parse_args()
    if args.probe:
        measure, kind, n = args.probe.split(":")
        print(json.dumps(probe(measure, kind, int(n), args.threads)))
        return
    torch.set_num_threads(args.threads)
    plan = [("index_build", "semantic"), ("index_build", "title"), ("ct", "semantic"), ("beam_step", "semantic"),
            ("cf_eval", "semantic"), ("beam_step", "title")]
    only = set(args.only.split(",")) if args.only else None
    out = Path(args.out)
    previous = json.loads(out.with_suffix(".json").read_text()) if only and out.with_suffix(".json").is_file() else None
    rows = []
    for measure, kind in plan:
        if only and measure not in only:
            continue
        for n in SIZES[kind]:
            if args.quick and n > 100_000:
                continue
            r = run_probe(measure, kind, n, args.threads)
            print(json.dumps(r), file=sys.stderr, flush=True)
            rows.append(r)
            save(args, out, rows, previous)  # after every case: a run cut short keeps what it measured
    print(out.with_suffix(".md").read_text())


def save(args, out: Path, rows: list[dict], previous: dict | None) -> None:
    res = {"benchmark": "scaling", "machine": describe_machine("cpu"), "commit": git_commit(),
           "threads": args.threads, "seeds": {"catalogue": 0, "inputs": 1},
           "command": "python benchmarks/scaling.py " + " ".join(sys.argv[1:]), "rows": rows, "replaced_rows": []}
    if previous is not None:  # re-measured cases replace theirs in the stored table
        old = copy.deepcopy(previous)
        key = lambda r: (r["measure"], r["kind"], r["num_items"])  # noqa: E731
        new = {key(r): r for r in rows}
        for r in old["rows"]:
            r.setdefault("commit", old["commit"])
        res["replaced_rows"] = old.get("replaced_rows", []) + [r for r in old["rows"] if key(r) in new]
        res["rows"] = [new.pop(key(r), r) for r in old["rows"]] + list(new.values())
        res["command"] = old["command"] + "; then " + res["command"]
    for r in res["rows"]:
        r.setdefault("commit", res["commit"])
    res["growth"] = growth(res["rows"])
    write_json(out.with_suffix(".json"), res)
    write_markdown(res, out.with_suffix(".md"))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    main()
