"""Fault injection and fuzzing: mutated input files, SIGKILLs, a full disk, two writers.

Every mutated input must give either a clean result (the reader's documented type, shape and
range, all finite) or one of the project's own errors (ValueError / OSError subclasses that
name the file); anything else (TypeError, IndexError, a NaN landmark accepted, ...) is a
crash. Each test prints its counts: `pytest -s tests/test_fuzz.py` shows them.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import fixtures
import numpy as np
import pytest

from manet_jax import runs, training
from manet_jax.data import align, ckplus, prepared, rafdb

ROOT = Path(__file__).resolve().parents[1]

USER_ERRORS = (ValueError, OSError)
TOKENS = ["nan", "inf", "-inf", "1e309", "-1e40", "", "x", "0", "-3", "8", "1.5", "1,2", "\x00", "  ", "7 7"]


def mutate_bytes(data: bytes, rng) -> bytes:
    kind = rng.integers(6)
    if kind == 0 or len(data) < 4:
        return data[: rng.integers(len(data) + 1)]  # truncated
    buf = bytearray(data)
    if kind == 1:
        for i in rng.integers(len(buf), size=rng.integers(1, 9)):
            buf[i] ^= 1 << rng.integers(8)  # flipped bits
    elif kind == 2:
        at = rng.integers(len(buf))
        buf[at:at] = rng.integers(256, size=rng.integers(1, 64), dtype=np.uint8).tobytes()  # inserted junk
    elif kind == 3:
        at, length = int(rng.integers(len(buf))), int(rng.integers(1, 256))
        buf[at : at + length] = bytes(len(buf[at : at + length]))  # a zeroed range
    elif kind == 4:
        return b""
    else:
        at = rng.integers(len(buf))
        del buf[at : at + rng.integers(1, 64)]  # a hole
    return bytes(buf)


def mutate_text(text: str, rng) -> str:
    lines = text.splitlines()
    kind = rng.integers(6)
    if not lines or kind == 5:
        return mutate_bytes(text.encode(), rng).decode("latin-1")
    i = int(rng.integers(len(lines)))
    if kind == 0:  # one token replaced
        fields = lines[i].split() or [""]
        fields[rng.integers(len(fields))] = TOKENS[rng.integers(len(TOKENS))]
        lines[i] = " ".join(fields)
    elif kind == 1:
        del lines[i]
    elif kind == 2:
        lines.insert(i, lines[i])
    elif kind == 3:
        j = int(rng.integers(len(lines)))
        lines[i], lines[j] = lines[j], lines[i]
    else:
        lines.insert(i, TOKENS[rng.integers(len(TOKENS))])
    return "\n".join(lines) + "\n"


def fuzz(name, seed_bytes: bytes, read, check, tmp_path, n, rng, text=False, suffix=""):
    """Feed `n` mutations of `seed_bytes` to `read(path)`; `check(result)` validates a clean result."""
    counts = {"inputs": 0, "clean results": 0, "clean errors": 0}
    crashes = []
    path = tmp_path / f"{name}{suffix}"
    for k in range(n):
        data = (
            mutate_text(seed_bytes.decode(), rng).encode("latin-1", "replace")
            if text
            else mutate_bytes(seed_bytes, rng)
        )
        path.write_bytes(data)
        counts["inputs"] += 1
        try:
            result = read(path)
        except USER_ERRORS as err:
            counts["clean errors"] += 1
            if str(path) not in str(err) and path.name not in str(err):
                crashes.append((k, f"error does not name the file: {type(err).__name__}: {err}"))
            continue
        except Exception as err:  # noqa: BLE001 - this is what the test looks for
            crashes.append((k, f"{type(err).__name__}: {err}"))
            continue
        problem = check(result)
        if problem:
            crashes.append((k, f"junk accepted: {problem}"))
        else:
            counts["clean results"] += 1
    print(f"\nfuzz {name}: {counts}, crashes {len(crashes)}")
    assert not crashes, crashes[:5]
    return counts


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _png_of_a_face() -> bytes:
    from PIL import Image

    image, _ = fixtures.placed_face(np.random.default_rng(3), 2, 1)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_of_a_photo() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()[::4, ::4]).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def check_image(img):
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
        return f"not (H, W, 3) uint8: {getattr(img, 'shape', type(img))}"
    if min(img.shape[:2]) < align.MIN_IMAGE_SIDE:
        return f"{img.shape} is below the minimum size"
    return None


def check_points(count):
    def check(points):
        if not (isinstance(points, np.ndarray) and points.shape == (count, 2) and np.all(np.isfinite(points))):
            return f"points {getattr(points, 'shape', points)}"
        return None

    return check


def test_mutated_images_decode_or_fail_by_name(tmp_path, rng):
    total = fuzz("face", _png_of_a_face(), align.load_image, check_image, tmp_path, 150, rng, suffix=".png")
    total2 = fuzz("photo", _jpeg_of_a_photo(), align.load_image, check_image, tmp_path, 150, rng, suffix=".jpg")
    assert total["clean errors"] > 0 and total2["clean errors"] > 0  # the mutations do break files


def test_mutated_ckplus_annotations_read_or_fail_by_name(tmp_path, rng):
    landmarks = "".join(f"   {10 + i:.7e}   {20 + 2 * i:.7e}\n" for i in range(68)).encode()
    fuzz(
        "S005_001_00000011_landmarks",
        landmarks,
        ckplus.read_landmarks,
        check_points(68),
        tmp_path,
        300,
        rng,
        text=True,
        suffix=".txt",
    )

    def check_code(code):
        return None if isinstance(code, int) and 1 <= code <= 7 else f"emotion code {code!r}"

    fuzz(
        "S005_001_00000011_emotion",
        b"   3.0000000e+00\n",
        ckplus.read_emotion,
        check_code,
        tmp_path,
        300,
        rng,
        text=True,
        suffix=".txt",
    )


def test_mutated_rafdb_annotations_read_or_fail_by_name(tmp_path, rng):
    root = tmp_path / "raf"
    fixtures.make_rafdb(root)
    label_file = next(root.rglob("list_patition_label.txt"))

    def check_labels(rows):
        for stem, split, label, line in rows:
            if split not in ("train", "test") or not 1 <= label <= 7 or not stem.startswith(split):
                return f"row {(stem, split, label, line)}"
        stems = [r[0] for r in rows]
        return "duplicate stems" if len(set(stems)) != len(stems) else None

    fuzz(
        "list_patition_label",
        label_file.read_bytes(),
        rafdb.read_labels,
        check_labels,
        tmp_path,
        300,
        rng,
        text=True,
        suffix=".txt",
    )
    manual = next(root.rglob("*_manu_attri.txt"))
    fuzz(
        "train_00001_manu_attri",
        manual.read_bytes(),
        rafdb.read_manual_landmarks,
        check_points(5),
        tmp_path,
        300,
        rng,
        text=True,
        suffix=".txt",
    )


def test_mutated_weight_files_load_or_fail_by_name(tmp_path, rng):
    """Keras .h5, torch zip and MatConvNet .mat of a small VGG16: a mutated file loads (all
    finite, right shapes) or is refused naming it; nothing in it is ever executed."""
    import jax
    from test_pretrained import model_params, source_weights, write_keras_vggface, write_matconvnet, write_pytorch

    from manet_jax.pretrained import load

    _, params = model_params("vgg")
    shapes = jax.tree.map(np.shape, params)

    def check(result):
        loaded, _ = result
        if jax.tree.map(np.shape, loaded) != shapes:
            return "shapes changed"
        if not all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(loaded)):
            return "non-finite weights accepted"
        return None

    writers = {
        ".h5": (write_keras_vggface, "keras"),
        ".pth": (write_pytorch, "pytorch"),
        ".mat": (write_matconvnet, "mcn"),
    }
    for suffix, (write, layout) in writers.items():
        seed_file = tmp_path / f"seed{suffix}"
        write(seed_file, source_weights(layout))
        fuzz(
            f"vgg_face{suffix.replace('.', '_')}",
            seed_file.read_bytes(),
            lambda p: load(params, p),
            check,
            tmp_path,
            60,
            rng,
            suffix=suffix,
        )


# ------------------------------------------------------------------------ fault injection
@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_ends_bit_identical(tmp_path, uninterrupted_run):
    """Four SIGKILLs in one tiny run, each followed by a resume: one early (start-up or data
    preparation), three when training has passed a random step, after a random extra delay
    (mid-step, mid-evaluation or while a checkpoint is written). The end is bit-identical to an
    uninterrupted run, and no temporary folder is left."""
    import json
    import os
    import signal
    import subprocess
    import time

    import jax
    from test_training import ROOT, _train_cmd

    from manet_jax.checkpoints import restore_params

    uninterrupted_run.start()  # trains beside the killed runs (or has, for an earlier test)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    killed = tmp_path / "killed"
    rng = np.random.default_rng(7)

    def last_step() -> int:
        try:
            lines = (killed / "metrics.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return 0
        steps = [json.loads(line)["step"] for line in lines[:-1] if '"loss"' in line]  # the last may be torn
        return max(steps, default=0)

    def run_until(reached) -> bool:
        proc = subprocess.Popen(
            _train_cmd(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        while proc.poll() is None and not reached():
            time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        return proc.wait() == -signal.SIGKILL

    early = time.time() + rng.uniform(1.0, 4.0)
    kills = [run_until(lambda: time.time() > early)]
    for target in sorted(rng.choice(np.arange(2, 12), size=3, replace=False)):
        delay = rng.uniform(0, 0.3)
        kills.append(run_until(lambda: last_step() >= target and (time.sleep(delay) or True)))  # noqa: B023
    final = subprocess.run(_train_cmd(killed), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    assert sum(kills) >= 3, kills
    whole = uninterrupted_run.finished()
    jax.tree.map(
        np.testing.assert_array_equal, restore_params(killed / "checkpoints"), restore_params(whole / "checkpoints")
    )
    assert not list(killed.rglob(".*.tmp-*"))  # killed preparations' leftovers were swept away


_FILL_SMALL_DISK = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from manet_jax.data import prepared
n, size = 120, 96  # 120 x 96 x 96 x 3 bytes = 3.3 MB of images
arrays = {"image": np.full((n, size, size, 3), 7, np.uint8), "landmarks8": np.zeros((n, 8, 2), np.float32),
          "label": np.zeros(n, np.int32), "subject_id": np.arange(n, dtype=np.int32)}
try:
    prepared.write_split(sys.argv[2], arrays, {"class_names": ["a"]})
except OSError as err:
    print("OSError:", err)
"""


