"""The tests' one tiny configuration, and the runs trained on it once per session.

`tiny_config` is configs/synthetic.py:tiny (96 px, width 1/16, 64 fc units, 40 + 21 synthetic
faces, batch 8), with a variant and `section.key` overrides, as `--config.section.key=` sets
them on the command line; `tiny_model_config` is its model part; `tiny_config_file` and
`train_py_command` hand the same to cv.py and train.py. Session fixtures (conftest.py) share the
runs: `tiny_run` trains each (variant, steps) once for the eval, predict, export and visualize
tests, which read it (a test that changes a run works on a copy, `TinyRun.copy_to`);
`uninterrupted_run` is the reference every kill-and-resume test ends bit-identical to.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# XLA with LLVM's optimisation off, for every test process and subprocess (conftest.py): the
# tests' networks are tiny, so compiling them is most of their cost, and at -O0 it is about half
# (tests/test_models.py + test_dynamics.py: 60 -> 33 s of CPU). Runs a test compares share it.
FAST_COMPILE = "--xla_backend_optimization_level=0"


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a subprocess with `devices` simulated CPU devices, compiling fast."""
    return f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}"


# What the shared runs add to the tiny config: 23 test faces leave a partial batch of 8.
SHARED_RUN = {"data.num_test": 23}


def tiny_config(variant: str = "manet", overrides: dict | None = None):
    """configs/synthetic.py:tiny with `model.variant` and `overrides` ({"train.stage2_steps": 2})."""
    from configs import synthetic

    config = synthetic.get_config("tiny")
    config.model.variant = variant
    for key, value in (overrides or {}).items():
        section, name = key.split(".")
        if name not in config[section]:
            raise KeyError(f"{key}: not a key of the config")  # a typo must not pass silently
        config[section][name] = value
    return config


def tiny_model_config(variant: str = "manet", **keys):
    """tiny_config(variant).model with `keys` set."""
    return tiny_config(variant, {f"model.{k}": v for k, v in keys.items()}).model


def tiny_config_file(path: Path, variant: str = "manet", overrides: dict | None = None) -> Path:
    """A config file (for cv.py, train.py --config=) whose get_config() is tiny_config(...)."""
    path = Path(path)
    path.write_text(
        f"import sys\n\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from tiny import tiny_config  # noqa: E402\n\n\n"
        f"def get_config():\n    return tiny_config({variant!r}, {dict(overrides or {})!r})\n"
    )
    return path


@dataclasses.dataclass(frozen=True)
class TinyRun:
    """A finished tiny run: its config, its workdir (read it, do not change it), train.py's result."""

    config: object
    workdir: Path
    final: dict

    def copy_to(self, directory: Path) -> Path:
        """A private copy of the workdir, for a test that changes what it finds there."""
        shutil.copytree(self.workdir, directory)
        return Path(directory)


class TinyRuns:
    """tiny_run(variant, steps): each (variant, (stage-1 steps, stage-2 steps)) trained once."""

    def __init__(self, tmp_path_factory):
        self._factory, self._runs = tmp_path_factory, {}

    def __call__(self, variant: str = "manet", steps: tuple[int, int] = (2, 2)) -> TinyRun:
        key = (variant, tuple(steps))
        if key not in self._runs:
            from manet_jax import training

            overrides = {**SHARED_RUN, "train.stage1_steps": steps[0], "train.stage2_steps": steps[1]}
            config = tiny_config(variant, overrides)
            workdir = self._factory.mktemp(f"tiny_run_{variant}_{steps[0]}_{steps[1]}")
            final = training.train_and_evaluate(config, workdir)
            self._runs[key] = TinyRun(config, workdir, final)
        return self._runs[key]


def train_py_command(workdir: Path, overrides: dict | None = None) -> list[str]:
    """train.py on configs/synthetic.py:tiny with `overrides` as --config.section.key= flags."""
    flags = [f"--config.{key}={value}" for key, value in (overrides or {}).items()]
    return [sys.executable, "train.py", "--config=configs/synthetic.py:tiny", f"--workdir={workdir}", *flags]


# The run that kill-and-resume tests interrupt: 6 + 6 steps, a checkpoint every 2, wider heads.
KILLED_RUN = {
    "model.fc_units": 512,
    "model.rasnet_hidden_units": 2048,
    "data.num_test": 16,
    "train.stage1_steps": 6,
    "train.stage2_steps": 6,
    "train.checkpoint_every": 2,
    "train.eval_every": 6,
    "train.stage1_learning_rate": 1e-4,
    "train.stage2_learning_rate": 1e-3,
}


class UninterruptedRun:
    """KILLED_RUN trained by train.py without a kill: what every killed-and-resumed run must end
    bit-identical to. Started once, in the background, by the first test that needs it (so it
    trains while that test kills and resumes its own), and shared by the others."""

    def __init__(self, workdir: Path):
        self.workdir, self._proc, self._log = Path(workdir), None, Path(workdir).with_suffix(".log")

    def start(self) -> None:
        if self._proc is None:
            env = {**os.environ, "JAX_PLATFORMS": "cpu"}
            with open(self._log, "w") as log:
                self._proc = subprocess.Popen(
                    train_py_command(self.workdir, KILLED_RUN), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )

    def finished(self, timeout: float = 600) -> Path:
        """The workdir, once train.py has exited 0."""
        self.start()
        rc = self._proc.wait(timeout=timeout)
        assert rc == 0, f"the uninterrupted run exited {rc}:\n{self._log.read_text()[-3000:]}"
        return self.workdir

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
