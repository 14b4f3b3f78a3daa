"""A workdir's record of what its run is: `<workdir>/run.json`, written when the run is trained.

    {"schema": 1, "kind": "network", "variant": "manet", "data_set": "folder", "synthetic": false,
     "class_names": ["anger", ...], "num_classes": 7, "input_size": 224,
     "preprocessing": {"input": ..., "pixel_mean": [...], "alignment": {...}, "landmarks": "template"}}

`class_names` is the label order of the model's outputs (index = output), taken from the
prepared training split the model was really trained on, so readers (eval, predict, export)
never guess it. Workdirs trained before run.json existed get a record from their config.json
alone when that is unambiguous (`legacy`); train.py on such a workdir (a finished run is only
re-evaluated) writes the file.

It is also where a workdir's other facts are read: its config (`load_config`, config.json on
top of the defaults), the kind of its run (`kind_of`: a network, or the classical baseline
`hog_svm`; manet_jax/runs.py sends each kind to the code that fits and evaluates it) and the
suffix of its report files (`report_suffix`).

A leaf module: it imports only manet_jax.atomic and manet_jax.defaults and, inside functions,
the data modules that hold fixed class names and the alignment settings.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections

from manet_jax import atomic, defaults

FILE = "run.json"
SCHEMA = 1
KINDS = ("network", "classical")
CLASSICAL_VARIANT = "hog_svm"  # HOG + linear SVM (manet_jax/classical.py); every other variant is a network
CLASSICAL_DIR = CLASSICAL_VARIANT  # <workdir>/hog_svm/ holds the classical baseline's fitted model
REQUIRED = (
    "schema",
    "kind",
    "variant",
    "data_set",
    "synthetic",
    "class_names",
    "num_classes",
    "input_size",
    "preprocessing",
)


def kind_of(variant: str) -> str:
    """'classical' for the classical baseline's variant, 'network' for every model variant."""
    return "classical" if variant == CLASSICAL_VARIANT else "network"


def report_suffix(
    split: str = "test", flip_tta: bool = False, step: int | str = "best", chosen: int | None = None
) -> str:
    """'' for the defaults, else e.g. '_train_tta' or '_step1100': nothing is overwritten silently."""
    parts = [] if split == "test" else [split]
    if flip_tta:
        parts.append("tta")
    if step != "best":
        parts.append(f"step{chosen if chosen is not None else step}")
    return "".join(f"_{p}" for p in parts)


