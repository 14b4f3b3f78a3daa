"""Run by test_multihost.py (and bench/multihost.py): one process of a run, as its CLI runs it.

    python tests/_multihost_run.py WRITES_FILE SCRIPT [ARGS...]

Records every file under --workdir that this process opens for writing, creates or renames
(Python audit hooks; what tensorstore writes inside checkpoints from C++ is not seen) as one
line each in WRITES_FILE, then runs SCRIPT (train.py, eval.py, cv.py) as __main__ with ARGS.
The device count comes from XLA_FLAGS, set by the caller.
"""

import os
import runpy
import sys

records_path, script, *args = sys.argv[1:]
workdir = next((a.split("=", 1)[1] for a in args if a.startswith(("--workdir=", "--root="))), None)
workdir = os.path.abspath(workdir) + os.sep if workdir else None
records = open(records_path, "w", buffering=1)  # noqa: SIM115  (open before the hook: never recorded)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def record(event, event_args):
    if workdir is None:
        return
    if event == "open":
        path, mode, flags = event_args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
        paths = [path] if writes else []
    elif event in ("os.rename", "os.replace", "os.mkdir", "os.remove", "os.rmdir"):
        paths = [a for a in event_args[:2] if isinstance(a, (str, bytes, os.PathLike))]
    else:
        return
    for path in paths:
        if isinstance(path, int):
            continue
        path = os.path.abspath(os.fsdecode(path))
        if path.startswith(workdir):
            records.write(f"{event}\t{path[len(workdir) :]}\n")


sys.addaudithook(record)
sys.argv = [script, *args]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
runpy.run_path(script, run_name="__main__")
