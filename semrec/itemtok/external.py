"""Semantic IDs made elsewhere <-> `ItemTokenization` (`semrec tokenize --from-codes` / `--export`).

Formats (chosen by the file name):
- `*.index.json` (MiniOneRec, LC-Rec, LETTER): `{"item_id": ["<a_12>", "<b_3>", "<c_7>"], ...}`; the
  token at position l must be level l's letter (a, b, c, ...) and a code.
- `*.json`: `{"item_id": [12, 3, 7], ...}` or a list of code lists (row i = item i); GRID/LETTER-style.
- `*.csv` / `*.tsv`: a header, the item id in the first column and one integer code per level after it.
- `*.npy`: an (N, L) integer array, row i = item i (no pickles).
Keys are the dataset's raw item ids (`items.raw_id`, as the releases key their items); list and NPY
rows are the dataset's item ids 0..N-1. Every item of the dataset needs codes; codes for ids the
dataset does not have are skipped and counted. Codebook sizes are the largest code + 1 of each level
unless given. Codes that are unique already are kept as given. Items sharing a tuple are reported
(`collisions_before`) and made unique with the
existing methods (`semrec.quantizers.collisions`): extra_code appends a level; sinkhorn moves the
colliding items onto free codes of the last level (no distances exist for imported codes, so the
transport cost is uniform) and falls back to an extra level where a prefix group is full.
Export writes the levels of a semantic-ID tokenization (an extra collision level included, EOS not)
in the same formats, keyed by raw id when a dataset is given.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Literal

import numpy as np

from semrec.errors import SemrecError
from semrec.artifacts import atomic_file
from semrec.itemtok.artifact import EXTERNAL_SCHEME, LEVEL_LETTERS, ItemTokenization
from semrec.itemtok.quality import code_usage
from semrec.quantizers.collisions import collision_stats, resolve_collisions

_TOKEN = re.compile(r"^<([a-z]+)_(\d+)>$")
FORMATS = ("index-json", "json", "csv", "npy")


def code_format(path: str | Path) -> str:
    """The format of a codes file from its name."""
    name = Path(path).name.lower()
    if name.endswith(".index.json"):
        return "index-json"
    for ext, fmt in ((".json", "json"), (".csv", "csv"), (".tsv", "csv"), (".npy", "npy")):
        if name.endswith(ext):
            return fmt
    raise SemrecError(f"{path}: unknown codes format (expected *.index.json, *.json, *.csv, *.tsv or *.npy)")


def _letter(level: int) -> str:
    return LEVEL_LETTERS[level % 26] + ("" if level < 26 else str(level // 26))


def _parse_token(tok, path: Path, key: str, pos: int) -> int:
    m = _TOKEN.match(str(tok).strip()) if isinstance(tok, str) else None
    if m is None:
        raise SemrecError(f"{path}: item '{key}': token {tok!r} at position {pos + 1} is not '<letter_code>' "
                          f"such as <{_letter(pos)}_12>")
    if m.group(1) != _letter(pos):
        raise SemrecError(f"{path}: item '{key}': token {tok!r} at position {pos + 1} should be level "
                          f"'{_letter(pos)}' (<{_letter(pos)}_N>)")
    return int(m.group(2))


def _int_code(v, path: Path, key: str, pos: int) -> int:
    if isinstance(v, bool) or not (isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer())):
        try:
            return int(str(v).strip())
        except ValueError:
            raise SemrecError(f"{path}: item '{key}': code {v!r} at position {pos + 1} is not an integer") from None
    return int(v)


def read_codes(path: str | Path) -> tuple[list[str] | None, list[list[int]]]:
    """A codes file -> (keys (raw ids; None when rows are item ids), code lists), as written."""
    path = Path(path)
    fmt = code_format(path)
    if not path.is_file():
        raise SemrecError(f"{path}: no such file")
    if fmt == "npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise SemrecError(f"{path}: not a NumPy array file without pickles ({type(e).__name__}: {e})") from None
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
            raise SemrecError(f"{path}: expected an (items, levels) integer array, got {arr.dtype} {arr.shape}")
        return None, arr.astype(np.int64).tolist()
    if fmt == "csv":
        try:
            with open(path, newline="", encoding="utf-8") as f:
                sample = f.readline()
                f.seek(0)
                rows = list(csv.reader(f, delimiter="\t" if sample.count("\t") > sample.count(",") else ","))
        except UnicodeDecodeError as e:
            raise SemrecError(f"{path}: not UTF-8 text ({e.reason})") from None
        rows = [r for r in rows[1:] if any(c.strip() for c in r)]
        if not rows:
            raise SemrecError(f"{path}: no rows (expected a header, then item id and codes per line)")
        keys = [r[0].strip() for r in rows]
        codes = [[_int_code(c, path, k, p) for p, c in enumerate(c for c in r[1:] if c.strip())]
                 for k, r in zip(keys, rows)]
        return keys, codes
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SemrecError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError as e:
        raise SemrecError(f"{path}: not UTF-8 text ({e.reason})") from None
    if isinstance(obj, dict):
        keys, values = [str(k) for k in obj], list(obj.values())
    elif isinstance(obj, list):
        keys, values = None, obj
    else:
        raise SemrecError(f"{path}: expected a JSON object {{item_id: codes}} or a list of code lists")
    codes = []
    for n, v in enumerate(values):
        key = keys[n] if keys is not None else str(n)
        if not isinstance(v, list) or not v:
            raise SemrecError(f"{path}: item '{key}': expected a non-empty list of codes, got {str(v)[:40]!r}")
        if fmt == "index-json" or any(isinstance(t, str) and t.strip().startswith("<") for t in v):
            codes.append([_parse_token(t, path, key, p) for p, t in enumerate(v)])
        else:
            codes.append([_int_code(t, path, key, p) for p, t in enumerate(v)])
    return keys, codes


def tokenization_from_codes(path: str | Path, raw_ids: list[str], *, dataset_name: str = "",
                            codebook_sizes: list[int] | None = None,
                            collisions: Literal["extra_code", "sinkhorn", "error"] = "extra_code",
                            append_eos: bool = False) -> tuple[ItemTokenization, dict]:
    """Read a codes file and build the ItemTokenization of the dataset whose items have `raw_ids`.

    Returns (tokenization, report) with the report's counts (collisions, ids skipped)."""
    path = Path(path)
    keys, codes = read_codes(path)
    n = len(raw_ids)
    if keys is None:
        if len(codes) != n:
            raise SemrecError(f"{path}: has {len(codes)} rows but the dataset has {n} items (row i = item i)")
        rows, skipped = codes, 0
    else:
        by_key: dict[str, list[int]] = {}
        for k, c in zip(keys, codes):
            if k in by_key:
                raise SemrecError(f"{path}: item '{k}' has codes twice")
            by_key[k] = c
        missing = [r for r in raw_ids if r not in by_key]
        if missing:
            raise SemrecError(f"{path}: {len(missing)} of the dataset's {n} items have no codes, e.g. raw id "
                              f"'{missing[0]}' (keys must be the items' raw ids)")
        rows = [by_key[r] for r in raw_ids]
        skipped = len(by_key) - n
    lengths = {len(c) for c in rows}
    if len(lengths) > 1:
        short = min(range(n), key=lambda i: len(rows[i]))
        long = max(range(n), key=lambda i: len(rows[i]))
        raise SemrecError(f"{path}: ragged levels: item '{raw_ids[short]}' has {len(rows[short])} codes but item "
                          f"'{raw_ids[long]}' has {len(rows[long])}")
    raw = np.asarray(rows, dtype=np.int64).reshape(n, -1)
    levels = raw.shape[1]
    if (raw < 0).any():
        i, l = map(int, np.argwhere(raw < 0)[0])
        raise SemrecError(f"{path}: item '{raw_ids[i]}': code {raw[i, l]} at level {l + 1} is negative")
    if codebook_sizes is None:
        sizes = [int(raw[:, l].max()) + 1 for l in range(levels)]
    else:
        sizes = [int(k) for k in codebook_sizes]
        if len(sizes) == 1:
            sizes = sizes * levels
        if len(sizes) != levels:
            raise SemrecError(f"codebook sizes: {len(sizes)} given for {levels} levels")
        for l, k in enumerate(sizes):
            over = np.flatnonzero(raw[:, l] >= k)
            if len(over):
                i = int(over[0])
                raise SemrecError(f"{path}: item '{raw_ids[i]}': code {raw[i, l]} at level {l + 1} is out of range "
                                  f"0..{k - 1} (codebook size {k})")
    usage = code_usage(raw, sizes)
    st = collision_stats(raw)
    if st["collisions"] and collisions == "error":
        raise SemrecError(f"{path}: {st['items_in_collisions']} items share their codes with another item "
                          f"({st['collisions']} collisions); choose --collisions extra_code or sinkhorn")
    if not st["collisions"]:  # unique already: kept as given, no extra level
        resolved, new_sizes, report = raw, sizes, {"method": "none", "before": st, "after": st, "extra_level": False}
    else:
        last_dist = np.zeros((n, sizes[-1])) if collisions == "sinkhorn" else None
        resolved, new_sizes, report = resolve_collisions(raw, collisions, last_dist=last_dist, codebook_sizes=sizes)
    info = {"file": path.name, "format": code_format(path), "ids_without_items_skipped": skipped}
    stats = {"content": "external", "external_codes": info, "collisions": report, "usage_before_resolution": usage,
             "usage": code_usage(resolved, new_sizes)}
    config = {"scheme_config": {"scheme": EXTERNAL_SCHEME, "codes": info, "codebook_sizes": sizes,
                                "collisions": collisions, "append_eos": append_eos},
              "dataset": dataset_name, "num_items": n}
    tok = ItemTokenization.from_raw_codes(resolved, new_sizes, scheme=EXTERNAL_SCHEME, config=config,
                                          collisions_before=report["before"]["collisions"], append_eos=append_eos,
                                          stats=stats)
    return tok, {"collisions": report, "skipped": skipped}