def _tuples(value):
    """JSON arrays back to the (nested) tuples the config files use."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _merge(base: ml_collections.ConfigDict, stored: dict) -> None:
    for key, value in stored.items():
        if isinstance(value, dict):
            if not isinstance(base.get(key), ml_collections.ConfigDict):
                base[key] = ml_collections.ConfigDict()
            _merge(base[key], value)
            continue
        try:
            base[key] = _tuples(value)
        except TypeError:  # the default has another type (e.g. None): the stored value wins
            with base.ignore_type():
                base[key] = _tuples(value)


def load_config(workdir) -> ml_collections.ConfigDict:
    """<workdir>/config.json as written by training, on top of the package's defaults.

    That file is all a restore needs (not the repository's configs/). Keys added to the
    project after the run was trained take their defaults, so old workdirs stay loadable;
    JSON arrays come back as tuples. A run from before data.cache_dir existed used
    data.data_dir as its prepared-data cache: that is carried over.
    """
    path = Path(workdir).absolute() / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path.parent} has no config.json: not a workdir written by train.py (or pass a config explicitly)"
        )
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None
    data = stored.get("data", {})
    if "data_dir" in data and "cache_dir" not in data:
        data["cache_dir"], data["data_dir"] = data["data_dir"], ""
    data_set = data.get("name", "synthetic")
    config = defaults.get_config(data_set if data_set in defaults.DATA_SETS else "synthetic")
    _merge(config, stored)
    return config


def path(workdir) -> Path:
    return Path(workdir).expanduser().absolute() / FILE


def write(workdir, record: dict) -> Path:
    """`record` (checked as `read` checks it) -> <workdir>/run.json, atomically."""
    target = path(workdir)
    check(record, target)
    return atomic.write_text(target, json.dumps(record, indent=2) + "\n")


def read(workdir) -> dict:
    """<workdir>/run.json; FileNotFoundError when absent, ValueError (naming the file) when unreadable."""
    source = path(workdir)
    if not source.is_file():
        raise FileNotFoundError(f"{source} does not exist: the run was trained before run.json existed, or not yet")
    try:
        record = json.loads(source.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{source} is not valid JSON ({err}); re-run train.py on {source.parent} to rewrite it"
        ) from None
    check(record, source)
    return record


def check(record, source="run record") -> None:
    """ValueError naming `source` unless `record` has every key, of a sane type."""
    if not isinstance(record, dict):
        raise ValueError(f"{source} must hold a JSON object, got {type(record).__name__}")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"{source} lacks {missing}; re-run train.py on its workdir to rewrite it")
    if not isinstance(record["schema"], int) or record["schema"] > SCHEMA:
        raise ValueError(f"{source} has schema {record['schema']!r}; this code reads schema <= {SCHEMA}")
    if record["kind"] not in KINDS:
        raise ValueError(f"{source}: kind must be one of {KINDS}, got {record['kind']!r}")
    names = record["class_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{source}: class_names must be a non-empty list of strings, got {names!r}")
    if record["num_classes"] != len(names):
        raise ValueError(f"{source}: num_classes={record['num_classes']!r} but {len(names)} class names {names}")


def record_for(config, class_names, kind: str | None = None) -> dict:
    """The record of a run of `config` trained on data whose label order is `class_names`
    (`kind`: kind_of(config.model.variant) unless given)."""
    from manet_jax.data import align

    d = config.data
    size = int(config.model.input_size)
    preprocessing = {
        "input": {
            "dtype": "uint8",
            "shape": [size, size, 3],
            "channels": "RGB",
            "range": [0, 255],
            "description": "an aligned face crop (grey images repeated to 3 channels)",
        },
        "pixel_mean": [float(v) for v in d.pixel_mean],
        "normalize": "float32(image) - pixel_mean (RGB), done by Run.predict and inside exported artifacts",
        "alignment": align.AlignSpec.from_config(d, size).describe(),
    }
    for key in ("landmarks", "detector"):
        if key in d:
            preprocessing[key] = d[key] if isinstance(d[key], str | int | float | bool) else str(d[key])
    record = {
        "schema": SCHEMA,
        "kind": kind or kind_of(config.model.variant),
        "variant": str(config.model.variant),
        "data_set": str(d.name),
        "synthetic": _synthetic(d),
        "class_names": [str(n) for n in class_names],
        "num_classes": len(class_names),
        "input_size": size,
        "preprocessing": preprocessing,
    }
    if len(class_names) != int(config.model.num_classes):
        raise ValueError(
            f"config.model.num_classes={config.model.num_classes} but {len(class_names)} class names {list(class_names)}"
        )
    check(record)
    return record


def fixed_class_names(data_set: str) -> tuple[str, ...] | None:
    """The label order of a data set whose classes are fixed (synthetic, CK+, RAF-DB), else None."""
    from manet_jax.data import ckplus, rafdb, synthetic

    return {"synthetic": synthetic.CLASS_NAMES, "ckplus": ckplus.CLASS_NAMES, "rafdb": rafdb.CLASS_NAMES}.get(data_set)


def legacy(config, kind: str | None = None) -> dict | None:
    """A record from config.json alone, for runs trained before run.json: when config.data.class_names
    is given, or the data set's classes are fixed. None when that leaves the names unknown (a
    folder data set named by its sorted class folders)."""
    names = tuple(config.data.get("class_names", ())) or fixed_class_names(config.data.get("name", "synthetic"))
    if not names:
        return None
    return {**record_for(config, names, kind), "legacy": "built from config.json: no run.json in the workdir"}


def resolve(workdir, config, kind: str | None = None) -> dict:
    """What readers use: <workdir>/run.json, else `legacy(config)` (config = the workdir's
    config.json); a ValueError that says how to record it when neither names the classes."""
    try:
        return read(workdir)
    except FileNotFoundError:
        record = legacy(config, kind)
    if record is None:
        workdir = Path(workdir).expanduser().absolute()
        raise ValueError(
            f"the class names of {workdir} are unknown: {path(workdir)} does not exist and its config.json "
            f"does not name them (config.data.class_names is empty for the {config.data.get('name')!r} data "
            f"set); re-run train.py on {workdir} (a finished run is only re-evaluated) to record them"
        )
    return record


def _synthetic(data) -> bool:
    """Trained on the built-in synthetic drawings: the synthetic data set, or a folder that
    data.synthetic.export_folder wrote (its info.json says so)."""
    if data.name == "synthetic":
        return True
    if data.name != "folder" or not data.get("data_dir"):
        return False
    from manet_jax.data import synthetic

    try:
        made = json.loads((Path(data.data_dir).expanduser() / synthetic.FOLDER_INFO).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(made, dict) and str(made.get("what", "")).startswith("synthetic faces (manet_jax.data.synthetic)")
