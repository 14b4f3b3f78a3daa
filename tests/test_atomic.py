"""The one atomic-write helper: a file appears complete or not at all."""

import pytest

from manet_jax import atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic.write_text(tmp_path / "sub" / "config.json", "old")
    assert path.read_text() == "old"
    with pytest.raises(RuntimeError):
        with atomic.replacing(path) as f:
            f.write(b"half of the new")
            assert path.read_text() == "old"  # readers see the old file while the new one is written
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.json"]
    atomic.write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and sorted(p.name for p in path.parent.iterdir()) == ["config.json"]
