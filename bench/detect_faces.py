"""Recall, false positives and speed of each face detector on real photos with hand-labelled faces.

    python bench/detect_faces.py                                   # hog, cnn, none; ~70 photos
    python bench/detect_faces.py --detectors=cnn --max_side=640,800,1024
    python bench/detect_faces.py --detectors=cnn --cnn_hog_pass=1,0       # with / without its HOG pass
    python bench/detect_faces.py --detectors=hog --hog_upsample=0,1 --verbose
    python bench/detect_faces.py --copies=2 --seed=1 --json        # a larger set; JSON lines
    python bench/detect_faces.py --save=/tmp/photo_set             # also write the set's images, boxes drawn
    python bench/detect_faces.py --smallest --max_side=480,640,800,1024   # the smallest face each one finds

The set (manet_jax/data/photo_set.py) is built from photos that installed packages ship
(scikit-image's astronaut and cameraman, matplotlib's Grace Hopper, face-free photos as
negatives) and seeded transforms of them: rotation up to 30 degrees, close-ups, a hand over
the mouth or eyes, blur, low light, small faces in a large frame, 1350 x 550 canvases of 2-3
faces, mirror images. Nothing is downloaded.

A detection counts when its IoU with a true box is >= --min_iou (greedy one-to-one matching;
default photo_set.MIN_IOU, chosen from the detectors' box conventions: see photo_set's
docstring). Columns: faces in scope, found, recall, false positives per image, wall-clock ms
per photo (median, mean, and the median on the 1350 x 550 canvases alone), the same medians
in CPU time of the detecting thread (dlib detects on one thread, so these are what an idle
core takes, even on a busy machine), then recall per tag. 'none' (the whole image is the face) is meant for pre-cropped face images: it is scored
on the close-up photos only, where that is what a user would use it for.

Each detector is called once before timing (loading and first-call costs are left out).
Times are wall-clock on whatever else the machine is running: compare rows of one run.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from manet_jax import faces  # noqa: E402
from manet_jax.data import photo_set  # noqa: E402

TAG_COLUMNS = ("rotated", "closeup", "occluded", "blur", "dark", "small", "composite", "profile")
NONE_SCOPE = "closeup"  # the tag of the items the 'none' detector is scored on


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def configurations(args) -> list[tuple[str, dict]]:
    """(detector name, make_detector options) for each row of the table."""
    rows = []
    for name in [v.strip() for v in args.detectors.split(",") if v.strip()]:
        if name not in faces.DETECTORS:
            raise SystemExit(f"unknown detector {name!r}: choose from {', '.join(faces.DETECTORS)}")
        if name == "hog":
            rows += [("hog", {"upsample": up}) if up else ("hog", {}) for up in args.hog_upsample]
        elif name == "cnn":
            for side in args.max_side or [None]:
                for hog_pass in args.cnn_hog_pass or [None]:
                    options = {"max_side": side, "hog_pass": None if hog_pass is None else bool(hog_pass)}
                    rows.append(("cnn", {k: v for k, v in options.items() if v is not None}))
        else:
            rows.append((name, {}))
    return rows


def label(name: str, options: dict) -> str:
    return name + "".join(f" {k}={v}" for k, v in options.items())


def evaluate(detector, items, min_iou: float, verbose: bool) -> dict:
    times, canvas_times, cpu_times, canvas_cpu, results = [], [], [], [], []
    for item in items:
        start, cpu = time.perf_counter(), time.thread_time()
        found = detector.detect(item.image)
        seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
        times.append(seconds)
        cpu_times.append(cpu)
        if item.image.shape[:2] == photo_set.COMPOSITE_SIZE[::-1]:
            canvas_times.append(seconds)
            canvas_cpu.append(cpu)
        outcome = photo_set.match([f.box for f in found], item.boxes, min_iou)
        results.append((item, outcome))
        if verbose:
            ious = ", ".join(f"{v:.2f}" for _, _, v in outcome.true_positives)
            print(
                f"  {item.name:44s} {len(outcome.true_positives)}/{len(item.boxes)} found"
                f"{' (IoU ' + ious + ')' if ious else ''}"
                f"{', ' + str(len(outcome.false_positives)) + ' false' if outcome.false_positives else ''}"
                f"  {1000 * seconds:.0f} ms",
                flush=True,
            )
    per_tag = {}
    for tag in TAG_COLUMNS:
        hit = total = 0
        for item, outcome in results:
            found_faces = {j for _, j, _ in outcome.true_positives}
            for j, tags in enumerate(item.face_tags):
                if tag in tags:
                    total += 1
                    hit += j in found_faces
        if total:
            per_tag[tag] = {"found": hit, "faces": total, "recall": round(100 * hit / total, 1)}
    num_faces = photo_set.face_count(items)
    num_found = sum(len(o.true_positives) for _, o in results)
    false = sum(len(o.false_positives) for _, o in results)
    negatives = [o for item, o in results if not item.boxes]
    return {
        "images": len(items),
        "faces": num_faces,
        "found": num_found,
        "recall": round(100 * num_found / max(num_faces, 1), 1),
        "false_positives": false,
        "fp_per_image": round(false / max(len(items), 1), 3),
        "false_on_negatives": sum(len(o.false_positives) for o in negatives),
        "negatives": len(negatives),
        "ms_median": round(1000 * statistics.median(times), 1),
        "ms_mean": round(1000 * statistics.fmean(times), 1),
        "ms_1350x550": round(1000 * statistics.median(canvas_times), 1) if canvas_times else None,
        # CPU time of the calling thread: dlib detects on that one thread, so this is the wall
        # time on an idle core, whatever else the machine runs
        "cpu_ms_median": round(1000 * statistics.median(cpu_times), 1),
        "cpu_ms_1350x550": round(1000 * statistics.median(canvas_cpu), 1) if canvas_cpu else None,
        "per_tag": per_tag,
        "missed": [item.name for item, o in results if o.missed],
    }


def print_table(rows: list[dict]) -> None:
    head = f"{'detector':24s} {'faces':>5s} {'found':>5s} {'recall':>7s} {'fp/img':>7s} {'ms med':>7s} {'ms mean':>7s} {'ms@1350x550':>11s}"
    head += f" {'cpu ms med':>10s} {'cpu ms@1350x550':>15s}"
    head += "".join(f" {tag[:9]:>9s}" for tag in TAG_COLUMNS)
    print(head)
    for row in rows:
        canvas = f"{row['ms_1350x550']:.0f}" if row["ms_1350x550"] is not None else "-"
        line = (
            f"{row['label']:24s} {row['faces']:5d} {row['found']:5d} {row['recall']:6.1f}% {row['fp_per_image']:7.3f}"
            f" {row['ms_median']:7.0f} {row['ms_mean']:7.0f} {canvas:>11s}"
        )
        cpu_canvas = f"{row['cpu_ms_1350x550']:.0f}" if row["cpu_ms_1350x550"] is not None else "-"
        line += f" {row['cpu_ms_median']:10.0f} {cpu_canvas:>15s}"
        for tag in TAG_COLUMNS:
            cell = row["per_tag"].get(tag)
            line += f" {cell['recall']:8.1f}%" if cell else f" {'-':>9s}"
        print(line)


SWEEP_SIDES = (32, 40, 48, 56, 64, 72, 80, 96, 112, 128)  # px: face widths of the --smallest sweep


def smallest_faces(detector, sides=SWEEP_SIDES, min_iou: float = photo_set.MIN_IOU) -> dict:
    """Which face widths a detector finds: the astronaut's face (photo_set's hand box) scaled
    to each width in `sides` and pasted into a 1350 x 550 scene (no other face in it); the
    CNN's reach depends on --max_side, which scales the photo before it looks."""
    from PIL import Image

    (astronaut,) = [item for item in photo_set.base_photos() if item.name == "astronaut"]
    (x, y, w, h) = astronaut.boxes[0]
    left, top = max(0, x - 56), max(0, y - 56)
    crop = astronaut.image[top : top + 200, left : left + 200]
    scene = photo_set.background(photo_set.COMPOSITE_SIZE, 0)[1]
    found = {}
    for side in sides:
        scale = side / w
        size = round(200 * scale)
        patch = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS))
        canvas = scene.copy()
        canvas[200 : 200 + size, 600 : 600 + size] = patch
        true = (600 + (x - left) * scale, 200 + (y - top) * scale, w * scale, h * scale)
        boxes = [face.box for face in detector.detect(canvas)]
        found[side] = len(photo_set.match(boxes, [true], min_iou).true_positives) == 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", default=",".join(faces.DETECTORS), help="comma-separated: hog, cnn, none")
    parser.add_argument("--max_side", type=int_list, default=[], help="cnn rows, e.g. 640,800,1024 (default: its own)")
    parser.add_argument("--cnn_hog_pass", type=int_list, default=[], help="cnn rows with (1)/without (0) its HOG pass")
    parser.add_argument("--hog_upsample", type=int_list, default=[0], help="hog rows, e.g. 0,1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--copies", type=int, default=1, help="transformed views per kind, times photo_set.KIND_COUNTS")
    parser.add_argument("--min_iou", type=float, default=photo_set.MIN_IOU)
    parser.add_argument("--json", action="store_true", help="one JSON line per detector instead of the table")
    parser.add_argument("--verbose", action="store_true", help="one line per photo: faces found, IoUs, false, ms")
    parser.add_argument("--save", default=None, help="a folder to write the set's images into (true boxes drawn)")
    parser.add_argument("--smallest", action="store_true", help="instead: which face widths (px) each detector finds")
    args = parser.parse_args()
    if args.smallest:
        print("face width (px) in a 1350 x 550 photo: " + " ".join(f"{s:>4}" for s in SWEEP_SIDES))
        for name, options in configurations(args):
            if name != "none":
                found = smallest_faces(faces.make_detector(name, **options))
                print(
                    f"{label(name, options):38s} " + " ".join(f"{'yes' if found[s] else '-':>4}" for s in SWEEP_SIDES)
                )
        return

    start = time.perf_counter()
    items = photo_set.labelled_set(seed=args.seed, copies=args.copies)
    build = time.perf_counter() - start
    if args.save:
        photo_set.save(items, args.save)
    negatives = sum(not item.boxes for item in items)
    summary = (
        f"photo set: {len(items)} photos, {photo_set.face_count(items)} faces, {negatives} without a face"
        f" (seed {args.seed}, built in {build:.1f} s); a face is found at IoU >= {args.min_iou}"
    )
    if not args.json:
        print(summary, flush=True)

    rows = []
    for name, options in configurations(args):
        detector = faces.make_detector(name, **options)
        scope = [item for item in items if NONE_SCOPE in item.tags] if name == "none" else items
        detector.detect(scope[0].image)  # warm-up, not timed
        if args.verbose:
            print(f"{label(name, options)}:", flush=True)
        row = {"label": label(name, options), "detector": name, "options": options, "describe": detector.describe()}
        row |= evaluate(detector, scope, args.min_iou, args.verbose)
        row["scope"] = f"'{NONE_SCOPE}' photos only" if name == "none" else "all photos"
        row |= {"seed": args.seed, "copies": args.copies, "min_iou": args.min_iou}
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    if not args.json:
        print_table(rows)
        if any(row["detector"] == "none" for row in rows):
            print(
                f"none: scored on the '{NONE_SCOPE}' photos only (it is for pre-cropped faces; elsewhere its box is the whole photo)"
            )
        for row in rows:
            if row["missed"]:
                print(f"{row['label']} missed faces in: {', '.join(row['missed'])}")


if __name__ == "__main__":
    main()
