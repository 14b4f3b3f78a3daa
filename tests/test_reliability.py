"""Issue 28, round 2 of the reliability probe: inputs are never written over, bounds are
checked before any work, cv.py leaves no orphans, exports verify what they list, and errors
name their culprit. Each test failed before its fix (docs/reliability.md lists them)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny import tiny_config_file

from manet_jax.data import align
from manet_jax.predict import check_output_paths, drawing_names, photo_files, read_photo, read_photo_within

ROOT = Path(__file__).resolve().parents[1]


def run_tool(script: str, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, script, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def one_line_error(out: subprocess.CompletedProcess, *words: str) -> str:
    """The tool's one 'error: ...' line (status 1, no traceback), which holds every word."""
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr[-2000:]
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


# ------------------------------------------------------------------ predict.py: never over an input
@pytest.fixture
def photos(tmp_path):
    """photos/x.jpg and photos/x.png (same stem), photos/sub/y.png; a file and a link beside them."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("x.jpg", "x.png", "sub/y.png"):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / name)
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "link.jpg").symlink_to(folder / "x.jpg")
    return folder


def test_predict_refuses_outputs_that_would_write_over_its_inputs(photos, tmp_path):
    """Finding 2: --draw into the photos' own folder (or one above them, or the same folder
    spelled with '..'), --output naming a photo (also through a symlink), and --draw/--output/
    --workdir of the wrong kind are refused in one line before any work; the photos stay
    byte-identical and nothing is added beside them."""
    before = digests(photos)
    no_run = tmp_path / "no_run"  # never read: the refusals come first
    cases = [
        ([photos, f"--draw={photos}"], ["--draw=", "holds input photos", "y.png", "2 more"]),
        ([photos / "x.jpg", f"--draw={photos}/sub/../"], ["holds input photos"]),
        ([photos / "sub", f"--draw={tmp_path}"], ["holds input photos", "y.png"]),
        ([photos, f"--output={photos / 'x.png'}"], ["--output=", "is the input photo", "x.png"]),
        ([photos / "x.jpg", f"--output={tmp_path / 'link.jpg'}"], ["is the input photo"]),
        ([photos, f"--draw={tmp_path / 'a_file'}"], ["a_file is a file, expected a folder"]),
        ([photos, f"--output={photos / 'sub'}"], ["is a folder, expected a file"]),
        ([photos, f"--output={tmp_path / 'a_file' / 'out.jsonl'}"], ["a_file is a file, expected a folder"]),
    ]
    for args, words in cases:
        out = run_tool("predict.py", f"--workdir={no_run}", *args)
        one_line_error(out, *words)
        assert "config.json" not in out.stderr  # refused before the run is even looked at
    out = run_tool("predict.py", f"--workdir={tmp_path / 'a_file'}", photos)
    one_line_error(out, "--workdir=", "is a file, expected a folder")
    assert digests(photos) == before


def test_drawings_of_photos_never_share_a_name(tmp_path):
    """Finding 2: x.jpg and x.png no longer both draw to x.png: the picture keeps the photo's
    whole name (x.jpg.png, x.png.png); a name met twice (two folders) gets .2, .3, ..."""
    files = ["a/x.jpg", "a/x.png", "b/x.jpg", "c/x.jpg", "x.jpg.2", "x"]
    names = drawing_names(files)
    assert names == ["x.jpg.png", "x.png.png", "x.jpg.2.png", "x.jpg.3.png", "x.jpg.2.2.png", "x.png"]
    assert len(set(names)) == len(names)
    check_output_paths(files, draw=tmp_path / "drawn", output=tmp_path / "out.jsonl")  # nothing to refuse
    with pytest.raises(FileExistsError, match="--draw picture"):
        check_output_paths(files, draw=tmp_path, output=tmp_path / "x.png.png")


# ------------------------------------------------------------------ photos: bounded, never blocking
@pytest.fixture
def alarm():
    """Fail instead of hanging: a read that blocks is interrupted after 20 s."""

    def expired(*_):
        raise TimeoutError("blocked for 20 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_a_fifo_or_a_device_named_like_a_photo_is_refused_at_once(tmp_path, alarm):
    """Finding 3: a FIFO named f.jpg blocked predict.py forever (opening it waits for a
    writer); now it and a device are refused in one line naming them, in a folder or named."""
    os.mkfifo(tmp_path / "f.jpg")
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "ok.png")
    assert photo_files([tmp_path]) == [tmp_path / "f.jpg", tmp_path / "ok.png"]  # listed, so named when read
    with pytest.raises(align.ImageDecodeError, match=r"f\.jpg: a FIFO \(named pipe\), not a regular file"):
        read_photo(tmp_path / "f.jpg")
    with pytest.raises(align.ImageDecodeError, match="FIFO"):
        align.load_image(str(tmp_path / "f.jpg"))  # the data sets' reader too
    with pytest.raises(align.ImageDecodeError, match="/dev/null: a character device"):
        read_photo("/dev/null")
    assert read_photo(tmp_path / "ok.png").shape == (40, 40, 3)


def test_big_photos_are_shrunk_while_decoded(tmp_path):
    """Finding 3: over max_pixels, a JPEG is decoded at a reduced scale (PIL's draft) and other
    formats are reduced right after decoding; the scale comes back so that boxes and landmarks
    can be given in the stored pixels. Small photos are read as they are."""
    rng = np.random.default_rng(1)
    pixels = np.repeat(np.repeat(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8), 100, 0), 100, 1)  # 3000x2000
    for suffix in (".jpg", ".png"):
        path = tmp_path / f"big{suffix}"
        Image.fromarray(pixels).save(path, quality=95)
        photo, scale = read_photo_within(path, max_pixels=1_000_000)
        assert photo.shape[0] * photo.shape[1] <= 1_000_000 and photo.dtype == np.uint8
        assert scale == (photo.shape[1] / 3000, photo.shape[0] / 2000) and scale[0] <= 0.5
        shrunk = np.asarray(Image.fromarray(pixels).resize(photo.shape[1::-1], Image.Resampling.BOX), np.float64)
        assert np.abs(photo - shrunk).mean() < 8, suffix  # the same picture, smaller
        whole, unit = read_photo_within(path, max_pixels=10_000_000)
        assert unit == (1.0, 1.0) and np.array_equal(whole, read_photo(path))


# Peak RSS of this process image: VmHWM, which starts anew at exec. (getrusage's ru_maxrss
# survives exec on Linux, so a child forked from a big pytest process reported the parent's
# 3.9 GB after the whole suite had run.)
_PEAK = """
import sys
from manet_jax.data import align
photo, scale = align.decode_image(sys.argv[1], min_side=1, max_pixels=int(sys.argv[2]))
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(photo.shape, scale, hwm)
"""


def test_a_12000_px_png_is_decoded_within_bounded_memory(tmp_path):
    """Finding 3: six 12000 x 12000 PNGs (450 KB each) took 4.45 GB in predict.py; one took
    2.6 GB just to decode (PIL's copies and tobytes()). Now one is decoded within ~0.75 GB,
    shrunk to 4000 x 4000 (predict.MAX_PHOTO_PIXELS = 25 Mpx)."""
    path = tmp_path / "huge.png"
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from PIL import Image; Image.new('RGB', (12000, 12000), (90, 60, 30)).save({str(path)!r})",
        ],
        check=True,
        timeout=120,
    )
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path), "25000000"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    peak_kb = int(out.stdout.split()[-1])
    assert out.stdout.startswith("(4000, 4000, 3) (0.3333") and "DecompressionBombWarning" not in out.stderr
    assert peak_kb < 1_000_000, f"peak RSS {peak_kb / 1e6:.2f} GB decoding one 12000 x 12000 PNG"


# ------------------------------------------------------------------ config bounds, before any work
def test_a_huge_batch_or_step_count_is_refused_in_seconds_naming_the_key(tmp_path):
    """Finding 3: batch_size=1e9 on the 40-example tiny set grew to 22.7 GB until the kernel
    killed it; stage2_steps=1e12 trained stage 1 and then died in a MemoryError. Both are
    refused in one line naming the key, as soon as the data set's size is known."""
    cases = {
        "--config.train.batch_size=1000000000": ["config.train.batch_size=1000000000", "40 training examples"],
        "--config.train.stage2_steps=1000000000000": ["config.train.stage2_steps=1000000000000", "10,000,000"],
    }
    for flag, words in cases.items():
        start = time.monotonic()
        out = run_tool("train.py", "--config=configs/synthetic.py:tiny", f"--workdir={tmp_path / 'run'}", flag)
        seconds = time.monotonic() - start
        one_line_error(out, *words)
        assert seconds < 30, f"{flag} refused after {seconds:.0f} s"
        assert not (tmp_path / "run" / "config.json").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_batch_memory_is_estimated_and_ordinary_configs_pass():
    """The memory bound is a lower bound (the float32 input batches tf.data holds at once), so
    the shipped configs are never refused; an eval batch of 10^8 faces is."""
    from configs import synthetic
    from manet_jax import defaults, limits

    tiny, demo = synthetic.get_config("tiny"), synthetic.get_config()
    assert limits.training_problems(tiny, 40, 21) == [] and limits.training_problems(demo, 3500, 700) == []
    assert limits.training_problems(defaults.get_config(), 1000, 300, memory=16 * 2**30) == []  # 224 px, batch 42
    tiny.train.eval_batch_size = 10**8
    (problem,) = limits.training_problems(tiny, 40, 21, memory=16 * 2**30)
    assert problem.startswith("config.train.eval_batch_size=100000000 needs at least") and "16.0 GiB" in problem
    tiny.model.variant, tiny.train.stage1_steps = "vgg", 10**12  # a baseline has no stage 1: not refused
    assert not any("stage1" in p for p in limits.training_problems(tiny, 40, 21))


# ------------------------------------------------------------------ errors that name their culprit
def test_errors_name_their_culprit_in_one_line(tmp_path):
    """Finding 9: `cv.py --step=abc` ("invalid literal for int()"), a fold_result.json that
    is truncated or holds [] (a traceback), a --workdir/--root or data_dir that is a file
    ("File exists", "does not exist"), a config file with a syntax error (57 lines)."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    overrides = {"data.num_test": 20, "data.num_train_subjects": 8, "data.num_test_subjects": 4}
    config = tiny_config_file(tmp_path / "tiny_cv.py", "vgg", {**overrides, "train.stage2_steps": 2})
    cv = ["cv.py", f"--config={config}", "--variants=vgg", "--folds=1"]

    out = run_tool(*cv, f"--root={tmp_path / 'cv'}", "--step=abc")
    assert out.returncode == 1 and "--step must be 'best', 'latest' or a step number" in out.stderr
    assert "Traceback" not in out.stderr and "invalid literal" not in out.stderr

    result = tmp_path / "cv" / "vgg" / "fold_1" / "fold_result.json"
    result.parent.mkdir(parents=True)
    for damaged, words in [('{"variant": "vgg", "fo', "is not JSON"), ("[]", "holds []")]:
        result.write_text(damaged)
        out = run_tool(*cv, f"--root={tmp_path / 'cv'}")
        one_line_error(out, str(result), words, "delete it to re-run the fold")

    one_line_error(run_tool(*cv, f"--root={a_file}"), f"--root={a_file} is a file, expected a folder")
    train = ["train.py", "--config=configs/synthetic.py:tiny"]
    one_line_error(run_tool(*train, f"--workdir={a_file}"), f"{a_file} is a file, expected a folder")
    folder = ["train.py", "--config=configs/folder.py", f"--workdir={tmp_path / 'run'}"]
    line = one_line_error(run_tool(*folder, f"--config.data.data_dir={a_file}"), "config.data.data_dir=", "is a file")
    assert "does not exist" not in line

    broken = tmp_path / "broken_config.py"
    broken.write_text("from configs import synthetic\n\n\ndef get_config(:\n    return synthetic.get_config()\n")
    out = run_tool("train.py", f"--config={broken}", f"--workdir={tmp_path / 'run'}")
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        f"error: {broken} line 4: invalid syntax: def get_config(: (a syntax error in the config file)"
    ]
