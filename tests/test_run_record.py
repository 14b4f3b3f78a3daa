"""The workdir's record run.json: written when a run is fitted, read back by every reader of
class names, legacy workdirs without it, clear errors for a missing or broken one. (The
network runs' records are checked on test_eval.py's and test_export.py's trained runs.)"""

import ast
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import fixtures
import pytest

from configs import folder as folder_config
from manet_jax import classical, defaults, inference, predict, run_record
from manet_jax.data import align, ckplus, rafdb, synthetic

ROOT = Path(__file__).resolve().parents[1]


def quiet(*_):
    pass


def fake_run(workdir, config, num_classes=None):
    """What the readers use of an inference.Run."""
    num = config.model.num_classes if num_classes is None else num_classes
    return SimpleNamespace(workdir=workdir, config=config, model=SimpleNamespace(num_classes=num))


def test_write_read_round_trip(tmp_path):
    config = defaults.get_config("rafdb")
    config.model.input_size = 112
    config.model.variant = "vgg_se"
    record = run_record.record_for(config, rafdb.CLASS_NAMES)
    path = run_record.write(tmp_path, record)
    assert path == tmp_path / "run.json" and [p.name for p in tmp_path.iterdir()] == ["run.json"]
    assert run_record.read(tmp_path) == record == json.loads(path.read_text())
    assert record["schema"] == run_record.SCHEMA and record["kind"] == "network" and record["variant"] == "vgg_se"
    assert record["data_set"] == "rafdb" and record["synthetic"] is False
    assert record["class_names"] == list(rafdb.CLASS_NAMES) and record["num_classes"] == 7
    assert record["input_size"] == 112
    p = record["preprocessing"]
    assert p["input"]["dtype"] == "uint8" and p["input"]["shape"] == [112, 112, 3] and p["input"]["channels"] == "RGB"
    assert p["pixel_mean"] == pytest.approx(list(config.data.pixel_mean))
    assert p["alignment"] == align.AlignSpec.from_config(config.data, 112).describe()
    assert p["landmarks"] == config.data.landmarks == "template"
    assert "landmarks" not in run_record.record_for(defaults.get_config("ckplus"), ckplus.CLASS_NAMES)["preprocessing"]
    with pytest.raises(ValueError, match="num_classes=7 but 3 class names"):
        run_record.record_for(config, ("a", "b", "c"))


def test_a_broken_or_missing_run_json_is_named(tmp_path):
    path = tmp_path / "run.json"
    with pytest.raises(FileNotFoundError, match=f"{path} does not exist"):
        run_record.read(tmp_path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"{path} is not valid JSON.*re-run train.py"):
        run_record.read(tmp_path)
    with pytest.raises(ValueError, match=f"{path} is not valid JSON"):  # a reader does not fall back
        inference.class_names(fake_run(tmp_path, defaults.get_config("synthetic")))
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=f"{path} must hold a JSON object"):
        run_record.read(tmp_path)
    good = run_record.record_for(defaults.get_config("synthetic"), synthetic.CLASS_NAMES)
    path.write_text(json.dumps({k: v for k, v in good.items() if k not in ("class_names", "preprocessing")}))
    with pytest.raises(ValueError, match=rf"{path} lacks \['class_names', 'preprocessing'\]"):
        run_record.read(tmp_path)
    path.write_text(json.dumps({**good, "num_classes": 3}))
    with pytest.raises(ValueError, match=f"{path}: num_classes=3 but 7 class names"):
        run_record.read(tmp_path)
    path.write_text(json.dumps({**good, "schema": run_record.SCHEMA + 1}))
    with pytest.raises(ValueError, match=f"{path} has schema {run_record.SCHEMA + 1}"):
        run_record.read(tmp_path)
    with pytest.raises(ValueError, match="kind must be one of"):
        run_record.write(tmp_path, {**good, "kind": "forest"})


