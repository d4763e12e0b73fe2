"""ItemTokenization: layout, lookups both ways, round trips, title scheme, scheme YAMLs, CLI, compare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from semrec.data.dataset import Examples, SeqDataset
from semrec.errors import SemrecError
from semrec.itemtok.artifact import ItemTokenization
from semrec.itemtok.quality import code_usage
from semrec.itemtok.titles import title_tokenization
from semrec.itemtok.compare import (chance_agreement, cf_neighbours, evaluate_tokenization, mean_pair_cosine,
                                       neighbour_agreement, prefix_keys)
from semrec.itemtok.schemes import SCHEMES, build_tokenization, load_scheme
from semrec.quantizers import QUANTIZERS

REPO = Path(__file__).resolve().parents[2]
TINY_RQVAE = {"scheme": "rqvae", "quantizer": {"codebook_sizes": [6, 6], "hidden_dims": [16], "latent_dim": 4,
                                               "epochs": 2, "batch_size": 64}}


def tiny_dataset(n: int = 120, titles=None, name: str = "tiny") -> SeqDataset:
    items = pd.DataFrame({"raw_id": [f"i{i}" for i in range(n)],
                          "title": titles if titles is not None else [f"item {i}" for i in range(n)]})
    rng = np.random.default_rng(0)
    hist = [rng.integers(0, n, 3).tolist() for _ in range(10)]
    ex = Examples.from_lists(np.zeros(10, dtype=np.int64), hist, rng.integers(0, n, 10))
    return SeqDataset(name=name, items=items, splits={"train": ex, "valid": ex, "test": ex},
                      users=pd.DataFrame({"raw_id": ["u0"]}))


@pytest.fixture(scope="module")
def emb():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 10)).astype(np.float32)
    x[:30] = x[0]  # adversarial: 30 identical items
    return x


def test_layout_offsets_and_lookups_both_ways():
    raw = np.array([[0, 2, 1], [3, 0, 0], [0, 2, 0]])
    tok = ItemTokenization.from_raw_codes(raw, [4, 3, 2], scheme="rqkmeans", config={"a": 1})
    assert tok.level_offsets == [3, 7, 10] and tok.vocab_size == 12
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, None)
    assert tok.codes.dtype == torch.long and tok.codes.tolist() == [[3, 9, 11], [6, 7, 10], [3, 9, 10]]
    np.testing.assert_array_equal(tok.raw_codes, raw)
    names = tok.token_strings()
    assert len(names) == 12 and names[:3] == ["<pad>", "<bos>", "<eos>"] and names[9] == "<b_2>"
    for i in range(3):
        assert tok.item_of_codes(tok.codes_of_item(i)) == i
        assert tok.item_of_codes(torch.tensor(tok.codes_of_item(i) + [0, 0])) == i  # trailing pads ignored
    assert tok.item_of_codes([3, 9]) == -1 and tok.items_of_codes([99]) == []
    with pytest.raises(SemrecError, match="item id 3 outside 0..2"):
        tok.codes_of_item(3)
    with pytest.raises(SemrecError, match="level 1 has a code outside 0..2"):
        ItemTokenization.from_raw_codes(np.array([[0, 3]]), [4, 3], scheme="rqkmeans")
    eos = ItemTokenization.from_raw_codes(raw, [4, 3, 2], scheme="rqkmeans", append_eos=True)
    assert eos.eos_id == 2 and eos.codes[:, -1].tolist() == [2, 2, 2] and eos.num_levels == 4
    assert len(eos.token_strings()) == eos.vocab_size


def test_build_round_trip_unique_ids_and_prefix_index(emb, tmp_path):
    ds = tiny_dataset()
    for method in ("sinkhorn", "extra_code"):
        scheme = {**TINY_RQVAE, "collisions": {"method": method}}
        tok = build_tokenization(ds, scheme, embeddings=emb, progress=False)
        assert tok.collisions_before >= 29
        assert len(np.unique(tok.codes.numpy(), axis=0)) == 120  # unique after resolution
        assert tok.stats["collisions"]["before"]["collisions"] == tok.collisions_before
        for i in range(120):
            assert tok.item_of_codes(tok.codes_of_item(i)) == i
        tok.save_pretrained(tmp_path / method)
        back = ItemTokenization.from_pretrained(tmp_path / method)
        assert torch.equal(back.codes, tok.codes) and back.layout() == tok.layout()
        assert back.config == json.loads(json.dumps(tok.config)) and back.collisions_before == tok.collisions_before
        np.testing.assert_array_equal(back.quantizer.encode(emb), tok.quantizer.encode(emb))
        index = back.prefix_index()
        assert index.items_of(back.codes).tolist() == list(range(120))
        assert index.vocab_size == back.vocab_size and index.pad_id == back.pad_id
    assert not list(tmp_path.rglob("*.pkl"))
    again = build_tokenization(ds, {**TINY_RQVAE, "collisions": {"method": "extra_code"}}, embeddings=emb,
                               progress=False)
    assert torch.equal(again.codes, tok.codes)  # deterministic under the seed


def test_row_mismatch_and_scheme_errors(emb, tmp_path):
    ds = tiny_dataset()
    with pytest.raises(SemrecError, match="has 119 rows but the catalogue has 120 items"):
        build_tokenization(ds, TINY_RQVAE, embeddings=emb[:119], progress=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("scheme: rqvae\nquantizer:\n  codebook_sizes: [4]\n  epoch: 3\n")
    with pytest.raises(SemrecError, match=r"bad.yaml: quantizer: unknown key 'epoch'; did you mean 'epochs'"):
        load_scheme(bad)
    bad.write_text("scheme: rqvae\ncolision: {method: sinkhorn}\n")
    with pytest.raises(SemrecError, match="unknown key 'colision'"):
        load_scheme(bad)
    bad.write_text("scheme: magic\n")
    with pytest.raises(SemrecError, match="expected one of"):
        load_scheme(bad)
    with pytest.raises(SemrecError, match="letter: needs CF item embeddings"):
        build_tokenization(ds, {**TINY_RQVAE, "scheme": "letter"}, embeddings=emb, progress=False)


def test_repository_scheme_files_load():
    files = sorted((REPO / "tokenizers").glob("*.yaml"))
    assert {f.stem for f in files} >= {"rqkmeans", "rqvae", "letter", "title"}
    assert not (REPO / "tokenizers" / "__init__.py").exists()
    for f in files:
        cfg = load_scheme(f)
        assert cfg.scheme == f.stem or f.stem not in ("rqkmeans", "rqvae", "letter", "title")


def test_scheme_names_are_the_quantizers_and_title():
    assert set(SCHEMES) == set(QUANTIZERS) | {"title"}


def test_balanced_scheme_keeps_the_balanced_codes_of_the_catalogue(emb, tmp_path):
    """build_tokenization takes the fitted assignment (fit_encode), not the nearest-centroid re-encoding:
    the first level holds at most ceil(120 / 8) = 15 items per code, 30 duplicates included."""
    ds = tiny_dataset()
    scheme = {"scheme": "rqkmeans_balanced", "quantizer": {"codebook_sizes": [8, 8], "balance_iters": 3}}
    tok = build_tokenization(ds, scheme, embeddings=emb, progress=False)
    raw = tok.raw_codes
    assert np.bincount(raw[:, 0], minlength=8).max() <= 15
    assert np.bincount(tok.quantizer.encode(emb)[:, 0]).max() >= 30  # nearest: the duplicates share a code
    assert tok.stats["usage_before_resolution"][0]["perplexity"] > 7.5
    tok.save_pretrained(tmp_path / "balanced")
    assert torch.equal(ItemTokenization.from_pretrained(tmp_path / "balanced").codes, tok.codes)


def test_title_scheme_merges_duplicates_and_round_trips(tmp_path):
    titles = ["LEGO Star Wars Battle", "Kite &amp; string", "LEGO Star Wars  Battle", "Puzzle 1000", "Puzzle 1000"]
    tok = title_tokenization(titles)
    assert tok.scheme == "title" and tok.eos_id is not None
    ids = tok.tokenizer("LEGO Star Wars Battle", add_special_tokens=False)["input_ids"]
    assert tok.codes_of_item(0) == ids + [tok.eos_id]
    assert tok.codes_of_item(1)[:-1] == tok.tokenizer("Kite & string", add_special_tokens=False)["input_ids"]
    assert tok.entry_of_item.tolist() == [0, 1, 0, 2, 2] and tok.collisions_before == 2
    assert tok.entry_items.tolist() == [0, 1, 3]
    assert tok.item_of_codes(tok.codes_of_item(2)) == 0 and tok.items_of_codes(tok.codes_of_item(4)) == [3, 4]
    for i in range(5):  # every row: tokens, EOS, then only padding; pad never inside a title
        row = tok.codes[i].tolist()
        n = int(tok.lengths[i])
        assert row[n - 1] == tok.eos_id and all(t == tok.pad_id for t in row[n:])
        assert tok.pad_id not in row[:n]
    tok.save_pretrained(tmp_path / "t")
    back = ItemTokenization.from_pretrained(tmp_path / "t")
    assert torch.equal(back.codes, tok.codes) and back.entry_of_item.tolist() == tok.entry_of_item.tolist()
    assert back.tokenizer("Puzzle 1000", add_special_tokens=False)["input_ids"] == tok.codes_of_item(3)[:-1]
    index = back.prefix_index()
    assert index.items_of(back.codes).tolist() == [0, 1, 0, 3, 3]
    assert index.all_items_of(back.codes[3]) == [3, 4]
    with pytest.raises(SemrecError, match="1 item\\(s\\) have no title"):
        title_tokenization(["a", None])


def test_compare_metrics_match_naive():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    codes = rng.integers(0, 3, (40, 2))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for depth in (1, 2):
        keys = prefix_keys(codes, depth)
        pairs = [(i, j) for i in range(40) for j in range(40) if i != j and (codes[i, :depth] == codes[j, :depth]).all()]
        naive = np.mean([xn[i] @ xn[j] for i, j in pairs])
        assert mean_pair_cosine(x, keys) == pytest.approx(naive, abs=1e-6)
        assert chance_agreement(keys) == pytest.approx(len(pairs) / (40 * 39))
    assert mean_pair_cosine(x) == pytest.approx(np.mean([xn[i] @ xn[j] for i in range(40) for j in range(40) if i != j]))
    cf = rng.standard_normal((40, 4)).astype(np.float32)
    nb = cf_neighbours(cf, 5)
    cn = cf / np.linalg.norm(cf, axis=1, keepdims=True)
    sim = cn @ cn.T
    np.fill_diagonal(sim, -np.inf)
    np.testing.assert_array_equal(np.sort(nb, 1), np.sort(np.argsort(-sim, 1)[:, :5], 1))
    k1 = prefix_keys(codes, 1)
    assert neighbour_agreement(nb, k1) == pytest.approx(np.mean([k1[i] == k1[j] for i in range(40) for j in nb[i]]))
    usage = code_usage(np.array([[0], [0], [1], [2]]), [4])[0]
    assert usage["codes_used"] == 3 and usage["perplexity"] == pytest.approx(np.exp(-(0.5 * np.log(0.5) + 0.5 * np.log(0.25))))


def test_cli_tokenize_and_compare(emb, tmp_path, capsys):
    from semrec.cli import main

    ds = tiny_dataset()
    ds.save_pretrained(tmp_path / "ds")
    np.save(tmp_path / "emb.npy", emb)
    scheme = tmp_path / "s.yaml"
    scheme.write_text(json.dumps(TINY_RQVAE))  # JSON is YAML
    out = tmp_path / "tok"
    assert main(["tokenize", "--data", str(tmp_path / "ds"), "--scheme", str(scheme), "--out", str(out),
                 "--embeddings", str(tmp_path / "emb.npy"), "--set", "collisions.method=extra_code",
                 "--no-progress", "--no-cache"]) == 0
    tok = ItemTokenization.from_pretrained(out)
    assert tok.num_levels == 3 and tok.config["scheme_config"]["collisions"]["method"] == "extra_code"
    np.save(tmp_path / "short.npy", emb[:50])
    assert main(["tokenize", "--data", str(tmp_path / "ds"), "--scheme", str(scheme), "--out", str(tmp_path / "x"),
                 "--embeddings", str(tmp_path / "short.npy"), "--no-progress"]) == 2
    assert "has 50 rows but" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("scheme: rqkmeans\nquantizr: {}\n")
    assert main(["tokenize", "--data", str(tmp_path / "ds"), "--scheme", str(bad), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'quantizr'" in err and "Traceback" not in err and err.count("\n") == 1
    # compare: attributes-free tiny catalogue, text replaced by CF content so nothing needs the text model
    cf = tmp_path / "cf.npy"
    np.save(cf, emb)
    s1, s2 = tmp_path / "a.yaml", tmp_path / "b.yaml"
    s1.write_text(json.dumps({**TINY_RQVAE, "embedding": {"content": "cf"}}))
    s2.write_text(json.dumps({"scheme": "rqkmeans", "embedding": {"content": "cf"},
                              "quantizer": {"codebook_sizes": [6, 6]}}))
    assert main(["tokenizers", "compare", "--data", str(tmp_path / "ds"), "--schemes", str(s1), str(s2),
                 "--cf-emb", str(cf), "--out", str(tmp_path / "cmp"), "--no-progress", "--no-cache"]) == 0
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["a", "b"] and all(r["unique_ids_after"] for r in rows)
    assert rows[1]["recon_rel_mse"] < 1 and rows[0]["content"] == "cf"
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000
    assert "| a |" in (tmp_path / "cmp" / "compare.md").read_text()
    assert ItemTokenization.from_pretrained(tmp_path / "cmp" / "b").scheme == "rqkmeans"
    row = evaluate_tokenization(ItemTokenization.from_pretrained(tmp_path / "cmp" / "b"))
    assert row["collisions_before"] == rows[1]["collisions_before"]
