"""Registered versions are MLflow Models: MLflow's own tools load, serve and evaluate mlpipe's champion (real
MLflow on the workspace's SQLite store; ``mlflow models serve`` started on 127.0.0.1 by the test). The Turku
champion's features read the past, so its pyfunc takes raw observations, as ``mlpipe predict`` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import numpy as np
import pytest
import yaml

from mlpipe.steps.evaluate import classification_metrics
from mlpipe.store.workspace import Workspace
from tests.servers import free_port, wait_healthy

LABEL_METRICS = ("accuracy", "precision", "recall", "f1", "f1_0", "f1_1")


@pytest.fixture(scope="module")
def registry(run_workspace):
    """The workspace's store as MLflow's default tracking and registry URI, as a user sets it; restored after."""
    import mlflow

    ws, result = run_workspace
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    uri = f"sqlite:///{ws / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # MLflow keeps a registry URI of its own once one was resolved
    yield uri, ws, result
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])


@pytest.fixture(scope="module")
def raw_rows(registry):
    """Every registered row in time order, as raw observations (the training source's columns)."""
    _, ws, result = registry
    processed = Workspace(ws).datasets.load(f"{result['datasets']['processed']['name']}:"
                                            f"{result['datasets']['processed']['version']}")
    test = Workspace(ws).datasets.load(f"{result['datasets']['test']['name']}:{result['datasets']['test']['version']}")
    return processed, test


def _champion(result) -> dict:
    return next(m for m in result["models"] if m["name"] == result["champion"]["name"])


def test_the_version_folder_is_an_mlflow_model_with_both_flavours(registry):
    import mlflow

    _, ws, result = registry
    champion = _champion(result)
    folder = mlflow.artifacts.download_artifacts(f"models:/{champion['name']}@champion")
    mlmodel = yaml.safe_load(open(os.path.join(folder, "MLmodel")))
    assert set(mlmodel["flavors"]) == {"onnx", "python_function"}
    assert mlmodel["flavors"]["onnx"]["data"] == "model.onnx"
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    signature = {c["name"]: c["type"] for c in json.loads(mlmodel["signature"]["inputs"])}
    assert signature["Timestamp"] == "string" and signature["Location"] == "string"  # ISO 8601 text
    assert signature["Humidity"] == "double"
    assert [c["name"] for c in json.loads(mlmodel["signature"]["outputs"])][-2:] == ["label", "probability"]
    for name in ("model.onnx", "model.json", "input_example.json", "requirements.txt", "pyfunc.py"):
        assert os.path.exists(os.path.join(folder, name)), name
    assert not any(name.endswith((".pkl", ".pickle")) for name in os.listdir(folder))  # models from code
    onnx = mlflow.onnx.load_model(f"models:/{champion['name']}@champion")
    assert onnx.graph.input[0].name == "input"


def test_pyfunc_on_raw_observations_reproduces_the_registered_test_labels(registry, raw_rows):
    import mlflow

    _, ws, result = registry
    champion = _champion(result)
    processed, test = raw_rows
    model = mlflow.pyfunc.load_model(f"models:/{champion['name']}@champion")
    columns = [c.name for c in model.metadata.get_input_schema().inputs]
    iso = processed.assign(Timestamp=processed["Timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))  # as the signature says
    answers = model.predict(iso[columns])
    assert len(answers) == len(processed)
    keyed = answers.set_index(["Timestamp", "Location"])
    when = test["Timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    picked = keyed.loc[list(zip(when, test["Location"]))]
    metrics = classification_metrics(test["label"].to_numpy(), picked["label"].to_numpy(),
                                     picked["probability"].to_numpy())
    for key in LABEL_METRICS:
        assert metrics[key] == pytest.approx(champion["metrics"][key], abs=1e-12), key


def test_mlflow_models_serve_answers_invocations_with_the_same_labels(registry, raw_rows, tmp_path):
    import mlflow

    uri, ws, result = registry
    champion = _champion(result)
    processed, _ = raw_rows
    model = mlflow.pyfunc.load_model(f"models:/{champion['name']}@champion")
    columns = [c.name for c in model.metadata.get_input_schema().inputs]
    rows = processed[columns].head(400).assign(Timestamp=lambda d: d["Timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    expected = model.predict(rows)
    port = free_port()
    log = tmp_path / "mlflow-serve.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m",
                                 f"models:/{champion['name']}@champion", "--env-manager", "local",
                                 "-h", "127.0.0.1", "-p", str(port)], stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, 180, lambda: log.read_text(errors="replace"))
        body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
        r = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=120)
        assert r.status_code == 200, r.text
        served = r.json()["predictions"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert len(served) == len(expected)
    assert [p["label"] for p in served] == expected["label"].tolist()
    assert np.allclose([p["probability"] for p in served], expected["probability"], atol=1e-7)


def test_versions_registered_before_mlflow_models_still_open_in_mlpipe(registry, tmp_path):
    """A version whose folder holds only model.onnx and model.json (as mlpipe registered them before): mlpipe
    opens, checks and serves it as ever; MLflow's own loader says it is no MLflow Model."""
    import shutil

    import mlflow

    from mlpipe.serving.model import open_model
    from mlpipe.store.models import download_model, get_version
    from tests.servers import add_version, copy_workspace

    _, ws, result = registry
    champion = _champion(result)
    private = Workspace(copy_workspace(ws, tmp_path / "ws"))
    like = get_version(private, f"{champion['name']}@champion")
    folder = mlflow.artifacts.download_artifacts(f"{like.source}", dst_path=str(tmp_path / "now"))
    old = tmp_path / "old"
    old.mkdir()
    for name in ("model.onnx", "model.json"):
        shutil.copy(os.path.join(folder, name), old / name)
    version = add_version(private, champion["name"], like, source=str(old))
    served = open_model(private, f"{champion['name']}:{version}")
    X = np.zeros((2, len(served.features)), np.float32)
    labels, proba = served.predict(X)
    assert labels.shape == (2,) and np.isfinite(proba).all()
    download_model(private, f"{champion['name']}:{version}", tmp_path / "dl")
    assert (tmp_path / "dl" / "model.onnx").read_bytes() == (old / "model.onnx").read_bytes()
    with pytest.raises(mlflow.exceptions.MlflowException, match="MLmodel"):
        mlflow.pyfunc.load_model(str(old))
