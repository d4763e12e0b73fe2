"""`semrec report RUN_DIR ...`: a Markdown + HTML summary of one or more `semrec run` directories.

Sections: results tables (mean ± std over seeds, per dataset, from each run's results.json rows), the
alpha sweep (test NDCG@10 and CC of TCA rows against alpha, and the valid metric of every swept alpha
from the rows' `sweep_valid`), training curves (train loss and valid metric per epoch from every model
stage's train.json and every teacher's train_log.jsonl), and code usage per level of each item
tokenization (sorted code frequencies, with the perplexity stats stored in tokenization.json).

    build_report(["runs/office", "runs/office-seed1"], "reports/office")  # -> report.md, report.html, *.png
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from semrec.artifacts import atomic_file, read_json
from semrec.errors import SemrecError
from semrec.pipeline.results import RunDirectory
from semrec.pipeline.run import format_cell, summarize, table_metrics


def run_label(run: RunDirectory) -> str:
    return f"{run.result.get('recipe', run.path.name)} ({run.path.name})"


# ---------------------------------------------------------------------------------------------- tables
def results_tables(runs: list[RunDirectory]) -> list[dict]:
    """Per (dataset, protocol): {dataset, protocol, metrics, summary (semrec.pipeline.run.summarize)}."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        for row in run.rows:
            groups[(row.dataset, row.protocol)].append(row.to_dict())
    tables = []
    for (ds, proto), rows in groups.items():
        metrics = table_metrics(proto)
        tables.append({"dataset": ds, "protocol": proto, "metrics": metrics, "summary": summarize(rows, metrics)})
    return tables


def alpha_sweep(runs: list[RunDirectory]) -> dict[str, list[dict]]:
    """{"test": rows of TCA runs [{name, dataset, alpha, seed, ndcg@10, cc}] plus, at alpha 0, the test rows
    of each TCA model's `baseline` (its NTP twin: alpha 0 is plain NTP), "valid": [{name, dataset, alpha,
    seed, valid}] from sweeps over alpha}."""
    test, valid = [], []
    for run in runs:
        tca = [r for r in run.rows if r.uses_tca and r.alpha is not None]
        for r in tca:
            test.append({"name": r.name, "dataset": r.dataset, "alpha": float(r.alpha), "seed": r.seed,
                         "ndcg@10": r.metrics.get("ndcg@10"), "cc": r.metrics.get("cc")})
        for dataset, name, base in dict.fromkeys((r.dataset, r.name, r.baseline) for r in tca if r.baseline):
            for b in run.rows:
                if (b.dataset, b.name, b.split) == (dataset, base, "test"):
                    test.append({"name": name, "dataset": dataset, "alpha": 0.0, "ntp_twin": base, "seed": b.seed,
                                 "ndcg@10": b.metrics.get("ndcg@10"), "cc": b.metrics.get("cc")})
        for r in run.rows:
            for e in r.sweep_valid or []:
                if "alpha" in e and e.get("valid") is not None and math.isfinite(e["valid"]):
                    valid.append({"name": r.name, "dataset": r.dataset, "alpha": float(e["alpha"]),
                                  "seed": r.seed, "valid": float(e["valid"])})
    return {"test": test, "valid": valid}


def _mean_by_alpha(rows: list[dict], key: str) -> tuple[list[float], list[float], list[float]]:
    by: dict[float, list[float]] = defaultdict(list)
    for r in rows:
        if r.get(key) is not None:
            by[r["alpha"]].append(float(r[key]))
    xs = sorted(by)
    return xs, [float(np.mean(by[x])) for x in xs], [float(np.std(by[x], ddof=1)) if len(by[x]) > 1 else 0.0
                                                      for x in xs]


