"""The public generators: one face (pose, background, the drawn face, lighting), a class-balanced
split of them, and a contact sheet to look at one."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from manet_jax.data.synthetic import draw
from manet_jax.data.synthetic.params import (
    DEMO_INTENSITY,
    NUM_CLASSES,
    NUM_LANDMARKS,
    Identity,
    identity_for,
    sample_expression,
)

_NOISE_BANKS = {}


def _noise_bank(size):
    """Fixed gaussian noise, cropped at a random offset per image: drawing S*S*3 fresh
    normals costs more than the rest of the lighting, and the crops are deterministic."""
    bank = _NOISE_BANKS.get(size)
    if bank is None:
        bank = np.random.default_rng(20200101 + size).standard_normal((size + 160, size + 160, 3), dtype=np.float32)
        _NOISE_BANKS[size] = bank
    return bank


def generate_face(
    rng: np.random.Generator,
    label: int,
    identity: Identity,
    image_size: int = 112,
    *,
    return_parts: bool = False,
    nuisance: bool = True,
    intensity: tuple[float, float] = DEMO_INTENSITY,
) -> dict:
    """One face of class `label` for a person `identity` (see `sample_identity`).

    Returns `image` (S, S, 3) uint8, `landmarks68` (68, 2) float32 in the continuous image
    frame, `expression` (the drawn `Expression`) and, if asked, `parts` (S, S) uint8.
    `nuisance=False` gives the default pose, no lighting changes and a plain background
    (for tests and pictures); it consumes the generator differently. `intensity` is the
    expression-intensity range (see `sample_expression`).
    """
    size = int(image_size)
    if size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    e = sample_expression(rng, label, intensity)
    centre = np.array([0.5, 0.5 * (identity.eye_y + identity.mouth_y)])
    if nuisance:
        angle = math.radians(rng.uniform(-15.0, 15.0))
        scale = rng.uniform(0.85, 1.1)
        shift = rng.uniform(-0.08, 0.08, 2)
    else:
        angle, scale, shift = 0.0, 1.0, np.zeros(2)
    c, s = math.cos(angle), math.sin(angle)
    matrix = scale * np.array([[c, -s], [s, c]])
    offset = centre + shift - matrix @ centre
    ss = draw.SUPERSAMPLE
    img = Image.new("RGB", (size * ss, size * ss), (128, 128, 128))
    head_ax = np.array([identity.face_a + 0.01, 0.5 * (identity.chin_y - identity.face_top)])
    head_ax = head_ax * scale * size
    head_c = (matrix @ np.array([0.5, 0.5 * (identity.chin_y + identity.face_top)]) + offset) * size
    if nuisance:
        draw.draw_background(img, rng, size, ss, head_c, head_ax, angle)
    else:
        ImageDraw.Draw(img).rectangle([0, 0, size * ss, size * ss], fill=(150, 160, 170))
    parts = Image.new("L", (size, size), 0) if return_parts else None
    cloth = draw.rgb(rng.uniform(0, 255, 3))
    cv = draw.Canvas(size, ss, matrix, offset, scale)
    lm = draw.draw_face(cv, identity, e, cloth)
    cv.render(img, parts)
    landmarks = (cv.to_image(lm)).astype(np.float32)
    small = img.reduce(ss) if ss > 1 else img
    if nuisance:
        # Contrast, brightness and colour cast as one per-channel lookup table (cheap in
        # PIL), then the illumination gradient and noise in float.
        contrast = rng.uniform(0.7, 1.2)
        bright = rng.uniform(-35.0, 30.0)
        cast = rng.uniform(0.92, 1.08, 3)
        grad = rng.uniform(0.0, 0.45)
        phi = rng.uniform(0, 2 * np.pi)
        sigma = rng.uniform(1.5, 6.0)
        oy, ox = rng.integers(0, 161, 2)
        v = (np.arange(256.0) - 128.0) * contrast + 128.0 + bright
        lut = np.clip(v[None, :] * cast[:, None] + 0.5, 0, 255).astype(np.uint8).ravel().tolist()
        small = small.point(lut)
        arr = np.asarray(small, dtype=np.float32)
        ramp = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        gain = 1.0 + grad * (math.cos(phi) * ramp[None, :] + math.sin(phi) * ramp[:, None])
        arr *= gain[:, :, None]
        arr += _noise_bank(size)[oy : oy + size, ox : ox + size] * np.float32(sigma)
    else:
        arr = np.asarray(small, dtype=np.float32)
    arr += 0.5
    image = np.clip(arr, 0, 255, out=arr).astype(np.uint8)
    out = dict(image=image, landmarks68=landmarks, expression=e)
    if return_parts:
        out["parts"] = np.asarray(parts, dtype=np.uint8)
    return out


def generate_split(
    num_examples: int,
    seed: int,
    image_size: int = 112,
    num_subjects: int = 40,
    subject_id_offset: int = 0,
    return_parts: bool = False,
) -> dict[str, np.ndarray]:
    """A class-balanced set of synthetic faces; the same arguments give identical arrays.

    Labels are i % 7 shuffled; examples are spread evenly (and shuffled) over subjects
    subject_id_offset .. subject_id_offset + num_subjects - 1, each with a fixed identity
    `identity_for(seed, subject_id)`. Example i draws from its own child seed (seed, 2, i), so
    any example can be regenerated alone with `generate_face`.
    """
    n = int(num_examples)
    if n < 0:
        raise ValueError(f"num_examples must be >= 0, got {num_examples}")
    if int(num_subjects) < 1:
        raise ValueError(f"num_subjects must be >= 1, got {num_subjects}")
    if int(seed) < 0 or int(subject_id_offset) < 0:
        raise ValueError(f"seed and subject_id_offset must be >= 0, got {seed} and {subject_id_offset}")
    size = int(image_size)
    if size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    labels = order.permutation(np.arange(n) % NUM_CLASSES).astype(np.int32)
    subjects = order.permutation(np.arange(n) % int(num_subjects)) + int(subject_id_offset)
    subjects = subjects.astype(np.int32)
    identities = {}
    images = np.empty((n, size, size, 3), np.uint8)
    landmarks = np.empty((n, NUM_LANDMARKS, 2), np.float32)
    parts = np.empty((n, size, size), np.uint8) if return_parts else None
    for i in range(n):
        sid = int(subjects[i])
        if sid not in identities:
            identities[sid] = identity_for(seed, sid)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2, i]))
        face = generate_face(rng, int(labels[i]), identities[sid], size, return_parts=return_parts)
        images[i] = face["image"]
        landmarks[i] = face["landmarks68"]
        if return_parts:
            parts[i] = face["parts"]
    out = dict(image=images, landmarks68=landmarks, label=labels, subject_id=subjects)
    if return_parts:
        out["parts"] = parts
    return out


def contact_sheet(images: np.ndarray, labels: np.ndarray, per_class: int = 4) -> np.ndarray:
    """A (7*S, per_class*S, 3) grid, one row per class, for a quick look at a split."""
    images = np.asarray(images)
    size = images.shape[1]
    sheet = np.zeros((NUM_CLASSES * size, per_class * size, 3), np.uint8)
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(np.asarray(labels) == c)[:per_class]
        for j, i in enumerate(idx):
            sheet[c * size : (c + 1) * size, j * size : (j + 1) * size] = images[i]
    return sheet
