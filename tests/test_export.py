"""Export for serving: every artifact, loaded back through its own runtime's public API
(jax.export, tf.saved_model, tf.lite.Interpreter), gives Run.predict's numbers on the same
uint8 batch, for two batch sizes; signature.json; errors; stale and failed exports."""

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from manet_jax import export, inference, preprocess, run_record
from manet_jax.data import datasets

TOLERANCE = 1e-5
OUTPUTS = {
    "manet": ("probabilities", "logits", "masks", "region_weights"),
    "vgg": ("probabilities", "logits"),
}


@pytest.fixture(scope="module", params=["manet", "vgg"])
def exported(request, tiny_run):
    """The shared tiny run of each variant, exported in all three formats (with the exporter's own check)."""
    run = tiny_run(request.param)
    _, test = datasets.load_splits(run.config, run.workdir, log=lambda *_: None)
    result = export.export_run(run.workdir, "all", log=lambda *_: None)
    return request.param, run.workdir, Path(result["output"]), np.asarray(test.image[:5])


def _batches(faces, size):
    """Real synthetic test faces (batch 3) and random pixels (batch 2): two batch sizes."""
    noise = np.random.default_rng(7).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    return [faces[:3], noise]


def _assert_matches(got, expected, keys, what):
    assert sorted(got) == sorted(keys), what
    for key in keys:
        assert np.shape(got[key]) == expected[key].shape, (what, key)
        assert np.asarray(got[key]).dtype == np.float32, (what, key)
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=TOLERANCE, err_msg=f"{what}: {key}")


def test_the_artifacts_normalise_as_training_does():
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    mean = (120.5, 100.25, 90.0)
    inside = jax.jit(lambda x: preprocess.normalize(x, mean))(jnp.asarray(images))
    np.testing.assert_array_equal(np.asarray(inside), preprocess.normalize(images, mean))
    assert inside.dtype == jnp.float32


def test_jax_export_round_trip_with_a_symbolic_batch(exported):
    variant, workdir, output, faces = exported
    run = inference.load_run(workdir)
    restored = jax.export.deserialize(bytearray((output / "model.jax_exported").read_bytes()))
    assert str(restored.in_avals[0].shape[0]) == "b"  # symbolic, not a number
    assert restored.in_avals[0].shape[1:] == (96, 96, 3) and restored.in_avals[0].dtype == jnp.uint8
    assert restored.platforms == ("cpu", "cuda", "tpu")
    for images in _batches(faces, 96):
        got = {k: np.asarray(v) for k, v in restored.call(images).items()}
        _assert_matches(got, run.predict(images), OUTPUTS[variant], f"jax.export, batch {len(images)}")


def test_saved_model_round_trip_with_a_polymorphic_batch(exported):
    import tensorflow as tf

    variant, workdir, output, faces = exported
    run = inference.load_run(workdir)
    loaded = tf.saved_model.load(str(output / "saved_model"))
    spec = loaded.signatures["serving_default"].structured_input_signature[1]["images"]
    assert spec.shape.as_list() == [None, 96, 96, 3] and spec.dtype == tf.uint8
    for images in _batches(faces, 96):
        got = {k: v.numpy() for k, v in loaded.serve(tf.constant(images)).items()}
        _assert_matches(got, run.predict(images), OUTPUTS[variant], f"SavedModel, batch {len(images)}")
        by_signature = loaded.signatures["serving_default"](images=tf.constant(images))
        np.testing.assert_array_equal(by_signature["probabilities"].numpy(), got["probabilities"])
    variables = tf.nest.flatten(loaded.params)  # the weights are variables, not graph constants
    assert len(variables) == len(jax.tree.leaves(run.params))
    assert all(isinstance(v, tf.Variable) for v in variables)


def test_tflite_round_trip_with_a_resized_batch(exported):
    import tensorflow as tf

    variant, workdir, output, faces = exported
    run = inference.load_run(workdir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_path=str(output / "model.tflite"))
    (inp,) = interpreter.get_input_details()
    assert list(inp["shape_signature"]) == [-1, 96, 96, 3] and inp["dtype"] == np.uint8
    for images in _batches(faces, 96):
        interpreter.resize_tensor_input(inp["index"], list(images.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], images)
        interpreter.invoke()
        names = interpreter.get_signature_list()["serving_default"]["outputs"]
        outputs = interpreter.get_signature_runner("serving_default").get_output_details()
        got = {name: interpreter.get_tensor(outputs[name]["index"]) for name in names}
        _assert_matches(got, run.predict(images), OUTPUTS[variant], f"TFLite, batch {len(images)}")