def training_curves(run: RunDirectory) -> list[dict]:
    """[{label, kind, epochs, train_loss, valid, monitor}] for every model and teacher stage of a run."""
    curves = []
    for st in run.stages("model"):
        info = read_json(st / "train.json")
        monitor = info.get("monitor") or "ndcg@10"
        hist = [h for h in info.get("history") or [] if h.get("kind", "epoch") == "epoch"]
        curves.append({"label": info.get("label", st.name), "kind": "model", "monitor": monitor,
                       "epochs": [int(h.get("epoch", i)) + 1 for i, h in enumerate(hist)],
                       "train_loss": [h.get("train_loss") for h in hist],
                       "valid": [h.get(f"valid_{monitor}") for h in hist]})
    for st in run.stages("teacher"):
        hist = []
        for n, line in enumerate((st / "train_log.jsonl").read_text().splitlines(), 1):
            if line.strip():
                try:
                    hist.append(json.loads(line))
                except json.JSONDecodeError:
                    raise SemrecError(f"{st / 'train_log.jsonl'}: line {n}: not JSON") from None
        hist = [h for h in hist if "epoch" in h]
        model = read_json(st / "stage.json").get("config", {}).get("model", "teacher")
        curves.append({"label": f"teacher {model} ({st.name})", "kind": "teacher", "monitor": "ndcg@10",
                       "epochs": [int(h["epoch"]) for h in hist],
                       "train_loss": [h.get("train_loss") for h in hist],
                       "valid": [(h.get("valid") or {}).get("ndcg@10") for h in hist]})
    return curves


def tokenization_usage(ids_stage: Path) -> dict:
    """{scheme, levels: [{level, codebook_size, codes_used, perplexity, max_share, counts (sorted desc)}]}
    of an ids stage's tokenization (pad and EOS excluded)."""
    from semrec.itemtok.artifact import ItemTokenization
    from semrec.itemtok.quality import code_usage

    tok = ItemTokenization.from_pretrained(ids_stage / "tokenization", load_quantizer=False)
    meta = read_json(ids_stage / "tokenization" / "tokenization.json")
    stats = meta.get("stats") if isinstance(meta.get("stats"), dict) else {}
    stored = {u.get("level"): u for u in stats.get("usage") or [] if isinstance(u, dict)}
    codes = tok.codes.cpu().numpy()
    offsets = list(tok.level_offsets)
    sizes = list(meta.get("codebook_sizes") or [None] * codes.shape[1])
    levels = []
    for lv in range(min(tok.num_levels, codes.shape[1])):
        col = codes[:, lv]
        col = col[col != tok.pad_id]
        if tok.eos_id is not None:
            col = col[col != tok.eos_id]
        if len(col) == 0:
            continue
        raw = col - offsets[lv]
        usage = code_usage(raw[:, None], [sizes[lv] if lv < len(sizes) else None])[0]
        counts = np.sort(np.unique(raw, return_counts=True)[1])[::-1]
        levels.append({**usage, "level": lv, "counts": counts.tolist(),
                       "stored_perplexity": stored.get(lv, {}).get("perplexity")})
    return {"scheme": tok.scheme, "num_items": int(codes.shape[0]), "levels": levels,
            "collisions_before": int(getattr(tok, "collisions_before", 0) or 0)}


# ---------------------------------------------------------------------------------------------- plots
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> Path:
    """Write `fig` to `path` as a PNG (whole or not at all) and close it."""
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def plot_alpha(sweep: dict, path: Path) -> Path | None:
    """One row per dataset: test NDCG@10 (solid; alpha 0 = the NTP twin) and the valid selection metric
    (dashed) against alpha, and test CC against alpha; one colour per model."""
    if not sweep["test"] and not sweep["valid"]:
        return None
    plt = _plt()
    datasets = list(dict.fromkeys(r["dataset"] for r in sweep["test"] + sweep["valid"]))
    names = list(dict.fromkeys(r["name"] for r in sweep["test"] + sweep["valid"]))
    colour = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
    fig, axes = plt.subplots(len(datasets), 3, figsize=(13, 3.4 * len(datasets)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 0.6]})
    for (a1, a2, a3), ds in zip(axes, datasets):
        for name in names:
            test = [r for r in sweep["test"] if (r["dataset"], r["name"]) == (ds, name)]
            for key, ax in (("ndcg@10", a1), ("cc", a2)):
                xs, ms, ss = _mean_by_alpha(test, key)
                if xs:
                    ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, color=colour[name], label=f"{name} test")
            val = [r for r in sweep["valid"] if (r["dataset"], r["name"]) == (ds, name)]
            xs, ms, ss = _mean_by_alpha(val, "valid")
            if xs:
                a1.errorbar(xs, ms, yerr=ss, marker="s", ls="--", capsize=3, color=colour[name], alpha=0.7,
                            label=f"{name} valid")
        for ax, ylabel in ((a1, "NDCG@10"), (a2, "CC (test)")):
            ax.set_xlabel("alpha (0 = NTP)")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        a1.set_title(f"{ds}: NDCG@10 against alpha")
        a2.set_title(f"{ds}: collaborative consistency against alpha")
        a3.axis("off")
        handles, labels = a1.get_legend_handles_labels()
        if handles:
            a3.legend(handles, labels, fontsize=8, loc="center left", frameon=False)
    fig.tight_layout()
    return save_png(fig, path)


