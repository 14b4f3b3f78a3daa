"""Test set-up: CPU only, quiet TensorFlow, one compilation cache, the tiny config and runs (tiny.py)."""

import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# One persistent XLA compilation cache for the session, shared by this process and every
# subprocess it starts (train.py, cv.py, notebooks): the same tiny networks are compiled in many
# tests (a tiny run: 4.9 s, 1.8 s with its executables cached). Every executable is kept, however
# fast it compiled. Fresh per session, so no test depends on files of an earlier session.
# pytest-xdist's workers inherit the controller's cache; only the controller removes it.
_OWN_CACHE = "MANET_JAX_TESTS_XLA_CACHE" not in os.environ
if _OWN_CACHE:
    os.environ["MANET_JAX_TESTS_XLA_CACHE"] = tempfile.mkdtemp(prefix="manet_jax_tests_xla_")
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ["MANET_JAX_TESTS_XLA_CACHE"]
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

import pytest  # noqa: E402
import tiny  # noqa: E402

if tiny.FAST_COMPILE not in os.environ.get("XLA_FLAGS", ""):  # before any test imports JAX
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {tiny.FAST_COMPILE}".strip()


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(os.environ["MANET_JAX_TESTS_XLA_CACHE"], ignore_errors=True)


@pytest.fixture
def tiny_model_config():
    """tiny.tiny_model_config(): the 96 px (the least RASnet's Table 1 allows), 1/16-width model."""
    return tiny.tiny_model_config()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """tiny_run(variant="manet", steps=(2, 2)) -> tiny.TinyRun, trained once per session and shared."""
    return tiny.TinyRuns(tmp_path_factory)


@pytest.fixture(scope="session")
def uninterrupted_run(tmp_path_factory):
    """tiny.UninterruptedRun: the reference the kill-and-resume tests end bit-identical to."""
    run = tiny.UninterruptedRun(tmp_path_factory.mktemp("uninterrupted") / "run")
    yield run
    run.stop()


# Under pytest-xdist (two workers, a file at a time each) the longest files go first, so that
# no long file is left to run alone at the end while the other worker idles.
LONGEST_FIRST = ("test_notebooks.py", "test_crossval.py", "test_multihost.py", "test_fuzz.py", "test_training.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
