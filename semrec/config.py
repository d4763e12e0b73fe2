"""Typed configs: dataclasses loaded from YAML/dicts, unknown keys and wrong types rejected.

    @dataclass
    class SASRecConfig:
        hidden: int = 64
        dropout: float = 0.2

    cfg = load_config(SASRecConfig, "sasrec.yaml")          # or a dict
    cfg = apply_overrides(cfg, ["hidden=128"])               # --set key=value
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from semrec.errors import SemrecError

T = TypeVar("T")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")  # what YAML 1.1 leaves as a string


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with one-line errors for missing or malformed files."""
    path = Path(path)
    if not path.is_file():
        raise SemrecError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise SemrecError(f"{path}: malformed YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SemrecError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting int->float and lists->tuples."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except SemrecError:
                continue
        raise SemrecError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise SemrecError(f"{where}: expected one of {list(choices)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SemrecError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise SemrecError(f"{where}: expected a mapping, got {value!r}")
        k_tp, v_tp = get_args(tp) or (Any, Any)
        return {_coerce(k, k_tp, where): _coerce(v, v_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise SemrecError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise SemrecError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SemrecError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads exponents without a dot (1e-3) as strings
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SemrecError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise SemrecError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise SemrecError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def _build(cls: type[T], data: dict, where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(fields)}"
            raise SemrecError(f"{where}: unknown key '{key}'{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SemrecError(f"{where}: missing required key(s): {', '.join(missing)}")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise SemrecError(f"{where}: {e}") from None
    return obj


def load_config(cls: type[T], source: str | Path | dict | None, *, name: str | None = None) -> T:
    """Build dataclass `cls` from a YAML path or a mapping; unknown keys and bad types raise SemrecError."""
    if source is None:
        return cls()
    if isinstance(source, (str, Path)):
        data, where = read_yaml(source), name or str(source)
    else:
        data, where = dict(source), name or cls.__name__
    return _build(cls, data, where)


def config_to_dict(cfg: Any) -> dict:
    """Plain-data dict of a (nested) dataclass config, suitable for YAML/JSON."""
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: T, overrides: list[str], *, name: str = "--set") -> T:
    """Return a copy of `cfg` with `a.b.c=value` overrides applied (values parsed as YAML scalars)."""
    data = config_to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise SemrecError(f"{name}: expected key=value, got {item!r}")
        key, raw = item.split("=", 1)
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise SemrecError(f"{name}: unknown section '{p}' in {key!r}")
            node = node[p]
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return _build(type(cfg), data, name)
