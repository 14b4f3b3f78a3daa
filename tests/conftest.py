"""Test set-up: CPU only, quiet TensorFlow, and a tiny model config shared by the tests."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402


@pytest.fixture
def tiny_model_config():
    """The smallest input RASnet's Table 1 allows (96) and a 1/16 width: compute is cheap."""
    from configs.default import get_config

    cfg = get_config().model
    cfg.input_size = 96
    cfg.width_multiplier = 1 / 16
    cfg.fc_units = 4096
    return cfg
