"""Semantic IDs made elsewhere: MiniOneRec index.json and GRID/LETTER-style code tables, import and export."""

import json

import numpy as np
import pandas as pd
import pytest

from semrec.cli import main
from semrec.data.dataset import Examples, SeqDataset
from semrec.itemtok.external import export_codes, read_codes, tokenization_from_codes
from semrec.itemtok.artifact import ItemTokenization
from semrec.quantizers.collisions import collision_stats, extra_code
from semrec.errors import SemrecError

N = 12
RAW = [str(100 + i) for i in range(N)]


def dataset(tmp_path):
    ex = Examples.from_lists([0, 1], [[0, 1], [2]], [3, 4])
    ds = SeqDataset("shop", pd.DataFrame({"raw_id": RAW, "title": [f"Item {i}" for i in range(N)]}),
                    {"train": ex, "valid": ex, "test": ex}, users=pd.DataFrame({"raw_id": ["a", "b"]}))
    return ds.save_pretrained(tmp_path / "data")


def codes(unique=True):
    rng = np.random.default_rng(0)
    c = np.stack([rng.integers(0, 4, N), rng.integers(0, 5, N), np.arange(N) % 6], axis=1)
    if not unique:
        c[5] = c[2]
        c[9] = c[2]
    return c


def write_index_json(path, c, keys=RAW):
    path.write_text(json.dumps({k: [f"<{'abcd'[l]}_{int(v)}>" for l, v in enumerate(row)] for k, row in zip(keys, c)}))


def test_minionerec_index_json(tmp_path):
    c = codes()
    write_index_json(tmp_path / "Industrial.index.json", c[::-1], keys=RAW[::-1])  # key order does not matter
    tok, report = tokenization_from_codes(tmp_path / "Industrial.index.json", RAW)
    assert tok.scheme == "external" and tok.is_semantic_id
    assert np.array_equal(tok.raw_codes, c) and tok.codebook_sizes == [int(c[:, l].max()) + 1 for l in range(3)]
    assert tok.collisions_before == 0 and not report["collisions"]["extra_level"]
    assert tok.item_of_codes(tok.codes_of_item(7)) == 7
    names = tok.token_strings()
    assert [names[t] for t in tok.codes_of_item(0)] == [f"<{'abc'[l]}_{c[0, l]}>" for l in range(3)]


@pytest.mark.parametrize("ext", ["json", "csv", "tsv", "npy"])
def test_code_tables(tmp_path, ext):
    c = codes()
    f = tmp_path / f"codes.{ext}"
    if ext == "json":
        f.write_text(json.dumps({k: row.tolist() for k, row in zip(RAW, c)}))
    elif ext == "npy":
        np.save(f, c)
    else:
        sep = "," if ext == "csv" else "\t"
        f.write_text(sep.join(["item", "c0", "c1", "c2"]) + "\n"
                     + "".join(sep.join([k, *map(str, row)]) + "\n" for k, row in zip(RAW, c)))
    tok, _ = tokenization_from_codes(f, RAW, codebook_sizes=[8])
    assert np.array_equal(tok.raw_codes, c) and tok.codebook_sizes == [8, 8, 8] and tok.vocab_size == 3 + 24


def test_collisions_reported_and_resolved(tmp_path):
    c = codes(unique=False)
    write_index_json(tmp_path / "x.index.json", c)
    tok, report = tokenization_from_codes(tmp_path / "x.index.json", RAW)
    assert tok.collisions_before == 2 and report["collisions"]["before"]["items_in_collisions"] == 3
    assert tok.num_levels == 4 and collision_stats(tok.raw_codes)["collisions"] == 0
    assert tok.raw_codes[[2, 5, 9], 3].tolist() == [0, 1, 2]  # extra_code: rank by item id
    tok2, report2 = tokenization_from_codes(tmp_path / "x.index.json", RAW, collisions="sinkhorn", codebook_sizes=[6])
    assert tok2.num_levels == 3 and collision_stats(tok2.raw_codes)["collisions"] == 0
    changed = np.flatnonzero((tok2.raw_codes != c).any(1))
    assert set(changed) <= {2, 5, 9} and np.array_equal(tok2.raw_codes[:, :2], c[:, :2])
    with pytest.raises(SemrecError, match="3 items share their codes"):
        tokenization_from_codes(tmp_path / "x.index.json", RAW, collisions="error")


