"""Preparation time per image of an image folder with config.data.landmarks='template' vs 'detect'.

    python bench/detect_landmarks.py                    # 64 images, 224 px crops
    python bench/detect_landmarks.py --num=200 --size=96

Writes --num crops of scikit-image's astronaut() (a real face: shifted, scaled and mirrored
copies, sides 160..320 px) into <root>/<class>/S0xx_001_00000001.png in a temporary folder,
prepares it in both settings (data/datasets.py, a fresh cache each) and prints one JSON line
per setting: seconds in all, wall-clock and CPU milliseconds per image, and for 'detect' how many faces were found.
Nothing is downloaded.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from configs import folder  # noqa: E402
from manet_jax.data import datasets  # noqa: E402


def write_folder(root: Path, num: int) -> None:
    a = data.astronaut()
    rng = np.random.default_rng(0)
    for k in range(num):
        side = int(rng.integers(160, 321))
        cx, cy = 223 + int(rng.integers(-40, 41)), 127 + int(rng.integers(-30, 31))
        top, left = max(cy - side // 2, 0), max(cx - side // 2, 0)
        image = a[top : top + side, left : left + side]
        if k % 2:
            image = image[:, ::-1]
        folder_ = root / ("happy" if k % 2 else "neutral")
        folder_.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image)).save(folder_ / f"S{k + 1:03d}_001_00000001.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "faces"
        write_folder(root, args.num)
        for mode in ("template", "detect"):
            cfg = folder.get_config()
            cfg.model.input_size, cfg.data.fold, cfg.data.landmarks = args.size, 1, mode
            cfg.data.data_dir, cfg.data.cache_dir = str(root), str(Path(tmp) / "cache")
            start, cpu = time.perf_counter(), time.process_time()
            train, test = datasets.load_splits(cfg, tmp, log=lambda *_: None)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            result = {"landmarks": mode, "images": args.num, "size": args.size, "seconds": round(seconds, 2)}
            result["ms_per_image"] = round(1000 * seconds / args.num, 1)
            result["cpu_ms_per_image"] = round(1000 * cpu / args.num, 1)  # this process's CPU time: less load-bound
            if mode == "detect":
                result["detected"] = train.info["landmark_detection"]["detected"]  # the pooled 'all' split
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
