"""Comparing item tokenizations: one row of metrics per scheme, written as Markdown + JSON + a plot.

Metrics (all computed exactly over the whole catalogue, no sampling):
- collisions before resolution (N - distinct code tuples) and their rate; largest colliding group;
- per level: codes used / codebook size and perplexity exp(H) of the code distribution;
- reconstruction error: mean ||x - x_hat||^2 / mean ||x||^2 in the scheme's own embedding space, x_hat
  decoded from the quantizer's encoding of x (nearest codes); `fit_relative_residual` is the same ratio for
  the codes the fit assigned, where the quantizer records it (they differ for balanced RQ-KMeans);
- prefix similarity: mean cosine (of a common reference embedding) over all item pairs that share their
  first code / first two codes, against the mean over all pairs ("random pairs");
- CF-neighbour agreement: share of each item's top-k CF neighbours (cosine of teacher item embeddings,
  the item itself excluded) that share its first code (also first two codes), against the chance
  level sum_g n_g (n_g - 1) / (N (N - 1)) of a random neighbour sharing it (lift = agreement / chance, which
  does not reward a less uniform first level);
- fit time (quantizer fit only; embeddings are cached) and embedding time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from semrec.errors import SemrecError
from semrec.artifacts import atomic_file, write_json


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def prefix_keys(codes: np.ndarray, depth: int) -> np.ndarray:
    """(N,) group id of each item's first `depth` tokens."""
    _, inv = np.unique(np.asarray(codes)[:, :depth], axis=0, return_inverse=True)
    return inv.reshape(-1)


def mean_pair_cosine(x: np.ndarray, keys: np.ndarray | None = None) -> float:
    """Mean cosine over all unordered item pairs (sharing a key when `keys` is given) of rows of x,
    computed exactly from per-group sums: sum_g (|S_g|^2 - sum_i |x_i|^2) / sum_g n_g (n_g - 1)."""
    from scipy import sparse

    x = _l2(x).astype(np.float64)
    n = len(x)
    if keys is None:
        keys = np.zeros(n, dtype=np.int64)
    g = int(keys.max()) + 1
    onehot = sparse.csr_matrix((np.ones(n), (keys, np.arange(n))), shape=(g, n))
    sums = onehot @ x
    sizes = np.bincount(keys, minlength=g).astype(np.float64)
    norms = np.bincount(keys, weights=(x * x).sum(1), minlength=g)
    pairs = (sizes * (sizes - 1)).sum()
    if pairs == 0:
        return float("nan")
    return float(((sums * sums).sum(1) - norms).sum() / pairs)


def cf_neighbours(cf_emb: np.ndarray, k: int = 10) -> np.ndarray:
    """(N, k) int64: each item's k nearest items by cosine of CF embeddings, itself excluded."""
    import faiss

    x = np.ascontiguousarray(_l2(cf_emb))
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, nb = index.search(x, k + 1)
    out = np.empty((len(x), k), dtype=np.int64)
    for i, row in enumerate(nb):
        row = row[row != i]
        out[i] = row[:k]
    return out


def neighbour_agreement(neighbours: np.ndarray, keys: np.ndarray) -> float:
    """Share of (item, neighbour) pairs whose keys are equal."""
    return float((keys[neighbours] == keys[:, None]).mean())


def chance_agreement(keys: np.ndarray) -> float:
    n = len(keys)
    sizes = np.bincount(keys).astype(np.float64)
    return float((sizes * (sizes - 1)).sum() / (n * (n - 1))) if n > 1 else float("nan")


