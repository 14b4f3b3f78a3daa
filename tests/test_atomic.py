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


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    target = tmp_path / "saved_model"
    with atomic.replacing_dir(target) as tmp:
        (tmp / "variables").mkdir()
        (tmp / "saved_model.pb").write_text("v1")
        assert not target.exists()  # nothing at the final path while it is written
    assert (target / "saved_model.pb").read_text() == "v1" and (target / "variables").is_dir()
    with pytest.raises(RuntimeError):
        with atomic.replacing_dir(target) as tmp:
            (tmp / "saved_model.pb").write_text("half of v2")
            raise RuntimeError("killed mid-write")
    assert (target / "saved_model.pb").read_text() == "v1"
    with atomic.replacing_dir(target) as tmp:
        (tmp / "saved_model.pb").write_text("v2")
    assert sorted(p.name for p in target.iterdir()) == ["saved_model.pb"]  # the old folder's files are gone
    assert (target / "saved_model.pb").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]  # no temporary or old folder left
    source = tmp_path / "new.bin"
    source.write_bytes(b"file")
    atomic.replace_path(source, target)  # a file may replace a folder too
    assert target.read_bytes() == b"file" and sorted(p.name for p in tmp_path.iterdir()) == ["saved_model"]
