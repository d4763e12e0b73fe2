"""`semrec data import-rows` on row files in the MiniOneRec/BIGRec layout and in the TCA4Rec layout."""


import numpy as np
import pytest

from semrec.cli import main
from semrec.data import load_dataset
from semrec.data.dataset import SPLITS
from semrec.data.rows import RowsConfig, import_rows
from semrec.errors import SemrecError
from helpers.external_formats import ROWS, TITLES, write_minionerec

def test_minionerec_rows_kept_as_given(tmp_path):
    paths, items = write_minionerec(tmp_path, ROWS)
    ds = import_rows(paths["train"], paths["valid"], paths["test"], items)
    assert ds.protocol == "T" and ds.interactions is None
    assert ds.items["raw_id"].tolist() == [str(i) for i in range(10)] and ds.titles == TITLES
    assert ds.items["description"].iloc[0] == "A digital caliper 6in."
    assert ds.users["raw_id"].tolist() == ["0", "1", "2", "3"]  # first appearance over train, valid, test
    for s in SPLITS:
        got = [(int(ds.users["raw_id"][u]), h.tolist(), int(t))
               for u, h, t in zip(ds.splits[s].users, ds.splits[s].histories(), ds.splits[s].targets)]
        assert got == [(u, h, t) for u, h, t in ROWS[s]]
    assert ds.info["history_length"] == {"min": 1, "max": 5, "mean": pytest.approx(np.mean(
        [len(h) for s in SPLITS for _, h, _ in ROWS[s]]))}


def test_tca4rec_layout_with_flags(tmp_path):
    """TCA4Rec's row columns (uid, iid, hist_id, his_len, timestamp) set by flags; his_len is checked."""
    (tmp_path / "items.csv").write_text("item_id,title\n" + "".join(f"{i},{t}\n" for i, t in enumerate(TITLES)))
    for s, rows in ROWS.items():
        (tmp_path / f"{s}.csv").write_text("uid,iid,his_len,hist_id,timestamp\n" + "".join(
            f'{u},{t},{len(h)},"{h}",{100 * k}\n' for k, (u, h, t) in enumerate(rows)))
    argv = ["data", "import-rows", *[x for s in SPLITS for x in (f"--{s}", str(tmp_path / f"{s}.csv"))],
            "--items", str(tmp_path / "items.csv"), "--user-col", "uid", "--history-col", "hist_id",
            "--target-col", "iid", "--length-col", "his_len", "--out", str(tmp_path / "d")]
    assert main(argv) == 0
    ds = load_dataset(tmp_path / "d")
    assert ds.test.timestamps.tolist() == [0, 100] and ds.test.history(0).tolist() == [1, 2, 3, 4, 5]
    # a stated length that disagrees with the list
    (tmp_path / "valid.csv").write_text('uid,iid,his_len,hist_id,timestamp\n0,5,3,"[1, 2, 3, 4]",7\n')
    with pytest.raises(SemrecError, match=r"valid.csv: line 2: history has 4 items but his_len is '3'"):
        import_rows(*(tmp_path / f"{s}.csv" for s in SPLITS), tmp_path / "items.csv",
                    RowsConfig(user_col="uid", history_col="hist_id", target_col="iid", length_col="his_len"))


def test_split_lists_of_raw_ids(tmp_path):
    (tmp_path / "items.tsv").write_text("asin\tname\n" + "".join(f"B0{i}\t{t}\n" for i, t in enumerate(TITLES)))
    for s, rows in ROWS.items():
        (tmp_path / f"{s}.tsv").write_text("user\tseq\tnext\n" + "".join(
            f"u{u}\t{'|'.join(f'B0{i}' for i in h)}\tB0{t}\n" for u, h, t in rows))
    cfg = RowsConfig(user_col="user", history_col="seq", target_col="next", list_format="split", list_sep="|",
                     items_id_col="asin", title_col="name")
    ds = import_rows(*(tmp_path / f"{s}.tsv" for s in SPLITS), tmp_path / "items.tsv", cfg)
    assert ds.train.history(1).tolist() == [1, 2, 3] and ds.items["raw_id"][3] == "B03"


def test_parquet_rows_with_real_lists(tmp_path):
    import pandas as pd

    (tmp_path / "items.csv").write_text("item_id,title\n" + "".join(f"{i},{t}\n" for i, t in enumerate(TITLES)))
    for s, rows in ROWS.items():
        pd.DataFrame({"user_id": [u for u, _, _ in rows], "history_item_id": [h for _, h, _ in rows],
                      "item_id": [t for _, _, t in rows]}).to_parquet(tmp_path / f"{s}.parquet")
    ds = import_rows(*(tmp_path / f"{s}.parquet" for s in SPLITS), tmp_path / "items.csv")
    assert [h.tolist() for h in ds.valid.histories()] == [h for _, h, _ in ROWS["valid"]]


@pytest.mark.parametrize("bad_row, expect", [
    ((0, [1, 42], 3), r"train.csv: line 3: history item '42' is not in .*item.json"),
    ((0, [1, 2], 77), r"train.csv: line 3: target item '77' is not in"),
    ((0, [], 3), r"train.csv: line 3: empty history in column history_item_id"),
    ((0, "[1, 2", 3), r"train.csv: line 3: column history_item_id: not a list literal: '\[1, 2'"),
    ((0, "1 2 3", 3), r"not a list literal: '1 2 3' \(see --list-format\)"),
])
def test_bad_rows(tmp_path, bad_row, expect):
    rows = dict(ROWS, train=[ROWS["train"][0], bad_row, *ROWS["train"][1:]])
    paths, items = write_minionerec(tmp_path, rows)
    with pytest.raises(SemrecError, match=expect):
        import_rows(paths["train"], paths["valid"], paths["test"], items)
    # the CLI: one line, exit 2, nothing written
    argv = ["data", "import-rows", *[x for s in SPLITS for x in (f"--{s}", str(paths[s]))], "--items", str(items),
            "--out", str(tmp_path / "out")]
    assert main(argv) == 2 and not (tmp_path / "out").exists()
