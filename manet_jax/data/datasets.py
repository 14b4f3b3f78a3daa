"""Data sets by name: prepare once (cached on disk), then open the train and test splits.

    config.data.name  source (config.data.data_dir)                    splits
    synthetic         none: drawn on first use                         own train/test
    ckplus            unpacked CK+ (cohn-kanade-images/, Emotion/, ...) fold 1..10 only
    rafdb             RAF-DB basic/ folder                             published train/test
    folder            <root>/<class>/<image> or <root>/train|test/...   given, or fold 1..10

Prepared arrays live under config.data.cache_dir (default <workdir>/data), one folder per
data set and preparation setting; every source is read, aligned and written into them in one
pass (data/prepared.py). The TFDS builders (data/tfds_builders.py) give TFDS users the same
CK+ and RAF-DB examples; training does not need them.
`config.data.fold` k > 0 pools all examples and takes the CK+-style person-independent fold
k as the test set (data/folds.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from manet_jax import defaults
from manet_jax.data import align, crop_landmarks, folds, prepared


def cache_root(config, workdir) -> Path:
    """config.data.cache_dir, or <workdir>/data when it is empty."""
    return Path(config.data.cache_dir).expanduser() if config.data.cache_dir else Path(workdir) / "data"


def load_splits(
    config, workdir, log=print, prepare: bool = True
) -> tuple[prepared.PreparedSplit, prepared.PreparedSplit]:
    """(train, test) prepared splits for config.data, preparing them on first use.

    prepare=False only opens them (the processes of a multi-process run other than process 0,
    once process 0 has prepared them): FileNotFoundError when they are not there.
    """
    if problem := defaults.data_problem(config.data):
        raise ValueError(problem)
    name = config.data.name
    root = cache_root(config, workdir)
    if name == "synthetic":
        train, test = _synthetic(config, root, log, prepare)
    elif name in ("ckplus", "rafdb"):
        train, test = _annotated(config, root, log, prepare)
    else:  # folder (data_problem knows the names)
        train, test = _folder(config, root, log, prepare)
    return apply_fold(train, test, config.data.fold, log, name)


def apply_fold(
    train: prepared.PreparedSplit, test: prepared.PreparedSplit | None, fold: int, log=print, name: str = "data set"
):
    """fold 0: the data set's own split; fold k: CK+-style person-independent fold k of all examples."""
    if not fold:
        if test is None:
            raise ValueError(
                f"{name} has no official test split: set config.data.fold to 1..10 "
                f"(person-independent 10-fold cross-validation)"
            )
        return train, test
    pooled = train if test is None else prepared.concatenate([train, test])
    train_idx, test_idx = folds.fold_split(pooled.subject_id, fold)
    log(
        f"person-independent fold {fold}/10: {len(train_idx)} training and {len(test_idx)} test examples "
        f"({len(np.unique(pooled.subject_id[test_idx]))} test subjects)"
    )
    return pooled.subset(train_idx), pooled.subset(test_idx)


def _not_shared(path) -> FileNotFoundError:
    """Process 0 prepared the data, yet this process does not see it: the folder is not shared."""
    return FileNotFoundError(
        f"{path} is not prepared, though process 0 prepared it: every process must see the same "
        "config.data.cache_dir (default <workdir>/data), e.g. on NFS, Filestore or GCS FUSE (docs/multihost.md)"
    )


def _synthetic(config, root: Path, log, prepare: bool = True) -> tuple[prepared.PreparedSplit, prepared.PreparedSplit]:
    from manet_jax.data import synthetic

    d, size = config.data, config.model.input_size
    folder = root / (
        f"synthetic-v2-s{size}-train{d.num_train}x{d.num_train_subjects}"
        f"-test{d.num_test}x{d.num_test_subjects}-seed{d.seed}"
    )
    specs = {
        "train": dict(
            num_examples=d.num_train, seed=10_000 + d.seed, num_subjects=d.num_train_subjects, subject_id_offset=0
        ),
        "test": dict(
            num_examples=d.num_test,
            seed=20_000 + d.seed,
            num_subjects=d.num_test_subjects,
            subject_id_offset=d.num_train_subjects,
        ),
    }
    splits = []
    for split, spec in specs.items():
        path = folder / split
        if not prepared.is_prepared(path):
            if not prepare:
                raise _not_shared(path)
            start = time.time()
            arrays = synthetic.generate_split(image_size=size, **spec)
            prepared.write_split(
                path, arrays, {"class_names": list(synthetic.CLASS_NAMES), "source": "synthetic", **spec}
            )
            log(
                f"generated {spec['num_examples']} synthetic {split} faces at {size}x{size} in "
                f"{time.time() - start:.1f}s -> {path}"
            )
        splits.append(prepared.read_split(path))
    return splits[0], splits[1]


def _source_dir(config) -> Path:
    if not config.data.data_dir:
        raise ValueError(f"config.data.data_dir must name your {config.data.name} folder (it is empty)")
    return Path(config.data.data_dir).expanduser().absolute()


