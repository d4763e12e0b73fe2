"""Typed configs: YAML -> dataclasses with nesting, type checks, unknown keys rejected, --set overrides."""

from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from semrec.config import apply_overrides, load_config
from semrec.errors import SemrecError


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
