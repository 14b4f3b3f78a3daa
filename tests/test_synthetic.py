"""Tests of the synthetic FER data set: API contract, determinism, geometry and class cues.

Landmark checks use the part map drawn from the same polygons as the image, so they test that
the landmarks lie on what is drawn (not merely that arrays have the right shape).
"""

import hashlib

import numpy as np
import pytest
from PIL import Image

from manet_jax.data import synthetic as sy

S = 112
ANGER, CONTEMPT, DISGUST, FEAR, HAPPY, SADNESS, SURPRISE = range(7)


@pytest.fixture(scope="module")
def split():
    """280 faces (40 per class) with part maps; shared by the geometry and cue tests."""
    return sy.generate_split(280, seed=7, image_size=S, num_subjects=12, return_parts=True)


def face_frame(lm):
    """Landmarks in a pose-free frame: origin between the outer eye corners, x along the eye
    line, unit = outer inter-ocular distance (undoes rotation, scale and shift)."""
    left, right = lm[:, 36], lm[:, 45]
    centre = 0.5 * (left + right)
    d = right - left
    iod = np.linalg.norm(d, axis=1)
    c, s = d[:, 0] / iod, d[:, 1] / iod
    rel = lm - centre[:, None]
    x = rel[..., 0] * c[:, None] + rel[..., 1] * s[:, None]
    y = -rel[..., 0] * s[:, None] + rel[..., 1] * c[:, None]
    return np.stack([x, y], -1) / iod[:, None, None]


def class_mean(values, labels):
    return np.array([values[labels == k].mean() for k in range(7)])


def near_part(parts, lm, part, tol=1):
    """Whether some pixel within `tol` pixels (a (2tol+1)^2 window) of each landmark is `part`."""
    n, size = parts.shape[:2]
    out = np.zeros(lm.shape[:2], bool)
    for i in range(n):
        for j, (x, y) in enumerate(lm[i]):
            r, c = int(np.floor(y)), int(np.floor(x))
            win = parts[i, max(r - tol, 0) : r + tol + 1, max(c - tol, 0) : c + tol + 1]
            out[i, j] = (win == part).any()
    return out


def test_shapes_dtypes_and_ranges():
    d = sy.generate_split(15, seed=1, image_size=S, num_subjects=4, subject_id_offset=10, return_parts=True)
    assert set(d) == {"image", "landmarks68", "label", "subject_id", "parts"}
    assert d["image"].shape == (15, S, S, 3) and d["image"].dtype == np.uint8
    assert d["landmarks68"].shape == (15, 68, 2) and d["landmarks68"].dtype == np.float32
    assert d["label"].shape == (15,) and d["label"].dtype == np.int32
    assert d["subject_id"].shape == (15,) and d["subject_id"].dtype == np.int32
    assert d["parts"].shape == (15, S, S) and d["parts"].dtype == np.uint8
    assert set(np.unique(d["label"])) <= set(range(7))
    assert set(np.unique(d["subject_id"])) == {10, 11, 12, 13}
    assert d["parts"].max() <= sy.PART_HAIR
    # every face shows skin, brows, eyes, nose and mouth
    for p in (sy.PART_SKIN, sy.PART_BROW, sy.PART_EYE, sy.PART_NOSE, sy.PART_MOUTH):
        assert ((d["parts"] == p).sum(axis=(1, 2)) > 0).all(), sy.PART_NAMES[p]
    # images are not flat: background clutter and lighting give real variation
    assert d["image"].reshape(15, -1).std(axis=1).min() > 10
    assert "parts" not in sy.generate_split(2, seed=1, image_size=S)
    assert len(sy.CLASS_NAMES) == 7 and sy.CLASS_NAMES[1] == "contempt"


def test_deterministic_and_seed_dependent():
    a = sy.generate_split(10, seed=3, image_size=S, num_subjects=3, return_parts=True)
    b = sy.generate_split(10, seed=3, image_size=S, num_subjects=3, return_parts=True)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = sy.generate_split(10, seed=4, image_size=S, num_subjects=3)
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["landmarks68"], c["landmarks68"])
    # asking for the part map draws nothing else differently
    d = sy.generate_split(10, seed=3, image_size=S, num_subjects=3)
    np.testing.assert_array_equal(a["image"], d["image"])
    np.testing.assert_array_equal(a["landmarks68"], d["landmarks68"])
    # example i is generate_face with child seed (seed, 2, i) and its subject's identity
    i = 6
    rng = np.random.default_rng(np.random.SeedSequence([3, 2, i]))
    f = sy.generate_face(rng, int(a["label"][i]), sy.identity_for(3, int(a["subject_id"][i])), S)
    np.testing.assert_array_equal(f["image"], a["image"][i])
    np.testing.assert_array_equal(f["landmarks68"], a["landmarks68"][i])