def raf_options(data) -> dict:
    """RAF-DB's source options from config.data (they name the prepared cache and the TFDS config)."""
    raf = dict(
        raf_source=data.raf_source, raf_landmarks=data.raf_landmarks, raf37_to_8=tuple(int(i) for i in data.raf37_to_8)
    )
    if raf["raf37_to_8"] and len(raf["raf37_to_8"]) != 8:
        raise ValueError(f"config.data.raf37_to_8 must hold 8 indices, got {list(raf['raf37_to_8'])}")
    return raf


def cache_name(spec: align.AlignSpec, landmarks: str = "template", detector: str = "hog", **raf) -> str:
    """A name that spells out every preparation setting: one cache folder per setting
    (landmarks='detect' adds '_detect', and a detector other than 'hog' its name and a digest
    of its settings, crop_landmarks.detector_tag; the default names the caches it always did)."""
    box = "_".join(f"{round(v * 100):d}" for v in spec.face_box)
    name = f"s{spec.size}_{spec.transform}_{spec.points}_box{box}"
    if raf:
        name += f"_{raf.get('raf_source', 'original')}_{raf.get('raf_landmarks', 'manual5')}"
        if raf.get("raf37_to_8"):
            name += "_map" + "-".join(str(int(i)) for i in raf["raf37_to_8"])
    if landmarks != "template":
        name += f"_{landmarks}"
    if landmarks == "detect":
        name += crop_landmarks.detector_tag(detector)
    return name


def _write_split(
    path: Path,
    examples,
    num_examples: int,
    spec: align.AlignSpec,
    num_landmarks: int,
    info: dict,
    name_length: int,
    tally: crop_landmarks.DetectionTally | None = None,
    log=print,
) -> None:
    """Stream examples (dicts in the prepared layout) into a new split, committed atomically.
    With a tally (config.data.landmarks='detect'), the detected and fallback counts and the
    fallback images' names go into info['landmark_detection'] and the log."""
    with prepared.SplitWriter(path, num_examples, spec.size, num_landmarks, info, name_length=name_length) as writer:
        for i, example in enumerate(examples if tally is None else tally(examples)):
            writer.set(i, example)
        if tally is not None:
            writer.info["landmark_detection"] = tally.info()
            log(f"{tally.summary()} ({path.name}; the names: info.json, landmark_detection)")
        writer.commit()


def _annotated(config, root: Path, log, prepare: bool = True):
    """CK+ / RAF-DB: the user's files (layout checked every time) -> aligned crops, once.

    The records are read, decoded and aligned straight into memory-mappable arrays, in the
    order of the annotation files. The TFDS builders (data/tfds_builders.py) produce the same
    examples for users of TFDS; training does not go through them.
    """
    from manet_jax.data import ckplus, rafdb

    source = _source_dir(config)
    d = config.data
    spec = align.AlignSpec.from_config(d, config.model.input_size)
    if d.name == "ckplus":
        ckplus.find_layout(source)
        raf, split_names = {}, ("train",)
        num_landmarks, scheme, class_names = 68, "ibug68", ckplus.CLASS_NAMES
    else:
        rafdb.find_root(source)
        raf, split_names = raf_options(d), ("train", "test")
        num_landmarks, scheme = rafdb.landmark_layout(d.raf_source, d.raf_landmarks, d.landmarks)
        class_names = rafdb.CLASS_NAMES
    landmarks = d.get("landmarks", "template")  # CK+ has its own
    detector_name = d.get("detector", crop_landmarks.DEFAULT_DETECTOR)
    folder = root / "prepared" / d.name / cache_name(spec, landmarks, detector_name, **raf)
    paths = {s: folder / s for s in split_names}
    if not all(prepared.is_prepared(p) for p in paths.values()):
        if not prepare:
            raise _not_shared(folder)
        start = time.time()
        log(f"preparing {d.name} from {source} (aligning to {spec.size}x{spec.size}; once) ...")
        if d.name == "ckplus":
            by_split = {"train": ckplus.records(source)}
            load = functools.partial(_no_detector, functools.partial(ckplus.load_example, spec=spec))
        else:
            records = rafdb.records(source, d.raf_source, d.raf_landmarks)
            by_split = {s: [r for r in records if r.split == s] for s in split_names}
            load = functools.partial(
                rafdb.load_example, spec=spec, landmark_set=d.raf_landmarks, raf37_to_8=raf["raf37_to_8"]
            )
        # 'detect': the detector is made once per preparation (once per worker process)
        with crop_landmarks.ExampleLoader(load, landmarks, detector_name, d.get("prepare_workers", 0), log) as loader:
            for split, path in paths.items():
                if prepared.is_prepared(path):
                    continue
                records = by_split[split]
                info = {
                    "class_names": list(class_names),
                    "source": d.name,
                    "source_dir": str(source),
                    "landmark_scheme": scheme,
                    "align": spec.describe(),
                    "split": split,
                    **raf,
                    **({"landmarks": landmarks} if landmarks != "template" else {}),
                }
                _write_split(
                    path,
                    loader.map((r,) for r in records),
                    len(records),
                    spec,
                    num_landmarks,
                    info,
                    name_length=max(len(r.name) for r in records) + 1,
                    tally=None if landmarks == "template" else crop_landmarks.DetectionTally(loader.description),
                    log=log,
                )
        log(f"prepared {d.name} in {time.time() - start:.1f}s -> {folder}")
    splits = {s: prepared.read_split(p) for s, p in paths.items()}
    recorded = splits[split_names[0]].info.get("source_dir")
    if recorded and recorded != str(source):
        log(f"note: {folder} was prepared from {recorded}, not {source}; delete it to re-prepare")
    return splits["train"], splits.get("test")


