"""Atomic writes and JSON reading (semrec.artifacts)."""

import pytest

from semrec.artifacts import atomic_dir, atomic_file, read_json, write_json
from semrec.errors import SemrecError


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
