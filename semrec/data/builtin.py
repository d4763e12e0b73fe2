"""Built-in datasets by name, read from the repository's bundled `data/` folder (or $SEMREC_DATA_DIR)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Callable

from semrec.data.dataset import SeqDataset, load_dataset
from semrec.data.p5s3rec import load_p5s3rec
from semrec.data.tca4rec import load_tca4rec
from semrec.errors import SemrecError

DATA_ENV = "SEMREC_DATA_DIR"
P5S3REC_FOLDER = "amazon14_p5s3rec_seq"


def _tca(folder: str, name: str) -> Callable[[Path], SeqDataset]:
    def load(root: Path) -> SeqDataset:
        return load_tca4rec(root / folder, name=name)
    load.__doc__ = f"Protocol T: {folder} (TCA4Rec release, 10k/5k/5k rows, history 10)."
    return load


def _p5(category: str, name: str) -> Callable[[Path], SeqDataset]:
    def load(root: Path) -> SeqDataset:
        return load_p5s3rec(root / P5S3REC_FOLDER, category, name=name)
    load.__doc__ = f"Protocol P: {category} 5-core sequences (S3Rec/TIGER), leave-one-out."
    return load


# name -> loader(data_dir) -> SeqDataset
BUILTIN_DATASETS: dict[str, Callable[[Path], SeqDataset]] = {
    "toys-t": _tca("amazon18_toys_tca4rec", "toys-t"),
    "sports-t": _tca("amazon18_sports_tca4rec", "sports-t"),
    "office-t": _tca("amazon18_office_tca4rec", "office-t"),
    "toys-p": _p5("Toys_and_Games", "toys-p"),
    "sports-p": _p5("Sports_and_Outdoors", "sports-p"),
    "beauty-p": _p5("Beauty", "beauty-p"),
}


def data_dir() -> Path:
    """The bundled data folder: $SEMREC_DATA_DIR if set, else `data/` next to the semrec package."""
    env = os.environ.get(DATA_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise SemrecError(f"{DATA_ENV}={env}: no such directory")
        return path
    import semrec

    path = Path(semrec.__file__).resolve().parent.parent / "data"
    if not path.is_dir():
        raise SemrecError(f"bundled data folder not found at {path} (installed without the repository? "
                          f"set {DATA_ENV} to the repository's data/ folder)")
    return path


def _unknown(name: str) -> SemrecError:
    close = difflib.get_close_matches(name, list(BUILTIN_DATASETS), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return SemrecError(f"unknown dataset '{name}'{hint} (builtins: {', '.join(BUILTIN_DATASETS)}; "
                       "or give a dataset directory)")


def load_builtin(name: str) -> SeqDataset:
    """Load a bundled dataset by name (toys-t, sports-t, office-t, toys-p, sports-p, beauty-p)."""
    if name not in BUILTIN_DATASETS:
        close = difflib.get_close_matches(name, list(BUILTIN_DATASETS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise SemrecError(f"unknown builtin dataset '{name}'{hint} (choose from {', '.join(BUILTIN_DATASETS)})")
    return BUILTIN_DATASETS[name](data_dir())


def resolve_dataset(spec: str | Path) -> SeqDataset:
    """A builtin name or a dataset directory written by `save_pretrained` / `semrec data ...`."""
    spec_s = str(spec)
    if spec_s in BUILTIN_DATASETS:
        return load_builtin(spec_s)
    path = Path(spec_s).expanduser()
    if path.is_dir():
        return load_dataset(path)
    if path.exists():
        raise SemrecError(f"{path}: not a dataset directory")
    raise _unknown(spec_s)