def test_geometry_scales_with_image_size():
    """The same split at 224 is the same faces: landmarks exactly double."""
    a = sy.generate_split(7, seed=5, image_size=112)
    b = sy.generate_split(7, seed=5, image_size=224, return_parts=True)
    assert b["image"].shape == (7, 224, 224, 3)
    np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_allclose(b["landmarks68"], 2 * a["landmarks68"], atol=1e-3)
    on = near_part(b["parts"], b["landmarks68"][:, [48, 54, 57]], sy.PART_MOUTH)
    assert on.all()


def test_class_balance_and_subjects():
    d = sy.generate_split(70, seed=2, image_size=48, num_subjects=7, subject_id_offset=100)
    np.testing.assert_array_equal(np.bincount(d["label"], minlength=7), [10] * 7)
    ids, counts = np.unique(d["subject_id"], return_counts=True)
    np.testing.assert_array_equal(ids, np.arange(100, 107))
    assert counts.min() == counts.max() == 10
    assert len(set(d["label"][d["subject_id"] == 100])) > 1  # subjects show several classes
    odd = sy.generate_split(23, seed=2, image_size=48)
    counts = np.bincount(odd["label"], minlength=7)
    assert counts.max() - counts.min() <= 1
    assert not np.array_equal(odd["label"], np.arange(23) % 7)  # shuffled


def test_train_and_test_subjects_are_disjoint():
    tr = sy.generate_split(30, seed=11, image_size=48, num_subjects=10)
    te = sy.generate_split(30, seed=12, image_size=48, num_subjects=5, subject_id_offset=10)
    assert set(tr["subject_id"]).isdisjoint(te["subject_id"])
    assert set(te["subject_id"]) == set(range(10, 15))


def test_identity_fixed_per_subject():
    """Identity comes from (seed, subject id); at the default pose without lighting the
    drawn skin is exactly the identity's skin colour, whatever the expression."""
    assert sy.identity_for(3, 5)["face_a"] == sy.identity_for(3, 5)["face_a"]
    assert sy.identity_for(3, 5)["face_a"] != sy.identity_for(3, 6)["face_a"]
    idn = sy.identity_for(3, 5)
    for label in range(7):
        f = sy.generate_face(np.random.default_rng(label), label, idn, S, return_parts=True, nuisance=False)
        skin = np.median(f["image"][f["parts"] == sy.PART_SKIN], axis=0)
        np.testing.assert_allclose(skin, np.clip(np.round(idn["skin"]), 0, 255), atol=1)
        hair = f["image"][f["parts"] == sy.PART_HAIR]
        if len(hair) > 50:
            np.testing.assert_allclose(np.median(hair, axis=0), np.round(idn["hair"]), atol=1)


def test_skin_tone_consistent_within_subject(split):
    """Under full lighting nuisances, a subject's skin still varies less than across people."""
    img, parts, sid = split["image"], split["parts"], split["subject_id"]
    med = np.array([np.median(img[i][parts[i] == sy.PART_SKIN].astype(float), axis=0) for i in range(len(img))])
    chroma = med / med.sum(1, keepdims=True)
    feat = np.concatenate([chroma[:, :2] * 10, med.mean(1, keepdims=True) / 50], 1)
    means = np.array([feat[sid == s].mean(0) for s in np.unique(sid)])
    within = np.mean([np.linalg.norm(feat[sid == s] - m, axis=1).mean() for s, m in zip(np.unique(sid), means)])
    between = np.linalg.norm(means[:, None] - means[None], axis=-1)
    between = between[np.triu_indices(len(means), 1)].mean()
    assert within < 0.6 * between, (within, between)


