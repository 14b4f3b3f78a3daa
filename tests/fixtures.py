"""Small fake CK+, RAF-DB and image-folder trees in the real on-disk layouts.

Faces are the built-in synthetic ones (nothing licence-restricted), pasted into larger
frames at a known offset and scale, so the true landmarks of every file are known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from manet_jax.data import align, synthetic

FACE = 64  # drawn face size; frames are bigger
# CK+ subjects with irregular numbers (ascending order is what the fold protocol uses).
CK_SUBJECTS = ("S005", "S010", "S011", "S014", "S022", "S026", "S032", "S037", "S042", "S046", "S052", "S055")
# Indices of the 68 points that the fake 37-point RAF-DB annotation keeps, in its order; the
# paper's 8 points sit at RAF37_TO_8 in it.
RAF37_FROM_68 = tuple(range(17, 48)) + (48, 51, 54, 57, 62, 66)
RAF37_TO_8 = tuple(RAF37_FROM_68.index(i) for i in (30, 36, 39, 42, 45, 48, 54, 57))


def placed_face(rng, label: int, subject: int, frame_size=(150, 120), scale=1.5, offset=(30.0, 10.0), seed=7):
    """(frame uint8 RGB (H, W, 3), 68 landmarks in the frame) of one synthetic face."""
    face = synthetic.generate_face(rng, label, synthetic.identity_for(seed, subject), FACE)
    side = int(round(FACE * scale))
    big = Image.fromarray(face["image"]).resize((side, side), Image.Resampling.BILINEAR)
    w, h = frame_size
    frame = Image.new("RGB", (w, h), (90, 90, 90))
    frame.paste(big, (int(offset[0]), int(offset[1])))
    lm = face["landmarks68"] * (side / FACE) + np.asarray([int(offset[0]), int(offset[1])], np.float32)
    return np.asarray(frame), lm.astype(np.float32)


def write_landmarks(path: Path, points) -> None:
    """CK+'s text format: one '   x   y' line per point in scientific notation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"   {x:.7e}   {y:.7e}\n" for x, y in points))


def make_ckplus(root, subjects=CK_SUBJECTS, seed=0) -> dict:
    """A CK+ tree; returns what a correct reader must find (per selected frame)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    expected = []  # (relative image path, label 0..6, subject number, landmarks)
    code = 0
    for s_index, subject in enumerate(subjects):
        for seq in range(1, 4):
            sequence = f"{seq:03d}"
            labelled = seq < 3 or s_index % 3 == 0  # some subjects have a third, labelled sequence
            num_frames = 4 + (s_index + seq) % 3
            label = code % 7
            code += int(labelled)
            for frame in range(1, num_frames + 1):
                stem = f"{subject}_{sequence}_{frame:08d}"
                img, lm = placed_face(rng, label, s_index, offset=(20 + s_index, 8 + seq))
                folder = root / "cohn-kanade-images" / subject / sequence
                folder.mkdir(parents=True, exist_ok=True)
                if s_index % 4 == 1:  # most CK+ frames are grey; some subjects are colour
                    Image.fromarray(img).save(folder / f"{stem}.png")
                else:
                    Image.fromarray(img).convert("L").save(folder / f"{stem}.png")
                write_landmarks(root / "Landmarks" / subject / sequence / f"{stem}_landmarks.txt", lm)
                if labelled and frame > num_frames - 3:
                    expected.append(
                        (f"cohn-kanade-images/{subject}/{sequence}/{stem}.png", label, int(subject[1:]), lm)
                    )
            if labelled:
                emo = root / "Emotion" / subject / sequence / f"{subject}_{sequence}_{num_frames:08d}_emotion.txt"
                emo.parent.mkdir(parents=True, exist_ok=True)
                emo.write_text(f"   {label + 1:.7e}\n")
            else:  # as in the archive: an unlabelled sequence may still have an (empty) Emotion folder
                (root / "Emotion" / subject / sequence).mkdir(parents=True, exist_ok=True)
    # Stray entries the real archives carry.
    (root / "cohn-kanade-images" / subjects[0] / "001" / ".DS_Store").write_bytes(b"\0\1")
    (root / "Emotion" / ".DS_Store").write_bytes(b"\0")
    (root / "Landmarks" / subjects[0] / "README").write_text("not a landmark file")
    return {"records": expected}


def make_rafdb(root, num_train=14, num_test=7, seed=1) -> dict:
    """A RAF-DB basic/ tree (labels file, original + aligned images, manual + auto landmarks)."""
    base = Path(root) / "basic"
    rng = np.random.default_rng(seed)
    lines, expected = [], []
    for split, n in (("train", num_train), ("test", num_test)):
        for i in range(1, n + 1):
            stem = f"{split}_{i:05d}" if split == "train" else f"{split}_{i:04d}"
            label = (i + (split == "test")) % 7  # 0..6 in RAF order
            w, h = 120 + 7 * (i % 4), 110 + 5 * (i % 3)
            img, lm = placed_face(
                rng,
                i % 7,
                i + (100 if split == "test" else 0),
                frame_size=(w, h),
                scale=1.3 + 0.05 * (i % 3),
                offset=(10 + i % 5, 6 + i % 4),
            )
            for sub in ("Image/original", "Image/aligned", "Annotation/manual", "Annotation/auto"):
                (base / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(base / "Image" / "original" / f"{stem}.jpg", quality=95)
            crop = align.center_square(img, 100)
            Image.fromarray(crop).save(base / "Image" / "aligned" / f"{stem}_aligned.jpg", quality=95)
            five = align.ibug68_to_five(lm)
            (base / "Annotation" / "manual" / f"{stem}_manu_attri.txt").write_text(
                "".join(f"{x:.2f}\t{y:.2f}\n" for x, y in five) + "0\n1\n2\n"
            )
            (base / "Annotation" / "auto" / f"{stem}_auto_ldmk.txt").write_text(
                "".join(f"{x:.3f}\t{y:.3f}\n" for x, y in lm[list(RAF37_FROM_68)])
            )
            lines.append(f"{stem}.jpg {label + 1}")
            expected.append((stem, split, label, lm))
    (base / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (base / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return {"records": expected, "root": base}


def make_image_folder(
    root, class_names=synthetic.CLASS_NAMES, subjects=12, per_subject=3, seed=2, splits=False
) -> dict:
    """root/<class>/S0xx_00y_000000zz.png of mixed sizes, grey and colour (or train/test/...)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    expected = []
    for s in range(subjects):
        subject = f"S{3 * s + 4:03d}"
        part = ("test" if s % 4 == 0 else "train") if splits else ""
        for k in range(per_subject):
            label = (s + 2 * k) % len(class_names)
            img, _ = placed_face(rng, label % 7, s, frame_size=(80 + 9 * k, 80 + 9 * k), scale=1.2, offset=(2, 2))
            folder = root / part / class_names[label] if part else root / class_names[label]
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{subject}_{k + 1:03d}_{k + 5:08d}.png"
            pil = Image.fromarray(img)
            (pil.convert("L") if k % 2 else pil).save(folder / name)
            expected.append((part, class_names[label], name, label, 3 * s + 4))
    # Stray files are ignored.
    (root / (("train/" if splits else "") + class_names[0]) / ".DS_Store").write_bytes(b"\0")
    return {"records": expected}