def _no_detector(load, *args, detector=None):
    """load(*args) for an ExampleLoader: a data set whose landmarks come from its files (CK+)."""
    return load(*args)


def _report_suspicious_files(cache: Path, find_notes, log, prepare: bool = True) -> None:
    """Count the skipped and suspicious files by reason, list them in <cache>/report.txt (found
    once per cache: its name already depends on every file's name, size and time)."""
    from collections import Counter

    from manet_jax.metrics import write_text_atomic

    report = cache / "report.txt"
    if report.is_file():
        notes = [tuple(reversed(line.split("\t", 1))) for line in report.read_text().splitlines() if line]
    elif not prepare:
        raise _not_shared(report)
    else:
        notes = find_notes()
        write_text_atomic(report, "".join(f"{reason}\t{path}\n" for path, reason in notes))
    if not notes:
        return
    counts = Counter(reason.split(" of ")[0] for _, reason in notes)
    log(
        f"{len(notes)} files skipped or suspicious ({'; '.join(f'{n} {r}' for r, n in counts.items())}); "
        f"the list: {report}"
    )


def _folder(config, root: Path, log, prepare: bool = True):
    """Class-per-folder images -> prepared arrays (cached per folder content and settings)."""
    from manet_jax.data import image_folder

    source = _source_dir(config)
    d = config.data
    spec = align.AlignSpec.from_config(d, config.model.input_size)
    split_dirs = image_folder.splits_of(source)
    first = next(iter(split_dirs.values()))
    class_names = image_folder.class_folders(first, tuple(d.class_names))
    for folder in split_dirs.values():
        image_folder.class_folders(folder, class_names)  # every split has the same classes
    recs = {s: image_folder.records(f, class_names, d.subject_regex) for s, f in split_dirs.items()}
    all_subjects = [r.subject for rs in recs.values() for r in rs]
    ids = image_folder.subject_ids(all_subjects)
    detect = d.landmarks == "detect"
    detector_name = d.get("detector", crop_landmarks.DEFAULT_DETECTOR)
    digest = hashlib.sha1(
        json.dumps(
            {
                "source": str(source),
                "classes": class_names,
                "regex": d.subject_regex,
                "align": spec.describe(),
                "exif_orientation": True,  # photos are turned upright (align.load_image); older caches were not
                # 'template' adds nothing, so the caches prepared before the key existed stay valid
                # the detector's name and settings; 'hog' keeps the key it had before there were others
                **(
                    {"landmarks": d.landmarks, "detector": crop_landmarks.detector_key(detector_name)} if detect else {}
                ),
                "files": [
                    (r.name, st.st_size, st.st_mtime_ns) for rs in recs.values() for r in rs for st in [r.image.stat()]
                ],
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()[:12]
    cache = root / "prepared" / "folder" / f"{source.name}-{digest}"
    _report_suspicious_files(cache, lambda: image_folder.suspicious_files(split_dirs, class_names, recs), log, prepare)
    out, offset = {}, 0
    load = functools.partial(image_folder.load_example, spec=spec)
    # 'detect': the detector is made once per preparation (once per worker process)
    with crop_landmarks.ExampleLoader(load, d.landmarks, detector_name, d.get("prepare_workers", 0), log) as loader:
        for split, rs in recs.items():
            path = cache / split
            split_ids = ids[offset : offset + len(rs)]
            offset += len(rs)
            if not prepared.is_prepared(path):
                if not prepare:
                    raise _not_shared(path)
                start = time.time()
                info = {
                    "class_names": list(class_names),
                    "source": "folder",
                    "source_dir": str(source),
                    "landmark_scheme": "ibug68" if detect else "template",  # a fallback's template points: iBUG order
                    "align": spec.describe(),
                    "subject_regex": d.subject_regex,
                    **({"landmarks": "detect"} if detect else {}),
                }
                _write_split(
                    path,
                    loader.map((r, int(sid)) for r, sid in zip(rs, split_ids)),
                    len(rs),
                    spec,
                    68,
                    info,
                    name_length=max(len(r.name) for r in rs) + 1,
                    tally=crop_landmarks.DetectionTally(loader.description) if detect else None,
                    log=log,
                )
                log(f"prepared {len(rs)} images of {source} ({split}) in {time.time() - start:.1f}s -> {path}")
            out[split] = prepared.read_split(path)
    if "all" in out:
        return out["all"], None
    return out["train"], out["test"]
