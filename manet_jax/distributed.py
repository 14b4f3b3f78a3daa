"""Several processes, one run: JAX's multi-controller runtime (jax.distributed), started once.

Every process of a multi-host run (a TPU pod slice, GPU nodes under SLURM, a Kubernetes
JobSet, or processes on one machine) runs the same command; `initialize` connects them before
any other JAX call. It starts only when asked by the flags (named as jax.distributed.initialize's
arguments: --coordinator_address, --num_processes, --process_id, --local_device_ids) or when the
environment is a cluster of more than one process that JAX detects (Cloud TPU pod slice, SLURM
with more than one task, Open MPI, a Kubernetes Indexed Job/JobSet): never on a single host, so
`python train.py --config=... --workdir=...` stays one ordinary process. A second call is a
no-op. Contradictory flags are refused while they are parsed, naming the flag.

Faults. The coordination service runs in recoverable mode and each process watches it: when a
process dies (kill -9, a lost host) or exits on an error of its own, the others notice within
--heartbeat_timeout_seconds (at once for an exit), print one line naming it, remove the
checkpoint step that was being saved (process 0), and exit with EXIT_PEER_LOST; re-running the
same command on every process resumes from the last complete checkpoint. When process 0 (the
coordinator) dies, JAX itself stops the others at once ("Failed to send RPC to coordination
service"). A normal end passes a last barrier, then the processes leave in order (process 0,
which hosts the service, last).

Writes: process 0 alone writes logs, metrics, reports and checkpoint manifests; `main_first`
lets process 0 prepare the data while the others wait (with a timeout and a clear error).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from absl import flags

EXIT_PEER_LOST = 75  # EX_TEMPFAIL: re-run the same command to resume
DEFAULT_HEARTBEAT_TIMEOUT_S = 100  # jax.distributed.initialize's default
DEFAULT_INITIALIZATION_TIMEOUT_S = 300
DEFAULT_PREPARE_TIMEOUT_S = 4 * 3600
FLAG_NAMES = (
    "coordinator_address",
    "num_processes",
    "process_id",
    "local_device_ids",
    "initialization_timeout",
    "heartbeat_timeout_seconds",
    "prepare_timeout_seconds",
)


class ProcessFailed(OSError):
    """Another process of the run failed at a step this one waits for, or never finished it."""


@dataclass
class _State:
    decided: bool = False  # initialize ran (whatever it decided)
    active: bool = False  # this process is one of several
    process_id: int = 0
    num_processes: int = 1
    coordinator: str = ""
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT_S
    prepare_timeout: float = DEFAULT_PREPARE_TIMEOUT_S
    barriers: int = 0
    finished: bool = False
    watchdog: threading.Thread | None = None
    stop: threading.Event | None = None
    cleanups: list | None = None


_STATE = _State()
_LOCK = threading.Lock()
_STOPPING = threading.Lock()  # one report of a lost process, whichever thread finds it first


# ----------------------------------------------------------------------------- flags
def define_flags() -> None:
    """The start-up flags, named as jax.distributed.initialize's arguments; checked when parsed."""
    flags.DEFINE_string(
        "coordinator_address",
        None,
        "host:port of process 0, where the others connect (jax.distributed.initialize); with --num_processes "
        "and --process_id. Unset: several processes only in a cluster JAX detects (Cloud TPU pod slice, "
        "SLURM with more than one task, Open MPI, Kubernetes Indexed Job); a single host stays one process.",
    )
    flags.DEFINE_integer("num_processes", None, "How many processes take part (1: one process, never initialise).")
    flags.DEFINE_integer("process_id", None, "This process's rank, 0 .. --num_processes - 1 (0 coordinates).")
    flags.DEFINE_list(
        "local_device_ids", None, "Comma-separated ids of the local GPUs this process uses (default: all it sees)."
    )
    flags.DEFINE_integer(
        "initialization_timeout",
        DEFAULT_INITIALIZATION_TIMEOUT_S,
        "Seconds each process waits for all of them to connect.",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "heartbeat_timeout_seconds",
        DEFAULT_HEARTBEAT_TIMEOUT_S,
        f"A process silent this long is lost: the others stop (exit {EXIT_PEER_LOST}) naming it.",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "prepare_timeout_seconds",
        DEFAULT_PREPARE_TIMEOUT_S,
        "How long the other processes wait for process 0 to prepare the data (first run of a data set).",
        lower_bound=1,
    )

    def check(values: dict) -> bool:
        problem = flag_problem(
            values["coordinator_address"], values["num_processes"], values["process_id"], values["local_device_ids"]
        )
        if problem:
            raise flags.ValidationError(problem)
        return True

    flags.register_multi_flags_validator(
        ["coordinator_address", "num_processes", "process_id", "local_device_ids"], check
    )


