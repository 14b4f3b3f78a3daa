"""The command-line tools: a user's mistake is one line naming the key or file, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_unknown_config_key_is_one_line_naming_it(tmp_path):
    out = run("train.py", "--config=configs/synthetic.py", f"--workdir={tmp_path / 'w'}", "--config.train.foo=1")
    assert out.returncode == 1
    assert "config.train.foo is not a key of the config" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "w").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "flag, says",
    [
        ("--step=abc", "--step must be 'best', 'latest' or a step number"),
        ("--batch_size=0", "0 is not a positive integer"),
    ],
)
def test_eval_flags_are_checked_before_anything_runs(tmp_path, flag, says):
    out = run("eval.py", f"--workdir={tmp_path}", flag)
    assert out.returncode != 0 and says in out.stderr and "Traceback" not in out.stderr


def test_project_errors_are_one_line_and_verbosity_shows_the_traceback(tmp_path):
    missing = tmp_path / "nowhere"
    out = run("eval.py", f"--workdir={missing}")
    assert out.returncode == 1
    assert f"error: {missing} has no config.json" in out.stderr and "Traceback" not in out.stderr
    verbose = run("eval.py", f"--workdir={missing}", "--verbosity=1")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr
