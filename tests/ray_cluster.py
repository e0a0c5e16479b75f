"""A real local Ray cluster for tests: a head and, if asked, more nodes, all on 127.0.0.1, each in its own
process session that is ended after (also on failure). Shared by the Ray tests (``tests/training``)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Token auth off on a head that listens on loopback only; without the second variable Ray swaps 127.0.0.1 for
# the machine's network address and binds its servers there.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}

# A second node joins with what `ray start --address` runs (and what ray.cluster_utils.Cluster.add_node, Ray's
# own mini-cluster for tests, runs), minus the CLI's refusal: with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, the
# one setting that keeps Ray on loopback, `ray start --address` refuses to join any cluster, and with it on,
# Ray swaps 127.0.0.1 (the head's address and the node's) for the machine's network address.
_NODE = """
import signal, sys, time
import ray._private.node, ray._private.parameter
gcs, cpus, temp = sys.argv[1], int(sys.argv[2]), sys.argv[3]
params = ray._private.parameter.RayParams(gcs_address=gcs, node_ip_address="127.0.0.1", num_cpus=cpus, num_gpus=0,
                                          temp_dir=temp, include_log_monitor=False, node_manager_port=0,
                                          min_worker_port=0, max_worker_port=0)
node = ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
print("Ray node started", node.unique_id, flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit runs the node's shutdown of its processes
while True:
    time.sleep(1)
"""


def need_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("MLPIPE_REQUIRE_SERVICES") == "1":
            pytest.fail("Ray is not installed, and MLPIPE_REQUIRE_SERVICES=1 (pip install 'mlpipe[ray]')")
        pytest.skip("Ray is not installed (pip install 'mlpipe[ray]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    """The tests' environment for Ray's processes: its workers import the mlpipe this test imports (the
    checkout's ``src``, as an absolute path: workers do not run in the test's folder)."""
    import mlpipe

    src = str(Path(mlpipe.__file__).resolve().parents[1])
    path = os.pathsep.join([src, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
    return {**os.environ, **RAY_ENV, "PYTHONPATH": path}


def _started(proc: subprocess.Popen, log_path: str, marker: str, what: str) -> None:
    deadline = time.monotonic() + 90
    while marker not in open(log_path).read():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} failed:\n{open(log_path).read()[-3000:]}")
        time.sleep(0.5)


@contextlib.contextmanager
def head(num_cpus: int = 2):
    """``ray start --head --block`` in its own session on 127.0.0.1: yields ``(address, session, temp_dir)``."""
    need_ray()
    port, tmp = free_port(), tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are long
    log_path = os.path.join(tmp, "head.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            # this interpreter, not a `ray` script found on PATH: the head's workers run the Python that started
            # it, and must import this mlpipe (a `ray` of another environment ran another mlpipe's fit function)
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address",
             "127.0.0.1", "--port", str(port), "--include-dashboard", "false", "--num-cpus", str(num_cpus),
             "--disable-usage-stats", "--temp-dir", tmp],
            stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    try:
        _started(proc, log_path, "Ray runtime started", "ray start --head")
        yield f"127.0.0.1:{port}", proc.pid, tmp
    finally:
        end_session(proc)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def node(address: str, temp_dir: str, num_cpus: int = 1):
    """A second node on 127.0.0.1 joined to the head at ``address``, in its own session: yields the session."""
    log_path = os.path.join(temp_dir, f"node-{free_port()}.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", _NODE, address, str(num_cpus), temp_dir], stdout=log,
                                stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    try:
        _started(proc, log_path, "Ray node started", "a second Ray node")
        yield proc.pid
    finally:
        end_session(proc)


def end_session(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # ray start --block (and the node above) stop what they started
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything of that session still there
    except ProcessLookupError:
        pass
    proc.wait()


def node_ids(session: int) -> set[str]:
    """The node ids of the raylets in a process session (from their command lines)."""
    ids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getsid(int(pid)) == session:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
                ids |= set(re.findall(r"--node_id=([0-9a-f]+)", cmdline)) if "raylet" in cmdline else set()
        except (OSError, ProcessLookupError):
            continue
    return ids
