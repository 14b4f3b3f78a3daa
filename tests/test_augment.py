"""Training augmentation: the image, its landmarks and the masks move together, reproducibly.

References are independent of the pipeline: a nearest-neighbour inverse warp written here
(for the image and the synthetic generator's part map) and the documented matrix formula.
"""

import math

import ml_collections
import numpy as np
import pytest

from configs import default
from manet_jax import preprocess, regions
from manet_jax.data import pipeline, prepared, synthetic

SIZE = 112
# Which drawn part each of the 8 points lies on: nose tip, four eye corners, mouth corners,
# lower-lip centre (iBUG 30, 36, 39, 42, 45, 48, 54, 57).
POINT_PARTS = (synthetic.PART_NOSE, *[synthetic.PART_EYE] * 4, *[synthetic.PART_MOUTH] * 3)
STRONG = pipeline.AugmentSpec(scale=0.15, shift=0.12, rotate=25.0, brightness=0.15, contrast=0.4)


@pytest.fixture(scope="module")
def faces():
    """Five default-pose faces with their part maps (plain background, no lighting)."""
    out = [
        synthetic.generate_face(
            np.random.default_rng(i), i % 7, synthetic.identity_for(4, i), SIZE, return_parts=True, nuisance=False
        )
        for i in range(5)
    ]
    return {key: np.stack([f[key] for f in out]) for key in ("image", "landmarks68", "parts")}


@pytest.fixture(scope="module")
def split(faces, tmp_path_factory):
    n = len(faces["image"])
    arrays = {
        "image": faces["image"],
        "landmarks68": faces["landmarks68"],
        "label": np.arange(n, dtype=np.int32) % 7,
        "subject_id": np.arange(n, dtype=np.int32),
    }
    return prepared.write_split(tmp_path_factory.mktemp("aug") / "train", arrays, {"class_names": ["a"] * 7})


def fixed_plan(rows):
    """A plan from explicit (zoom, degrees, dx, dy, brightness, contrast) rows."""
    r = np.asarray(rows, np.float64)
    return {"scale": r[:, 0], "rotate": r[:, 1], "shift": r[:, 2:4], "brightness": r[:, 4], "contrast": r[:, 5]}


def reference_matrix(zoom, degrees, dx, dy, size=SIZE):
    """The documented map p -> zoom * R(degrees) (p - c) + c + (dx, dy) * size, c the centre."""
    a = math.radians(degrees)
    linear = zoom * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = np.array([size / 2, size / 2])
    return np.hstack([linear, (c + np.array([dx, dy]) * size - linear @ c)[:, None]])


def nearest_warp(array, matrix):
    """Output pixel centre q shows the input pixel under M^-1 q (outside: 0)."""
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    rows, cols = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    src = np.einsum("ij,jrc->irc", inverse, np.stack([cols, rows, np.ones_like(rows)]))
    c, r = np.floor(src[0]).astype(int), np.floor(src[1]).astype(int)
    inside = (c >= 0) & (c < SIZE) & (r >= 0) & (r < SIZE)
    out = np.zeros_like(array)
    out[inside] = array[r[inside], c[inside]]
    return out, inside


def on_parts(points, parts):
    """For each of the 8 points: is its drawn part within one pixel of it?"""
    hits = []
    for (x, y), part in zip(points, POINT_PARTS):
        window = parts[max(0, int(y) - 1) : int(y) + 2, max(0, int(x) - 1) : int(x) + 2]
        hits.append(bool((window == part).any()))
    return np.array(hits)


ROWS = [
    (0.85, 25.0, 0.12, -0.08, 0.0, 1.0),
    (1.15, -25.0, -0.1, 0.12, 0.0, 1.0),
    (1.0, 40.0, 0.0, 0.0, 0.0, 1.0),
    (0.9, -10.0, -0.12, -0.12, 0.0, 1.0),
    (1.1, 15.0, 0.12, 0.1, 0.0, 1.0),
]


