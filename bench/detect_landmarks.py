"""Preparation speed of an image folder with config.data.landmarks='detect', per detector, with
the detection in worker processes and without.

    python bench/detect_landmarks.py                          # 32 photos of 1350 x 550 px
    python bench/detect_landmarks.py --kind=crops --num=128   # 128 face crops, 160..320 px
    python bench/detect_landmarks.py --detectors=hog --workers=1,2 --size=96

Writes --num images of scikit-image's astronaut() (a real face) into
<root>/<class>/S0xx_001_00000001.png in a temporary folder: 'photos' pastes her head and
shoulders (face ~190-290 px wide), shifted and mirrored, into 1350 x 550 frames of another
photo (the coffee cup), the size of ordinary pictures; 'crops' cuts face crops of 160..320 px.
Nothing is downloaded. It prepares the folder (data/datasets.py, one pooled split, a fresh
cache each time) with landmarks='template' once, then with landmarks='detect' for each
--detectors name (config.data.detector) and each --workers setting
(config.data.prepare_workers: 1 = in this process, 0 = one worker process per usable CPU,
n = n processes), and prints one JSON line each: seconds in all (worker start-up included),
images per second, milliseconds per image, CPU milliseconds per image (this process and its
workers) and the cores that CPU time kept busy, the processes that ran and how many faces were
found. Timings depend on the machine and on what else runs on it: on a shared machine,
--repeat=3 keeps the fastest of three runs of each setting.
"""

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from configs import folder  # noqa: E402
from manet_jax import faces  # noqa: E402
from manet_jax.data import crop_landmarks, datasets  # noqa: E402

KINDS = ("photos", "crops")
PHOTO_SIZE = (1350, 550)  # (width, height)
FACE = (223, 127)  # the astronaut's face centre in data.astronaut() (512 x 512), (x, y)


def _crop(a: np.ndarray, rng) -> np.ndarray:
    side = int(rng.integers(160, 321))
    cx, cy = FACE[0] + int(rng.integers(-40, 41)), FACE[1] + int(rng.integers(-30, 31))
    top, left = max(cy - side // 2, 0), max(cx - side // 2, 0)
    return a[top : top + side, left : left + side]


def _photo(a: np.ndarray, background: np.ndarray, rng) -> np.ndarray:
    """A 1350 x 550 photo: the astronaut's head and shoulders (her face ~120 px in a 300 px
    square), enlarged 1.6-2.4x (bottom cut at the frame), somewhere on the background."""
    width, height = PHOTO_SIZE
    frame = background.copy()
    head = a[max(FACE[1] - 130, 0) : FACE[1] + 170, FACE[0] - 150 : FACE[0] + 150]
    scale = float(rng.uniform(1.6, 2.4))
    side = (round(head.shape[1] * scale), round(head.shape[0] * scale))
    head = np.asarray(Image.fromarray(np.ascontiguousarray(head)).resize(side, Image.Resampling.BILINEAR))
    head = head[: height - 10]
    left = int(rng.integers(0, width - head.shape[1]))
    top = int(rng.integers(0, height - head.shape[0] + 1))
    frame[top : top + head.shape[0], left : left + head.shape[1]] = head
    return frame


def write_folder(root: Path, num: int, kind: str = "crops") -> None:
    """`num` images in root/happy and root/neutral, one CK+-style subject each (see the docstring)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    a = data.astronaut()
    background = np.asarray(Image.fromarray(data.coffee()).resize(PHOTO_SIZE, Image.Resampling.BILINEAR))
    rng = np.random.default_rng(0)
    for k in range(num):
        image = _crop(a, rng) if kind == "crops" else _photo(a, background, rng)
        if k % 2:
            image = image[:, ::-1]
        folder_ = root / ("happy" if k % 2 else "neutral")
        folder_.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image)).save(folder_ / f"S{k + 1:03d}_001_00000001.png")


def _prepare(root: Path, cache: Path, size: int, landmarks: str, detector: str = "hog", workers: int = 0):
    cfg = folder.get_config()
    cfg.model.input_size, cfg.data.fold, cfg.data.landmarks = size, 1, landmarks
    cfg.data.detector, cfg.data.prepare_workers = detector, workers
    cfg.data.data_dir, cfg.data.cache_dir = str(root), str(cache)
    start, cpu = time.perf_counter(), _cpu_seconds()
    train, _ = datasets.load_splits(cfg, cache, log=lambda *_: None)
    return train, time.perf_counter() - start, _cpu_seconds() - cpu


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its ended worker processes."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=32)
    parser.add_argument("--kind", choices=KINDS, default="photos")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--detectors", default=",".join(faces.DETECTORS), help="config.data.detector names")
    parser.add_argument("--workers", default="1,0", help="config.data.prepare_workers settings")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each setting; the fastest counts")
    args = parser.parse_args()
    detectors = [d for d in args.detectors.split(",") if d]
    workers = [int(w) for w in args.workers.split(",") if w]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "faces"
        write_folder(root, args.num, args.kind)
        base = {"kind": args.kind, "images": args.num, "size": args.size}
        runs = [("template", "-", 1)] + [("detect", d, w) for d in detectors for w in workers]
        for i, (landmarks, detector, setting) in enumerate(runs):
            name = "hog" if landmarks == "template" else detector  # (unused by 'template')
            timed = [
                _prepare(root, Path(tmp) / f"cache{i}-{r}", args.size, landmarks, name, setting)
                for r in range(max(1, args.repeat))
            ]
            train, seconds, cpu = min(timed, key=lambda t: t[1])
            result = {**base, "landmarks": landmarks, "detector": detector, "prepare_workers": setting}
            result["processes"] = crop_landmarks.worker_count(setting, args.num, landmarks)
            result["seconds"] = round(seconds, 2)
            result["images_per_s"] = round(args.num / seconds, 2)
            result["ms_per_image"] = round(1000 * seconds / args.num, 1)
            result["cpu_ms_per_image"] = round(1000 * cpu / args.num, 1)  # this process and its workers
            result["cores_used"] = round(cpu / seconds, 2)  # < processes: start-up, or a busy machine
            if landmarks == "detect":
                result["detected"] = train.info["landmark_detection"]["detected"]  # the pooled 'all' split
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