@pytest.mark.parametrize("fmt", ["index.json", "json", "csv", "npy"])
def test_export_import_round_trip(tmp_path, fmt):
    c = codes(unique=False)
    tok = ItemTokenization.from_raw_codes(c, [4, 5, 6], scheme="rqkmeans")
    resolved, k = extra_code(c)  # as TIGER's scheme resolves them, then EOS
    tok_x = ItemTokenization.from_raw_codes(resolved, [4, 5, 6, k], scheme="rqkmeans", append_eos=True)
    for t in (tok, tok_x):
        out = export_codes(t, tmp_path / f"codes.{fmt}", RAW if fmt != "npy" else None)
        sizes = t.codebook_sizes[: t.num_levels - (1 if t.eos_id is not None else 0)]
        back, _ = tokenization_from_codes(out, RAW, codebook_sizes=sizes, collisions="sinkhorn" if t is tok_x
                                          else "extra_code", append_eos=t.eos_id is not None)
        if t is tok:  # the import resolves the collisions the export kept
            assert np.array_equal(back.raw_codes[:, :3], t.raw_codes) and back.num_levels == 4
        else:  # unique codes come back exactly, EOS included
            assert torch_equal(back.codes, t.codes) and back.vocab_size == t.vocab_size
    if fmt == "index.json":
        text = json.loads((tmp_path / "codes.index.json").read_text())
        assert text[RAW[0]] == [f"<a_{c[0, 0]}>", f"<b_{c[0, 1]}>", f"<c_{c[0, 2]}>", "<d_0>"]


def torch_equal(a, b):
    return a.shape == b.shape and bool((a == b).all())


@pytest.mark.parametrize("content, expect", [
    ({k: ["<a_1>", "<b_2>"] for k in RAW[:-1]}, r"1 of the dataset's 12 items have no codes, e.g. raw id '111'"),
    ({**{k: ["<a_1>", "<b_2>"] for k in RAW}, RAW[3]: ["<a_1>"]}, r"ragged levels: item '103' has 1 codes but"),
    ({**{k: ["<a_1>", "<b_2>"] for k in RAW}, RAW[4]: ["<a_1>", "<c_2>"]}, r"position 2 should be level 'b'"),
    ({**{k: ["<a_1>", "<b_2>"] for k in RAW}, RAW[4]: ["<a_1>", "b2"]}, r"token 'b2' at position 2 is not"),
    ({**{k: ["<a_1>", "<b_2>"] for k in RAW}, RAW[6]: ["<a_9>", "<b_2>"]}, r"item '106': code 9 at level 1 is out "
                                                                            r"of range 0..3 \(codebook size 4\)"),
])
def test_bad_codes_one_line(tmp_path, content, expect):
    f = tmp_path / "bad.index.json"
    f.write_text(json.dumps(content))
    with pytest.raises(SemrecError, match=expect):
        tokenization_from_codes(f, RAW, codebook_sizes=[4])


def test_cli_from_codes_and_export(tmp_path, capsys):
    data = dataset(tmp_path)
    write_index_json(tmp_path / "shop.index.json", codes(unique=False))
    out = tmp_path / "ids"
    assert main(["tokenize", "--from-codes", str(tmp_path / "shop.index.json"), "--data", str(data),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "collisions: 2 (3 items share codes), resolved by extra_code" in printed
    tok = ItemTokenization.from_pretrained(out)
    assert tok.num_items == N and tok.scheme == "external"
    assert main(["tokenize", "--export", str(out), "--data", str(data), "--out", str(tmp_path / "x.index.json")]) == 0
    keys, back = read_codes(tmp_path / "x.index.json")
    assert keys == RAW and np.array_equal(np.asarray(back), tok.raw_codes)
    # bad input: one line, exit 2, nothing written
    (tmp_path / "bad.index.json").write_text(json.dumps({k: ["<a_1>"] for k in RAW[1:]}))
    assert main(["tokenize", "--from-codes", str(tmp_path / "bad.index.json"), "--data", str(data),
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "have no codes" in err and not (tmp_path / "bad").exists()
