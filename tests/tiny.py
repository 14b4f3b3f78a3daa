"""The tests' one tiny configuration, and the runs trained on it once per session.

`tiny_config` is configs/synthetic.py:tiny (96 px, width 1/16, 64 fc units, 40 + 21 synthetic
faces, batch 8), with a variant and `section.key` overrides, as `--config.section.key=` sets
them on the command line; `tiny_model_config` is its model part; `tiny_config_file` writes the
same for cv.py and train.py. `TinyRuns` (conftest's session fixture `tiny_run`) trains each
(variant, steps) once and hands the same run to the eval, predict, export and visualize tests:
they read it, and a test that changes a run works on a copy (`TinyRun.copy_to`).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

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
        "from configs import synthetic\n\n\n"
        "def get_config():\n"
        '    c = synthetic.get_config("tiny")\n'
        f"    c.model.variant = {variant!r}\n"
        f"    for key, value in {dict(overrides or {})!r}.items():\n"
        '        section, name = key.split(".")\n'
        "        c[section][name] = value\n"
        "    return c\n"
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
