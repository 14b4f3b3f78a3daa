"""The Colab notebooks in notebooks/, executed top to bottom on CPU as CI.

Each notebook has one cell tagged `parameters`; the test inserts a cell after it that sets
SMOKE = True, points the data paths at the fixture trees of tests/fixtures.py (standing in
for the user's CK+ / RAF-DB) and the run folders at tmp_path. The kernel sees 8 CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8), as a v2-8/v3-8 TPU has 8 cores, and
imports this worktree's package (PYTHONPATH). Any cell error fails the test.
"""

import json
import os
import re
import time
from pathlib import Path

import fixtures
import nbformat
import pytest
import tiny
from nbclient import NotebookClient

import manet_jax

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("quickstart.ipynb", "ckplus_tpu.ipynb", "raf_tpu.ipynb")
PLACEHOLDER_URL = "https://github.com/YOUR-GITHUB-OWNER/manet-jax"  # see notebooks/README.md


def _read(name):
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def _source(nb) -> str:
    return "\n".join(cell.source for cell in nb.cells)


def test_every_notebook_is_tested_and_listed_with_a_colab_badge():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)
    readme = (ROOT / "README.md").read_text()
    repo = PLACEHOLDER_URL.removeprefix("https://github.com/")
    for name in NAMES:
        link = f"https://colab.research.google.com/github/{repo}/blob/main/notebooks/{name}"
        assert link in readme, name
        assert link in _read(name).cells[0].source, name


def test_committed_notebooks_carry_no_outputs_and_pin_one_install():
    for name in NAMES:
        nb = _read(name)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs not stripped"
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name}: exactly one cell tagged 'parameters'"
        assert "SMOKE = False" in tagged[0].source, name
        source = _source(nb)
        assert f'REPO_URL = "{PLACEHOLDER_URL}"' in source, name
        # The pinned tag follows the package version (bump both; tag the release).
        assert re.search(r'PIN = "([^"]+)"', source).group(1) == f"v{manet_jax.__version__}", name
        assert "setup_tpu" not in source  # jax.tools.colab_tpu is gone; TPU VMs need no set-up call


def _execute(name: str, tmp_path: Path, monkeypatch, **overrides) -> nbformat.NotebookNode:
    nb = _read(name)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{key} = {value!r}" for key, value in {"SMOKE": True, **overrides}.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    monkeypatch.setenv("XLA_FLAGS", tiny.xla_flags(8))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    client = NotebookClient(nb, kernel_name="python3", timeout=900, resources={"metadata": {"path": str(tmp_path)}})
    start = time.time()
    client.execute()
    print(f"{name}: executed in {time.time() - start:.0f}s")  # the smoke time (pytest -s shows it)
    return nb


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            out.append(o.get("text", "") or data.get("text/markdown", "") or data.get("text/plain", ""))
    return "\n".join(out)


@pytest.mark.slow
def test_quickstart_runs_on_eight_devices(tmp_path, monkeypatch):
    nb = _execute("quickstart.ipynb", tmp_path, monkeypatch, WORKDIR=str(tmp_path / "run"))
    text = _text(nb)
    assert "8 devices" in text and "batch 8 over 8 devices" in text
    run = tmp_path / "run"
    assert (run / "metrics.jsonl").is_file() and (run / "eval" / "pictures.png").is_file()
    assert json.loads((run / "eval" / "metrics.json").read_text())["num_examples"] == 21
    assert "max |difference| to Run.predict" in text
    assert re.search(r"^\(\d+, \d+, \d+, \d+\) \w+ \(\d\.\d\d\)$", text, re.M)  # the astronaut's face
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # curves, confusion matrix, pictures, the annotated photo


@pytest.mark.slow
def test_ckplus_notebook_runs_the_folds_on_the_fixture_and_resumes(tmp_path, monkeypatch):
    fixtures.make_ckplus(tmp_path / "CK+")
    nb = _execute(
        "ckplus_tpu.ipynb",
        tmp_path,
        monkeypatch,
        CKPLUS_DIR=str(tmp_path / "CK+"),
        ROOT=str(tmp_path / "ck_cv"),
        FOLDS="1",
    )
    summary = json.loads((tmp_path / "ck_cv" / "cv_summary.json").read_text())
    assert list(summary["variants"]) == ["manet", "vgg", "vgg_se"]
    assert all(v["folds"] == [1] for v in summary["variants"].values())
    text = _text(nb)
    assert "trained again: none" in text and "96.28" in text


@pytest.mark.slow
def test_raf_notebook_makes_its_own_fixture_and_trains_on_it(tmp_path, monkeypatch):
    # RAF_DIR = '' in SMOKE mode: the notebook builds tests/fixtures.py's tree itself (as it does in Colab).
    nb = _execute("raf_tpu.ipynb", tmp_path, monkeypatch, RAF_DIR="", WORKDIR=str(tmp_path / "raf"))
    assert (tmp_path / "rafdb_fixture" / "basic" / "EmoLabel" / "list_patition_label.txt").is_file()
    (report,) = (tmp_path / "raf" / "eval").glob("metrics_step*.json")  # the last checkpoint's
    metrics = json.loads(report.read_text())
    assert metrics["num_examples"] == 7 and metrics["step"] == 8
    assert "85.69" in _text(nb)
