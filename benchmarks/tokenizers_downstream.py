"""Semantic-ID schemes: intrinsic figures beside downstream accuracy (TIGER, or another model family), per
dataset, and whether any intrinsic figure predicts the downstream ranking of the schemes.

Joins `tokenizers_compare.json` (written by benchmarks/tokenizers_compare.py: collisions, code usage and
perplexity per level, CF-neighbour agreement, reconstruction error of each scheme's IDs) with recipe results
that train the same TIGER on each scheme's IDs (default the three `<dataset>_tokenizers_downstream_cpu.json`,
from recipes/<dataset>/tokenizers_downstream_cpu.yaml) on (dataset, scheme file stem). Only the NTP test rows
count as a scheme's downstream figure, of one model family (`--model`, default tiger: the results' `model`
field); a scheme's TCA pair (benchmarks/tca_gain.py), where the result has
one, sits beside it. Per dataset: a table with the dataset's MostPop row and the winning scheme's margin;
across schemes: the Spearman rank correlation of each intrinsic figure with test NDCG@10 within each dataset
and pooled over datasets (NDCG@10 divided by the dataset's RQ-KMeans row), with permutation p-values; and,
where a result trains other model families on the same schemes, whether they rank the schemes alike. Nothing is
recomputed.

    python benchmarks/tokenizers_downstream.py [--result office_tokenizers_downstream_cpu ...] [--model decoder]

Writes benchmarks/results/tokenizers_downstream.{json,md,png} (--out-name to change the stem).
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
from pathlib import Path

import numpy as np
from tca_gain import most_popular, pairs

from semrec.artifacts import atomic_file, read_json, write_json
from semrec.errors import SemrecError
from semrec.pipeline.results import rows_of
from semrec.report import save_png

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_RESULTS = [f"{d}_tokenizers_downstream_cpu" for d in ("office", "toys", "sports")]
METRICS = ("ndcg@10", "hr@10", "coverage@10")
LABELS = {"tiger": "TIGER", "decoder": "decoder-only"}  # how a model family is named in titles
REFERENCE = "rqkmeans"  # each dataset's NDCG@10 is divided by this scheme's: the pooled points are comparable
N_PERMUTATIONS = 10_000
ALPHA = 0.05
# the scalar intrinsic figures correlated with downstream NDCG@10 (key -> label)
FIGURES = {"collision_rate_before": "collision rate before resolution",
           "code_usage": "codes used / codebook size (mean over levels)",
           "perplexity": "code perplexity (mean over levels)",
           "cf_agree1": "CF-neighbour agreement, 1st code",
           "cf_lift1": "CF-neighbour agreement over chance, 1st code",
           "recon_rel_mse": "reconstruction rel. MSE"}


# ------------------------------------------------------------------------------------------------ join
def figures(ir: dict) -> dict[str, float]:
    """The scalar intrinsic figures of one tokenizers_compare row (NaN where the row lacks one)."""
    usage = [u["codes_used"] / u["codebook_size"] for u in ir.get("usage", []) if u.get("codebook_size")]
    vals = {"collision_rate_before": ir.get("collision_rate_before"),
            "code_usage": statistics.fmean(usage) if usage else None,
            "perplexity": statistics.fmean(ir["perplexity"]) if ir.get("perplexity") else None,
            "cf_agree1": ir.get("cf_agree1"), "cf_lift1": ir.get("cf_lift1"), "recon_rel_mse": ir.get("recon_rel_mse")}
    return {k: math.nan if v is None else float(v) for k, v in vals.items()}


def is_scheme_ntp_test_row(r) -> bool:
    """A generative model's NTP test row on some scheme ("ntp+msl" rows are NTP rows: the same labels, the loss
    over the trie-allowed tokens)."""
    return r.split == "test" and r.loss.split("+")[0] == "ntp" and bool(r.tokenizer) and not r.is_reference


def downstream(result: dict, where: str, model: str = "tiger") -> dict[str, dict]:
    """Per scheme file stem: the model name, seeds and per-seed test metrics of the NTP test rows of model
    family `model` in one result."""
    by: dict[str, dict] = {}
    for r in rows_of(result, where):
        if not is_scheme_ntp_test_row(r) or r.model != model:
            continue
        e = by.setdefault(r.tokenizer, {"model": r.name, "seeds": [], **{m: [] for m in METRICS}})
        if e["model"] != r.name:
            raise SemrecError(f"{where}: scheme {r.tokenizer} has NTP test rows of two models ({e['model']!r}, "
                              f"{r.name!r}); give one result per model")
        e["seeds"].append(r.seed)
        for m in METRICS:
            if m in r.metrics:
                e[m].append(float(r.metrics[m]))
    return by


def summary(xs: list[float]) -> dict | None:
    """Mean, std over seeds (None with one seed) and the number of seeds; None when there are no values."""
    if not xs:
        return None
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else None, "n": len(xs)}


def tca_pairs(result: dict, down: dict[str, dict], where: str) -> dict[str, dict]:
    """Per scheme file stem: the TCA pair (tca_gain.pairs) whose baseline is the scheme's NTP model; at most one."""
    out: dict[str, dict] = {}
    for p in pairs(result):
        if p["tokenizer"] not in down or p["base"] != down[p["tokenizer"]]["model"]:
            continue
        if p["tokenizer"] in out:
            raise SemrecError(f"{where}: scheme {p['tokenizer']} has two TCA models ({out[p['tokenizer']]['tca']!r}, "
                              f"{p['tca']!r}); give one result per model")
        out[p["tokenizer"]] = p
    return out


