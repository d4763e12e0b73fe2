"""Item content vectors: templates, attribute vectors, concatenations, caching, the real MiniLM model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from semrec.data.dataset import Examples, SeqDataset
from semrec.embeddings import (EmbedConfig, ItemEmbeddings, attribute_vectors, compute_item_embeddings,
                               encode_texts, item_texts, load_matrix, render_value)
from semrec.errors import SemrecError


def tiny_dataset(items: pd.DataFrame, name: str = "tiny") -> SeqDataset:
    splits = {s: Examples.from_lists([], [], []) for s in ("train", "valid", "test")}
    return SeqDataset(name=name, items=items, splits=splits)


def test_render_value_lists_literals_and_missing():
    assert render_value(None) == "" and render_value(float("nan")) == "" and render_value("[]") == ""
    assert render_value("['Sports & Fitness', 'Outdoor']") == "Sports & Fitness, Outdoor"
    assert render_value([["Toys", "Puzzles"], ["Games"]]) == "Toys > Puzzles, Games"
    assert render_value(np.array(["a", "b", "a"])) == "a, b"
    assert render_value("  Tom &amp; Jerry \n set ") == "Tom & Jerry set"


def test_template_optional_sections_and_missing_columns():
    items = pd.DataFrame({"title": ["Ball", "Kite", None], "brand": ["Acme", None, "Zed"]})
    t = item_texts(items, "{title}[; brand: {brand}][; category: {category}]")
    assert t == ["Ball; brand: Acme", "Kite", "; brand: Zed"]
    assert item_texts(items, None, fields=["title", "brand"]) == ["Ball; brand: Acme", "Kite", "; brand: Zed"]
    with pytest.raises(SemrecError, match="category"):
        item_texts(items, "{title} {category}")
    with pytest.raises(SemrecError, match="placeholder"):
        item_texts(items, "no fields")


def test_attribute_vectors_deterministic_and_faithful():
    rng = np.random.default_rng(0)
    brands = [f"b{i % 7}" for i in range(60)]
    cats = [[f"c{rng.integers(0, 12)}", f"c{rng.integers(0, 12)}"] for _ in range(60)]
    items = pd.DataFrame({"title": ["x"] * 60, "brand": brands, "category": cats})
    items.loc[59, "brand"] = None
    items.at[59, "category"] = []
    v1, info = attribute_vectors(items, dim=8, seed=3)
    v2, _ = attribute_vectors(items, dim=8, seed=3)
    assert v1.shape == (60, 8) and v1.dtype == np.float32
    np.testing.assert_array_equal(v1, v2)
    assert info["attribute_fields"] == ["brand", "category"] and info["items_without_attributes"] == 1
    assert np.allclose(v1[59], 0)
    # items with identical attribute sets get identical vectors
    same = [i for i in range(59) if brands[i] == brands[0] and sorted(set(cats[i])) == sorted(set(cats[0]))]
    for i in same:
        np.testing.assert_allclose(v1[i], v1[0], atol=1e-6)
    # randomized SVD is exact when the rank is below dim: brand and category carry the same partition
    # (14 tokens, rank 7), so the reduced cosines equal the exact TF-IDF cosines
    part = pd.DataFrame({"brand": [f"b{i % 7}" for i in range(40)], "category": [[f"c{i % 7}"] for i in range(40)]})
    full, info_full = attribute_vectors(part, dim=100)
    red, info_red = attribute_vectors(part, dim=10)
    assert info_full["reduction"] == "none" and info_red["reduction"].startswith("randomized SVD")
    np.testing.assert_allclose(red @ red.T, full @ full.T, atol=1e-5)
    with pytest.raises(SemrecError, match="nope"):
        attribute_vectors(items, ["nope"])


def test_concatenation_cosine_is_weighted_mean_and_cf_checks():
    rng = np.random.default_rng(1)
    items = pd.DataFrame({"title": ["a"] * 30, "brand": [f"b{i % 5}" for i in range(30)]})
    ds = tiny_dataset(items)
    cf = rng.standard_normal((30, 6)).astype(np.float32)
    cfg = EmbedConfig(content="attributes+cf", weights={"attributes": 1.0, "cf": 3.0}, normalize=False)
    res = compute_item_embeddings(ds, cfg, cf_emb=cf)
    assert res.content == "attributes+cf" and set(res.info["parts"]) == {"attributes", "cf"}
    a, _ = attribute_vectors(items)
    c = cf / np.linalg.norm(cf, axis=1, keepdims=True)
    np.testing.assert_allclose(res.vectors @ res.vectors.T, (a @ a.T + 3 * (c @ c.T)), atol=1e-5)
    with pytest.raises(SemrecError, match="needs CF item embeddings"):
        compute_item_embeddings(ds, EmbedConfig(content="cf"))
    with pytest.raises(SemrecError, match="29 rows but the catalogue has 30 items"):
        compute_item_embeddings(ds, EmbedConfig(content="cf"), cf_emb=cf[:29])
    with pytest.raises(SemrecError, match="content 'words'"):
        compute_item_embeddings(ds, {"content": "words"})
    with pytest.raises(SemrecError, match="unknown key 'templat'"):
        compute_item_embeddings(ds, {"templat": "{title}"})


def test_item_embeddings_save_load_and_row_check(tmp_path):
    v = np.arange(12, dtype=np.float32).reshape(4, 3)
    p = ItemEmbeddings(v, "text", {"model": "m"}).save(tmp_path / "e")
    assert p.name == "e.npy"
    back = ItemEmbeddings.load(p)
    np.testing.assert_array_equal(back.vectors, v)
    assert back.content == "text" and back.info == {"model": "m"}
    with pytest.raises(SemrecError, match="has 4 rows but the catalogue has 5 items"):
        load_matrix(p, rows=5)
    np.save(tmp_path / "bad.npy", np.array([[1.0, np.nan]], dtype=np.float32))
    with pytest.raises(SemrecError, match="NaN"):
        load_matrix(tmp_path / "bad.npy")


@pytest.fixture(scope="module")
def real_titles(repo_data):
    df = pd.read_csv(repo_data / "amazon18_toys_tca4rec" / "item.csv.gz", nrows=6)
    return df["title"].tolist()


def test_minilm_embeds_real_titles_offline_with_cache_and_resume(real_titles, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    from semrec.embeddings import default_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = real_titles
    v, info = encode_texts(texts, batch_size=4, cache_dir=tmp_path, chunk_size=4, progress=False)
    assert v.shape == (6, 384) and v.dtype == np.float32 and info["cached"] is False
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    ref = SentenceTransformer(str(default_model_path()), device="cpu").encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(v, ref, atol=1e-5)
    # two LEGO Star Wars sets are closer to each other than to a PLAYMOBIL dragon
    assert "LEGO" in texts[0] and "LEGO" in texts[1] and "PLAYMOBIL" in texts[3]
    assert v[0] @ v[1] > v[0] @ v[3]
    # cache hit: same key, no model needed
    v2, info2 = encode_texts(texts, batch_size=4, cache_dir=tmp_path, progress=False)
    assert info2["cached"] is True and info2["cache_key"] == info["cache_key"]
    np.testing.assert_array_equal(np.asarray(v2), np.asarray(v))
    # resume: fake an interrupted run that finished 4 rows (rows 4.. deliberately garbage-free zeros)
    final = tmp_path / f"text-{info['cache_key']}.npy"
    part = tmp_path / f"text-{info['cache_key']}.partial.npy"
    arr = np.lib.format.open_memmap(part, mode="w+", dtype=np.float32, shape=(6, 384))
    arr[:4] = np.asarray(v)[:4]
    arr[4:] = 0
    arr.flush()
    del arr, v2
    final.unlink()
    (tmp_path / f"text-{info['cache_key']}.progress.json").write_text(
        json.dumps({"key": info["cache_key"], "rows_done": 4}))
    v4, _ = encode_texts(texts, batch_size=4, cache_dir=tmp_path, chunk_size=4, progress=False)
    np.testing.assert_allclose(np.asarray(v4), np.asarray(v), atol=1e-6)
    assert not part.exists() and final.exists()


def test_bad_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(SemrecError, match="not a local model directory"):
        encode_texts(["a"], tmp_path / "missing", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SemrecError, match="neither a sentence-transformers"):
        encode_texts(["a"], tmp_path / "empty", progress=False)
