"""Expressions of the faces in ordinary photos: detect, landmark, align, predict.

    from manet_jax.predict import Recognizer
    recognizer = Recognizer.from_workdir('runs/demo')          # best checkpoint, 'cnn' detector
    faces = recognizer(image)                                  # (H, W, 3) uint8 RGB or a path
    faces[0]['top_class'], faces[0]['probabilities']           # 'happy', {'anger': 0.01, ...}
    Recognizer.from_workdir('runs/demo', detector='none')      # for images that are face crops

For every face (left to right): `box` (x, y, w, h), `detector` (its name: manet_jax/faces.py),
detector `score`, `landmarks` (68, 2) in the photo and their `landmark_source` ('detected',
or 'template' when the 'none' detector found no face in a crop), `aligned` (the S x S crop the model saw, aligned with the run's own settings:
config.data.face_box / align_transform / align_points), `aligned_landmarks`, `probabilities`
{class name: p} over the run's classes, `top_class`, `top_probability` and, for manet runs,
`region_weights` {region name: q} and RASnet's `masks` (8, h, w). `face_json` turns one into
JSON (without the crop). `Recognizer.predict_images` takes several photos and runs their faces
through the network together, in padded batches (see `batch_sizes`), so a new number of faces
does not recompile the forward pass. A photo without a face gives [].
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from manet_jax import faces as faces_lib
from manet_jax.data import align
from manet_jax.regions import REGION_NAMES

log = logging.getLogger(__name__)

MAX_BATCH = 32  # faces per forward call; batches are padded to a power of two up to this


def batch_sizes(num: int, max_batch: int = MAX_BATCH) -> list[int]:
    """Padded chunk sizes for `num` faces: full chunks of max_batch, then the next power of two."""
    sizes = [max_batch] * (num // max_batch)
    if rest := num % max_batch:
        sizes.append(min(max_batch, 1 << (rest - 1).bit_length()))
    return sizes


def run_class_names(run) -> tuple[str, ...]:
    """inference.class_names: the run's record (run.json); a ValueError saying how to make one when absent."""
    from manet_jax import inference

    return tuple(inference.class_names(run))


def read_photo(path) -> np.ndarray:
    """A photo file -> (H, W, 3) uint8 RGB, EXIF orientation applied, grey / RGBA / 16-bit
    converted (align.load_image); any size (a tiny picture simply holds no face). An
    unreadable file raises align.ImageDecodeError naming it."""
    return align.load_image(path, min_side=1)


# Pixels predict.py decodes a photo to at most: a bigger one (e.g. 12000 x 12000 px) is shrunk
# while it is decoded (align.decode_image; a JPEG inside the decoder), and its faces' boxes
# and landmarks are mapped back to the stored pixels. 25 Mpx keeps a 6000 x 4000 photo whole.
MAX_PHOTO_PIXELS = 25_000_000


def read_photo_within(path, max_pixels: int = MAX_PHOTO_PIXELS) -> tuple[np.ndarray, tuple[float, float]]:
    """read_photo, shrunk on decode to at most `max_pixels`: (photo, (sx, sy)), the photo's
    size over the stored picture's along x and y (1.0, 1.0 when it was not shrunk)."""
    return align.decode_image(path, min_side=1, max_pixels=max_pixels)


def to_stored_pixels(face: dict, scale: tuple[float, float]) -> dict:
    """A face found in a photo read shrunk by `scale` (read_photo_within), its box and
    landmarks in the stored picture's pixels."""
    if scale == (1.0, 1.0):
        return face
    sx, sy = scale
    x, y, w, h = face["box"]
    box = (round(x / sx), round(y / sy), round(w / sx), round(h / sy))
    return {**face, "box": box, "landmarks": np.asarray(face["landmarks"], np.float64) / (sx, sy)}


def trained_on_synthetic(run) -> bool:
    """Whether the run learnt from the built-in synthetic drawings (its run record says so:
    the synthetic data set, or a folder exported from it): its predictions on photos of real
    faces mean nothing."""
    from manet_jax import run_record

    return bool(run_record.resolve(run.workdir, run.config)["synthetic"])


SYNTHETIC_WARNING = "trained on synthetic drawings: its predictions on real photos mean nothing"