def join(intrinsic: dict, result: dict, where: str, model: str = "tiger") -> list[dict]:
    """One row per scheme of the result's dataset found in both files, in the intrinsic file's order:
    intrinsic figures, per-level usage, downstream test metrics of model family `model` over seeds, NDCG@10
    relative to REFERENCE, and the scheme's TCA pair where the result has one."""
    ds, down = result["dataset"], downstream(result, where, model)
    tca = tca_pairs(result, down, where)
    rows = []
    for ir in intrinsic["rows"]:  # by scheme file stem, as results name tokenizers
        if ir["dataset"] != ds or ir["name"] not in down:
            continue
        d = down[ir["name"]]
        rows.append({"dataset": ds, "scheme": ir["name"], "model": d["model"], "seeds": sorted(d["seeds"]),
                     "codes_used": ir.get("codes_used", []), "perplexity_levels": ir.get("perplexity", []),
                     "figures": figures(ir), **{m: summary(d[m]) for m in METRICS},
                     "tca": tca.get(ir["name"])})
    ref = next((r["ndcg@10"]["mean"] for r in rows if r["scheme"] == REFERENCE), None)
    for r in rows:
        r["ndcg@10_rel"] = r["ndcg@10"]["mean"] / ref if ref else None
        r["ndcg@10_rel_std"] = r["ndcg@10"]["std"] / ref if ref and r["ndcg@10"]["std"] is not None else None
    return rows


def winner(rows: list[dict]) -> dict:
    """The scheme with the highest mean test NDCG@10, its margin over the runner-up and whether the margin
    exceeds the larger seed std of the two (None when either has one seed)."""
    ranked = sorted(rows, key=lambda r: r["ndcg@10"]["mean"], reverse=True)
    best = ranked[0]
    out = {"scheme": best["scheme"], "ndcg@10": best["ndcg@10"], "runner_up": None}
    if len(ranked) == 1:
        return out
    second = ranked[1]
    gain = best["ndcg@10"]["mean"] - second["ndcg@10"]["mean"]
    stds = [best["ndcg@10"]["std"], second["ndcg@10"]["std"]]
    std = max(stds) if None not in stds else None
    return {**out, "runner_up": second["scheme"], "runner_up_ndcg@10": second["ndcg@10"], "gain": gain,
            "gain_rel": gain / second["ndcg@10"]["mean"] if second["ndcg@10"]["mean"] else None,
            "larger_std": std, "gain_exceeds_std": gain > std if std is not None else None}


def families(result: dict, where: str) -> set[str]:
    """The model families (the rows' `model` field) with NTP test rows on some scheme in one result."""
    return {r.model for r in rows_of(result, where) if is_scheme_ntp_test_row(r)}