def export_codes(tok: ItemTokenization, out: str | Path, raw_ids: list[str] | None = None) -> Path:
    """Write a semantic-ID tokenization's per-level codes in the format named by `out` (atomically)."""
    out = Path(out)
    fmt = code_format(out)
    if not tok.is_semantic_id:
        raise SemrecError(f"{tok.scheme} tokenization: only semantic IDs can be exported as codes")
    levels = tok.num_levels - (1 if tok.eos_id is not None else 0)
    raw = tok.raw_codes[:, :levels]
    if raw_ids is not None and len(raw_ids) != tok.num_items:
        raise SemrecError(f"the dataset has {len(raw_ids)} items but the tokenization covers {tok.num_items}")
    keys = [str(r) for r in raw_ids] if raw_ids is not None else [str(i) for i in range(tok.num_items)]
    if fmt == "npy":
        with atomic_file(out, "wb") as f:
            np.save(f, raw.astype(np.int64), allow_pickle=False)
        return out
    with atomic_file(out, "w") as f:
        if fmt in ("index-json", "json"):  # one item per line
            rows = ([f"<{_letter(l)}_{int(c)}>" for l, c in enumerate(row)] if fmt == "index-json"
                    else [int(c) for c in row] for row in raw)
            f.write("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(r)}" for k, r in zip(keys, rows)) + "\n}\n")
        else:
            w = csv.writer(f, delimiter="\t" if out.name.lower().endswith(".tsv") else ",")
            w.writerow(["item_id", *[f"code_{l}" for l in range(levels)]])
            for k, row in zip(keys, raw):
                w.writerow([k, *[int(c) for c in row]])
    return out