def plot_curves(curves: list[dict], title: str, path: Path) -> Path | None:
    curves = [c for c in curves if c["epochs"]]
    if not curves:
        return None
    plt = _plt()
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={"width_ratios": [1, 1, 0.55]})
    for c in curves:
        style = "-" if c["kind"] == "model" else ":"
        pts = [(e, v) for e, v in zip(c["epochs"], c["train_loss"]) if v is not None]
        if pts:
            a1.plot(*zip(*pts), style, marker="o", ms=3, label=c["label"])
        pts = [(e, v) for e, v in zip(c["epochs"], c["valid"]) if v is not None]
        if pts:
            a2.plot(*zip(*pts), style, marker="o", ms=3, label=f"{c['label']} ({c['monitor']})")
    fig.suptitle(title)
    a1.set_title("train loss")
    a2.set_title("valid metric (model selection)")
    for ax, yl in ((a1, "train loss"), (a2, "valid")):
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3)
    a3.axis("off")
    handles, labels = a2.get_legend_handles_labels()
    if handles:
        a3.legend(handles, labels, fontsize=7, loc="center left", frameon=False)
    fig.tight_layout()
    return save_png(fig, path)


def plot_usage(usage: dict, title: str, path: Path) -> Path | None:
    if not usage["levels"]:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for lv in usage["levels"]:
        counts = np.asarray(lv["counts"])
        ax.plot(np.arange(1, len(counts) + 1), counts / counts.sum(),
                label=f"level {lv['level']}: {lv['codes_used']}/{lv['codebook_size'] or '?'} used, "
                      f"ppl {lv['perplexity']:.1f}")
    ax.set_yscale("log")
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("share of items")
    ax.set_title(f"{title}: code usage per level")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_png(fig, path)


# ---------------------------------------------------------------------------------------------- output
def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