def agreement(results: dict[str, dict], rows: list[dict], model: str) -> list[dict]:
    """Per other model family with NTP test rows on at least 3 of `rows`' schemes in `results` (name -> result,
    one dataset): Spearman's rho between the two families' mean test NDCG@10 over their common schemes (do they
    rank the schemes alike?) and whether they pick the same winner."""
    mine = {r["scheme"]: r["ndcg@10"]["mean"] for r in rows}
    out = []
    for name, result in results.items():
        for other in sorted(families(result, f"{name}.json") - {model}):
            theirs = {s: statistics.fmean(d["ndcg@10"]) for s, d in downstream(result, f"{name}.json", other).items()
                      if d["ndcg@10"]}
            common = [s for s in mine if s in theirs]
            if len(common) < 3:
                continue
            x, y = [mine[s] for s in common], [theirs[s] for s in common]
            best = max(common, key=theirs.get)
            out.append({"model": other, "source": name, "schemes": common, "rho": spearman(x, y),
                        "p": permutation_p(np.array(x), np.array(y), np.zeros(len(common))),
                        "same_winner": max(common, key=mine.get) == best, "winner": best})
    return out


# ---------------------------------------------------------------------------------------- correlation
def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of `x`, tied values sharing the average of their ranks."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0)[inverse.reshape(-1)]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (Pearson's r of the average ranks); NaN when either side is constant or n < 3."""
    if len(x) < 3:
        return math.nan
    rx, ry = ranks(np.asarray(x, float)), ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def permutation_p(x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, n: int = N_PERMUTATIONS,
                  seed: int = 0) -> float:
    """Two-sided Monte Carlo p of Spearman's rho under the null that `y` is exchangeable within each group
    (a dataset): (1 + #{|rho_perm| >= |rho|}) / (1 + n)."""
    rho = spearman(x, y)
    if math.isnan(rho):
        return math.nan
    rx, ry = ranks(np.asarray(x, float)), ranks(np.asarray(y, float))
    rng = np.random.default_rng(seed)
    perm = np.tile(np.arange(len(y)), (n, 1))
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        perm[:, idx] = rng.permuted(np.tile(idx, (n, 1)), axis=1)
    zx = (rx - rx.mean()) / rx.std()
    zy = (ry[perm] - ry.mean()) / ry.std()  # a permutation keeps the mean and std of the ranks
    rhos = zy @ zx / len(x)
    return float((1 + np.sum(np.abs(rhos) >= abs(rho) - 1e-12)) / (1 + n))


def correlate(xs: list[float], ys: list[float], groups: list[str]) -> dict:
    """rho, number of points and permutation p over the points where both values are finite."""
    x, y, g = np.array(xs, float), np.array(ys, float), np.array(groups)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y, g = x[keep], y[keep], g[keep]
    return {"rho": spearman(x, y), "n": int(keep.sum()), "p": permutation_p(x, y, g)}


def correlations(tables: dict[str, list[dict]]) -> list[dict]:
    """Per intrinsic figure: rho with test NDCG@10 within each dataset, and pooled over the datasets on
    NDCG@10 relative to REFERENCE (permutations within datasets)."""
    pooled_rows = [r for rows in tables.values() for r in rows if r["ndcg@10_rel"] is not None]
    out = []
    for key in FIGURES:
        per = {ds: correlate([r["figures"][key] for r in rows], [r["ndcg@10"]["mean"] for r in rows], [ds] * len(rows))
               for ds, rows in tables.items()}
        pooled = correlate([r["figures"][key] for r in pooled_rows], [r["ndcg@10_rel"] for r in pooled_rows],
                           [r["dataset"] for r in pooled_rows])
        out.append({"figure": key, "per_dataset": per, "pooled": pooled})
    return out


def strength(rho: float) -> str:
    """A word for |rho|: weak under 0.3, moderate under 0.7, strong from 0.7."""
    return "weak" if abs(rho) < 0.3 else "moderate" if abs(rho) < 0.7 else "strong"