def test_signature_json(exported):
    variant, workdir, output, _ = exported
    signature = json.loads((output / "signature.json").read_text())
    step = inference.load_run(workdir).step  # best by eval_accuracy
    assert output == workdir / "export"
    assert signature["variant"] == variant and signature["input_size"] == 96
    assert signature["class_names"] == ["anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]
    record = run_record.read(workdir)  # what training recorded, passed on as it is
    assert signature["class_names"] == record["class_names"]
    assert signature["data_set"] == "synthetic" and signature["synthetic"] is True
    assert signature["preprocessing"] == record["preprocessing"]
    assert signature["preprocessing"]["input"]["shape"] == [96, 96, 3]
    assert signature["preprocessing"]["alignment"]["size"] == 96
    assert signature["source"] == {
        "workdir": str(workdir),
        "step": step,
        "flip_tta": False,
        "platforms": ["cpu", "cuda", "tpu"],
    }
    assert signature["checkpoint"] == str(workdir / "checkpoints" / str(step))
    assert signature["input"]["shape"] == [None, 96, 96, 3] and signature["input"]["dtype"] == "uint8"
    expected = {"probabilities": [None, 7], "logits": [None, 7]}
    if variant == "manet":
        expected.update(masks=[None, 8, 6, 6], region_weights=[None, 8])
    assert {k: v["shape"] for k, v in signature["outputs"].items()} == expected
    assert signature["pixel_mean"] == pytest.approx(list(preprocess.VGGFACE_MEAN_RGB))
    assert sorted(signature["artifacts"]) == ["jax", "saved_model", "tflite"]
    for fmt, entry in signature["artifacts"].items():
        path = output / entry["path"]
        assert entry["bytes"] == export._size(path) > 0 and entry["sha256"] == export._sha256(path), fmt
        assert max(entry["max_abs_difference"].values()) < TOLERANCE, fmt
    assert signature["artifacts"]["tflite"]["ops"] == ["TFLITE_BUILTINS"]  # no Flex runtime needed
    leftovers = [p.name for p in output.iterdir() if p.name.startswith(".")]
    assert not leftovers  # no staging folder or temporary left behind


def test_flip_tta_export_and_a_new_step_replace_the_folder(exported, tmp_path):
    variant, workdir, output, faces = exported
    if variant != "manet":
        pytest.skip("one variant is enough")
    out = tmp_path / "serve"
    shutil.copytree(output, out)  # all three formats of step 4
    result = export.export_run(workdir, "jax", step=2, output=out, flip_tta=True, log=lambda *_: None)
    # the SavedModel and TFLite of step 4 are gone: the folder never mixes two models
    assert sorted(p.name for p in out.iterdir()) == ["model.jax_exported", "signature.json"]
    assert result["source"]["step"] == 2 and result["source"]["flip_tta"] and list(result["artifacts"]) == ["jax"]
    got = export.load_jax(out / "model.jax_exported")(faces)
    expected = inference.load_run(workdir, 2).predict(faces, flip_tta=True)
    _assert_matches(got, expected, OUTPUTS[variant], "flip TTA jax.export")

    # the same source again, another format: both are kept and listed
    export.export_run(workdir, "saved_model", step=2, output=out, flip_tta=True, log=lambda *_: None)
    signature = json.loads((out / "signature.json").read_text())
    assert sorted(signature["artifacts"]) == ["jax", "saved_model"]

    # a failed check changes nothing in the folder
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(export.ExportMismatchError, match="does not reproduce Run.predict"):
        export.export_run(workdir, "jax", output=out, tolerance=-1.0, log=lambda *_: None)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_errors_name_the_workdir_and_the_format(tmp_path):
    missing = tmp_path / "no_such_run"
    with pytest.raises(FileNotFoundError, match=f"workdir {missing} does not exist"):
        export.export_run(missing, "jax")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"{empty} has no config.json"):
        export.export_run(empty, "jax")
    with pytest.raises(ValueError, match="unknown export format 'onnx'"):
        export.export_run(empty, "jax,onnx")
    assert export.parse_formats("tflite,jax") == ("jax", "tflite")
    assert export.parse_formats("all") == export.FORMATS


