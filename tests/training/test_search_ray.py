"""Search trials on a real Ray head started on 127.0.0.1 by the test (and stopped after, also on failure)."""

import json
import re

import pandas as pd
import pytest

from tests import ray_cluster
from tests.conftest import TURKU_CONFIG, mlpipe
from tests.ray_cluster import RAY_ENV, free_port as _free_port, need_ray as _need_ray, node_ids as _node_ids


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head on 127.0.0.1 (``tests.ray_cluster.head``), its session ended after."""
    with ray_cluster.head(num_cpus=2) as (address, session, _):
        yield address, session


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
