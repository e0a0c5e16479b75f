"""Search trials on a real Ray head started on 127.0.0.1 by the test (and stopped after, also on failure)."""

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pandas as pd
import pytest

from tests.conftest import TURKU_CONFIG, mlpipe

# Token auth off on a head that listens on loopback only; without the second variable Ray swaps 127.0.0.1 for
# the machine's network address and binds its servers there.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _need_ray() -> None:
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("MLPIPE_REQUIRE_SERVICES") == "1":
            pytest.fail("Ray is not installed, and MLPIPE_REQUIRE_SERVICES=1 (pip install 'mlpipe[ray]')")
        pytest.skip("Ray is not installed (pip install 'mlpipe[ray]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """``ray start --head --block`` in its own session on 127.0.0.1; the whole session is ended after."""
    _need_ray()
    port, tmp = _free_port(), tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are long
    log_path = os.path.join(tmp, "head.log")
    with open(log_path, "w") as log:
        head = subprocess.Popen(
            # this interpreter, not a `ray` script found on PATH: the head's workers run the Python that started
            # it, and must import this mlpipe (a `ray` of another environment ran another mlpipe's fit function)
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address",
             "127.0.0.1", "--port", str(port), "--include-dashboard", "false", "--num-cpus", "2",
             "--disable-usage-stats", "--temp-dir", tmp],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **RAY_ENV}, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in open(log_path).read():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head failed:\n{open(log_path).read()[-3000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", head.pid
    finally:
        _end_session(head)
        shutil.rmtree(tmp, ignore_errors=True)


def _end_session(head: subprocess.Popen) -> None:
    try:
        os.killpg(head.pid, signal.SIGTERM)  # ray start --block stops the processes it started
        head.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(head.pid, signal.SIGKILL)  # anything of that session still there
    except ProcessLookupError:
        pass
    head.wait()


def _node_ids(session: int) -> set[str]:
    """The node ids of the raylets in the head's process session (from their command lines)."""
    ids = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getsid(int(pid)) == session:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
                ids |= set(re.findall(r"--node_id=([0-9a-f]+)", cmdline)) if "raylet" in cmdline else set()
        except (OSError, ProcessLookupError):
            continue
    return ids


def _trials(workspace, run: dict) -> dict[str, pd.DataFrame]:
    from mlpipe.store.workspace import Workspace

    client, out = Workspace(workspace).client, {}
    for model in run["models"]:
        if model["kind"] != "baseline":
            path = client.download_artifacts(model["run_id"], "cv_results.json", str(workspace / model["kind"]))
            doc = json.loads(open(path).read())
            out[model["kind"]] = pd.DataFrame(doc["data"], columns=doc["columns"])
    return out


SEARCH = """
[models.svm]
engine = "sklearn"   # libsvm: oneDAL's float32 sums differ with its thread count (one core per Ray task)
strategy = "tpe"
trials = 6
batch = 3
seed = 3
space = {C = {low = 0.1, high = 100.0, log = true}, kernel = ["rbf", "linear"]}

[models.random_forest]
enabled = false

[models.lightgbm]
strategy = "halving"
space = {num_leaves = [4, 8, 16, 32]}
params = {n_estimators = 40, min_child_samples = 5}
"""


def test_trials_run_in_ray_workers_and_choose_what_local_cores_choose(ray_head, turku_small, tmp_path):
    from mlpipe.config import load_config
    from mlpipe.sources import read_source
    from mlpipe.steps import ingest
    from mlpipe.steps.features import feature_matrix
    from mlpipe.steps.train import train_model

    address, session = ray_head
    config = tmp_path / "search.toml"
    config.write_text(TURKU_CONFIG.read_text() + SEARCH)
    run = json.loads(mlpipe("run", "--config", str(config), "--source", str(turku_small), "--json", "--quiet",
                            "--ray-address", address, workspace=tmp_path / "ws", env=RAY_ENV, check=True).stdout)
    on_ray = _trials(tmp_path / "ws", run)  # as MLflow keeps them
    assert set(on_ray) == {"svm", "lightgbm"}
    assert len(on_ray["svm"]) == 6 and set(on_ray["lightgbm"]["rung"]) == {0, 1}

    nodes = _node_ids(session)
    assert len(nodes) == 1
    cfg = load_config(config, source=str(turku_small))  # the same search on local cores, in this process
    data = ingest.ingest(read_source(cfg.data.source), cfg, cfg.data.source)
    X, y, ts = feature_matrix(data.train, cfg), data.train[ingest.LABEL].to_numpy(), data.train[cfg.data.timestamp]
    for kind, table in on_ray.items():
        assert set(table["node"]) == nodes, kind  # every fit ran on the node of that head ...
        workers = {w for ws in table["worker"] for w in ws.split(",")}
        assert all(re.fullmatch(r"[0-9a-f]{40,}", w) for w in workers), workers  # ... in a Ray worker process
        local = train_model(kind, X, y, ts, cfg).cv_results
        assert all(w.startswith("pid-") for ws in local["worker"] for w in ws.split(","))
        same = ["trial", "rung", "params", "cv_f1_macro_mean", "status", "best"]
        pd.testing.assert_frame_equal(table[same], local[same], check_dtype=False)
        assert table.loc[table["best"], "params"].item() == local.loc[local["best"], "params"].item()


def test_an_address_where_no_head_listens_is_a_config_error(turku_small, tmp_path):
    _need_ray()
    proc = mlpipe("run", "--config", str(TURKU_CONFIG), "--source", str(turku_small), "--ray-address",
                  f"127.0.0.1:{_free_port()}", "--quiet", workspace=tmp_path / "ws", env=RAY_ENV)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: compute.address '127.0.0.1:") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "ws").exists()  # failed before any work: nothing registered


def test_a_malformed_ray_address_is_a_config_error(tmp_path):
    _need_ray()
    proc = mlpipe("run", "--ray-address", "no-port-here", "--quiet", workspace=tmp_path / "ws")
    assert proc.returncode == 2 and proc.stderr.startswith("error: compute.address 'no-port-here': expected HOST:PORT")
