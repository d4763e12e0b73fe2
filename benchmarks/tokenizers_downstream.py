"""Semantic-ID schemes: intrinsic figures beside downstream TIGER / TIGER+TCA accuracy, one table.

Joins `tokenizers_compare.json` (written by benchmarks/tokenizers_compare.py: collisions, code usage,
reconstruction, CF-neighbour agreement of each scheme's IDs) with a recipe result that trains the same
model on each scheme (default `toys_tokenizers_tiger_cpu.json`, from recipes/toys/tokenizers_tiger_cpu.yaml)
on (dataset, scheme). Nothing is recomputed.

    python benchmarks/tokenizers_downstream.py [--result toys_tokenizers_tiger_cpu]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _ms(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{statistics.fmean(xs):.4f} ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"


def join(intrinsic: dict, result: dict) -> list[dict]:
    """One row per scheme of the result's dataset: intrinsic figures + per-loss test metrics over seeds."""
    ds = result["dataset"]
    by: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in result["rows"]:
        if r.get("tokenizer") and r.get("split", "test") == "test":
            loss = "tca" if str(r["loss"]).startswith("tca") else "ntp"
            for m in ("ndcg@10", "hr@10", "cc"):
                by[(r["tokenizer"], loss)][m].append(float(r[m]))
    rows = []
    for ir in intrinsic["rows"]:  # by scheme file stem, as results name tokenizers; files may share a quantizer
        if ir["dataset"] != ds or (ir["name"], "ntp") not in by:
            continue
        ntp, tca = by[(ir["name"], "ntp")], by.get((ir["name"], "tca"), {})
        rows.append({"scheme": ir["name"], "dataset": ds, "collision_rate_before": ir["collision_rate_before"],
                     "perplexity": ir["perplexity"], "recon_rel_mse": ir["recon_rel_mse"],
                     "cf_agree1": ir["cf_agree1"], "cf_lift1": ir["cf_lift1"], "ntp": dict(ntp), "tca": dict(tca)})
    return rows


def markdown(rows: list[dict], intrinsic: dict, result: dict, names: tuple[str, str]) -> str:
    lines = [f"# Semantic-ID schemes on {result['dataset']}: intrinsic figures and downstream accuracy", "",
             f"Intrinsic: `{names[0]}.json` (seed {intrinsic.get('seed')}, commit `{intrinsic.get('commit')}`). "
             f"Downstream: `{names[1]}.json` (recipe {result['recipe']}, seeds {result['seeds']}, commit "
             f"`{result['commit']}`, {result['machine']}); test split, mean ± std over seeds.", "",
             "| scheme | collisions before | perplexity / level | recon rel. MSE | CF-nb agree 1st (lift) | "
             "TIGER NDCG@10 | TIGER+TCA NDCG@10 | TIGER HR@10 | TIGER+TCA HR@10 | TIGER CC | TIGER+TCA CC |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        n, t = r["ntp"], r["tca"]
        lines.append(f"| {r['scheme']} | {r['collision_rate_before']:.3f} | "
                     f"{'/'.join(f'{p:.0f}' for p in r['perplexity'])} | {r['recon_rel_mse']:.3f} | "
                     f"{r['cf_agree1']:.3f} ({r['cf_lift1']:.1f}x) | {_ms(n['ndcg@10'])} | {_ms(t.get('ndcg@10', []))} | "
                     f"{_ms(n['hr@10'])} | {_ms(t.get('hr@10', []))} | {_ms(n['cc'])} | {_ms(t.get('cc', []))} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--intrinsic", default="tokenizers_compare")
    ap.add_argument("--result", default="toys_tokenizers_tiger_cpu")
    ap.add_argument("--out-name", default="tokenizers_downstream")
    args = ap.parse_args()
    paths = [RESULTS / f"{n}.json" for n in (args.intrinsic, args.result)]
    for p in paths:
        if not p.exists():
            raise SystemExit(f"error: {p.name} not found under benchmarks/results")
    intrinsic, result = (json.loads(p.read_text()) for p in paths)
    rows = join(intrinsic, result)
    if not rows:
        raise SystemExit(f"error: no scheme of {args.result} ({result['dataset']}) is in {args.intrinsic}")
    (RESULTS / f"{args.out_name}.json").write_text(json.dumps(
        {"benchmark": "tokenizers_downstream", "sources": [args.intrinsic, args.result], "rows": rows}, indent=1))
    md = markdown(rows, intrinsic, result, (args.intrinsic, args.result))
    cmd = f"python benchmarks/tokenizers_downstream.py --intrinsic {args.intrinsic} --result {args.result}"
    (RESULTS / f"{args.out_name}.md").write_text(md + f"\nProduced by `{cmd}`.\n")
    print(md)


if __name__ == "__main__":
    main()
