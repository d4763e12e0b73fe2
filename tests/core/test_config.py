"""Config loading, atomic IO and the content-addressed stage cache."""

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from semrec.config import apply_overrides, load_config
from semrec.errors import SemrecError
from semrec.artifacts import atomic_dir, atomic_file, read_json, write_json
from semrec.pipeline.cache import StageCache, content_key


@dataclass
class Inner:
    lr: float = 1e-3
    kind: Literal["a", "b"] = "a"


@dataclass
class Outer:
    name: str = "x"
    layers: int = 2
    dims: list[int] = field(default_factory=lambda: [1, 2])
    opt: Inner = field(default_factory=Inner)
    note: Optional[str] = None


def test_load_config_types_and_nesting(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: y\nlayers: 3\ndims: [4]\nopt:\n  lr: 1\n  kind: b\n")
    cfg = load_config(Outer, p)
    assert cfg == Outer(name="y", layers=3, dims=[4], opt=Inner(lr=1.0, kind="b"))
    assert isinstance(cfg.opt.lr, float)


@pytest.mark.parametrize("text,needle", [
    ("layres: 3\n", "unknown key 'layres'; did you mean 'layers'?"),
    ("layers: three\n", "layers: expected an integer"),
    ("layers: true\n", "layers: expected an integer"),
    ("opt:\n  kind: c\n", "opt.kind: expected one of ['a', 'b']"),
    ("opt:\n  momentum: 1\n", "unknown key 'momentum'"),
    ("dims: 3\n", "dims: expected a list"),
    ("- 1\n- 2\n", "expected a mapping at the top level"),
    ("a: [1,\n", "malformed YAML"),
])
def test_load_config_rejects_bad_input(tmp_path, text, needle):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(SemrecError, match=None) as e:
        load_config(Outer, p)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_overrides():
    cfg = apply_overrides(Outer(), ["layers=5", "opt.lr=0.5", "note=hi"])
    assert (cfg.layers, cfg.opt.lr, cfg.note) == (5, 0.5, "hi")
    with pytest.raises(SemrecError, match="unknown key 'nope'"):
        apply_overrides(Outer(), ["nope=1"])
    with pytest.raises(SemrecError, match="expected key=value"):
        apply_overrides(Outer(), ["layers"])


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("ok")
    assert (out / "a.txt").read_text() == "ok"
    with pytest.raises(SemrecError, match="already exists"):
        with atomic_dir(out):
            pass


def test_atomic_file_keeps_old_content_on_failure(tmp_path):
    p = tmp_path / "f.json"
    write_json(p, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_file(p) as f:
            f.write("{broken")
            raise RuntimeError
    assert read_json(p) == {"a": 1}
    assert [x.name for x in tmp_path.iterdir()] == ["f.json"]
    p.write_text("{broken")
    with pytest.raises(SemrecError, match="malformed JSON"):
        read_json(p)


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