def flag_problem(coordinator_address, num_processes, process_id, local_device_ids=None) -> str | None:
    """What contradicts in the start-up flags (one line naming the flag), or None."""
    if num_processes is not None and num_processes < 1:
        return f"--num_processes must be >= 1, got {num_processes}"
    if process_id is not None and process_id < 0:
        return f"--process_id must be >= 0, got {process_id}"
    if process_id is not None and num_processes is not None and process_id >= num_processes:
        return (
            f"--process_id={process_id} must be < --num_processes={num_processes} "
            f"(the processes are numbered 0..{num_processes - 1})"
        )
    cluster = cluster_env_present()
    if coordinator_address is not None:
        if num_processes is None:
            return f"--coordinator_address={coordinator_address} needs --num_processes (how many processes take part)"
        host, _, port = coordinator_address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            return f"--coordinator_address must be host:port (e.g. 10.0.0.2:1234), got {coordinator_address!r}"
    if num_processes is not None and num_processes > 1 and not cluster:
        if coordinator_address is None:
            return f"--num_processes={num_processes} needs --coordinator_address (host:port of process 0)"
        if process_id is None:
            return f"--num_processes={num_processes} needs --process_id (0..{num_processes - 1}: this process's rank)"
    if process_id is not None and num_processes is None and not cluster:
        return f"--process_id={process_id} needs --num_processes and --coordinator_address"
    for value in local_device_ids or ():
        if not str(value).strip().isdigit():
            return f"--local_device_ids must be device numbers separated by commas, got {','.join(local_device_ids)}"
    return None


def initialize_from_flags() -> bool:
    """`initialize` with the flags of define_flags (plus train.py's --distributed when defined)."""
    f = flags.FLAGS
    return initialize(
        f.coordinator_address,
        f.num_processes,
        f.process_id,
        [int(v) for v in f.local_device_ids] if f.local_device_ids else None,
        initialization_timeout=f.initialization_timeout,
        heartbeat_timeout_seconds=f.heartbeat_timeout_seconds,
        prepare_timeout_seconds=f.prepare_timeout_seconds,
        force="distributed" in f and f["distributed"].value,
    )


# ---------------------------------------------------------------- cluster detection
def cluster_env_present() -> bool:
    """Whether the environment names a cluster that could fill in the flags left out (no network)."""
    env = os.environ
    return bool(
        ("SLURM_JOB_ID" in env and "SLURM_PROCID" in env)
        or "OMPI_MCA_orte_hnp_uri" in env
        or "OMPI_COMM_WORLD_SIZE" in env
        or env.get("TPU_WORKER_HOSTNAMES")
        or env.get("TPU_PROCESS_ADDRESSES")
        or env.get("MEGASCALE_COORDINATOR_ADDRESS")
        or ("KUBERNETES_SERVICE_HOST" in env and "JOB_COMPLETION_INDEX" in env)
    )


