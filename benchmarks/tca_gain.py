"""Does TCA beat plain NTP at the same budget? One table over committed recipe results.

Reads recipe results (benchmarks/results/<name>.json, written by benchmarks/run_recipe.py), pairs every
model trained with NTP with its TCA twin (same architecture, same IDs, same budget), and reports the test
NDCG@10 / HR@10 / CC / coverage@10 of both (mean ± std over seeds), the per-seed gains and whether the mean
gain exceeds the larger of the two seed stds (the acceptance bar). MostPop (from the recipe's own reference
rows, else benchmarks/results/baselines.json) and the CF teachers of each dataset (SASRec from the recipes,
BERT4Rec from benchmarks/results/cf_teachers.json, seed 0) are listed beside them, and for protocol-P
datasets the published SASRec and TIGER rows.

    python benchmarks/tca_gain.py office_tiger_tca_cpu office_decoder_tca_cpu toys_tiger_tca_cpu ... \
        --out-name tca_gain_cpu

A TCA variant run on its own, beside a committed run whose NTP model it did not train again, is paired with
that run's NTP row by name (same data, model, IDs and loss apart from TCA; the seeds both have):

    python benchmarks/tca_gain.py --pair 'toys_x:TIGER+TCA history excluded=toys_tiger_tca_msl_long_cpu:TIGER'

Nothing is recomputed: the numbers are those of the results files named, which say how they were made.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from published import PUBLISHED_P

from semrec.pipeline.results import rows_of

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("ndcg@10", "hr@10", "cc", "coverage@10")


def mean_std(xs: list[float]) -> tuple[float, float]:
    """(mean, sample std) of `xs`; std 0 for one value."""
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def test_rows(result: dict) -> dict[str, dict]:
    """name -> seed -> ResultRow of a results file's test rows (a valid row of the same name and seed must not
    stand in for one)."""
    by_name: dict[str, dict] = defaultdict(dict)
    for r in rows_of(result, result.get("recipe", "results")):
        if r.split == "test":
            by_name[r.name][r.seed] = r
    return by_name


def pair_entry(dataset: str, recipe: str, base: str, base_rows: dict, tca: str, rows: dict) -> dict:
    """One NTP/TCA pair over the seeds both have (seed -> ResultRow each): per-seed test metrics of both, the
    gain summary and whether the mean NDCG@10 gain exceeds the larger seed std."""
    seeds = sorted(set(rows) & set(base_rows))
    entry = {"dataset": dataset, "recipe": recipe, "base": base, "tca": tca,
             "tokenizer": rows[seeds[0]].tokenizer, "seeds": seeds,
             "alpha": [rows[s].alpha for s in seeds],
             "alpha_chosen_on_valid": all("alpha" in (rows[s].selected_on_valid or {}) for s in seeds)}
    for m in METRICS:
        if any(m not in base_rows[s].metrics for s in seeds):  # results written before the diagnostics
            continue
        b = [float(base_rows[s].metrics[m]) for s in seeds]
        t = [float(rows[s].metrics[m]) for s in seeds]
        (bm, bs), (tm, ts) = mean_std(b), mean_std(t)
        entry[m] = {"base_mean": bm, "base_std": bs, "tca_mean": tm, "tca_std": ts, "gain": tm - bm,
                    "seed_gains": [y - x for x, y in zip(b, t)]}
    g = entry["ndcg@10"]
    # with one seed there is no std to beat: the bar cannot be judged
    entry["gain_exceeds_std"] = g["gain"] > max(g["base_std"], g["tca_std"]) if len(seeds) > 1 else None
    return entry


def pairs(result: dict) -> list[dict]:
    """NTP/TCA pairs of one recipe result: each TCA test row and its recorded `baseline` row."""
    by_name = test_rows(result)
    out = []
    for name, rows in by_name.items():
        base = next(iter(rows.values())).baseline
        if base in by_name:
            out.append(pair_entry(result["dataset"], result["recipe"], base, by_name[base], name, rows))
    return out


def cross_pair(tca_result: dict, tca: str, base_result: dict, base: str) -> dict:
    """A TCA row of one results file against an NTP row of another: a TCA variant run on its own beside a
    committed run whose NTP model it did not retrain. Both must be on the same data (the files' recorded
    fingerprint), model, IDs and loss apart from TCA, with seeds in common; the TCA row must record no other
    baseline. Raises ValueError naming what differs."""
    where = f"{tca_result['recipe']}:{tca} against {base_result['recipe']}:{base}"
    t_rows, b_rows = test_rows(tca_result).get(tca), test_rows(base_result).get(base)
    if not t_rows or not b_rows:
        missing = f"{tca_result['recipe']}:{tca}" if not t_rows else f"{base_result['recipe']}:{base}"
        raise ValueError(f"--pair {where}: no test rows named {missing}")
    t0, b0 = next(iter(t_rows.values())), next(iter(b_rows.values()))
    checks = {"dataset": (tca_result["dataset"], base_result["dataset"]),
              "data": (tca_result.get("data"), base_result.get("data")),
              "model": (t0.model, b0.model), "IDs": (t0.tokenizer, b0.tokenizer),
              "loss apart from TCA": (t0.loss.replace("tca", "ntp", 1), b0.loss)}
    for what, (x, y) in checks.items():
        if x != y:
            raise ValueError(f"--pair {where}: {what} differs ({x} vs {y})")
    if not t0.uses_tca or b0.uses_tca:
        raise ValueError(f"--pair {where}: the first row must use TCA and the second not")
    if t0.baseline not in (None, base):
        raise ValueError(f"--pair {where}: the TCA row records its own baseline {t0.baseline!r}")
    if not set(t_rows) & set(b_rows):
        raise ValueError(f"--pair {where}: no seed in common")
    entry = pair_entry(tca_result["dataset"], tca_result["recipe"], base, b_rows, tca, t_rows)
    entry["base_recipe"] = base_result["recipe"]
    return entry


def most_popular(results: list[dict]) -> list[dict]:
    """MostPop's test NDCG@10/HR@10 per dataset: the recipes' own reference rows, else baselines.json."""
    rows, found = [], set()
    for res in results:
        for r in rows_of(res, res["recipe"]):
            if r.model == "mostpop" and res["dataset"] not in found:
                found.add(res["dataset"])
                rows.append({"dataset": res["dataset"], "model": "MostPop", "seeds": [],
                             "ndcg@10": (r.metrics["ndcg@10"], 0.0), "hr@10": (r.metrics["hr@10"], 0.0),
                             "source": res.get("file", f"{res['recipe']}.json")})
    base = RESULTS / "baselines.json"
    if base.exists():
        for r in json.loads(base.read_text())["rows"]:
            wanted = {x["dataset"] for x in results} - found
            if r["model"] == "MostPop" and r["dataset"] in wanted:
                found.add(r["dataset"])
                rows.append({"dataset": r["dataset"], "model": "MostPop", "seeds": [],
                             "ndcg@10": (r["ndcg@10"], 0.0), "hr@10": (r["hr@10"], 0.0), "source": "baselines.json"})
    return rows


def teachers(results: list[dict]) -> list[dict]:
    """Test NDCG@10/HR@10 of MostPop and the teachers per dataset: SASRec from the recipes (mean ± std over
    their seeds), BERT4Rec from cf_teachers.json (seed 0) when present."""
    rows = most_popular(results)
    for ds in dict.fromkeys(r["dataset"] for r in results):
        by_label: dict[str, dict[int, dict]] = {}  # "SASRec" or "SASRec, history excluded" (how it was scored)
        for res in results:
            if res["dataset"] == ds:
                for r in rows_of(res, res["recipe"]):
                    if r.model == "sasrec":
                        by_label.setdefault(r.name, {})[r.seed] = r.metrics
        for label, vals in by_label.items():
            n, h = mean_std([v["ndcg@10"] for v in vals.values()]), mean_std([v["hr@10"] for v in vals.values()])
            rows.append({"dataset": ds, "model": label, "seeds": sorted(vals), "ndcg@10": n, "hr@10": h,
                         "source": "recipe runs"})
    cf = RESULTS / "cf_teachers.json"
    if cf.exists():
        for r in json.loads(cf.read_text())["rows"]:
            if r["model"] == "bert4rec" and r["split"] == "test" and r["dataset"] in {x["dataset"] for x in results}:
                rows.append({"dataset": r["dataset"], "model": "BERT4Rec", "seeds": [r["seed"]],
                             "ndcg@10": (r["ndcg@10"], 0.0), "hr@10": (r["hr@10"], 0.0),
                             "source": "cf_teachers.json"})
    for ds in dict.fromkeys(r["dataset"] for r in results):
        for model in ("sasrec", "tiger"):
            pub = PUBLISHED_P.get((model, ds))
            if pub:
                rows.append({"dataset": ds, "model": f"{'SASRec' if model == 'sasrec' else 'TIGER'} (published)",
                             "seeds": [], "ndcg@10": (pub["ndcg@10"], 0.0), "hr@10": (pub["recall@10"], 0.0),
                             "source": "TIGER, NeurIPS 2023, Table 1 (full-size, trained to convergence)"})
    return rows


def markdown(entries: list[dict], teacher_rows: list[dict], names: list[str]) -> str:
    def bar(e: dict) -> str:
        return {True: "yes", False: "**no**", None: "n/a (1 seed)"}[e["gain_exceeds_std"]]

    def pm(mean: float, std: float, seeds: list) -> str:
        """mean ± std, or the bare value when there is one seed or none."""
        return f"{mean:.4f}" if len(seeds) <= 1 else f"{mean:.4f} ± {std:.4f}"

    lines = ["# TCA against plain NTP at the same budget (test split, mean ± std over seeds)", "",
             "Results files: " + ", ".join(f"`{n}.json`" for n in names) + " (each records its commit, machine,"
             " seeds and recipe). A pair meets the bar when the mean NDCG@10 gain exceeds the larger seed std.", "",
             "| dataset | model | IDs | seeds | alpha (chosen on valid, or fixed) | NDCG@10 NTP | NDCG@10 TCA | gain | per-seed gains"
             " | gain > std | HR@10 NTP | HR@10 TCA | CC NTP | CC TCA | coverage@10 NTP | coverage@10 TCA |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        n, h, c = e["ndcg@10"], e["hr@10"], e["cc"]
        cov = e.get("coverage@10")

        def f(m: float, s: float) -> str:
            return pm(m, s, e["seeds"])

        covs = f"{f(cov['base_mean'], cov['base_std'])} | {f(cov['tca_mean'], cov['tca_std'])}" if cov else "- | -"

        # a TCA row named other than "<NTP row>+TCA" (several TCA variants of one NTP row) is named beside it
        model = e["base"] if e["tca"] == f"{e['base']}+TCA" else f"{e['base']} vs {e['tca']}"
        if "base_recipe" in e:  # a pair across results files
            model = f"{e['base']} (`{e['base_recipe']}`) vs {e['tca']} (`{e['recipe']}`)"
        lines.append(
            f"| {e['dataset']} | {model} | {e['tokenizer']} | {len(e['seeds'])} | "
            f"{', '.join(f'{a:g}' for a in e['alpha'])}{'' if e['alpha_chosen_on_valid'] else ' (fixed)'} | "
            f"{f(n['base_mean'], n['base_std'])} | "
            f"{f(n['tca_mean'], n['tca_std'])} | {n['gain']:+.4f} | "
            f"{', '.join(f'{g:+.4f}' for g in n['seed_gains'])} | {bar(e)} | "
            f"{f(h['base_mean'], h['base_std'])} | {f(h['tca_mean'], h['tca_std'])} | "
            f"{f(c['base_mean'], c['base_std'])} | {f(c['tca_mean'], c['tca_std'])} | {covs} |")
    lines += ["", "MostPop and the CF teachers on the same test rows, and for protocol P the published rows (HR@10 = Recall@10 there:"
              " one target per user):", "", "| dataset | model | seeds | NDCG@10 | HR@10 | source |",
              "|---|---|---|---|---|---|"]
    for t in teacher_rows:
        lines.append(f"| {t['dataset']} | {t['model']} | {len(t['seeds']) or '-'} | {pm(*t['ndcg@10'], t['seeds'])} | "
                     f"{pm(*t['hr@10'], t['seeds'])} | {t['source']} |")
    return "\n".join(lines) + "\n"


def write_report(names: list[str], out: Path) -> None:
    """`semrec report` over results files alone (no stage directories: tables and the alpha sweep)."""
    import shutil
    import tempfile

    from semrec.report import build_report

    with tempfile.TemporaryDirectory() as tmp:
        dirs = []
        for n in names:
            d = Path(tmp) / n
            d.mkdir()
            shutil.copyfile(RESULTS / f"{n}.json", d / "results.json")
            dirs.append(d)
        build_report(dirs, out)


def parse_pair(spec: str) -> tuple[str, str, str, str]:
    """'RESULT:TCA ROW=RESULT:NTP ROW' -> (tca result, tca row, ntp result, ntp row)."""
    sides = spec.split("=")
    parts = [side.split(":", 1) for side in sides]
    if len(sides) != 2 or any(len(x) != 2 or not all(x) for x in parts):
        raise ValueError(f"--pair {spec!r}: write RESULT:TCA ROW=RESULT:NTP ROW")
    (tr, tn), (br, bn) = parts
    return tr, tn, br, bn


def load_result(name: str) -> dict:
    p = RESULTS / f"{name}.json"
    if not p.exists():
        raise ValueError(f"{p.name} not found under benchmarks/results")
    return {**json.loads(p.read_text()), "file": p.name}  # a recipe run under another --name: its own file


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="results names under benchmarks/results (without .json)")
    ap.add_argument("--pair", action="append", default=[], metavar="RESULT:TCA ROW=RESULT:NTP ROW",
                    help="also pair a TCA row of one results file with an NTP row of another (a TCA variant "
                         "run on its own beside the committed run of its NTP model)")
    ap.add_argument("--out-name", default="tca_gain", help="results file stem (letters, digits, _ and -)")
    ap.add_argument("--report", action="store_true",
                    help="also a `semrec report` of the named results (tables, alpha-sweep plot) in "
                         "benchmarks/results/<out-name>_report/")
    args = ap.parse_args(argv)
    try:
        if not args.out_name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"--out-name {args.out_name!r}: use letters, digits, _ and - only")
        if not args.names and not args.pair:
            raise ValueError("name at least one results file or --pair")
        specs = [parse_pair(p) for p in args.pair]
        names = list(dict.fromkeys([*args.names, *(n for s in specs for n in (s[0], s[2]))]))
        loaded = {n: load_result(n) for n in names}
        entries = [e for n in args.names for e in pairs(loaded[n])]
        entries += [cross_pair(loaded[tr], tn, loaded[br], bn) for tr, tn, br, bn in specs]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = list(loaded.values())
    teacher_rows = teachers(results)
    (RESULTS / f"{args.out_name}.json").write_text(json.dumps(
        {"benchmark": "tca_gain", "sources": names, "pairs": entries, "teachers": teacher_rows}, indent=1))
    md = markdown(entries, teacher_rows, names)
    cmd = " ".join(["python benchmarks/tca_gain.py", *args.names, *(f"--pair {shlex.quote(p)}" for p in args.pair),
                    f"--out-name {args.out_name}"])
    if args.report:
        cmd += " --report"
        write_report(names, RESULTS / f"{args.out_name}_report")
    (RESULTS / f"{args.out_name}.md").write_text(md + f"\nProduced by `{cmd}`.\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
