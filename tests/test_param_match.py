"""param_match: the expected-vs-found tree report shared by checkpoint restore and weight import."""

import jax
import jax.numpy as jnp
import numpy as np

from manet_jax import param_match


def test_compare_names_every_differing_leaf_by_path():
    trace = {"trace": np.zeros(2, np.float32)}
    expected = {
        "fc8": {"kernel": jax.ShapeDtypeStruct((8, 10), jnp.float32)},
        "ma": {"w": np.zeros(3)},
        "opt": (trace,),
    }  # a tuple here, a list as orbax stores it: both are opt/0/trace
    found = {"fc8": {"kernel": np.zeros((8, 7), np.float32)}, "se": {"w": np.zeros(4, np.float32)}, "opt": [trace]}
    report = param_match.compare(expected, found)
    assert report
    assert report.mismatched == {"fc8/kernel": (((8, 7), np.dtype("float32")), ((8, 10), np.dtype("float32")))}
    assert report.missing == {"ma/w": ((3,), np.dtype("float64"))}
    assert report.unexpected == {"se/w": ((4,), np.dtype("float32"))}
    text = report.format("header:", found="file", max_listed=1)
    assert text.splitlines() == [
        "header:",
        "  mismatched (1):",
        "    fc8/kernel: file (8, 7) float32 vs expected (8, 10) float32",
        "  missing from file (1):",
        "    ma/w: expected (3,) float64",
        "  unexpected in file (1):",
        "    se/w: file (4,) float32",
    ]
    assert not param_match.compare(found, found)


def test_format_caps_each_section():
    report = param_match.compare({f"k{i}": np.zeros(1) for i in range(5)}, {})
    lines = report.format("h", max_listed=2).splitlines()
    assert lines == [
        "h",
        "  missing from checkpoint (5):",
        "    k0: expected (1,) float64",
        "    k1: expected (1,) float64",
        "    ... and 3 more",
    ]