def test_landmarks_lie_on_drawn_features(split):
    lm, parts = split["landmarks68"], split["parts"]
    required = {
        sy.PART_MOUTH: [48, 54, 57, 51] + list(range(60, 68)),
        sy.PART_EYE: list(range(36, 48)),
        sy.PART_NOSE: [30, 31, 32, 33, 34, 35],
        sy.PART_BROW: list(range(17, 27)),
    }
    for part, idx in required.items():
        on = near_part(parts, lm[:, idx], part)
        bad = [(idx[j], float(on[:, j].mean())) for j in range(len(idx)) if not on[:, j].all()]
        assert not bad, (sy.PART_NAMES[part], bad)
    # the jaw points are on the face outline: skin within a pixel, not deep inside it
    on_skin = near_part(parts, lm[:, 0:17], sy.PART_SKIN, tol=1)
    assert on_skin.mean() > 0.97
    assert (lm >= -0.5 * S).all() and (lm <= 1.5 * S).all()


def test_pixel_centre_convention_and_registration():
    """Sub-pixel checks of the (c + 0.5, r + 0.5) convention at S=224, default pose:
    the brow landmarks 19/24 sit on the centre line of the drawn brow band, and the dark
    brow pixels of the image are where the part map says (no half-pixel shift)."""
    size = 224
    centre_err, shift = [], []
    for i in range(24):
        idn = sy.identity_for(2, i)
        f = sy.generate_face(np.random.default_rng(i), i % 7, idn, size, return_parts=True, nuisance=False)
        lm, parts, img = f["landmarks68"], f["parts"], f["image"].astype(float)
        for j in (19, 24):
            x, y = lm[j]
            rows = np.flatnonzero(parts[:, int(x)] == sy.PART_BROW)
            rows = rows[np.abs(rows + 0.5 - y) < 20]
            centre_err.append(rows.mean() + 0.5 - y)
        x0, x1 = int(lm[17:27, 0].min()) - 3, int(lm[17:27, 0].max()) + 4
        y0, y1 = int(lm[17:27, 1].min()) - 9, int(lm[17:27, 1].max()) + 9
        skin = np.clip(np.round(idn["skin"]), 0, 255)
        axis = skin - np.clip(np.round(idn["brow"]), 0, 255)
        dark = np.clip((skin - img[y0:y1, x0:x1]) @ axis / (axis @ axis), 0, 1)
        mask = (parts[y0:y1, x0:x1] == sy.PART_BROW).astype(float)
        rr, cc = np.mgrid[y0:y1, x0:x1] + 0.5
        shift.append(
            [
                (dark * rr).sum() / dark.sum() - (mask * rr).sum() / mask.sum(),
                (dark * cc).sum() / dark.sum() - (mask * cc).sum() / mask.sum(),
            ]
        )
    centre_err = np.array(centre_err)
    assert abs(centre_err.mean()) < 0.15 and np.abs(centre_err).max() < 0.75, centre_err
    assert (np.abs(np.median(shift, axis=0)) < 0.25).all(), np.median(shift, axis=0)


def test_landmark_left_right_order(split):
    lm = split["landmarks68"]
    x = lm[..., 0]
    assert (np.maximum(x[:, 36], x[:, 39]) < np.minimum(x[:, 42], x[:, 45])).all()
    assert (x[:, 36] < x[:, 39]).all() and (x[:, 42] < x[:, 45]).all()
    assert (x[:, 17:22].max(1) < x[:, 22:27].min(1)).all()
    assert (x[:, 0] < x[:, 8]).all() and (x[:, 8] < x[:, 16]).all()
    assert (x[:, 48] < x[:, 54]).all() and (x[:, 31] < x[:, 35]).all()
    f = face_frame(lm)
    assert (f[:, 30, 1] > f[:, 39, 1]).all()  # nose tip below the eyes
    assert (f[:, 57, 1] > f[:, 30, 1]).all()  # lower lip below the nose tip
    assert (f[:, 8, 1] > f[:, 57, 1]).all()  # chin below the lower lip
    assert (f[:, 19, 1] < f[:, 37, 1]).all() and (f[:, 24, 1] < f[:, 44, 1]).all()  # brows up


