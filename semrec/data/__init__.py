"""Datasets: the canonical `SeqDataset`, built-in loaders, raw Amazon dumps, generic import, stats.

    from semrec.data import load_builtin, resolve_dataset
    ds = load_builtin("toys-t")            # or resolve_dataset("path/to/saved_dir")
    ds.items, ds.train.padded_histories(10)

Example tables (`semrec.data.examples`: ExampleTable, training_examples) hold torch tensors and are not
imported here: importing torch adds about 2 s (measured) to every `semrec data` command, which never needs it.
"""

from semrec.data.amazon_raw import AmazonConfig, load_amazon, load_amazon2023, read_amazon_meta, read_amazon_reviews
from semrec.data.builtin import BUILTIN_DATASETS, data_dir, load_builtin, resolve_dataset
from semrec.data.dataset import SPLITS, Examples, SeqDataset, load_dataset
from semrec.data.events import PrepareConfig, build_from_events, clean_title
from semrec.data.importer import ImportConfig, import_dataset, read_interactions, read_items
from semrec.data.p5s3rec import load_p5s3rec
from semrec.data.recbole import RecBoleConfig, export_recbole, load_recbole
from semrec.data.rows import RowsConfig, import_rows
from semrec.data.splits import kcore_mask, leave_one_out, time_split
from semrec.data.stats import dataset_stats, format_stats
from semrec.data.tca4rec import load_tca4rec

__all__ = [
    "SPLITS", "Examples", "SeqDataset", "load_dataset",
    "BUILTIN_DATASETS", "data_dir", "load_builtin", "resolve_dataset",
    "load_tca4rec", "load_p5s3rec",
    "AmazonConfig", "load_amazon", "load_amazon2023", "read_amazon_reviews", "read_amazon_meta",
    "RecBoleConfig", "load_recbole", "export_recbole", "RowsConfig", "import_rows",
    "ImportConfig", "import_dataset", "read_interactions", "read_items",
    "PrepareConfig", "build_from_events", "clean_title",
    "kcore_mask", "leave_one_out", "time_split",
    "dataset_stats", "format_stats",
]