def _slug(s: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", s)[:80]


def build_report(run_dirs: list[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Write report.md, report.html (images embedded) and the PNGs into `out_dir`; returns their paths."""
    if not run_dirs:
        raise SemrecError("report: give at least one run directory")
    runs = [RunDirectory(p) for p in run_dirs]
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise SemrecError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    images: list[Path] = []
    md: list[str] = ["# semrec report", ""]
    md += ["Runs:", ""]
    for r in runs:
        res = r.result
        md.append(f"- `{r.path.name}`: recipe {res.get('recipe')}, dataset {res.get('dataset')} (protocol "
                  f"{res.get('protocol')}), seeds {res.get('seeds')}, commit `{res.get('commit')}`, "
                  f"{res.get('machine')}, wall time {res.get('wall_time_s')} s"
                  + (f", all stages' compute time {res['compute_time_s']} s" if "compute_time_s" in res else ""))
    md.append("")

    md += ["## Results (test split, mean ± std over seeds)", ""]
    for t in results_tables(runs):
        md += [f"### {t['dataset']} (protocol {t['protocol']})", ""]
        md += _md_table(["model", "seeds", *t["metrics"]],
                        [[s["name"], str(s["n_seeds"]), *[format_cell(s, m) for m in t["metrics"]]]
                         for s in t["summary"]])
        md.append("")

    sweep = alpha_sweep(runs)
    md += ["## Alpha sweep", ""]
    if sweep["test"] or sweep["valid"]:
        rows = []
        for r in sorted(sweep["test"], key=lambda r: (r["dataset"], r["name"], r["alpha"], r["seed"] or 0)):
            rows.append([str(r["dataset"]), r.get("ntp_twin", r["name"]), "test", f"{r['alpha']:g}", str(r["seed"]),
                         "-" if r["ndcg@10"] is None else f"{r['ndcg@10']:.4f}",
                         "-" if r["cc"] is None else f"{r['cc']:.4f}"])
        for r in sorted(sweep["valid"], key=lambda r: (r["dataset"], r["name"], r["alpha"], r["seed"] or 0)):
            rows.append([str(r["dataset"]), r["name"], "valid (selection metric)", f"{r['alpha']:g}", str(r["seed"]),
                         f"{r['valid']:.4f}", "-"])
        md += _md_table(["dataset", "model", "split", "alpha", "seed", "NDCG@10", "CC"], rows)
        img = plot_alpha(sweep, out / "alpha_sweep.png")
        if img:
            images.append(img)
            md += ["", f"![alpha sweep]({img.name})"]
    else:
        md.append("No TCA rows or alpha sweeps in these runs.")
    md.append("")

    md += ["## Training curves", ""]
    for r in runs:
        curves = training_curves(r)
        label = run_label(r)
        img = plot_curves(curves, label, out / f"curves_{_slug(r.path.name)}.png")
        if img is None:
            md += [f"{label}: no per-epoch history.", ""]
            continue
        images.append(img)
        md += [f"### {label}", ""]
        md += _md_table(["stage", "epochs", "last train loss", "best valid"],
                        [[c["label"], str(len(c["epochs"])),
                          next((f"{v:.4f}" for v in reversed(c["train_loss"]) if v is not None), "-"),
                          max((f"{v:.4f}" for v in c["valid"] if v is not None), key=float, default="-")
                          + f" ({c['monitor']})"] for c in curves])
        md += ["", f"![training curves {label}]({img.name})", ""]

    md += ["## Code usage per level", ""]
    seen: set[str] = set()
    for r in runs:
        for st in r.stages("ids"):
            if st.name in seen:
                continue
            seen.add(st.name)
            usage = tokenization_usage(st)
            title = f"{usage['scheme']} ({st.name})"
            md += [f"### {title}", "", f"{usage['num_items']} items; {usage['collisions_before']} collisions "
                                       f"before resolution.", ""]
            md += _md_table(["level", "codes used", "codebook", "perplexity", "max share"],
                            [[str(lv["level"]), str(lv["codes_used"]), str(lv["codebook_size"] or "-"),
                              f"{lv['perplexity']:.1f}", f"{lv['max_share']:.4f}"] for lv in usage["levels"]])
            img = plot_usage(usage, title, out / f"usage_{_slug(st.name)}.png")
            if img:
                images.append(img)
                md += ["", f"![code usage {title}]({img.name})"]
            md.append("")
    if not seen:
        md += ["No item tokenizations in these runs.", ""]

    text = "\n".join(md) + "\n"
    with atomic_file(out / "report.md") as f:
        f.write(text)
    with atomic_file(out / "report.html") as f:
        f.write(markdown_to_html(text, out))
    return {"md": out / "report.md", "html": out / "report.html", "images": images}


def markdown_to_html(text: str, base: Path) -> str:
    """The report's own Markdown subset (headings, lists, tables, images) as one self-contained HTML page."""
    body: list[str] = []
    lines = text.splitlines()
    i = 0

    def inline(s: str) -> str:
        s = html.escape(s)
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", s)

    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{inline(line[level:].strip())}</h{level}>")
        elif line.startswith("| "):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            cells = [[c.strip() for c in row.strip().strip("|").split(" | ")]
                     for row in block if not row.startswith("|---")]
            head = "".join(f"<th>{inline(c)}</th>" for c in cells[0])
            rows = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            continue
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif m := re.fullmatch(r"!\[(.*)\]\((.+)\)", line):
            data = base64.b64encode((base / m.group(2)).read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(m.group(1))}" src="data:image/png;base64,{data}"></p>')
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
        i += 1
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
             "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
             "code{background:#f3f3f3}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>semrec report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def report_summary(paths: dict[str, Any]) -> str:
    return f"report written to {paths['md']} and {paths['html']} ({len(paths['images'])} images)"