def finding(corrs: list[dict], tables: dict[str, list[dict]]) -> list[str]:
    """The computed verdict: which intrinsic figure correlates with downstream NDCG@10, pooled and within
    datasets, and what the number of points allows."""
    bar = ALPHA / len(FIGURES)
    hits = [c for c in corrs if c["pooled"]["p"] < ALPHA]  # NaN compares False
    lines = []
    for c in sorted(hits, key=lambda c: c["pooled"]["p"]):
        p = c["pooled"]
        lines.append(f"Pooled: {FIGURES[c['figure']]} correlates {'positively' if p['rho'] > 0 else 'negatively'} "
                     f"({strength(p['rho'])}) with relative NDCG@10: rho {p['rho']:+.2f} over {p['n']} points, "
                     f"permutation p {p['p']:.4f}" + ("" if p["p"] < bar else f" (not below {bar:.4f}, the 5% bar "
                                                      f"after testing {len(FIGURES)} figures)") + ".")
    finite = [c for c in corrs if not math.isnan(c["pooled"]["p"])]
    if not hits and finite:
        top = min(finite, key=lambda c: c["pooled"]["p"])
        lines.append(f"Pooled: no intrinsic figure correlates with relative NDCG@10 at 5% (every permutation p >= "
                     f"{ALPHA}); the strongest is {FIGURES[top['figure']]}, rho {top['pooled']['rho']:+.2f} over "
                     f"{top['pooled']['n']} points, p {top['pooled']['p']:.4f}.")
    lines += [within_line(ds, len(rows), corrs) for ds, rows in tables.items()]
    one = [ds for ds, rows in tables.items() if any(len(r["seeds"]) == 1 for r in rows)]
    if one:
        lines.append(f"{', '.join(one)}: one seed per scheme, so NDCG@10 differences below the seed noise (not "
                     "measured in these results) can reorder the schemes, and with them every rho.")
    return lines


def critical_rho(n: int) -> float | None:
    """The smallest |rho| whose exact two-sided p (all n! orderings, no ties) is at most ALPHA; None when no
    ordering of n points gets there, or n is too large to enumerate (over 8)."""
    if n < 3 or n > 8:
        return None
    d2 = np.array([sum((i - j) ** 2 for i, j in enumerate(p)) for p in itertools.permutations(range(n))])
    rhos = np.round(np.abs(1 - 6 * d2 / (n * (n * n - 1))), 9)
    ok = [c for c in np.unique(rhos) if np.mean(rhos >= c) <= ALPHA]
    return float(min(ok)) if ok else None


def within_line(ds: str, n: int, corrs: list[dict]) -> str:
    """One sentence: what n schemes allow within dataset `ds`, and which figures reach it."""
    if n < 3:
        return f"{ds}: {n} scheme(s), too few for a rank correlation."
    c = critical_rho(n)
    if c is None:
        return f"{ds}: {n} schemes; no ordering of {n} points reaches two-sided p <= {ALPHA} (exact null)."
    hits = [x for x in corrs if abs(x["per_dataset"][ds]["rho"]) >= c - 1e-9]
    need = "1.0 (a perfect ordering)" if c == 1.0 else f"{c:.3f}"
    found = ", ".join(f"{FIGURES[x['figure']]} (rho {x['per_dataset'][ds]['rho']:+.2f})" for x in hits)
    return (f"{ds}: {n} schemes; with {n} points two-sided p <= {ALPHA} needs |rho| >= {need} (exact null, no ties): "
            + (f"reached by {found}." if hits else "no intrinsic figure reaches it."))


# -------------------------------------------------------------------------------------------- markdown
def pm(s: dict | None) -> str:
    """mean ± std, the bare mean with one seed, '-' when absent."""
    if s is None:
        return "-"
    return f"{s['mean']:.4f}" if s["std"] is None else f"{s['mean']:.4f} ± {s['std']:.4f}"


def num(v: float | None, spec: str = ".3f") -> str:
    """`v` formatted, '-' for None or NaN."""
    return "-" if v is None or math.isnan(v) else format(v, spec)


def winner_line(ds: str, w: dict) -> str:
    """One sentence: who wins on `ds`, by how much, and against what seed noise."""
    if w["runner_up"] is None:
        return f"{ds}: only {w['scheme']} was trained."
    rel = f" ({w['gain_rel']:+.1%})" if w["gain_rel"] is not None else ""
    if w["gain_exceeds_std"] is None:
        noise = "one seed per scheme (no seed std): the margin is not tested against seed noise"
    else:
        noise = (f"the larger seed std of the two is {w['larger_std']:.4f}: the margin "
                 f"{'exceeds' if w['gain_exceeds_std'] else 'does NOT exceed'} it")
    return (f"{ds}: **{w['scheme']}** wins with test NDCG@10 {pm(w['ndcg@10'])}, {w['gain']:+.4f}{rel} over "
            f"{w['runner_up']} ({pm(w['runner_up_ndcg@10'])}); {noise}.")