@pytest.mark.parametrize("flip", [False, True])
def test_transformed_landmarks_land_on_the_transformed_parts(split, faces, flip):
    n = len(split)
    plan = fixed_plan(ROWS)
    out = pipeline.make_examples(
        split, np.arange(n), np.full(n, flip), (7, 7), regions.DEFAULT_REGION_SIZES, augment=plan
    )
    images = np.rint(out["image"] + np.asarray(preprocess.VGGFACE_MEAN_RGB, np.float32)).astype(np.int32)
    source_points = regions.mirror_8(split.landmarks8[:], SIZE) if flip else split.landmarks8[:]
    for k in range(n):
        matrix = reference_matrix(*ROWS[k][:4])
        src_img = faces["image"][k, :, ::-1] if flip else faces["image"][k]
        src_parts = faces["parts"][k, :, ::-1] if flip else faces["parts"][k]
        parts, inside = nearest_warp(src_parts, matrix)
        # The landmarks moved with the picture ...
        assert on_parts(out["landmarks8"][k], parts).all(), k
        # ... which a wrong (here: no) transform of the points would not do.
        assert not on_parts(source_points[k], parts).all(), k
        # And the pipeline's picture is the reference warp (bilinear vs nearest: small mean error).
        reference, _ = nearest_warp(src_img, matrix)
        error = np.abs(images[k] - reference)[inside].mean()
        assert error < 4.0, (k, error)
        assert np.abs(src_img.astype(np.int32) - reference)[inside].mean() > 3 * error


def test_photometric_change_is_contrast_about_the_mean_then_brightness(split):
    idx = np.arange(3)
    plan = fixed_plan([(1.0, 0.0, 0.0, 0.0, 0.1, 1.3), (1.0, 0.0, 0.0, 0.0, -0.2, 0.7), (1.0, 0.0, 0.0, 0.0, 0.0, 1.0)])
    out = pipeline.make_examples(split, idx, None, (7, 7), regions.DEFAULT_REGION_SIZES, augment=plan)
    raw = split.image[idx].astype(np.float64)
    mean = raw.mean(axis=(1, 2, 3), keepdims=True)
    k, b = plan["contrast"][:, None, None, None], 255 * plan["brightness"][:, None, None, None]
    expected = np.clip((raw - mean) * k + mean + b, 0, 255)
    got = out["image"] + np.asarray(preprocess.VGGFACE_MEAN_RGB, np.float32)
    np.testing.assert_allclose(got, expected, atol=1.0)
    np.testing.assert_allclose(got[2], raw[2], atol=1e-4)  # neutral row: untouched


def test_batch_masks_follow_the_moved_landmarks(split):
    spec = pipeline.AugmentSpec(shift=0.25, rotate=10.0, scale=0.1)
    kw = dict(global_batch_size=5, seed=3, start_step=2, num_steps=1, mask_size=(7, 7), random_flip=False)
    batch = next(pipeline.train_batches(split, augment=spec, **kw))
    plain = next(pipeline.train_batches(split, **kw))
    idx, _ = pipeline.sample_plan(len(split), 5, 3, 2)
    plan = pipeline.augment_plan(spec, 5, 3, 2)
    for k in range(5):
        matrix = reference_matrix(plan["scale"][k], plan["rotate"][k], *plan["shift"][k])
        expected = split.landmarks8[idx[k]] @ matrix[:, :2].T + matrix[:, 2]
        np.testing.assert_allclose(batch["landmarks8"][k], expected, atol=1e-3)
    np.testing.assert_array_equal(batch["masks"], regions.region_masks(batch["landmarks8"], (SIZE, SIZE), (7, 7)))
    big = np.abs(plan["shift"]).max(axis=1) > 0.1  # > 11 px: more than a mask cell (16 px)
    assert big.any()
    for k in np.flatnonzero(big):
        assert not np.array_equal(batch["masks"][k], plain["masks"][k]), k
    np.testing.assert_array_equal(batch["label"], plain["label"])