def test_default_layout_is_an_aligned_crop():
    """At the default pose: eyes ~0.40 S, mouth ~0.75 S, face 60-70% of the width, and the
    Table 2 boxes (as the design reads them) cover eyes+brows and mouth+nose."""
    for i in range(21):
        idn = sy.identity_for(0, i)
        f = sy.generate_face(np.random.default_rng(i), i % 7, idn, S, nuisance=False)
        lm = f["landmarks68"] / S
        assert 0.36 < lm[36:48, 1].mean() < 0.44
        assert 0.70 < lm[48:68, 1].mean() < 0.82
        assert 0.55 < lm[16, 0] - lm[0, 0] < 0.72
        c = 0.5 * (lm[36] + lm[45])
        eyes_brows = np.r_[17:27, 36:48]
        assert (np.abs(lm[eyes_brows, 0] - c[0]) < 0.36).all()
        assert (np.abs(lm[eyes_brows, 1] - c[1]) < 0.18).all()
        c = 0.5 * (lm[30] + lm[57])
        assert (np.abs(lm[[30, 48, 54, 57], 0] - c[0]) < 0.27).all()
        assert (np.abs(lm[[30, 48, 54, 57], 1] - c[1]) < 0.18).all()


def test_class_cues_differ_measurably(split):
    f, y = face_frame(split["landmarks68"]), split["label"]
    # jaw drop: the inner-lip opening is largest for surprise, then fear
    opening = class_mean(f[:, 66, 1] - f[:, 62, 1], y)
    assert opening.argmax() == SURPRISE
    assert opening[FEAR] > opening[[ANGER, CONTEMPT, SADNESS]].max()
    # lip corners relative to the lip centre: up for happy, down for sadness (y grows down)
    lift = class_mean(0.5 * (f[:, 62, 1] + f[:, 66, 1]) - 0.5 * (f[:, 48, 1] + f[:, 54, 1]), y)
    assert lift[HAPPY] > 0.04 and lift[SADNESS] < -0.03
    assert lift.argmax() == HAPPY and lift.argmin() == SADNESS
    # contempt: one-sided corner
    asym = class_mean(np.abs(f[:, 48, 1] - f[:, 54, 1]), y)
    assert asym.argmax() == CONTEMPT and asym[CONTEMPT] > 2 * np.delete(asym, CONTEMPT).max()
    # brows: raised for surprise and fear, lowered for anger; inner ends together for anger
    brow_eye = class_mean(f[:, 36:48, 1].mean(1) - f[:, 17:27, 1].mean(1), y)
    assert brow_eye.argmax() == SURPRISE and brow_eye.argmin() == ANGER
    assert brow_eye[FEAR] > brow_eye[[ANGER, CONTEMPT, DISGUST, HAPPY]].max()
    inner_gap = class_mean(f[:, 22, 0] - f[:, 21, 0], y)
    assert inner_gap.argmin() == ANGER
    # sadness: oblique brows, inner ends higher than the outer ends
    slope = class_mean(0.5 * (f[:, 17, 1] + f[:, 26, 1]) - 0.5 * (f[:, 21, 1] + f[:, 22, 1]), y)
    assert slope.argmax() == SADNESS and slope[ANGER] < 0
    # eyes: wide for surprise/fear, narrowed for anger
    eye_open = class_mean(f[:, [40, 41, 46, 47], 1].mean(1) - f[:, [37, 38, 43, 44], 1].mean(1), y)
    others = [ANGER, CONTEMPT, DISGUST, HAPPY, SADNESS]
    assert eye_open[[SURPRISE, FEAR]].min() > eye_open[others].max()
    assert eye_open.argmin() in (ANGER, HAPPY)
    # anger presses the lips thin: outer-lip height minus the opening is smallest
    lips = class_mean((f[:, 57, 1] - f[:, 51, 1]) - (f[:, 66, 1] - f[:, 62, 1]), y)
    assert lips.argmin() == ANGER


def test_wrinkle_cues_in_part_map(split):
    """Nose-bridge wrinkles (AU9) mark disgust; forehead lines mark surprise and fear."""
    lm, parts, y = split["landmarks68"], split["parts"], split["label"]
    n = len(y)
    rows = np.arange(S)[:, None] + 0.5
    cols = np.arange(S)[None, :] + 0.5
    nose_detail = np.zeros(n)
    forehead_detail = np.zeros(n)
    for i in range(n):
        detail = parts[i] == sy.PART_DETAIL
        x0, x1 = lm[i, 39, 0], lm[i, 42, 0]
        y0, y1 = lm[i, [39, 42], 1].mean(), lm[i, 30, 1]
        box = (cols > x0) & (cols < x1) & (rows > y0) & (rows < y1 - 2)
        nose_detail[i] = (detail & box).sum()
        top = lm[i, 17:27, 1].min()
        xl, xr = lm[i, 17, 0], lm[i, 26, 0]
        box = (cols > xl) & (cols < xr) & (rows < top - 2)
        forehead_detail[i] = (detail & box).sum()
    nose = class_mean(nose_detail, y)
    assert nose.argmax() == DISGUST and nose[DISGUST] > 3 * np.delete(nose, DISGUST).max()
    assert (nose_detail[y == DISGUST] > 0).mean() > 0.9
    fore = class_mean(forehead_detail, y)
    assert set(np.argsort(fore)[-2:]) == {SURPRISE, FEAR}