class Recognizer:
    """A trained run + a face detector: photos in, a list of face dicts per photo out.

    detector: a name from faces.DETECTORS ('cnn', the default; 'hog'; 'none' for images that
    are face crops) with `detector_options` for it (e.g. max_side=640), or any FaceDetector.
    """

    def __init__(
        self,
        run,
        detector: faces_lib.FaceDetector | str | None = None,
        flip_tta: bool = False,
        class_names=None,
        **detector_options,
    ):
        self.run = run
        if detector is None or isinstance(detector, str):
            detector = faces_lib.make_detector(detector or faces_lib.DEFAULT_DETECTOR, **detector_options)
        elif detector_options:
            raise TypeError(f"detector options {sorted(detector_options)} are for a detector named by its name")
        if not isinstance(detector, faces_lib.FaceDetector):
            raise TypeError(f"detector must have a detect(image) -> list[Face] method, got {type(detector).__name__}")
        self.detector = detector
        self.detector_name = str(getattr(detector, "name", type(detector).__name__))
        self.synthetic = trained_on_synthetic(run)
        self.flip_tta = bool(flip_tta)
        self.class_names = tuple(class_names) if class_names is not None else run_class_names(run)
        if len(self.class_names) != run.model.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class names {self.class_names} for a model with {run.model.num_classes} classes"
            )
        self.spec = align.AlignSpec.from_config(run.config.data, run.model.input_size)

    @classmethod
    def from_workdir(
        cls, workdir, step: int | str = "best", flip_tta: bool = False, detector=None, **detector_options
    ) -> Recognizer:
        from manet_jax.inference import load_run

        return cls(load_run(workdir, step), detector=detector, flip_tta=flip_tta, **detector_options)

    def __call__(self, image) -> list[dict]:
        """The faces of one photo (an array or a file path), left to right."""
        return self.predict_images([image])[0]

    def detect(self, image) -> list[dict]:
        """Detection and alignment only: box, score, landmarks, aligned crop and its landmarks."""
        image = read_photo(image) if isinstance(image, str | Path) else faces_lib.to_rgb_uint8(image)
        out = []
        for face in self.detector.detect(image):
            crop, points, _ = align.align_face(image, face.landmarks, "ibug68", self.spec)
            out.append(
                {
                    "box": tuple(int(v) for v in face.box),
                    "detector": self.detector_name,
                    "score": float(face.score),
                    "landmarks": np.asarray(face.landmarks, np.float32),
                    "landmark_source": getattr(face, "landmark_source", "detected"),
                    "aligned": crop,
                    "aligned_landmarks": points,
                }
            )
        return out

    def predict_images(self, images: Sequence) -> list[list[dict]]:
        """Faces of several photos, their crops through the network together."""
        detected = [self.detect(image) for image in images]
        flat = [face for photo in detected for face in photo]
        if flat:
            outputs = self.predict_crops(np.stack([f["aligned"] for f in flat]))
            for i, face in enumerate(flat):
                face.update(self._describe({k: v[i] for k, v in outputs.items()}))
        return detected

    def predict_crops(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Run.predict on (N, S, S, 3) aligned uint8 crops, in padded batches of batch_sizes(N)."""
        parts, start = [], 0
        for size in batch_sizes(len(crops)):
            chunk = crops[start : start + size]
            real = len(chunk)
            if real < size:
                chunk = np.concatenate([chunk, np.zeros((size - real, *chunk.shape[1:]), chunk.dtype)])
            out = self.run.predict(chunk, flip_tta=self.flip_tta)
            parts.append({k: v[:real] for k, v in out.items()})
            start += real
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _describe(self, out: dict) -> dict:
        probs = np.asarray(out["probabilities"], np.float64)
        top = int(np.argmax(probs))
        face = {
            "probabilities": {n: float(p) for n, p in zip(self.class_names, probs)},
            "top_class": self.class_names[top],
            "top_probability": float(probs[top]),
        }
        if "region_weights" in out:
            face["region_weights"] = {n: float(q) for n, q in zip(REGION_NAMES, out["region_weights"])}
            face["masks"] = np.asarray(out["masks"], np.float32)
        return face


def face_json(face: dict, digits: int = 4) -> dict:
    """One face dict as JSON-able values (the aligned crop left out; masks rounded to 3 digits)."""
    out = {}
    for key, value in face.items():
        if key in ("aligned", "aligned_landmarks"):
            continue
        if key == "landmarks":
            value = np.round(np.asarray(value, np.float64), 2).tolist()
        elif key == "masks":
            value = np.round(np.asarray(value, np.float64), 3).tolist()
        elif isinstance(value, dict):
            value = {k: round(float(v), digits) for k, v in value.items()}
        elif isinstance(value, float):
            value = round(value, digits)
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


def photo_files(paths: Sequence) -> list[Path]:
    """Files as given, folders expanded to their images (align.IMAGE_SUFFIXES, recursively,
    sorted). A path that does not exist is kept: reading it names it; so is an entry with an
    image suffix that is no regular file (a FIFO, a socket, a device): reading it refuses it
    in one line (align.load_image) instead of blocking on it."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(
                f for f in p.rglob("*") if f.suffix.lower() in align.IMAGE_SUFFIXES and f.exists() and not f.is_dir()
            )
        else:
            out.append(p)
    return out


