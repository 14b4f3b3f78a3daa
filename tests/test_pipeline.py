"""Input pipeline: deterministic order, flips that carry their landmarks, complete eval."""

import os

import numpy as np
import pytest

from manet_jax import preprocess, regions
from manet_jax.data import pipeline, prepared, synthetic


@pytest.fixture(scope="module")
def arrays():
    return synthetic.generate_split(23, seed=5, image_size=96, num_subjects=4, return_parts=True)


@pytest.fixture(scope="module")
def split(arrays, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "train"
    return prepared.write_split(path, arrays, {"class_names": list(synthetic.CLASS_NAMES)})


def test_sample_plan_is_a_pure_function_and_visits_each_example_once_per_epoch():
    n, batch = 23, 8
    seen = np.concatenate([pipeline.sample_plan(n, batch, seed=3, step=s)[0] for s in range(23)])  # 8 epochs
    for epoch in range(8):
        assert sorted(seen[epoch * n : (epoch + 1) * n]) == list(range(n))
    a = pipeline.sample_plan(n, batch, 3, 7)
    b = pipeline.sample_plan(n, batch, 3, 7)
    np.testing.assert_array_equal(a[0], b[0]) and np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(pipeline.sample_plan(n, batch, 4, 7)[0], a[0])
    flips = np.concatenate([pipeline.sample_plan(n, batch, 3, s)[1] for s in range(50)])
    assert 0.35 < flips.mean() < 0.65


def test_batches_hold_normalised_images_masks_and_labels(split):
    it = pipeline.train_batches(
        split, global_batch_size=6, seed=0, start_step=0, num_steps=2, mask_size=(6, 6), random_flip=False
    )
    batches = list(it)
    assert len(batches) == 2
    b = batches[0]
    idx, _ = pipeline.sample_plan(len(split), 6, 0, 0)
    np.testing.assert_allclose(b["image"], preprocess.normalize(split.image[idx]), atol=1e-5)
    np.testing.assert_array_equal(b["label"], split.label[idx])
    points = regions.ibug68_to_8(split.landmarks[idx])
    np.testing.assert_array_equal(points, split.landmarks8[idx])
    np.testing.assert_array_equal(b["masks"], regions.region_masks(points, (96, 96), (6, 6)))
    assert b["image"].dtype == np.float32 and b["masks"].shape == (6, 8, 6, 6)


def test_resuming_replays_the_same_batches(split):
    kw = dict(global_batch_size=4, seed=1, mask_size=(6, 6), random_flip=True)
    full = list(pipeline.train_batches(split, start_step=0, num_steps=9, **kw))
    resumed = list(pipeline.train_batches(split, start_step=5, num_steps=4, **kw))
    for a, b in zip(full[5:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_flip_mirrors_image_landmarks_and_masks_consistently(split, arrays):
    idx = np.arange(5)
    plain = pipeline.make_examples(split, idx, np.zeros(5, bool), (6, 6), regions.DEFAULT_REGION_SIZES)
    flipped = pipeline.make_examples(split, idx, np.ones(5, bool), (6, 6), regions.DEFAULT_REGION_SIZES)
    np.testing.assert_array_equal(flipped["image"], plain["image"][:, :, ::-1])
    # Left and right points swap: the image-left eye's outer corner l2 of the flipped face is
    # the mirror of the image-right eye's outer corner l5 of the original.
    np.testing.assert_allclose(flipped["landmarks8"][:, 1, 0], 96 - plain["landmarks8"][:, 4, 0], atol=1e-4)
    np.testing.assert_allclose(
        flipped["landmarks8"][:, 5],
        np.stack([96 - plain["landmarks8"][:, 6, 0], plain["landmarks8"][:, 6, 1]], -1),
        atol=1e-4,
    )
    assert np.all(flipped["landmarks8"][:, 1, 0] < flipped["landmarks8"][:, 4, 0])  # still image-left first
    # Masks come from the mirrored points.
    np.testing.assert_array_equal(flipped["masks"], regions.region_masks(flipped["landmarks8"], (96, 96), (6, 6)))
    # And the mirrored landmarks still sit on the drawn features of the flipped picture.
    parts = arrays["parts"][:5, :, ::-1]
    for k in range(5):
        for point, part in [(5, synthetic.PART_MOUTH), (6, synthetic.PART_MOUTH), (0, synthetic.PART_NOSE)]:
            x, y = flipped["landmarks8"][k, point]
            window = parts[k, max(0, int(y) - 1) : int(y) + 2, max(0, int(x) - 1) : int(x) + 2]
            assert (window == part).any(), (k, point)


def test_evaluation_visits_every_example_exactly_once(split):
    n = len(split)  # 23: does not divide the batch
    for processes in (1, 2):
        labels, counted = [], 0
        for p in range(processes):
            batches = list(
                pipeline.eval_batches(
                    split, global_batch_size=10, mask_size=(6, 6), process_index=p, process_count=processes
                )
            )
            assert len(batches) == pipeline.num_eval_batches(n, 10, processes)
            for b in batches:
                valid = b["valid"].astype(bool)
                labels.append(b["label"][valid])
                counted += int(valid.sum())
        assert counted == n
        np.testing.assert_array_equal(np.sort(np.concatenate(labels)), np.sort(split.label))


def test_multi_process_training_slices_partition_the_global_batch(split):
    kw = dict(global_batch_size=8, seed=2, start_step=3, num_steps=1, mask_size=(6, 6), random_flip=True)
    whole = next(pipeline.train_batches(split, **kw))
    parts = [next(pipeline.train_batches(split, process_index=p, process_count=4, **kw)) for p in range(4)]
    for key in whole:
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
    with pytest.raises(ValueError, match="does not divide"):
        pipeline.process_share(10, 0, 4)


def test_prepared_splits_are_never_overwritten_and_incomplete_ones_are_named(split, tmp_path):
    with pytest.raises(FileExistsError, match="never overwritten"):
        prepared.write_split(split.path, {}, {})
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="info.json is missing"):
        prepared.read_split(tmp_path / "half")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepared.read_split(tmp_path / "nowhere")


def test_a_second_preparation_of_the_same_split_uses_the_first_ones_result(split, tmp_path):
    """Two processes preparing one split: the one that commits second keeps the first's
    complete split (it used to fail with ENOTEMPTY) and removes its own temporary folder."""
    target = tmp_path / "train"
    first = prepared.SplitWriter(target, len(split), split.image_size, None, {"class_names": ["a"]}, name_length=0)
    second = prepared.SplitWriter(target, len(split), split.image_size, None, {"class_names": ["b"]}, name_length=0)
    for writer in (first, second):
        for key, arr in writer.arrays.items():
            arr[:] = np.asarray(getattr(split, key))
        writer.written[:] = True
    first.commit()
    result = second.commit()
    assert list(result.class_names) == ["a"]
    np.testing.assert_array_equal(np.asarray(result.image), np.asarray(split.image))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]


def test_temporary_folders_of_dead_preparations_are_removed(tmp_path):
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    leftovers = {
        "dead": tmp_path / f".train.tmp-{int(dead.stdout)}@{host}-0123abcd",
        "older version": tmp_path / ".train.tmp-89abcdef",
        "alive": tmp_path / f".train.tmp-{os.getpid()}@{host}-00000000",
        "other host": tmp_path / ".train.tmp-1@elsewhere.example-11111111",
        "other split": tmp_path / f".test.tmp-{int(dead.stdout)}@{host}-22222222",
    }
    for folder in leftovers.values():
        folder.mkdir()
        (folder / "image.npy").write_bytes(b"partial")
    removed = prepared.remove_dead_temporaries(tmp_path / "train")
    assert sorted(removed) == sorted([leftovers["dead"], leftovers["older version"]])
    assert all(leftovers[k].exists() for k in ("alive", "other host", "other split"))


def test_prepared_split_keeps_optional_fields_and_reads_the_older_landmarks68_layout(split, arrays, tmp_path):
    assert split.landmark_scheme == "ibug68" and split.landmarks.shape[1:] == (68, 2)
    names = np.array([f"img_{i:03d}.png" for i in range(len(split))])
    named = prepared.write_split(tmp_path / "named", {**arrays, "name": names}, {"class_names": ["a"]})
    np.testing.assert_array_equal(named.name, names)
    sub = named.subset([3, 1])
    assert list(sub.name) == ["img_003.png", "img_001.png"]
    np.testing.assert_array_equal(sub.landmarks8, split.landmarks8[[3, 1]])
    # A folder written before landmarks8.npy existed still opens, with the 8 points derived.
    old = tmp_path / "old"
    old.mkdir()
    for field in ("image", "label", "subject_id"):
        np.save(old / f"{field}.npy", getattr(split, field))
    np.save(old / "landmarks68.npy", split.landmarks)
    (old / "info.json").write_text('{"class_names": ["a"]}')
    v1 = prepared.read_split(old)
    np.testing.assert_array_equal(v1.landmarks8, regions.ibug68_to_8(np.asarray(split.landmarks)))


def test_fold_pools_both_splits_and_keeps_subjects_apart(split):
    import dataclasses

    from manet_jax.data import datasets, folds

    split = dataclasses.replace(split, subject_id=(np.arange(len(split)) * 7) % 13)  # 13 subjects
    half = len(split) // 2
    train, test = split.subset(np.arange(half)), split.subset(np.arange(half, len(split)))
    fold_train, fold_test = datasets.apply_fold(train, test, 3, log=lambda *_: None)
    assert len(fold_train) + len(fold_test) == len(split)
    assert not set(fold_train.subject_id) & set(fold_test.subject_id)
    expected = folds.person_independent_folds(split.subject_id) == 3
    np.testing.assert_array_equal(np.sort(fold_test.label), np.sort(split.label[expected]))
    assert datasets.apply_fold(train, test, 0) == (train, test)


def test_pixel_mean_follows_the_config(split):
    imagenet = (123.68, 116.779, 103.939)
    kw = dict(global_batch_size=4, seed=0, start_step=0, num_steps=1, mask_size=(6, 6), random_flip=False)
    default = next(pipeline.train_batches(split, **kw))
    other = next(pipeline.train_batches(split, pixel_mean=imagenet, **kw))
    idx, _ = pipeline.sample_plan(len(split), 4, 0, 0)
    raw = np.asarray(split.image[idx], np.float32)
    np.testing.assert_allclose(other["image"], raw - np.asarray(imagenet, np.float32), atol=1e-4)
    np.testing.assert_allclose(
        default["image"] - other["image"],
        np.broadcast_to(np.subtract(imagenet, preprocess.VGGFACE_MEAN_RGB), raw.shape),
        atol=1e-4,
    )