def tca_cell(pair: dict, metric: str = "ndcg@10") -> str:
    """The TCA side of a pair's `metric` as mean ± std ('-' when the pair lacks the metric)."""
    m = pair.get(metric)
    if m is None:
        return "-"
    return pm({"mean": m["tca_mean"], "std": m["tca_std"] if len(pair["seeds"]) > 1 else None})


def tca_line(ds: str, rows: list[dict]) -> str | None:
    """One sentence on the schemes trained with TCA too: the NDCG@10 gain against the larger seed std (the
    acceptance bar of benchmarks/tca_gain.py)."""
    parts = []
    for r in rows:
        t = r["tca"]
        if t is None:
            continue
        verdict = {True: "above", False: "NOT above", None: "one seed: not judged against"}[t["gain_exceeds_std"]]
        seeds = ", ".join(f"{g:+.4f}" for g in t["ndcg@10"]["seed_gains"])
        parts.append(f"{r['scheme']} {pm(r['ndcg@10'])} -> {tca_cell(t)} with TCA, gain {t['ndcg@10']['gain']:+.4f} "
                     f"(per seed {seeds}; {verdict} the larger seed std), coverage@10 {pm(r['coverage@10'])} -> "
                     f"{tca_cell(t, 'coverage@10')}")
    return f"{ds}, TCA: " + "; ".join(parts) + "." if parts else None


def agreement_line(ds: str, model: str, agree: list[dict]) -> str | None:
    """One sentence per dataset: how far the other model families rank the schemes as `model` does."""
    parts = [f"{LABELS.get(a['model'], a['model'])} (`{a['source']}.json`) Spearman rho {a['rho']:+.2f} over "
             f"{len(a['schemes'])} schemes (permutation p {a['p']:.3f}); "
             + ("the same winner" if a["same_winner"] else f"a different winner ({a['winner']})")
             for a in agree if not math.isnan(a["rho"])]
    return (f"{ds}, the same schemes under other model families (ranking agreement with "
            f"{LABELS.get(model, model)}): " + "; ".join(parts) + ".") if parts else None