def test_augmentation_is_a_pure_function_of_seed_and_step(split):
    kw = dict(global_batch_size=4, seed=1, mask_size=(7, 7), random_flip=True, augment=STRONG)
    full = list(pipeline.train_batches(split, start_step=0, num_steps=3, **kw))
    resumed = list(pipeline.train_batches(split, start_step=2, num_steps=1, **kw))
    for key in full[2]:
        np.testing.assert_array_equal(full[2][key], resumed[0][key])
    a, b = pipeline.augment_plan(STRONG, 4, 1, 5), pipeline.augment_plan(STRONG, 4, 1, 6)
    for key in a:
        assert not np.allclose(a[key], b[key]), key
    # Process slices of an augmented global batch are the single-process batch's slices.
    parts = [
        next(pipeline.train_batches(split, start_step=1, num_steps=1, process_index=p, process_count=2, **kw))
        for p in range(2)
    ]
    for key in full[1]:
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), full[1][key])


def test_all_zero_augmentation_is_bit_identical_to_none(split):
    kw = dict(global_batch_size=4, seed=2, start_step=0, num_steps=2, mask_size=(7, 7), random_flip=True)
    none = list(pipeline.train_batches(split, **kw))
    zero = list(pipeline.train_batches(split, augment=default.get_config().data.augment, **kw))
    for a, b in zip(none, zero, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_shipped_configs_do_not_augment():
    """The paper does not augment: every shipped config leaves config.data.augment at 0."""
    from configs import ck, folder, raf
    from configs import synthetic as synthetic_config

    for make in (default.get_config, ck.get_config, raf.get_config, folder.get_config, synthetic_config.get_config):
        assert not pipeline.AugmentSpec.from_config(make().data.augment).enabled, make.__module__


def test_drawn_parameters_respect_the_configured_bounds():
    cfg = ml_collections.ConfigDict(dict(scale=0.2, shift=0.1, rotate=15.0, brightness=0.25, contrast=0.3))
    spec = pipeline.AugmentSpec.from_config(cfg)
    plan = pipeline.augment_plan(spec, 4000, seed=7, step=11)
    for key, centre, bound in [
        ("scale", 1.0, 0.2),
        ("shift", 0.0, 0.1),
        ("rotate", 0.0, 15.0),
        ("brightness", 0.0, 0.25),
        ("contrast", 1.0, 0.3),
    ]:
        dev = np.abs(plan[key] - centre)
        assert dev.max() <= bound and dev.max() > 0.98 * bound, key  # inside and filling the range
        assert abs(np.mean(plan[key] - centre)) < 0.05 * bound, key  # symmetric
    # The matrices are exactly zoom x rotation: det = zoom^2, columns orthogonal.
    m = pipeline.augment_matrices(plan, SIZE)
    np.testing.assert_allclose(np.linalg.det(m[:, :, :2]), plan["scale"] ** 2, rtol=1e-9)
    np.testing.assert_allclose(np.einsum("nij,nik->njk", m[:, :, :2], m[:, :, :2])[:, 0, 1], 0, atol=1e-9)


@pytest.mark.parametrize(
    "key, value",
    [
        ("scale", -0.1),
        ("scale", 1.0),
        ("shift", 0.6),
        ("rotate", 50.0),
        ("brightness", float("nan")),
        ("contrast", 1.0),
        ("rotate", "10"),
        ("zoom", 0.1),
        ("shift", True),
    ],
)
def test_bad_values_name_their_key(key, value):
    with pytest.raises(ValueError, match=rf"config\.data\.augment\.{key}\b"):
        pipeline.AugmentSpec.from_config({key: value})


def test_train_batches_validates_before_any_batch(split):
    cfg = default.get_config().data.augment
    cfg.rotate = 90.0
    with pytest.raises(ValueError, match=r"config\.data\.augment\.rotate"):
        pipeline.train_batches(
            split, global_batch_size=2, seed=0, start_step=0, num_steps=1, mask_size=(7, 7), augment=cfg
        )