def detect_cluster(log=print) -> tuple[str | None, int] | None:
    """(jax's cluster_detection_method, process count) of a multi-process cluster JAX can
    bootstrap from, or None: a single host, or a cluster of one process. Asks JAX's own
    detectors (the same ones jax.distributed.initialize() uses), in its order."""
    env = os.environ
    try:
        from jax._src.clusters import cloud_tpu_cluster, k8s_cluster, ompi_cluster, slurm_cluster
    except ImportError:  # another JAX layout: only the flags start several processes
        return None
    candidates = []
    if cloud_tpu_cluster.running_in_cloud_tpu_vm:  # set at `import jax` on a TPU VM
        candidates += [cloud_tpu_cluster.GkeTpuCluster, cloud_tpu_cluster.GceTpuCluster]
    if "KUBERNETES_SERVICE_HOST" in env and "JOB_COMPLETION_INDEX" in env:
        candidates.append(k8s_cluster.K8sCluster)
    candidates += [ompi_cluster.OmpiCluster, slurm_cluster.SlurmCluster]
    for cluster in candidates:
        name = getattr(cluster, "name", "") or None  # K8sCluster has none: JAX finds it itself
        try:
            if not cluster.is_env_present():
                continue
            count = int(cluster.get_process_count())
        except Exception as err:  # noqa: BLE001  (metadata server, Kubernetes API: report, stay single)
            log(f"distributed: {cluster.__name__} detected but its process count is unknown ({err}); one process")
            continue
        return (name, count) if count > 1 else None
    if "KUBERNETES_SERVICE_HOST" in env and "JOB_COMPLETION_INDEX" in env:
        log(
            "distributed: a Kubernetes Indexed Job, but JAX cannot read its size (pip install 'jax[k8s]', or pass "
            "--coordinator_address, --num_processes and --process_id); training as one process"
        )
    return None


# ------------------------------------------------------------------------ start-up
def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids=None,
    *,
    initialization_timeout: int = DEFAULT_INITIALIZATION_TIMEOUT_S,
    heartbeat_timeout_seconds: int = DEFAULT_HEARTBEAT_TIMEOUT_S,
    prepare_timeout_seconds: int = DEFAULT_PREPARE_TIMEOUT_S,
    force: bool = False,
    log=print,
) -> bool:
    """Connect this process to the others (jax.distributed.initialize) when the arguments or a
    detected cluster say there are several; True then. Call it before any other JAX call; a
    second call returns the first one's answer. `force`: initialise with JAX's own detection
    even where none is seen here (train.py --distributed)."""
    with _LOCK:
        if _STATE.decided:
            return _STATE.active
        problem = flag_problem(coordinator_address, num_processes, process_id, local_device_ids)
        if problem:
            raise ValueError(problem)
        from jax._src import distributed as jax_distributed

        if jax_distributed.global_state.client is not None:  # the caller initialised JAX itself: use that
            return _adopt(heartbeat_timeout_seconds, prepare_timeout_seconds)
        explicit = coordinator_address is not None or process_id is not None or num_processes is not None
        method = None
        if explicit and num_processes == 1:
            _STATE.decided = True
            return False
        if not explicit and not force:
            found = detect_cluster(log)
            if found is None:
                _STATE.decided = True
                return False
            method, _ = found
        import jax

        jax.config.update("jax_enable_recoverability", True)  # a lost process is ours to report (see the docstring)
        bind = _loopback_bind_address(coordinator_address)
        try:
            jax.distributed.initialize(
                coordinator_address=coordinator_address,
                num_processes=num_processes,
                process_id=process_id,
                local_device_ids=local_device_ids,
                cluster_detection_method=method,
                initialization_timeout=int(initialization_timeout),
                heartbeat_timeout_seconds=int(heartbeat_timeout_seconds),
                shutdown_timeout_seconds=int(heartbeat_timeout_seconds),
                coordinator_bind_address=bind,
            )
        except Exception as err:  # noqa: BLE001  (XlaRuntimeError, ValueError from detection)
            where = coordinator_address or "the detected coordinator"
            raise ProcessFailed(
                f"process {process_id if process_id is not None else '?'} could not join the run at {where} "
                f"within --initialization_timeout={initialization_timeout} s (is every process started, and the "
                f"address process 0's?): {str(err).splitlines()[0] if str(err) else type(err).__name__}"
            ) from None
        _STATE.decided = True
        _STATE.process_id, _STATE.num_processes = jax.process_index(), jax.process_count()
        _STATE.active = _STATE.num_processes > 1
        _STATE.coordinator = coordinator_address or f"{method or 'cluster'} coordinator"
        _STATE.heartbeat_timeout = float(heartbeat_timeout_seconds)
        _STATE.prepare_timeout = float(prepare_timeout_seconds)
        _STATE.cleanups = []
        if not _STATE.active:
            return False
        _client().key_value_set(_key("who", _STATE.process_id), f"pid {os.getpid()} on {socket.gethostname()}")
        _start_watchdog()
    n, me = _STATE.num_processes, _STATE.process_id
    devices = f"{jax.local_device_count()} of {jax.device_count()} {jax.default_backend()} devices"
    if me == 0:
        print(f"distributed: process 0 of {n} ({devices}), coordinating at {_STATE.coordinator}", flush=True)
    else:
        print(
            f"distributed: process {me} of {n} (pid {os.getpid()} on {socket.gethostname()}, {devices}); process 0 "
            "writes the logs, metrics, reports and checkpoint manifests, this one prints only its errors",
            flush=True,
        )
    return True


