"""The CPUs this process may run on: what tf.data's workers and cv.py --jobs size themselves to.

os.sched_getaffinity sees a pin (taskset, cv.py --jobs workers); os.cpu_count does not, so
it is only the fallback where the OS has no affinity (macOS).
"""

from __future__ import annotations

import os


def usable() -> list[int]:
    """Sorted ids of the CPUs this process may run on (never empty)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def can_pin() -> bool:
    """Whether a child process can be pinned to some CPUs (os.sched_setaffinity)."""
    return hasattr(os, "sched_setaffinity")