def test_cli_reports_a_missing_workdir_and_an_unknown_format_in_one_line(tmp_path):
    root = Path(__file__).resolve().parents[1]
    for flag, expected in [
        (f"--workdir={tmp_path / 'gone'}", f"error: workdir {tmp_path / 'gone'} does not exist"),
        (f"--workdir={tmp_path} --format=onnx", "error: unknown export format 'onnx'"),
    ]:
        out = subprocess.run(
            [sys.executable, str(root / "export.py"), *flag.split()],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 1, out.stderr[-2000:]
        assert expected in out.stderr and "Traceback" not in out.stderr


def test_class_names_come_from_the_record_never_from_files_around_it(tmp_path):
    from types import SimpleNamespace

    from manet_jax import defaults
    from manet_jax.data import ckplus, rafdb

    def fake_run(name, **data):  # a run trained before run.json existed: config.json only
        config = defaults.get_config(name)
        config.data.update(data)
        return SimpleNamespace(config=config, workdir=tmp_path, model=SimpleNamespace(num_classes=7))

    assert export.class_names(fake_run("ckplus")) == list(ckplus.CLASS_NAMES)
    assert export.class_names(fake_run("rafdb")) == list(rafdb.CLASS_NAMES)
    names = tuple("bacdefg")
    assert export.class_names(fake_run("folder", class_names=names)) == list(names)
    # prepared data and evaluations name classes too, but they are not the run's record
    info = tmp_path / "data" / "prepared" / "folder" / "faces-0123" / "train" / "info.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"class_names": list("xyzuvwt")}))
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"class_names": list("pqrstuv")}))
    with pytest.raises(ValueError, match=f"{tmp_path / 'run.json'} does not exist.*re-run train.py"):
        export.class_names(fake_run("folder"))  # sorted folder names, but nothing records them
    config = fake_run("folder").config
    run_record.write(tmp_path, run_record.record_for(config, list("gfedcba")))
    assert export.class_names(fake_run("folder")) == list("gfedcba")
    assert export.class_names(fake_run("folder", class_names=names)) == list("gfedcba")  # the record wins
    with pytest.raises(ValueError, match="names 7 classes .* the model .* has 3 outputs"):
        export.class_names(SimpleNamespace(config=config, workdir=tmp_path, model=SimpleNamespace(num_classes=3)))


def _listed_files_match_the_disk(out: Path) -> dict:
    signature = json.loads((out / "signature.json").read_text())
    for fmt, entry in signature["artifacts"].items():
        path = out / entry["path"]
        assert entry["bytes"] == export._size(path) and entry["sha256"] == export._sha256(path), fmt
    return signature


def test_the_signature_verifies_what_it_lists_and_leftovers_are_removed(exported, tmp_path, monkeypatch):
    """Issue 28 (6): a stale model.tflite was listed with its old sha256 without a look at the
    file; `.staging-*` / `.saved_model.old-*` of killed exports stayed; a killed export left
    step-6 and step-8 artifacts side by side. Now every listed entry is the file on disk, the
    leftovers go, and at any moment only one step's artifacts are there, as the signature says."""
    variant, workdir, output, _ = exported
    if variant != "manet":
        pytest.skip("one variant is enough")
    out = tmp_path / "serve"
    shutil.copytree(output, out)  # all three formats of the best step
    step = json.loads((out / "signature.json").read_text())["source"]["step"]
    (out / ".staging-dead1234").mkdir()
    (out / ".staging-dead1234" / "model.jax_exported").write_bytes(b"half")
    (out / ".saved_model.old-abcd1234").mkdir()
    (out / ".model.jax_exported.tmp-abcd1234").write_bytes(b"half")
    with (out / "model.tflite").open("ab") as f:
        f.write(b"\0")  # changed since it was listed
    signature = export.export_run(workdir, "jax", output=out, log=lambda *_: None)
    assert sorted(p.name for p in out.iterdir()) == ["model.jax_exported", "saved_model", "signature.json"]
    assert list(signature["artifacts"]) == ["jax", "saved_model"] and signature["complete"] is True
    assert _listed_files_match_the_disk(out) == {k: v for k, v in signature.items() if k != "output"}

    # killed while the artifacts of another step go in: one step only, and the signature says so
    other = 2 if step != 2 else 4
    replace = export.atomic.replace_path

    def killed_after_the_first(src, dst):  # (into the staging folder: as it is)
        replace(src, dst)
        if Path(dst).parent == out:
            raise KeyboardInterrupt

    monkeypatch.setattr(export.atomic, "replace_path", killed_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        export.export_run(workdir, "jax,tflite", step=other, output=out, check=False, log=lambda *_: None)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["model.jax_exported", "signature.json"]  # step `other`'s
    killed = _listed_files_match_the_disk(out)
    assert killed["source"]["step"] == other and not killed["complete"]  # the new jax is in, not yet listed
    assert killed["artifacts"] == {}
    export.export_run(workdir, "jax,tflite", step=other, output=out, check=False, log=lambda *_: None)
    assert _listed_files_match_the_disk(out)["complete"] and not [p for p in out.iterdir() if p.name[0] == "."]


def test_an_unknown_platform_is_refused_before_any_work(tmp_path):
    """Issue 28 (9): --platforms=bogus failed only after the export (in jax.export)."""
    with pytest.raises(ValueError, match=r"unknown export platform 'bogus' \(--platforms\): choose from cpu"):
        export.export_run(tmp_path / "never_read", "jax", platforms=["cpu", "bogus"])
    assert export.parse_platforms("cpu,cuda,cpu") == ("cpu", "cuda")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "export.py", f"--workdir={tmp_path / 'never_read'}", "--platforms=bogus"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1 and "error: unknown export platform 'bogus'" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and not (tmp_path / "never_read").exists()