def evaluate_tokenization(tok, *, reference_emb: np.ndarray | None = None, own_emb: np.ndarray | None = None,
                          neighbours: np.ndarray | None = None) -> dict[str, Any]:
    """Metrics of one ItemTokenization (see module docstring); missing inputs give None entries."""
    from semrec.itemtok.quality import code_usage

    codes = tok.codes.numpy()
    stats = tok.stats or {}
    row: dict[str, Any] = {"scheme": tok.scheme, "content": stats.get("content"), "num_items": tok.num_items,
                           "levels": tok.num_levels, "codebook_sizes": tok.codebook_sizes if tok.is_semantic_id else None,
                           "vocab_size": tok.vocab_size}
    row["collisions_before"] = int(tok.collisions_before)
    row["collision_rate_before"] = tok.collisions_before / max(tok.num_items, 1)
    coll = stats.get("collisions", {})
    row["max_group_before"] = coll.get("before", {}).get("max_group")
    row["extra_level"] = coll.get("extra_level")
    distinct = len(np.unique(codes, axis=0))
    row["unique_ids_after"] = distinct == tok.num_items
    row["entries"] = tok.num_entries
    if tok.is_semantic_id:
        usage = stats.get("usage_before_resolution") or code_usage(tok.raw_codes, tok.codebook_sizes)
    else:
        usage = code_usage(codes[:, :3])
    row["usage"] = usage
    row["codes_used"] = [u["codes_used"] for u in usage]
    row["perplexity"] = [round(u["perplexity"], 2) for u in usage]
    row["recon_rel_mse"] = None
    # the codes the fit assigned to the catalogue, where the quantizer records it (balanced RQ-KMeans: its
    # balanced codes, while recon_rel_mse re-encodes by nearest centroid)
    row["fit_relative_residual"] = tok.quantizer.fit_info.get("relative_residual") if tok.quantizer else None
    if own_emb is not None and tok.quantizer is not None:
        x = np.asarray(own_emb, dtype=np.float32)
        xr = tok.quantizer.reconstruct(x)
        row["recon_rel_mse"] = float(((x - xr) ** 2).sum(1).mean() / max((x ** 2).sum(1).mean(), 1e-12))
    if reference_emb is not None:
        row["cos_prefix1"] = mean_pair_cosine(reference_emb, prefix_keys(codes, 1))
        row["cos_prefix2"] = mean_pair_cosine(reference_emb, prefix_keys(codes, 2)) if codes.shape[1] > 1 else None
        row["cos_random"] = mean_pair_cosine(reference_emb)
    if neighbours is not None:
        k1 = prefix_keys(codes, 1)
        row["cf_agree1"] = neighbour_agreement(neighbours, k1)
        row["cf_chance1"] = chance_agreement(k1)
        row["cf_lift1"] = row["cf_agree1"] / row["cf_chance1"] if row["cf_chance1"] > 0 else None
        if codes.shape[1] > 1:
            k2 = prefix_keys(codes, 2)
            row["cf_agree2"] = neighbour_agreement(neighbours, k2)
            row["cf_chance2"] = chance_agreement(k2)
    row["fit_seconds"] = stats.get("fit_seconds")
    row["embed_seconds"] = stats.get("embed_seconds")
    return row


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, (list, tuple)):
        return "/".join(_fmt(x, 1) for x in v)
    return str(v)