def _adopt(heartbeat_timeout_seconds: float, prepare_timeout_seconds: float) -> bool:
    """State for a runtime someone else started (no watchdog: its faults are JAX's to report)."""
    import jax

    _STATE.decided = True
    _STATE.process_id, _STATE.num_processes = jax.process_index(), jax.process_count()
    _STATE.active = _STATE.num_processes > 1
    _STATE.heartbeat_timeout, _STATE.prepare_timeout = float(heartbeat_timeout_seconds), float(prepare_timeout_seconds)
    _STATE.cleanups = []
    return _STATE.active


def _loopback_bind_address(address: str | None) -> str | None:
    """Bind the coordinator to the address itself when it is a loopback one (JAX binds all
    interfaces otherwise); None leaves JAX's default (or JAX_COORDINATOR_BIND_ADDRESS)."""
    if not address:
        return None
    host = address.rpartition(":")[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return address if loopback else None


def is_active() -> bool:
    """This process is one of several (initialize connected it)."""
    return _STATE.active


def is_main() -> bool:
    """Process 0 (or the only one): the one that writes."""
    return _STATE.process_id == 0


# ------------------------------------------------------------------ synchronisation
def _client():
    from jax._src import distributed as jax_distributed

    return jax_distributed.global_state.client


def _key(*parts) -> str:
    return "manet_jax/" + "/".join(str(p) for p in parts)


def barrier(name: str, timeout_s: float | None = None) -> None:
    """Every process waits here for the others (a no-op for one process). Barriers are numbered
    in call order, which every process shares; a lost process is reported by the watchdog."""
    if not _STATE.active:
        return
    _STATE.barriers += 1
    timeout = timeout_s if timeout_s is not None else max(3600.0, 3 * _STATE.heartbeat_timeout)
    _client().wait_at_barrier(_key("barrier", _STATE.barriers, name), int(timeout * 1000))


def main_first(fn: Callable[[bool], object], what: str, timeout_s: float | None = None):
    """fn(True) on process 0; the others wait for it to finish (`what`, e.g. 'prepare the data'),
    then call fn(False). One process: fn(True). Process 0's error is raised on every process;
    a process that waited `timeout_s` (--prepare_timeout_seconds) in vain raises ProcessFailed."""
    if not _STATE.active:
        return fn(True)
    _STATE.barriers += 1
    key = _key("main_first", _STATE.barriers)
    if _STATE.process_id == 0:
        try:
            result = fn(True)
        except BaseException as err:
            _client().key_value_set(key, f"error: {type(err).__name__}: {err}")
            raise
        _client().key_value_set(key, "ok")
        return result
    timeout = _STATE.prepare_timeout if timeout_s is None else timeout_s
    try:
        status = _client().blocking_key_value_get(key, int(timeout * 1000))
    except Exception as err:  # noqa: BLE001  (DEADLINE_EXCEEDED)
        raise ProcessFailed(
            f"process {_STATE.process_id} waited {timeout:.0f} s for process 0 to {what} "
            f"(--prepare_timeout_seconds), in vain ({str(err).splitlines()[0]})"
        ) from None
    if status != "ok":
        raise ProcessFailed(f"process 0 could not {what}: {status.removeprefix('error: ')}")
    return fn(False)


@contextlib.contextmanager
def cleanup_if_lost(fn: Callable[[], None]) -> Iterator[None]:
    """Run fn() (process 0 only) if a lost process stops the run inside the block, e.g. to remove
    the checkpoint step being saved."""
    if not _STATE.active or _STATE.process_id != 0:
        yield
        return
    _STATE.cleanups.append(fn)
    try:
        yield
    finally:
        _STATE.cleanups.remove(fn)


# --------------------------------------------------------------------------- faults
def lost_processes() -> list[int]:
    """The processes the coordination service no longer sees (heartbeats missed, or gone); [0]
    when the service itself (process 0) cannot be reached."""
    try:
        live = _client().get_live_nodes(list(range(_STATE.num_processes)))
    except Exception:  # noqa: BLE001
        return [0] if _STATE.process_id != 0 else []
    return [p for p in range(_STATE.num_processes) if p not in live]


def _who(process: int) -> str:
    try:
        found = _client().key_value_try_get(_key("who", process))
        return f" ({found})" if found else ""
    except Exception:  # noqa: BLE001  (the coordinator is gone, or never heard of it)
        return ""


def _stop_lost(lost: list[int]) -> None:
    """One line naming the lost processes, the partial checkpoint removed, exit EXIT_PEER_LOST."""
    if not _STOPPING.acquire(blocking=False):
        time.sleep(60)  # the other thread is reporting it and exits
    me = _STATE.process_id
    names = ", ".join(f"process {p}{_who(p)}" for p in lost)
    if me in lost:  # the service stopped hearing from this very process: it stalled, or the network did
        why = "not one heartbeat came within --heartbeat_timeout_seconds (a stalled host or network? raise it)"
    else:
        why = "it died or stopped answering (--heartbeat_timeout_seconds); its own log says why"
    message = (
        f"error: lost {names} of {_STATE.num_processes}: {why} (timeout {_STATE.heartbeat_timeout:g} s). Process "
        f"{me} stops too: re-run the same command on every process to resume from the last complete checkpoint."
    )
    for fn in list(_STATE.cleanups or ()):
        try:
            fn()
        except Exception as err:  # noqa: BLE001
            message += f" (cleaning up failed: {err})"
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    print(message, file=sys.stderr, flush=True)
    os._exit(EXIT_PEER_LOST)


def _start_watchdog() -> None:
    stop = threading.Event()
    interval = min(1.0, _STATE.heartbeat_timeout / 5)

    def watch():
        while not stop.wait(interval):
            # a moment's grace: a process that ends on its own error (on_error) reports that instead
            if lost_processes() and not stop.wait(1.0) and (lost := lost_processes()):
                _stop_lost(lost)

    _STATE.stop = stop
    _STATE.watchdog = threading.Thread(target=watch, name="manet-peer-watchdog", daemon=True)
    _STATE.watchdog.start()


def _stop_watchdog() -> None:
    if _STATE.stop is not None:
        _STATE.stop.set()


def on_error(err: BaseException) -> None:
    """Called with the error that ends this process. If another process was lost (a collective
    failed because a peer died), report that instead and exit EXIT_PEER_LOST; otherwise let the
    others learn of this process's end (process 0, hosting the service, waits a little for them)."""
    if not _STATE.active or _STATE.finished:
        return
    if _looks_like_a_peer_failure(err):
        deadline = time.monotonic() + _STATE.heartbeat_timeout + 5
        while time.monotonic() < deadline:
            lost = lost_processes()
            if lost:
                _stop_lost(lost)
            time.sleep(0.5)
    _stop_watchdog()
    _STATE.finished = True
    if _STATE.process_id == 0:
        _wait_for_others_to_leave(min(10.0, _STATE.heartbeat_timeout))


def _looks_like_a_peer_failure(err: BaseException) -> bool:
    """An error from a collective or the coordination service (not one of the project's own)."""
    if type(err).__name__ in ("JaxRuntimeError", "XlaRuntimeError"):
        return True
    return any(s in str(err) for s in ("Gloo", "UNAVAILABLE", "DEADLINE_EXCEEDED"))


def finish() -> None:
    """A normal end: a last barrier, then the processes leave in order (process 0 last)."""
    if not _STATE.active or _STATE.finished:
        return
    import jax

    barrier("finish")
    _stop_watchdog()
    _STATE.finished = True
    if _STATE.process_id != 0:
        jax.distributed.shutdown()
        return
    _wait_for_others_to_leave(max(10.0, _STATE.heartbeat_timeout))
    jax.distributed.shutdown()


def _wait_for_others_to_leave(timeout: float) -> None:
    """Process 0 hosts the service: the others' disconnects need it, so it waits for them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if set(_client().get_live_nodes(list(range(_STATE.num_processes)))) <= {0}:
                return
        except Exception:  # noqa: BLE001
            return
        time.sleep(0.05)
