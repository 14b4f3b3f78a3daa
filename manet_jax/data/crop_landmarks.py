"""Landmarks for face images that come without them (image folders, RAF-DB's aligned crops).

`config.data.landmarks` picks how such an image becomes a prepared example:

* 'template' (the default): the image is centre-cropped to a square and resized
  (`align.center_square`), and every face gets the template's 68 points and 8 points, so the
  RASnet target masks sit where the template puts eyes, nose and mouth (faces are assumed
  roughly aligned already).
* 'detect': at preparation time dlib's face detector and 68-point model (manet_jax/faces.py)
  run on the image; the largest face's points (`faces.main_face`) align it exactly as CK+'s
  database landmarks do (`align.align_face(image, points, 'ibug68', spec)`), and the aligned
  68 points and their 8 (`align.eight_points`) are stored, so the masks are drawn from the
  face's own landmarks. An image where no face is found (or whose points cannot be fitted)
  falls back to the template path above; `DetectionTally` counts them and names them in the
  split's info.json (`info['landmark_detection']`).

A 'detect' split stores `landmark_scheme='ibug68'`: the template's 68 points of a fallback
image are in the same iBUG order, and `info['landmark_detection']['fallback_names']` says
which examples carry them. Detection costs time once, at preparation; the prepared arrays
are read like any other split's.

`config.data.detector` names the detector ('hog', the default; 'cnn'; 'none' for pre-cropped
faces: `faces.DETECTORS`, `faces.make_detector`). With 'none' the whole image is the face and
its points come from a detection inside it, else from the template: such an image is a
fallback here, prepared exactly as 'template' prepares it. The detector's name and settings
are part of the cache key (`detector_key`), written out here so that a prepared split opens
without dlib.

Preparation with 'detect' decodes, detects and aligns in worker processes, one per CPU the
process may use (`manet_jax.cpus`; `config.data.prepare_workers`: 0 = that many, but at most
one per MIN_PER_WORKER images; 1 = in this process; n = n processes), each making its
detector once (dlib objects do not pickle). The examples come back in the files' order, so
the prepared arrays are the same bytes either way (`ExampleLoader`).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import json
import math
import multiprocessing
import pickle
import signal
import sys
import types

import numpy as np

from manet_jax import cpus, defaults, faces
from manet_jax.data import align

MODES = defaults.LANDMARK_MODES
DEFAULT_DETECTOR = "hog"  # config.data.detector's default (defaults.py)
# faces.make_detector(name).describe() for every name, written out: what the cache key of a
# 'detect' split records about its detector (data/datasets.py), so that a prepared split opens
# without dlib. Preparation checks that the detector it makes still says this
# (tests/test_detect_landmarks.py too): a detector whose settings change names a new cache.
_HOG = {
    "name": "hog",
    "detector": "dlib HOG frontal face detector",
    "landmarks": "shape_predictor_68_face_landmarks.dat",
    "upsample": 0,
    "threshold": 0.0,
}
_CNN = {  # CnnDetector(hog_pass=False); the 'cnn' detector adds its HOG pass
    "name": "cnn",
    "detector": "dlib CNN (MMOD) face detector",
    "landmarks": "shape_predictor_68_face_landmarks.dat",
    "max_side": 800,
    "upsample": 0,
    "min_score": 0.0,
}
DETECTOR_DESCRIPTIONS = {
    "hog": _HOG,
    "cnn": {**_CNN, "detector": _CNN["detector"] + " + HOG at full size"},
    "none": {
        "name": "none",
        "detector": "none: the whole image is the face",
        "landmarks": "shape_predictor_68_face_landmarks.dat on the face HOG or CNN finds in it, else the template",
        "inside": {"hog": _HOG, "cnn": _CNN},
    },
}
# The key the 'hog' detector had when it was the only one: kept, so its caches keep their names.
HOG_KEY = "dlib HOG frontal face detector, upsample 0, threshold 0; shape_predictor_68_face_landmarks"
# prepare_workers=0 starts no more processes than images / this: a worker takes ~0.8 s of CPU
# to start (Python, dlib's models), what HOG spends on ~10 photos of 1350 x 550 (~85 ms each)
# or ~100 small face crops, the CNN detector on one photo (bench/detect_landmarks.py)
MIN_PER_WORKER = 16


def _check_name(detector_name: str) -> None:
    if detector_name not in faces.DETECTORS:
        raise ValueError(f"config.data.detector must be one of {faces.DETECTORS}, got {detector_name!r}")


def detector_description(detector_name: str = DEFAULT_DETECTOR) -> dict:
    """faces.make_detector(detector_name).describe(), without dlib (DETECTOR_DESCRIPTIONS)."""
    _check_name(detector_name)
    return dict(DETECTOR_DESCRIPTIONS[detector_name])


def detector_key(detector_name: str = DEFAULT_DETECTOR) -> str:
    """What a 'detect' cache key records about the detector: its name and settings (its
    describe()); 'hog' keeps the string it had before there were other detectors."""
    if detector_name == "hog":
        return HOG_KEY
    return json.dumps(detector_description(detector_name), sort_keys=True)


def detector_tag(detector_name: str = DEFAULT_DETECTOR) -> str:
    """'' for 'hog' (the cache names it always had), else '-<name>-<8 hex digits of its key>':
    what a cache folder named by settings (RAF-DB's) adds after '_detect'."""
    if detector_name == "hog":
        return ""
    return f"-{detector_name}-{hashlib.sha1(detector_key(detector_name).encode()).hexdigest()[:8]}"


def make_detector(mode: str, detector_name: str = DEFAULT_DETECTOR):
    """The detector for `mode` ('detect': faces.make_detector(detector_name), made once per
    preparation and checked against DETECTOR_DESCRIPTIONS), else None."""
    if mode not in MODES:
        raise ValueError(f"config.data.landmarks must be one of {MODES}, got {mode!r}")
    if mode == "template":
        return None
    want = detector_description(detector_name)
    try:
        detector = faces.make_detector(detector_name)
    except ImportError as err:
        raise ImportError(
            f"config.data.landmarks='detect' runs a face detector while preparing the data: {err}"
        ) from err
    got = detector.describe()
    if got != want:
        raise RuntimeError(
            f"faces.make_detector({detector_name!r}).describe() is {got}, but the cache key of prepared data "
            f"records {want}: update crop_landmarks.DETECTOR_DESCRIPTIONS (a changed detector must name new caches)"
        )
    return detector


def crop_example(image: np.ndarray, spec: align.AlignSpec, detector=None) -> dict:
    """image, landmarks (68), landmarks8 and, with a detector, landmarks_detected (bool).

    Without a detector, or when it finds no face (a WholeImageDetector's 'template' points
    count as none): the template path (centre square, the template's points), exactly what
    preparation always did for these images.
    """
    if detector is not None:
        face = faces.main_face(detector, image)
        if face is not None and face.landmark_source != "template":
            try:
                crop, aligned, _ = align.align_face(image, face.landmarks, "ibug68", spec)
            except ValueError:  # degenerate points: no transform to fit
                pass
            else:
                return {
                    "image": crop,
                    "landmarks": aligned,
                    "landmarks8": align.eight_points(aligned, "ibug68", spec),
                    "landmarks_detected": True,
                }
    example = {
        "image": align.center_square(image, spec.size),
        "landmarks8": align.template_8(spec.size, spec.face_box).astype(np.float32),
        "landmarks": align.template_68(spec.size, spec.face_box).astype(np.float32),
    }
    if detector is not None:
        example["landmarks_detected"] = False
    return example


def worker_count(setting: int, num_items: int, mode: str = "detect") -> int:
    """Processes that prepare `num_items` images: 1 (this process) for 'template' (no detector)
    or one usable CPU; else `setting` (config.data.prepare_workers) or, for 0, one per usable
    CPU but no more than one per MIN_PER_WORKER images; never more than the images."""
    setting = int(setting)
    if setting < 0:
        raise ValueError(f"config.data.prepare_workers must be >= 0 (0: one per usable CPU), got {setting}")
    if mode == "template" or num_items < 2:
        return 1
    if setting == 0:
        setting = min(len(cpus.usable()), num_items // MIN_PER_WORKER)
    return max(1, min(setting, num_items))


def _file_of(item):
    """The file an item's first element (a data set's Record) was read from."""
    return getattr(item[0], "image", item[0])


def _named(err: Exception, path) -> Exception:
    """`err`, or one of its type (else RuntimeError) whose message starts with `path` when it
    does not name it already."""
    if str(path) in str(err):
        return err
    try:
        named = type(err)(f"{path}: {err}")
    except Exception:
        named = RuntimeError(f"{path}: {type(err).__name__}: {err}")
    return named


def _load_one(load, detector, item):
    try:
        return load(*item, detector=detector)
    except Exception as err:
        named = _named(err, _file_of(item))
        if named is err:
            raise
        raise named from err


_WORKER: dict = {}  # in a worker process: its load function and detector, or the error making them


def _init_worker(load, mode: str, detector_name: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops the workers
    _WORKER["load"] = load
    try:
        _WORKER["detector"] = make_detector(mode, detector_name)
    except Exception as err:  # raised with the first image, where the parent sees it
        _WORKER["error"] = err


def _portable(err: Exception) -> Exception:
    """`err` if it survives pickling to the parent, else a RuntimeError with its message."""
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")
    return err


def _work(chunk: list) -> list:
    """The examples of a chunk of items, in a worker process."""
    try:
        if "error" in _WORKER:
            raise _WORKER["error"]
        return [_load_one(_WORKER["load"], _WORKER["detector"], item) for item in chunk]
    except Exception as err:
        portable = _portable(err)
        if portable is err:
            raise
        raise portable from None


@contextlib.contextmanager
def _main_hidden():
    """While worker processes start: a `__main__` without a file, so that 'spawn' does not run
    the main script again in each worker (as it does by default; a script without an
    `if __name__ == '__main__':` guard would then prepare again, recursively). The workers need
    nothing from it: what they run is in this package."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


class ExampleLoader:
    """`load(*item, detector=...)` for each item, in order: the prepared examples of a split.

    With mode 'detect' and more than one process (`worker_count`), in a process pool started
    by 'spawn' (safe after JAX/TF were imported here, unlike 'fork'), each worker making its
    detector once; `map` yields the examples in the items' order (an ordered map over chunks
    of items), so the prepared arrays are the same bytes as in this process. A worker that
    dies (out of memory, killed) is an error here, not a hang. The workers are
    started on the first `map` that needs them and kept for the next split. An error in a
    worker is raised here, naming the image file (item[0].image); the workers ignore Ctrl-C
    and are stopped here (a split being written is then removed by prepared.SplitWriter).
    Use as a context manager.
    """

    def __init__(
        self, load, mode: str = "template", detector_name: str = DEFAULT_DETECTOR, workers: int = 0, log=print
    ):
        if mode not in MODES:
            raise ValueError(f"config.data.landmarks must be one of {MODES}, got {mode!r}")
        _check_name(detector_name)
        worker_count(workers, 0)  # checks the setting
        self.load, self.mode, self.detector_name, self.workers, self.log = load, mode, detector_name, workers, log
        self.detector, self._executor, self._processes = None, None, 0

    @property
    def description(self) -> dict | None:
        """The detector's describe() (DETECTOR_DESCRIPTIONS), None for 'template'."""
        return None if self.mode == "template" else detector_description(self.detector_name)

    def map(self, items):
        """The examples of `items` (a list), in order."""
        items = list(items)
        processes = worker_count(self.workers, len(items), self.mode)
        if processes == 1 and self._executor is None:
            if self.detector is None and self.mode == "detect":
                self.detector = make_detector(self.mode, self.detector_name)
            return (_load_one(self.load, self.detector, item) for item in items)
        self._start(processes)
        size = max(1, min(8, math.ceil(len(items) / (4 * self._processes))))
        chunks = iter([items[i : i + size] for i in range(0, len(items), size)])
        with _main_hidden():  # the first submit()s start the workers, one each (none is idle yet)
            window = collections.deque(
                self._executor.submit(_work, chunk) for chunk in itertools.islice(chunks, 2 * self._processes)
            )
        return self._results(window, chunks)

    def _start(self, processes: int) -> None:
        if self._executor is not None:
            return
        from concurrent.futures import ProcessPoolExecutor

        self.log(
            f"detecting faces in {processes} worker processes ({self.detector_name}; "
            f"config.data.prepare_workers={self.workers})"
        )
        self._executor = ProcessPoolExecutor(
            processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.load, self.mode, self.detector_name),
        )
        self._processes = processes

    def _results(self, window, chunks):
        """The examples of the chunks in flight (`window`), then of the rest, in order; at
        most 2 chunks per worker are waiting at any time."""
        from concurrent.futures.process import BrokenProcessPool

        try:
            while window:
                examples = window.popleft().result()
                for chunk in itertools.islice(chunks, 1):
                    window.append(self._executor.submit(_work, chunk))
                yield from examples
        except BrokenProcessPool as err:
            raise RuntimeError(
                f"a face detection worker process ended abruptly ({err}): out of memory? killed? "
                f"config.data.prepare_workers=1 detects in this process"
            ) from err

    def close(self, cancel: bool = False) -> None:
        """Stop the workers: after the last image, or at once (`cancel`: an error, Ctrl-C)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if cancel:  # each is mid-chunk: stop it rather than wait (without the private list: wait)
            processes = list((getattr(executor, "_processes", None) or {}).values())
            for process in processes:
                process.terminate()
            for process in processes:
                process.join(10)
            # A worker stopped while it sent a result leaves half a message in the result pipe; the
            # executor's thread would wait for the rest forever, and shutdown() (and the exit of this
            # process) with it. With the workers gone, closing this end of the pipe ends that wait.
            writer = getattr(getattr(executor, "_result_queue", None), "_writer", None)
            if writer is not None and all(not process.is_alive() for process in processes):
                writer.close()
        executor.shutdown(wait=True, cancel_futures=cancel)

    def __enter__(self) -> ExampleLoader:
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close(cancel=exc_type is not None)


class DetectionTally:
    """Counts, while a split is written, which examples got detected landmarks."""

    def __init__(self, detector):
        """detector: the detector, or its description (ExampleLoader.description)."""
        self.detector = detector
        self.detected, self.fallback_names = 0, []

    def __call__(self, examples):
        """Pass `examples` through, counting each one's `landmarks_detected`."""
        for example in examples:
            if example.get("landmarks_detected", True):
                self.detected += 1
            else:
                self.fallback_names.append(str(example["name"]))
            yield example

    @property
    def total(self) -> int:
        return self.detected + len(self.fallback_names)

    def info(self) -> dict:
        describe = getattr(self.detector, "describe", None)
        if isinstance(self.detector, dict):
            described = dict(self.detector)
        else:
            described = describe() if describe else type(self.detector).__name__
        return {
            "detector": described,
            "detected": self.detected,
            "fallback": len(self.fallback_names),
            "fallback_names": list(self.fallback_names),
        }

    def summary(self) -> str:
        return (
            f"landmarks: detected in {self.detected} of {self.total} images; "
            f"{len(self.fallback_names)} fell back to the template"
        )
