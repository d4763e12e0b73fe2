"""The content-addressed stage cache (semrec.pipeline.cache)."""

import pytest

from semrec.errors import SemrecError
from semrec.pipeline.cache import StageCache, content_key


def test_stage_cache_reuses_and_detects_tampering(tmp_path):
    cache = StageCache(tmp_path)
    calls = []

    def make(d):
        calls.append(1)
        (d / "x.txt").write_text("payload")

    d1 = cache.run("emb", {"m": 1}, {}, make, log=lambda s: None)
    d2 = cache.run("emb", {"m": 1}, {}, make, log=lambda s: None)
    assert d1 == d2 and len(calls) == 1
    d3 = cache.run("emb", {"m": 2}, {}, make, log=lambda s: None)
    assert d3 != d1 and len(calls) == 2
    (d1 / "x.txt").write_text("tampered")
    with pytest.raises(SemrecError, match="do not match their manifest"):
        cache.run("emb", {"m": 1}, {}, make, log=lambda s: None)
    assert content_key({"a": 1, "b": 2}) == content_key({"b": 2, "a": 1})


def test_stage_cache_failed_stage_leaves_no_directory(tmp_path):
    cache = StageCache(tmp_path)

    def fail(d):
        (d / "partial").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.run("ids", {}, {}, fail, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []
