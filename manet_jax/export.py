"""A trained run as artifacts for serving, the preprocessing included.

    from manet_jax import export
    result = export.export_run('runs/demo', formats=('jax', 'saved_model', 'tflite'))

Every artifact takes a batch of aligned face crops as they come out of the aligner, uint8 RGB
(B, S, S, 3) with S = config.model.input_size and any B, and returns float32
`probabilities` (B, C) and `logits` (B, C) and, for the manet variant, RASnet's `masks`
(B, 8, S/16, S/16) and the region weights q `region_weights` (B, 8): the numbers Run.predict
gives, through the same normalisation (preprocess.normalize) and forward pass
(evaluation.class_log_probs).

- `model.jax_exported`: jax.export's serialized StableHLO, parameters inside, batch symbolic,
  lowered for cpu, cuda and tpu (`platforms`). Load with jax alone:
  `jax.export.deserialize(bytearray(data)).call(images)`.
- `saved_model/`: a TensorFlow SavedModel through jax2tf (the same StableHLO in an
  XlaCallModule op), parameters as tf.Variables, signature `serving_default` (input `images`,
  uint8, batch None). `tf.saved_model.load(d).serve(images)`.
- `model.tflite`: converted from that SavedModel with TFLite builtin ops only (no Flex / select
  TF ops needed); `tf.lite.Interpreter(model_path=...).get_signature_runner()(images=...)`,
  which resizes the batch itself.
- `signature.json`: class names and preprocessing (from the run's run.json: manet_jax.run_record),
  data set (and whether it was the synthetic drawings), input and outputs, variant, step,
  source workdir, platforms, each artifact's size and sha256, and the round-trip check made at export.

Each artifact is written into a temporary sibling and renamed into place (manet_jax.atomic):
an interrupted export leaves the previous artifact or none, never half of one. signature.json
lists only artifacts of one source, each with the size and sha256 of the file on disk, and is
rewritten as each goes in (`"complete": true` with the last): a folder whose signature says
`"complete": false` is an interrupted export, and only what its signature lists is usable.
An export removes the leftovers of killed ones, and one export writes a folder at a time. After writing, every artifact is loaded back and run on a random uint8 batch
of two sizes against Run.predict (`verify`); a difference over `tolerance` raises.
ONNX is not offered: tf2onnx cannot convert the XlaCallModule op jax2tf emits, and jax2onnx
downgrades orbax-checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from manet_jax import atomic, evaluation, inference, locking, preprocess, run_record

log_ = logging.getLogger(__name__)

FORMATS = ("jax", "saved_model", "tflite")
FILES = {"jax": "model.jax_exported", "saved_model": "saved_model", "tflite": "model.tflite"}
SIGNATURE_FILE = "signature.json"
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export lowers for
SIGNATURE_NAME = "serving_default"
INPUT_NAME = "images"
FORMAT_VERSION = 1


class ExportMismatchError(ValueError):
    """An artifact, loaded back, does not give Run.predict's numbers."""


# ------------------------------------------------------------------------ the function
def serving_function(run: inference.Run, flip_tta: bool = False) -> Callable:
    """(params, uint8 images (B, S, S, 3)) -> dict of float32 outputs: what every artifact runs.

    Normalisation is preprocess.normalize (its jnp branch) and the forward pass
    evaluation.class_log_probs, the path Run.predict takes; probabilities = exp(log-softmax).
    """
    model = run.model
    mean = tuple(float(v) for v in run.config.data.get("pixel_mean", preprocess.VGGFACE_MEAN_RGB))

    def serve(params, images):
        x = preprocess.normalize(jnp.asarray(images), mean)
        out, log_probs = evaluation.class_log_probs(model, params, x, flip_tta)
        result = {
            "probabilities": jnp.exp(log_probs).astype(jnp.float32),
            "logits": (log_probs if flip_tta else out["logits"]).astype(jnp.float32),
        }
        for key in ("masks", "region_weights"):
            if key in out:
                result[key] = out[key].astype(jnp.float32)
        return result

    return serve


def output_shapes(run: inference.Run) -> dict[str, list]:
    """Each output's shape (None for the batch), from the serving function itself."""
    size = run.model.input_size
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.uint8)
    shapes = jax.eval_shape(serving_function(run), run.params, images)
    return {k: [None, *v.shape[1:]] for k, v in shapes.items()}


class_names = inference.class_names  # the label order written to signature.json (the run's run.json)


# ------------------------------------------------------------------------- the writers
def _symbolic_input(size: int):
    (batch,) = jax.export.symbolic_shape("b")
    return jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8)


def export_jax(run: inference.Run, path, platforms=DEFAULT_PLATFORMS, flip_tta: bool = False) -> Path:
    """jax.export of the serving function with the params as constants -> `path` (bytes)."""
    serve = serving_function(run, flip_tta)
    params = run.params
    exported = jax.export.export(jax.jit(lambda images: serve(params, images)), platforms=tuple(platforms))(
        _symbolic_input(run.model.input_size)
    )
    return atomic.write_bytes(path, bytes(exported.serialize()))


def _tf_module(run: inference.Run, platforms, flip_tta: bool):
    import tensorflow as tf
    from jax.experimental import jax2tf

    size = run.model.input_size
    converted = jax2tf.convert(
        serving_function(run, flip_tta),
        polymorphic_shapes=[None, f"(b, {size}, {size}, 3)"],
        with_gradient=False,
        native_serialization_platforms=tuple(platforms),
    )
    module = tf.Module()
    # tf.Variables, not constants: the graph stays small and the weights sit in variables/
    module.params = tf.nest.map_structure(tf.Variable, jax.tree.map(np.asarray, run.params))

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name=INPUT_NAME)], autograph=False)
    def serve(images):
        return converted(module.params, images)

    module.serve = serve
    return module


def export_saved_model(run: inference.Run, path, platforms=DEFAULT_PLATFORMS, flip_tta: bool = False) -> Path:
    """A TensorFlow SavedModel (jax2tf, batch polymorphic) -> the folder `path`."""
    import tensorflow as tf

    module = _tf_module(run, platforms, flip_tta)
    with atomic.replacing_dir(path) as tmp:
        tf.saved_model.save(module, str(tmp), signatures={SIGNATURE_NAME: module.serve})
    return Path(path)


def export_tflite(saved_model, path) -> tuple[Path, list[str]]:
    """TFLite from a SavedModel -> `path`, and the op sets it needed.

    Builtin ops are tried first; select TF ops (Flex, a bigger runtime) only if those fail.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[SIGNATURE_NAME])
    try:
        data, ops = converter.convert(), ["TFLITE_BUILTINS"]
    except Exception as err:  # the converter raises ConverterError and others; retry with Flex
        log_.warning("TFLite builtins alone failed (%s); retrying with SELECT_TF_OPS", str(err).splitlines()[0])
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[SIGNATURE_NAME])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        data, ops = converter.convert(), ["TFLITE_BUILTINS", "SELECT_TF_OPS"]
    return atomic.write_bytes(path, data), ops


# ------------------------------------------------------------------------- the loaders
def load_jax(path) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """model.jax_exported -> images -> numpy outputs (needs jax only, not this package)."""
    exported = jax.export.deserialize(bytearray(Path(path).read_bytes()))
    return lambda images: {k: np.asarray(v) for k, v in exported.call(np.asarray(images, np.uint8)).items()}


def load_saved_model(path) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """saved_model/ -> images -> numpy outputs (through TensorFlow)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return lambda images: {k: v.numpy() for k, v in loaded.serve(tf.constant(images, tf.uint8)).items()}


def load_tflite(path) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """model.tflite -> images -> numpy outputs (tf.lite.Interpreter; the batch is resized per call)."""
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's notice that LiteRT replaces it
        interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner(SIGNATURE_NAME)
    return lambda images: {k: np.array(v) for k, v in runner(**{INPUT_NAME: np.asarray(images, np.uint8)}).items()}


LOADERS = {"jax": load_jax, "saved_model": load_saved_model, "tflite": load_tflite}


def max_differences(got: dict, expected: dict) -> dict[str, float]:
    """Max |got - expected| per output of `expected`; a missing output or shape raises."""
    out = {}
    for key, want in expected.items():
        if key not in got:
            raise ExportMismatchError(f"the artifact has no output {key!r} (it has {sorted(got)})")
        if np.shape(got[key]) != np.shape(want):
            raise ExportMismatchError(f"output {key!r} has shape {np.shape(got[key])}, expected {np.shape(want)}")
        out[key] = float(np.max(np.abs(np.asarray(got[key], np.float64) - np.asarray(want, np.float64))))
    return out


def verify(run: inference.Run, fn: Callable, batch_sizes=(3, 5), flip_tta: bool = False, seed: int = 0) -> dict:
    """The largest difference per output between `fn` (an artifact) and Run.predict on random
    uint8 batches of each of `batch_sizes` (two sizes: the batch is really polymorphic)."""
    rng = np.random.default_rng(seed)
    size, worst = run.model.input_size, {}
    for n in batch_sizes:
        images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        expected = run.predict(images, flip_tta=flip_tta)
        for key, diff in max_differences(fn(images), expected).items():
            worst[key] = max(worst.get(key, 0.0), diff)
    return worst


# --------------------------------------------------------------------------- export_run
def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """'all', 'jax', 'jax,tflite' or a sequence -> the formats in FORMATS order; unknown ones named."""
    names = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    if "all" in names:
        names = list(FORMATS)
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise ValueError(
            f"unknown export format {', '.join(map(repr, unknown)) or '(none)'}: choose from all, {', '.join(FORMATS)}"
        )
    return tuple(f for f in FORMATS if f in names)


def _sha256(path: Path) -> str:
    if path.is_dir():
        digest = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes())
        return digest.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def export_run(
    workdir,
    formats: str | Sequence[str] = "all",
    step: int | str = "best",
    output=None,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    flip_tta: bool = False,
    check: bool = True,
    tolerance: float = 1e-4,
    log=print,
) -> dict:
    """export.py's work: the run of `workdir` at `step` -> `formats` under `output`
    (default <workdir>/export), then signature.json. Returns what signature.json holds,
    with 'output' added.

    One export writes a folder at a time (an flock on the folder; a second one stops at
    once), and it first removes the leftovers of killed ones (`.staging-*`, `.<artifact>.old-*`
    and `.tmp-*`). The artifacts are written into a staging folder inside `output` and, with
    `check`, each is loaded back and compared with Run.predict there (verify); a difference
    over `tolerance` raises ExportMismatchError and nothing in `output` changes.

    Then signature.json only ever lists artifacts of one source (workdir, step, flip_tta,
    platforms) whose size and sha256 it took from the files on disk: first it is rewritten to
    list only what stays untouched (artifacts of the same source, not re-exported, whose
    size and sha256 still match their entry), every other artifact is removed, and each new
    one is renamed into place, hashed where it lies and added, signature.json rewritten
    after each; `"complete": true` comes with the last. A killed export thus leaves a folder
    whose signature says what is there (and `"complete": false`), never two steps side by side.
    """
    formats, platforms = parse_formats(formats), parse_platforms(platforms)  # before any work
    workdir = Path(workdir).expanduser().absolute()
    if workdir.exists() and not workdir.is_dir():
        raise NotADirectoryError(f"workdir {workdir} is a file, expected a folder (a run of train.py)")
    if not workdir.is_dir():
        raise FileNotFoundError(f"workdir {workdir} does not exist")
    output = Path(output).expanduser().absolute() if output is not None else workdir / "export"
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"output {output} is a file, expected a folder")
    run = inference.load_run(workdir, step)
    output.mkdir(parents=True, exist_ok=True)
    source = {"workdir": str(workdir), "step": run.step, "flip_tta": flip_tta, "platforms": list(platforms)}
    log(f"{workdir}: {run.config.model.variant}, step {run.step} ({run.note}) -> {output}")
    names, record = class_names(run), run_record.resolve(workdir, run.config)  # raise before any work

    with locking.exclusive_folder(output, "export folder"):
        _remove_leftovers(output, log)
        artifacts = {}
        with tempfile.TemporaryDirectory(dir=output, prefix=STAGING_PREFIX) as staging:
            staging = Path(staging)
            for fmt in formats:
                start = time.time()
                path = staging / FILES[fmt]
                entry = {"path": FILES[fmt]}
                if fmt == "jax":
                    export_jax(run, path, platforms, flip_tta)
                elif fmt == "saved_model":
                    export_saved_model(run, path, platforms, flip_tta)
                else:
                    saved = staging / FILES["saved_model"]
                    if not saved.is_dir():
                        saved = export_saved_model(run, staging / "tflite_source", platforms, flip_tta)
                    _, entry["ops"] = export_tflite(saved, path)
                entry["seconds"] = round(time.time() - start, 3)
                entry.update(bytes=_size(path), sha256=_sha256(path))
                if check:
                    diffs = verify(run, LOADERS[fmt](path), flip_tta=flip_tta)
                    entry["max_abs_difference"] = diffs
                    if max(diffs.values()) > tolerance:
                        raise ExportMismatchError(
                            f"the {fmt} export of {workdir} step {run.step} does not reproduce Run.predict: "
                            f"max |difference| {diffs} > {tolerance}; {output} is left as it was"
                        )
                artifacts[fmt] = entry
                log(
                    f"{fmt}: {entry['bytes'] / 1e6:.2f} MB in {entry['seconds']:.1f} s"
                    + (f", max |diff| vs Run.predict {max(entry['max_abs_difference'].values()):.1e}" if check else "")
                    + (f", ops {'+'.join(entry['ops'])}" if "ops" in entry else "")
                )

            signature = _signature(run, source, names, record)
            listed = _still_valid(_read_signature(output), source, output, formats, log)
            _write_signature(output, signature, listed, complete=False)  # lists only what stays untouched
            for fmt in FORMATS:  # another model's artifacts, re-exported ones, ones no signature vouches for
                stale = output / FILES[fmt]
                if fmt not in listed and (stale.exists() or stale.is_symlink()):
                    if fmt not in formats:
                        log(f"removing {stale}: not of {source} (or no longer what a signature listed)")
                    shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
            for fmt in formats:  # each in place, hashed where it lies, then listed
                final = atomic.replace_path(staging / FILES[fmt], output / FILES[fmt])
                listed[fmt] = {**artifacts[fmt], "bytes": _size(final), "sha256": _sha256(final)}
                signature = _write_signature(output, signature, listed, complete=fmt == formats[-1])
    log(f"{output / SIGNATURE_FILE}: {', '.join(signature['artifacts'])}")
    return {**signature, "output": str(output)}


STAGING_PREFIX = ".staging-"


def parse_platforms(platforms: str | Sequence[str]) -> tuple[str, ...]:
    """'cpu,cuda' or a sequence -> the platforms, each one jax.export lowers for; unknown ones
    are named before any work (jax.export would refuse them only after the model is loaded)."""
    names = [p.strip() for p in (platforms.split(",") if isinstance(platforms, str) else platforms) if p.strip()]
    unknown = [p for p in names if p not in PLATFORMS]
    if unknown or not names:
        raise ValueError(
            f"unknown export platform {', '.join(map(repr, unknown)) or '(none)'} (--platforms): "
            f"choose from {', '.join(PLATFORMS)}"
        )
    return tuple(dict.fromkeys(names))


def _remove_leftovers(output: Path, log) -> None:
    """What killed exports left in `output` (with the folder locked, no live export owns any):
    staging folders and the temporaries of atomic writes and replacements."""
    names = (*FILES.values(), SIGNATURE_FILE)
    for path in sorted(output.iterdir()):
        n = path.name
        if n.startswith(STAGING_PREFIX) or any(n.startswith((f".{a}.tmp-", f".{a}.old-")) for a in names):
            log(f"removing {path}: left by an interrupted export")
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink()


def _still_valid(previous: dict | None, source: dict, output: Path, formats, log) -> dict:
    """The previous signature's artifacts that stay listed: of the same source, not re-exported
    now, and whose file still has the size and sha256 recorded for it."""
    if not previous or previous.get("source") != source or not isinstance(previous.get("artifacts"), dict):
        return {}
    kept = {}
    for fmt, entry in previous["artifacts"].items():
        if fmt not in FORMATS or fmt in formats or not isinstance(entry, dict):
            continue
        path = output / FILES[fmt]
        on_disk = (_size(path), _sha256(path)) if path.exists() else None
        if on_disk == (entry.get("bytes"), entry.get("sha256")):
            kept[fmt] = entry
        else:
            log(f"{path}: {'missing' if on_disk is None else 'its size or sha256 changed'} since it was listed")
    return kept


def _signature(run: inference.Run, source: dict, names, record) -> dict:
    """signature.json without its artifacts."""
    return {
        "format_version": FORMAT_VERSION,
        "source": source,
        "step_note": run.note,
        "checkpoint": str(run.checkpoint),
        "variant": run.config.model.variant,
        "class_names": names,
        "data_set": record["data_set"],
        "synthetic": record["synthetic"],
        "input_size": run.model.input_size,
        "input": {
            "name": INPUT_NAME,
            "shape": [None, run.model.input_size, run.model.input_size, 3],
            "dtype": "uint8",
            "description": "aligned face crops, RGB, 0..255 (normalised inside the artifact)",
        },
        "outputs": {k: {"shape": s, "dtype": "float32"} for k, s in output_shapes(run).items()},
        "pixel_mean": [float(v) for v in run.config.data.get("pixel_mean", preprocess.VGGFACE_MEAN_RGB)],
        "preprocessing": record["preprocessing"],
        "signature_name": SIGNATURE_NAME,
        "artifacts": {},
        "complete": False,
        "versions": _versions(),
    }


def _write_signature(output: Path, signature: dict, artifacts: dict, complete: bool) -> dict:
    """signature.json (atomically) listing `artifacts` in FORMATS order."""
    signature = {**signature, "artifacts": {f: artifacts[f] for f in FORMATS if f in artifacts}, "complete": complete}
    atomic.write_text(output / SIGNATURE_FILE, json.dumps(signature, indent=2) + "\n")
    return signature


def _read_signature(output: Path) -> dict | None:
    try:
        return json.loads((output / SIGNATURE_FILE).read_text())
    except (OSError, ValueError):
        return None


def _versions() -> dict:
    import jaxlib

    versions = {"jax": jax.__version__, "jaxlib": jaxlib.__version__}
    if "tensorflow" in sys.modules:
        versions["tensorflow"] = sys.modules["tensorflow"].__version__
    return versions