def test_a_full_disk_while_preparing_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    """It used to die of SIGBUS (writes into a sparse memory map) and leave its temp folder.
    On a real 2 MB tmpfs when this test may mount one (root on Linux), else ENOSPC patched in."""
    import errno
    import subprocess
    import sys
    from pathlib import Path

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = (
        os.geteuid() == 0
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True
        ).returncode
        == 0
    )
    try:
        if mounted:
            out = subprocess.run(
                [sys.executable, "-c", _FILL_SMALL_DISK, str(Path(__file__).parents[1]), str(disk / "train")],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert out.returncode == 0, out.stderr[-2000:]  # not killed by SIGBUS
            message = out.stdout
        else:

            def no_space(*_):
                raise OSError(errno.ENOSPC, "No space left on device")

            monkeypatch.setattr(os, "posix_fallocate", no_space)
            with pytest.raises(OSError) as err:
                prepared.write_split(
                    disk / "train",
                    {
                        "image": np.zeros((4, 96, 96, 3), np.uint8),
                        "landmarks8": np.zeros((4, 8, 2), np.float32),
                        "label": np.zeros(4, np.int32),
                        "subject_id": np.zeros(4, np.int32),
                    },
                    {"class_names": ["a"]},
                )
            message = f"OSError: {err.value}"
        assert f"not enough disk space to prepare data in {disk}" in message and "MB free" in message
        assert list(disk.iterdir()) == []  # no split, no temporary folder
    finally:
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)


def test_a_second_writer_of_a_workdir_stops_at_once_naming_the_first(tmp_path):
    """The lock belongs to a live process; once it is gone (even killed) the workdir is free."""
    import socket

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; sys.path.insert(0, sys.argv[1]); from manet_jax import locking\n"
                "with locking.exclusive(sys.argv[2]):\n    print('locked', flush=True); time.sleep(120)"
            ),
            str(ROOT),
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        from test_training import tiny_config

        cfg = tiny_config()
        with pytest.raises(OSError, match=f"{tmp_path} is in use by process {holder.pid} on {socket.gethostname()}"):
            training.train_and_evaluate(cfg, tmp_path)
        cfg.model.variant = "hog_svm"  # the classical baseline takes the same lock
        with pytest.raises(OSError, match=f"{tmp_path} is in use by process {holder.pid}"):
            runs.train_and_evaluate(cfg, tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing else was touched
    finally:
        holder.kill()
        holder.wait()
    from manet_jax import locking

    with locking.exclusive(tmp_path) as lock:  # the killed holder's lock is free again
        assert lock.read_text() == f"{os.getpid()}@{socket.gethostname()}"