def test_generate_face_contract():
    idn = sy.identity_for(0, 0)
    f = sy.generate_face(np.random.default_rng(0), 3, idn, 96, return_parts=True)
    assert f["image"].shape == (96, 96, 3) and f["parts"].shape == (96, 96)
    assert f["landmarks68"].shape == (68, 2)
    with pytest.raises(ValueError, match="label"):
        sy.generate_face(np.random.default_rng(0), 7, idn, S)
    with pytest.raises(ValueError, match="num_subjects"):
        sy.generate_split(5, seed=0, num_subjects=0)
    with pytest.raises(ValueError, match="image_size"):
        sy.generate_split(1, seed=0, image_size=8)


def test_contact_sheet():
    d = sy.generate_split(14, seed=0, image_size=32)
    sheet = sy.contact_sheet(d["image"], d["label"], per_class=2)
    assert sheet.shape == (7 * 32, 2 * 32, 3)
    first_anger = d["image"][np.flatnonzero(d["label"] == 0)[0]]
    np.testing.assert_array_equal(sheet[:32, :32], first_anger)


# Measured with the single-module data/synthetic.py before it became a package; a change here
# changes every data set (the fingerprints in docs/results.md too), so it must be deliberate.
PINNED = {
    "demo_size": "93801fa39687f150",
    "64px": "cdc9d3791cefcad6",
    "plain_hard": "23ad747fef3ae4f2",
    "tiny_fingerprints": "90cefbea2a2208cd/dbf01b46236db91b",
    "export": "69d8a8e88b6bef5a",
}


def _sha(*arrays):
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype}{a.shape}".encode())
        digest.update(memoryview(a).cast("B"))
    return digest.hexdigest()[:16]


def test_faces_are_byte_identical_to_the_pinned_ones(tmp_path):
    """Faces at the demo's size and at 64 px, plain faces at the hard intensity, the prepared
    data of configs/synthetic.py:tiny (prepared.fingerprint) and an exported folder (names,
    faces.csv and decoded pixels, not PNG bytes, which depend on the zlib build)."""
    from configs import synthetic as synthetic_config
    from manet_jax.data import datasets, prepared

    got = {}
    d = sy.generate_split(42, seed=10_000, image_size=112, num_subjects=60, return_parts=True)
    got["demo_size"] = _sha(d["image"], d["parts"], d["landmarks68"], d["label"], d["subject_id"])
    d = sy.generate_split(42, seed=1, image_size=64, num_subjects=9, subject_id_offset=3)
    got["64px"] = _sha(d["image"], d["landmarks68"], d["label"], d["subject_id"])
    faces = [
        sy.generate_face(
            np.random.default_rng(i),
            i % 7,
            sy.identity_for(5, i),
            80,
            return_parts=True,
            nuisance=False,
            intensity=sy.HARD_INTENSITY,
        )
        for i in range(14)
    ]
    got["plain_hard"] = _sha(*[a for f in faces for a in (f["image"], f["parts"], f["landmarks68"])])
    train, test = datasets.load_splits(synthetic_config.get_config("tiny"), tmp_path, log=lambda *a: None)
    got["tiny_fingerprints"] = f"{prepared.fingerprint(train)}/{prepared.fingerprint(test)}"
    root = tmp_path / "folder"
    sy.export_folder(root, num_subjects=2, per_subject=7, seed=3, image_size=48)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    pixels = _sha(*[np.asarray(Image.open(root / f)) for f in files])
    listing = "\n".join(files) + (root / sy.FOLDER_FACES).read_text()
    got["export"] = hashlib.sha256(listing.encode() + pixels.encode()).hexdigest()[:16]
    assert got == PINNED
