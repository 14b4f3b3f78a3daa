"""Compare an expected tree of arrays with a found one, by key path, shape and dtype.

One report for every place that loads weights onto a model (checkpoint restore, weight
import), so a wrong variant, class count or width is named leaf by leaf, not as a crash.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

Spec = tuple[tuple[int, ...], Any]  # (shape, dtype) of one leaf


def path_str(path) -> str:
    """'params/ersnet/fc8/kernel': the jax key path as orbax and people write it."""
    return jax.tree_util.keystr(tuple(path), simple=True, separator="/")


def spec(leaf: Any) -> Spec:
    """(shape, dtype) of an array, ShapeDtypeStruct or orbax ArrayMetadata."""
    shape = getattr(leaf, "shape", None)
    dtype = getattr(leaf, "dtype", None)
    shape = np.shape(leaf) if shape is None else shape
    return tuple(int(d) for d in shape), np.result_type(leaf) if dtype is None else np.dtype(dtype)


def specs(tree: Any) -> dict[str, Spec]:
    return {path_str(p): spec(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@dataclasses.dataclass
class Report:
    """mismatched: {path: (found, expected)}; missing: {path: expected}; unexpected: {path: found}."""

    mismatched: dict[str, tuple[Spec, Spec]]
    missing: dict[str, Spec]
    unexpected: dict[str, Spec]

    def __bool__(self) -> bool:
        return bool(self.mismatched or self.missing or self.unexpected)

    def format(self, header: str, found: str = "checkpoint", max_listed: int = 40) -> str:
        """The header, then one line per differing leaf, at most max_listed per section."""

        def fmt(s: Spec) -> str:
            return f"{s[0]} {s[1]}"

        sections = [
            ("mismatched", [f"{p}: {found} {fmt(f)} vs expected {fmt(e)}" for p, (f, e) in self.mismatched.items()]),
            (f"missing from {found}", [f"{p}: expected {fmt(e)}" for p, e in self.missing.items()]),
            (f"unexpected in {found}", [f"{p}: {found} {fmt(f)}" for p, f in self.unexpected.items()]),
        ]
        lines = [header]
        for title, entries in sections:
            if entries:
                lines.append(f"  {title} ({len(entries)}):")
                lines += [f"    {e}" for e in sorted(entries)[:max_listed]]
                lines += [f"    ... and {len(entries) - max_listed} more"] if len(entries) > max_listed else []
        return "\n".join(lines)


def compare(expected: Any, found: Any) -> Report:
    """Leaf-by-leaf difference of two trees (arrays, ShapeDtypeStructs or orbax metadata)."""
    want, have = specs(expected), specs(found)
    return Report(
        mismatched={p: (have[p], e) for p, e in want.items() if p in have and have[p] != e},
        missing={p: e for p, e in want.items() if p not in have},
        unexpected={p: f for p, f in have.items() if p not in want},
    )


def refuse_prng_keys(tree: Any, what: str) -> None:
    """A TypeError naming every PRNG key object of ``tree`` (orbax cannot save them; key_data can)."""
    bad = [
        path_str(p)
        for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]
        if jax.dtypes.issubdtype(getattr(x, "dtype", np.float32), jax.dtypes.prng_key)
    ]
    if bad:
        raise TypeError(
            f"{what} holds PRNG key object(s) at {', '.join(bad)}: save jax.random.key_data(key) "
            "(uint32) and rebuild the key with jax.random.wrap_key_data after restoring."
        )


def jsonable(tree: Mapping, name: str) -> dict:
    """A plain-JSON copy (numpy/jax numbers become Python ones); a TypeError names the entry."""

    def plain(path, x):
        where = f"{name}/{path_str(path)}"
        if not all(isinstance(getattr(k, "key", ""), str) for k in path):
            raise TypeError(f"{where}: JSON keys must be strings.")
        if isinstance(x, (np.ndarray, np.generic, jax.Array)):
            return np.asarray(x).tolist()
        if isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"{where}: a {type(x).__name__} is not JSON (use dicts, lists, str, numbers, bool, None).")

    return jax.tree_util.tree_map_with_path(plain, dict(tree))


def abstract(tree: Any) -> Any:
    """ShapeDtypeStructs on the leaf's own sharding, else on the first local device."""
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    own = lambda x: x.sharding if isinstance(getattr(x, "sharding", None), jax.sharding.Sharding) else default  # noqa: E731
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(*spec(x), sharding=own(x)), tree)