def dataset_table(rows: list[dict], pop: dict | None) -> list[str]:
    """The Markdown table of one dataset: a row per scheme, then MostPop."""
    lines = [("| scheme | collision rate before | codes used / level | perplexity / level | CF-nb agree 1st (lift) "
              "| recon rel. MSE | seeds | NDCG@10 | HR@10 | coverage@10 | NDCG@10 / RQ-KMeans | NDCG@10 with TCA |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r["figures"]
        lines.append(f"| {r['scheme']} | {num(f['collision_rate_before'])} | {'/'.join(map(str, r['codes_used']))} | "
                     f"{'/'.join(f'{p:.0f}' for p in r['perplexity_levels'])} | {num(f['cf_agree1'])} "
                     f"({num(f['cf_lift1'], '.1f')}x) | {num(f['recon_rel_mse'])} | {len(r['seeds'])} | "
                     f"{pm(r['ndcg@10'])} | {pm(r['hr@10'])} | {pm(r['coverage@10'])} | {num(r['ndcg@10_rel'])} | "
                     f"{tca_cell(r['tca']) if r['tca'] else '-'} |")
    if pop is None:
        lines.append("| MostPop | | | | | | - | not in the result nor in baselines.json | - | - | - | - |")
    else:
        lines.append(f"| MostPop ({pop['source']}) | | | | | | - | {pop['ndcg@10'][0]:.4f} | {pop['hr@10'][0]:.4f} "
                     f"| - | - | - |")
    return lines


def rho_cell(c: dict) -> str:
    """rho (n, p) or '-' when undefined."""
    if math.isnan(c["rho"]):
        return "-"
    return f"{c['rho']:+.2f} (n {c['n']}, p {'< 0.001' if c['p'] < 0.001 else format(c['p'], '.3f')})"


def correlation_table(corrs: list[dict], datasets: list[str]) -> list[str]:
    """Spearman's rho of each intrinsic figure with test NDCG@10 per dataset and pooled."""
    lines = ["| intrinsic figure | " + " | ".join(datasets) + " | pooled (relative NDCG@10) |",
             "|---|" + "---|" * (len(datasets) + 1)]
    for c in corrs:
        cells = [rho_cell(c["per_dataset"][d]) for d in datasets] + [rho_cell(c["pooled"])]
        lines.append(f"| {FIGURES[c['figure']]} | " + " | ".join(cells) + " |")
    return lines


def markdown(report: dict, metas: dict[str, dict]) -> str:
    """The whole Markdown page: sources (`metas`: result name -> result), one table per dataset with its winner,
    the correlations, the finding."""
    label = LABELS.get(report["model"], report["model"])
    lines = [f"# Semantic-ID schemes: intrinsic figures and downstream {label} accuracy", "",
             (f"Intrinsic: `{report['intrinsic']}.json` (seed {report['intrinsic_seed']}). Downstream: the NTP rows of "
              f"{label} (model `{report['model']}`) in the recipe results below, test split, mean ± std over seeds "
              "(a bare number is one seed); the last column: the scheme's TCA twin (the TCA rows whose baseline is its "
              "NTP row), where the result has one."),
             ""]
    for ds, t in report["datasets"].items():
        m = metas[t["source"]]
        source = (f"Downstream: `{t['source']}.json` (recipe {m['recipe']}, seeds {m['seeds']}, commit "
                  f"`{m['commit']}`, {m['machine']}).")
        extra = [tca_line(ds, t["rows"]), agreement_line(ds, report["model"], t["agreement"])]
        lines += [f"## {ds}", "", source, "", *dataset_table(t["rows"], t["mostpop"]), "",
                  winner_line(ds, t["winner"]), *[x for x in extra if x], ""]
    method = (f"Spearman's rho (average ranks for ties) between each figure and test NDCG@10 across the schemes of "
              f"a dataset, and pooled over datasets with NDCG@10 divided by the dataset's {REFERENCE} row (the "
              f"intrinsic figures stay raw). p: two-sided, {N_PERMUTATIONS} Monte Carlo permutations of NDCG@10 "
              "among the schemes of each dataset (seed 0). Perplexity and code usage are means over the levels. "
              "Across so few schemes the figures move together, so a figure that correlates is not shown to be "
              "the cause.")
    lines += ["## Does an intrinsic figure predict the downstream ranking?", "", method, "",
              *correlation_table(report["correlations"], list(report["datasets"])), "",
              *[f"- {s}" for s in report["finding"]], ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ plot
def plot(tables: dict[str, list[dict]], corrs: list[dict], path: Path, label: str = "TIGER") -> Path:
    """One panel per intrinsic figure: x the figure, y NDCG@10 / the dataset's REFERENCE row (seed std as
    error bars), one colour and marker per dataset, scheme names on the points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols, rows_n = 3, math.ceil(len(FIGURES) / 3)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 4 * rows_n))
    for ax, c in zip(axes.flat, corrs):
        for i, (ds, rows) in enumerate(tables.items()):
            pts = [r for r in rows if r["ndcg@10_rel"] is not None and not math.isnan(r["figures"][c["figure"]])]
            x = [r["figures"][c["figure"]] for r in pts]
            y = [r["ndcg@10_rel"] for r in pts]
            err = [r["ndcg@10_rel_std"] or 0.0 for r in pts]
            ax.errorbar(x, y, yerr=err, fmt="osD^v"[i % 5], color=f"C{i}", label=ds, capsize=2)
            for r, xi, yi in zip(pts, x, y):
                ax.annotate(r["scheme"], (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(FIGURES[c["figure"]], fontsize=9)
        ax.set_ylabel(f"test NDCG@10 / {REFERENCE}", fontsize=9)
        ax.set_title(f"pooled rho {rho_cell(c['pooled'])}", fontsize=9)
    for ax in list(axes.flat)[len(corrs):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Semantic-ID schemes: intrinsic figures against downstream {label} NDCG@10 / {REFERENCE} "
                 "(error bars: seed std)")
    fig.tight_layout()
    return save_png(fig, path)


# ------------------------------------------------------------------------------------------------ main
def read_named(where: Path, name: str, made_by: str) -> dict:
    """benchmarks/results/<name>.json (or under `where`), one error line when it is missing."""
    p = where / f"{name}.json"
    if not p.is_file():
        raise SemrecError(f"{name}.json not found in {where} (written by {made_by})")
    return read_json(p)


def load(names: list[str], where: Path) -> dict[str, dict]:
    """The named recipe results under `where`, by name; per dataset, each model family in at most one of them."""
    out: dict[str, dict] = {}
    for n in names:
        res = read_named(where, n, "python benchmarks/run_recipe.py recipes/<dataset>/<recipe>.yaml")
        if not isinstance(res, dict) or not {"dataset", "recipe"} <= set(res):
            raise SemrecError(f"{n}.json: not a recipe result (needs 'dataset' and 'recipe')")
        for o, r in out.items():
            both = families(res, f"{n}.json") & families(r, f"{o}.json")
            if r["dataset"] == res["dataset"] and both:
                raise SemrecError(f"{n}.json and {o}.json both hold {', '.join(sorted(both))} rows on "
                                  f"{res['dataset']}: give one result per dataset and model family")
        out[n] = res
    return out


def build(intrinsic: dict, results: dict[str, dict], intrinsic_name: str, model: str = "tiger") -> dict:
    """The report: per dataset its rows of model family `model` (from the one result holding them), MostPop,
    winner and the other families' ranking agreement (from every result on the dataset); the correlations and
    the finding."""
    pops = {p["dataset"]: p for p in most_popular(list(results.values()))}
    by_ds: dict[str, dict[str, dict]] = {}
    for name, res in results.items():
        by_ds.setdefault(res["dataset"], {})[name] = res
    datasets = {}
    for ds, group in by_ds.items():
        mine = [n for n, res in group.items() if model in families(res, f"{n}.json")]
        rows = join(intrinsic, group[mine[0]], f"{mine[0]}.json", model) if mine else []
        if not rows:
            raise SemrecError(f"no scheme with NTP test rows of model '{model}' in {', '.join(group)} ({ds}) is "
                              f"in {intrinsic_name}.json")
        datasets[ds] = {"source": mine[0], "rows": rows, "mostpop": pops.get(ds), "winner": winner(rows),
                        "agreement": agreement(group, rows, model)}
    tables = {ds: t["rows"] for ds, t in datasets.items()}
    corrs = correlations(tables)
    return {"benchmark": "tokenizers_downstream", "model": model, "intrinsic": intrinsic_name,
            "intrinsic_seed": intrinsic.get("seed"),
            "sources": list(results), "normalisation": f"test NDCG@10 / the dataset's {REFERENCE} row",
            "permutations": N_PERMUTATIONS, "datasets": datasets, "correlations": corrs,
            "finding": finding(corrs, tables)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--intrinsic", default="tokenizers_compare")
    ap.add_argument("--result", action="append", help="a recipe result name (repeatable; per dataset one result per "
                                                      "model family; default: " + ", ".join(DEFAULT_RESULTS) + ")")
    ap.add_argument("--model", default="tiger", help="the model family whose NTP rows count (the results' `model` "
                                                       "field: tiger, decoder, ...; default tiger)")
    ap.add_argument("--out-name", default="tokenizers_downstream")
    ap.add_argument("--dir", type=Path, default=RESULTS, help="where results are read and written "
                                                               "(default benchmarks/results)")
    args = ap.parse_args(argv)
    names = args.result or DEFAULT_RESULTS
    try:
        intrinsic = read_named(args.dir, args.intrinsic, "python benchmarks/tokenizers_compare.py")
        results = load(names, args.dir)
        report = build(intrinsic, results, args.intrinsic, args.model)
    except SemrecError as e:
        print(f"tokenizers_downstream: error: {e}", file=sys.stderr)
        return 2
    write_json(args.dir / f"{args.out_name}.json", report)
    plot({ds: t["rows"] for ds, t in report["datasets"].items()}, report["correlations"],
         args.dir / f"{args.out_name}.png", LABELS.get(args.model, args.model))
    cmd = " ".join(["python benchmarks/tokenizers_downstream.py", f"--intrinsic {args.intrinsic}",
                    *[f"--result {n}" for n in names], *([f"--model {args.model}"] if args.model != "tiger" else []),
                    *([f"--out-name {args.out_name}"] if args.out_name != "tokenizers_downstream" else [])])
    md = markdown(report, results)
    with atomic_file(args.dir / f"{args.out_name}.md") as f:
        f.write(md + f"\nPlot: `{args.out_name}.png`. Produced by `{cmd}`.\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