def test_legacy_workdirs_without_run_json(tmp_path):
    """Runs trained before run.json: config.json alone names the classes when unambiguous."""
    for name, names in (("synthetic", synthetic.CLASS_NAMES), ("ckplus", ckplus.CLASS_NAMES)):
        config = defaults.get_config(name)
        record = run_record.legacy(config)
        assert record["class_names"] == list(names) and record["data_set"] == name and "legacy" in record
        assert inference.class_names(fake_run(tmp_path, config)) == list(names)
        assert predict.run_class_names(fake_run(tmp_path, config)) == tuple(names)
    assert run_record.legacy(defaults.get_config("synthetic"))["synthetic"] is True
    assert run_record.legacy(defaults.get_config("rafdb"))["class_names"] == list(rafdb.CLASS_NAMES)
    folder = defaults.get_config("folder")
    folder.data.class_names = tuple("gfedcba")
    assert inference.class_names(fake_run(tmp_path, folder)) == list("gfedcba")

    folder.data.class_names = ()  # the sorted class folders: only the prepared data knew them
    assert run_record.legacy(folder) is None
    (tmp_path / "eval").mkdir()  # files that name classes are not the record
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"class_names": list("abcdefg")}))
    for read in (inference.class_names, predict.run_class_names):
        with pytest.raises(ValueError, match=f"{tmp_path / 'run.json'} does not exist.*re-run train.py on {tmp_path}"):
            read(fake_run(tmp_path, folder))


def test_a_folder_runs_names_come_from_its_record(tmp_path):
    """hog_svm (seconds to fit) on a folder whose label order is its sorted class folders:
    with its evaluation and prepared data deleted, the names are still known."""
    given = ("sad", "calm", "glad")
    fixtures.make_image_folder(tmp_path / "faces", class_names=given)
    config = folder_config.get_config()
    config.model.variant, config.model.input_size, config.model.num_classes = classical.VARIANT, 96, 3
    config.data.data_dir, config.data.cache_dir = str(tmp_path / "faces"), str(tmp_path / "data")
    workdir = tmp_path / "run"
    classical.train_and_evaluate(config, workdir, log=quiet)
    record = run_record.read(workdir)
    assert (
        record["class_names"]
        == sorted(given)
        == json.loads((workdir / "eval" / "metrics.json").read_text())["class_names"]
    )
    assert record["kind"] == "classical" and record["variant"] == "hog_svm" and record["data_set"] == "folder"
    assert record["synthetic"] is False and record["input_size"] == 96
    assert list(classical.load_model(workdir).class_names) == record["class_names"]
    shutil.rmtree(workdir / "eval")
    shutil.rmtree(tmp_path / "data")
    shutil.rmtree(tmp_path / "faces")
    stored = inference.load_config(workdir)
    assert inference.class_names(fake_run(workdir, stored)) == sorted(given)
    assert run_record.resolve(workdir, stored) == record


def test_a_folder_of_synthetic_drawings_is_marked_synthetic(tmp_path):
    synthetic.export_folder(tmp_path / "drawn", num_subjects=1, per_subject=1, image_size=32)
    fixtures.make_image_folder(tmp_path / "photos", subjects=2, per_subject=1)
    config = defaults.get_config("folder")
    for folder, expected in (("drawn", True), ("photos", False), ("nowhere", False)):
        config.data.data_dir = str(tmp_path / folder)
        assert run_record.record_for(config, synthetic.CLASS_NAMES)["synthetic"] is expected, folder


def test_run_record_is_a_leaf_and_nothing_guesses():
    tree = ast.parse((ROOT / "manet_jax" / "run_record.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("manet_jax"):
            imported |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names if a.name.startswith("manet_jax")}
    # defaults: what load_config reads config.json on top of (itself importing only regions)
    allowed = {"atomic", "defaults"} | {f"data.{m}" for m in ("align", "ckplus", "rafdb", "synthetic")}
    assert imported <= {f"manet_jax.{m}" for m in allowed}, imported
    for module in ("inference", "export", "predict"):
        assert "import_module" not in (ROOT / "manet_jax" / f"{module}.py").read_text(), module