# Decoded pixels predict.py holds at once (~150 MB as RGB): a --batch_photos group ends early
# when its photos reach this, so a photo this big is decoded, detected and drawn alone.
GROUP_PIXELS = 48_000_000


def drawing_names(files: Sequence) -> list[str]:
    """The --draw picture's file name for each photo: the photo's whole name + '.png' (x.jpg ->
    x.jpg.png, x.png -> x.png.png), so photos that differ only in their suffix never share a
    picture; a name that repeats (photos of two folders) gets .2, .3, ... before the .png,
    in input order."""
    names, taken = [], set()
    for f in files:
        name, k = f"{Path(f).name}.png", 1
        while name in taken:
            k += 1
            name = f"{Path(f).name}.{k}.png"
        taken.add(name)
        names.append(name)
    return names


def check_output_paths(files: Sequence, draw=None, output=None) -> None:
    """Refuse, before any work, outputs that would write over an input or cannot be written:
    a --draw that is a file, or that holds (at any depth) one of the input photos; an
    --output that is a folder, one of the input photos (also through a link), or whose folder
    is a file, or that is one of the --draw pictures. Paths are compared resolved (symlinks,
    '..'). Raises an OSError naming the flag and the path."""
    inputs = [Path(f) for f in files]
    real = [Path(os.path.realpath(f)) for f in inputs]
    if draw is not None:
        folder = Path(os.path.realpath(draw))
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"--draw={draw} is a file, expected a folder (one picture per photo goes in it)")
        held = [f for f, r in zip(inputs, real) if r == folder or folder in r.parents]
        if held:
            raise FileExistsError(
                f"--draw={draw} holds input photos ({held[0]}{f' and {len(held) - 1} more' if len(held) > 1 else ''}): "
                "its pictures could replace them; name another folder"
            )
    if output is not None:
        target = Path(os.path.realpath(output))
        if target.is_dir():
            raise IsADirectoryError(f"--output={output} is a folder, expected a file for the JSON lines")
        if target.parent.exists() and not target.parent.is_dir():
            raise NotADirectoryError(f"--output={output}: {target.parent} is a file, expected a folder")
        same = [f for f, r in zip(inputs, real) if r == target or (target.exists() and _same_file(r, target))]
        if same:
            raise FileExistsError(
                f"--output={output} is the input photo {same[0]}: the JSON lines would replace it; name another file"
            )
        if draw is not None and target.parent == Path(os.path.realpath(draw)) and target.name in drawing_names(inputs):
            raise FileExistsError(f"--output={output} is the --draw picture of a photo; name another file")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# ---------------------------------------------------------------------------- drawing
PANEL = 128  # px of each per-face panel in draw()
BARS = 224  # px width of the probability bar chart
MAX_PHOTO_SIDE = 1024  # the photo is shrunk to this longest side in the drawing


def drawing_size(photo_size: tuple[int, int], num_faces: int) -> tuple[int, int]:
    """(width, height) of draw()'s picture for a (W, H) photo: the photo (longest side at most
    MAX_PHOTO_SIDE) and beside it one row per face: crop, masks, bars (PANEL high)."""
    w, h = photo_size
    scale = min(1.0, MAX_PHOTO_SIDE / max(w, h))
    pw, ph = max(1, round(w * scale)), max(1, round(h * scale))
    return pw + 2 * PANEL + BARS, max(ph, max(num_faces, 1) * PANEL)