def markdown_table(rows: Sequence[dict], *, title: str = "", notes: Sequence[str] = ()) -> str:
    cols = [("name", "scheme"), ("content", "content"), ("levels", "L"),
            ("collisions_before", "collisions before"), ("collision_rate_before", "rate"),
            ("unique_ids_after", "unique after"), ("codes_used", "codes used / level"),
            ("perplexity", "perplexity / level"), ("recon_rel_mse", "recon rel. MSE"),
            ("cos_prefix1", "cos 1st code"), ("cos_prefix2", "cos 1st 2 codes"), ("cos_random", "cos random"),
            ("cf_agree1", "CF-nb agree 1st"), ("cf_chance1", "chance 1st"), ("cf_lift1", "lift 1st"), ("cf_agree2", "CF-nb agree 1st 2"),
            ("fit_seconds", "fit s")]
    lines = [f"## {title}", ""] if title else []
    lines.append("| " + " | ".join(h for _, h in cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k), 1 if k == "fit_seconds" else 3) for k, _ in cols) + " |")
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def plot_comparison(rows: Sequence[dict], path: str | Path, *, title: str = "") -> Path:
    """Four panels: codes used share per level, perplexity per level, CF-neighbour agreement (vs chance),
    collision rate before resolution. Rows may come from several datasets (`dataset` key)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.get('dataset', '')}\n{r['name']}".strip() for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(2, 2, figsize=(max(8, 1.1 * len(rows) + 4), 8))
    levels = max(len(r["codes_used"]) for r in rows)
    width = 0.8 / levels
    for l in range(levels):
        share = [r["codes_used"][l] / r["usage"][l]["codebook_size"]
                 if l < len(r["codes_used"]) and r["usage"][l].get("codebook_size") else np.nan for r in rows]
        ppl = [r["perplexity"][l] if l < len(r["perplexity"]) else np.nan for r in rows]
        axes[0, 0].bar(x + (l - (levels - 1) / 2) * width, share, width, label=f"level {l}")
        axes[0, 1].bar(x + (l - (levels - 1) / 2) * width, ppl, width, label=f"level {l}")
    axes[0, 0].set_title("codes used / codebook size")
    axes[0, 0].set_ylim(0, 1.05)
    axes[0, 1].set_title("perplexity of the code distribution")
    a1 = [r.get("cf_agree1") or np.nan for r in rows]
    c1 = [r.get("cf_chance1") or np.nan for r in rows]
    a2 = [r.get("cf_agree2") or np.nan for r in rows]
    axes[1, 0].bar(x - 0.27, a1, 0.27, label="share 1st code")
    axes[1, 0].bar(x, a2, 0.27, label="share 1st 2 codes")
    axes[1, 0].bar(x + 0.27, c1, 0.27, label="chance (1st code)")
    axes[1, 0].set_title("top-10 CF neighbours sharing the prefix")
    axes[1, 1].bar(x, [r["collision_rate_before"] for r in rows])
    axes[1, 1].set_title("collision rate before resolution")
    for ax in axes.flat:
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=7, rotation=90 if len(rows) > 8 else 0)  # long names would overlap
    axes[0, 0].legend(fontsize=7, loc="lower right")
    for ax in (axes[0, 1], axes[1, 0]):
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    return path


def compare_schemes(dataset, schemes: Sequence[str | Path], *, cf_emb: np.ndarray | None = None,
                    cache_dir: str | Path | None = None, device: str = "auto", artifacts_dir: str | Path | None = None,
                    reference=None, k: int = 10, progress: bool = True, overwrite: bool = False) -> list[dict]:
    """Fit every scheme YAML on `dataset` and return one metrics row per scheme (plus its artifact under
    `artifacts_dir/<scheme file stem>` when given). `reference` is the EmbedConfig of the common embedding
    used for prefix similarity (default: the first semantic-ID scheme's embedding section)."""
    from semrec.embeddings import EmbedConfig, compute_item_embeddings
    from semrec.itemtok.schemes import build_tokenization, load_scheme

    loaded = [(Path(s).stem, load_scheme(s)) for s in schemes]  # validate all files before any work
    names = [n for n, _ in loaded]
    if len(set(names)) != len(names):
        raise SemrecError(f"schemes: file names must be distinct (got {names})")
    if any(c.scheme == "letter" for _, c in loaded) and cf_emb is None:
        raise SemrecError("schemes: letter needs CF item embeddings (pass --teacher DIR or --cf-emb FILE.npy)")
    if reference is None:
        reference = next((c.embedding for _, c in loaded if c.scheme != "title"), EmbedConfig())
    ref = compute_item_embeddings(dataset, reference, cf_emb=cf_emb, cache_dir=cache_dir, device=device,
                                  progress=progress)
    neighbours = cf_neighbours(cf_emb, k) if cf_emb is not None else None
    rows = []
    for name, cfg in loaded:
        own = None
        if cfg.scheme != "title":
            own = ref if cfg.embedding == reference else compute_item_embeddings(
                dataset, cfg.embedding, cf_emb=cf_emb, cache_dir=cache_dir, device=device, progress=progress)
        tok = build_tokenization(dataset, cfg, embeddings=own, cf_emb=cf_emb, cache_dir=cache_dir, device=device,
                                 progress=progress)
        if own is not None:
            tok.stats["embed_seconds"] = None  # the shared, cached embedding was computed once above
        row = {"name": name, "dataset": dataset.name,
               **evaluate_tokenization(tok, reference_emb=ref.vectors, own_emb=None if own is None else own.vectors,
                                       neighbours=neighbours)}
        row["reference_content"] = ref.content
        row["reference_template"] = ref.info.get("parts", {}).get("text", {}).get("template")
        rows.append(row)
        if artifacts_dir is not None:
            tok.save_pretrained(Path(artifacts_dir) / name, overwrite=overwrite)
    return rows


def write_comparison(rows: Sequence[dict], out_dir: str | Path, *, stem: str = "compare", meta: dict | None = None,
                     title: str = "Item tokenization schemes", notes: Sequence[str] = ()) -> dict[str, Path]:
    """Write `stem`.json (meta + rows), `stem`.md and `stem`.png under out_dir."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md", "png": out_dir / f"{stem}.png"}
    write_json(paths["json"], {**(meta or {}), "rows": list(rows)})
    by_ds: dict[str, list] = {}
    for r in rows:
        by_ds.setdefault(r.get("dataset", ""), []).append(r)
    md = [f"# {title}", ""]
    for k, v in (meta or {}).items():
        if isinstance(v, (str, int, float)):
            md.append(f"- {k}: {v}")
    md.append("")
    for ds, rs in by_ds.items():
        md.append(markdown_table(rs, title=ds))
    md += [f"- {n}" for n in notes]
    with atomic_file(paths["md"]) as f:
        f.write("\n".join(md) + "\n")
    plot_comparison(rows, paths["png"], title=title)
    return paths