def draw(image: np.ndarray, faces: list[dict], path=None, warning: str | None = None):
    """The photo with boxes, landmarks and labels, and a row per face: the aligned crop with
    its landmarks, RASnet's masks weighted by q over the crop (manet), a bar chart of the
    probabilities; `warning` (e.g. SYNTHETIC_WARNING) in white on red in the photo's
    bottom-left corner. A PIL image of drawing_size(...); written atomically as PNG to `path`."""
    from PIL import Image, ImageDraw, ImageFont

    from manet_jax import atomic, visualize

    image = faces_lib.to_rgb_uint8(image)
    h, w = image.shape[:2]
    width, height = drawing_size((w, h), len(faces))
    pw = width - 2 * PANEL - BARS
    scale = pw / w
    photo = Image.fromarray(image).resize((pw, max(1, round(h * scale))), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (width, height), "white")
    canvas.paste(photo, (0, 0))
    pen = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    small = ImageFont.load_default(size=10)
    for i, face in enumerate(faces):
        x, y, bw, bh = (v * scale for v in face["box"])
        pen.rectangle([x, y, x + bw, y + bh], outline=(255, 40, 40), width=2)
        for px, py in np.asarray(face["landmarks"]) * scale:
            pen.ellipse([px - 1.5, py - 1.5, px + 1.5, py + 1.5], fill=(0, 255, 0))
        label = f"{i}: {face['top_class']} {face['top_probability']:.2f}" if "top_class" in face else f"{i}"
        left, top_, right, bottom = pen.textbbox((x, max(0, y - 15)), label, font=font)
        pen.rectangle([left - 2, top_ - 1, right + 2, bottom + 1], fill=(255, 40, 40))
        pen.text((x, max(0, y - 15)), label, fill="white", font=font)
        top = i * PANEL
        crop = Image.fromarray(face["aligned"]).resize((PANEL, PANEL), Image.Resampling.BILINEAR)
        canvas.paste(crop, (pw, top))
        k = PANEL / face["aligned"].shape[0]
        for px, py in np.asarray(face["aligned_landmarks"]) * k:
            pen.point((pw + px, top + py), fill=(0, 255, 0))
        if "masks" in face:
            q = np.asarray(list(face["region_weights"].values()), np.float32)
            heat = np.tensordot(q, face["masks"], axes=1)
            heat = heat / max(float(heat.max()), 1e-6)
            heat = visualize.resize_map(heat, face["aligned"].shape[:2], "nearest")
            over = visualize.overlay(face["aligned"], heat, alpha=0.5)
            canvas.paste(Image.fromarray(over).resize((PANEL, PANEL), Image.Resampling.BILINEAR), (pw + PANEL, top))
            pen.text((pw + PANEL + 2, top + 2), "masks x q", fill="white", font=small)
        if "probabilities" in face:
            _bars(pen, face["probabilities"], pw + 2 * PANEL, top, small)
    if warning:
        _corner_note(pen, warning, pw, photo.height, font)
    if path is not None:
        with atomic.replacing(path) as f:
            canvas.save(f, format="PNG")
    return canvas


def _corner_note(pen, text: str, width: int, height: int, font) -> None:
    """`text` in white on red at the bottom-left of a width x height photo, wrapped to fit."""
    words, lines = text.split(), [""]
    for word in words:
        trial = f"{lines[-1]} {word}".strip()
        if lines[-1] and pen.textlength(trial, font=font) > width - 8:
            lines.append(word)
        else:
            lines[-1] = trial
    line_h = font.size + 3
    top = max(0, height - len(lines) * line_h - 4)
    right = min(width, 8 + max(pen.textlength(line, font=font) for line in lines))
    pen.rectangle([0, top, right, height], fill=(200, 0, 0))
    for i, line in enumerate(lines):
        pen.text((4, top + 2 + i * line_h), line, fill="white", font=font)


def _bars(pen, probabilities: dict, left: int, top: int, font) -> None:
    names = list(probabilities)
    row = (PANEL - 8) / max(len(names), 1)
    label_w, bar_w = 72, BARS - 72 - 40
    best = max(probabilities, key=probabilities.get)
    for j, name in enumerate(names):
        y = top + 4 + j * row
        p = float(probabilities[name])
        pen.text((left + 4, y), name[:11], fill="black", font=font)
        colour = (220, 60, 30) if name == best else (70, 110, 200)
        pen.rectangle([left + label_w, y + 2, left + label_w + max(1, p * bar_w), y + row - 2], fill=colour)
        pen.text((left + label_w + bar_w + 4, y), f"{p:.2f}", fill="black", font=font)
