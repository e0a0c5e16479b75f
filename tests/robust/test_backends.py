"""Team backends against the real things: MLflow's SQL store on the PostgreSQL server on 127.0.0.1:5432
(a database made for the test and dropped after), and a real ``mlflow server`` process the test starts on
127.0.0.1 (backed by such a database) and stops after."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlpipe.steps.evaluate import classification_metrics
from mlpipe.steps.package import predict_onnx
from tests.robust.conftest import drop_pg_database, need_service, new_pg_database, pg_available, small_config, \
    write_slice


@pytest.fixture(scope="module")
def pg_uri():
    need_service(pg_available(), "PostgreSQL on 127.0.0.1:5432")
    uri = new_pg_database("backend")
    yield uri
    drop_pg_database(uri)


def _reproduce_metrics(model_dir: Path, data_dir: Path) -> None:
    """The downloaded ONNX model, run by onnxruntime on the downloaded test set, gives the registered metrics."""
    meta = json.loads((model_dir / "model.json").read_text())
    test = pd.read_parquet(data_dir / "data.parquet")
    labels, proba = predict_onnx((model_dir / "model.onnx").read_bytes(),
                                 test[meta["features"]].to_numpy(dtype=np.float32))
    metrics = classification_metrics(test["label"].to_numpy(), labels, proba)
    for key in ("accuracy", "f1", "roc_auc"):
        assert metrics[key] == pytest.approx(meta["metrics"][key], abs=1e-9)


def test_postgresql_backend_for_every_command_and_a_shared_dataset_catalog(fork_server, pg_uri, turku_frame,
                                                                             tmp_path):
    data = write_slice(turku_frame, 1500, tmp_path / "slice.csv")
    shared = tmp_path / "team-artifacts"
    # 1st run: backend from the config file's [tracking]
    config = small_config(tmp_path / "run.toml", data, "pg", extra=f'\n[tracking]\nuri = "{pg_uri}"\n'
                          f'artifact_location = "{shared}"\n')
    first = fork_server.run("run", "--config", str(config), "--workspace", str(tmp_path / "alice"), "--quiet", "--json")
    assert first.code == 0, first.stderr[-3000:]
    # 2nd run, by someone else in another folder: backend from the command line
    plain = small_config(tmp_path / "plain.toml", data, "pg")
    second = fork_server.run("run", "--config", str(plain), "--tracking-uri", pg_uri, "--artifact-location",
                             str(shared), "--workspace", str(tmp_path / "bob"), "--quiet", "--json")
    assert second.code == 0, second.stderr[-3000:]
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    assert two["datasets"] == one["datasets"]  # one shared catalog: same content, same versions
    assert [m["version"] for m in two["models"]] == [m["version"] + 1 for m in one["models"]]
    for folder in ("alice", "bob"):  # nothing went to the folders' SQLite
        assert not (tmp_path / folder / "mlflow.db").exists() and not (tmp_path / folder / "datasets.db").exists()

    env = {"MLPIPE_TRACKING_URI": pg_uri, "MLPIPE_ARTIFACT_LOCATION": str(shared)}  # a third user, by env
    carol = ["--workspace", str(tmp_path / "carol")]
    listed = json.loads(fork_server.run("models", "list", "--json", *carol, env=env).stdout)
    kinds = ("baseline", "svm", "random_forest")
    assert {m["name"]: m["versions"] for m in listed} == {f"pg-{k}": [1, 2] for k in kinds}
    champion = two["champion"]
    shown = json.loads(fork_server.run("models", "show", f"{champion['name']}@champion", "--json", *carol,
                                       env=env).stdout)
    assert shown["datasets"]["test"]["digest"] == one["datasets"]["test"]["digest"]
    assert fork_server.run("models", "download", f"{champion['name']}@champion", "--dest", str(tmp_path / "m"),
                           *carol, env=env).code == 0
    assert fork_server.run("datasets", "download", "pg-test", "--dest", str(tmp_path / "d"), *carol, env=env).code == 0
    _reproduce_metrics(tmp_path / "m", tmp_path / "d")
    check = fork_server.run("check", *carol, env=env)
    assert check.code == 0, check.stdout + check.stderr


def test_a_full_run_through_an_mlflow_server_then_show_download_and_load(fork_server, mlflow_server, turku_frame,
                                                                         tmp_path):
    url, artifacts = mlflow_server
    config = small_config(tmp_path / "run.toml", write_slice(turku_frame, 1500, tmp_path / "slice.csv"), "srv")
    ws = ["--workspace", str(tmp_path / "ws")]
    r = fork_server.run("run", "--config", str(config), "--tracking-uri", url, *ws, "--quiet", "--json")
    assert r.code == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    assert not (tmp_path / "ws" / "mlflow.db").exists()  # tracking and registry are the server's
    # models and dataset files went to the server's artifact store
    for d in result["datasets"].values():
        assert list((artifacts / "mlpipe-datasets" / d["name"]).glob(f"{d['digest']}-*.parquet"))
    assert len(list(artifacts.rglob("model.onnx"))) == len(result["models"])

    env = {"MLPIPE_TRACKING_URI": url}
    champion = f"{result['champion']['name']}@champion"
    shown = json.loads(fork_server.run("models", "show", champion, "--json", *ws, env=env).stdout)
    assert shown["version"] == result["champion"]["version"] and shown["aliases"] == ["champion"]
    assert fork_server.run("models", "download", champion, "--dest", str(tmp_path / "m"), *ws, env=env).code == 0
    assert fork_server.run("datasets", "download", "srv-test", "--dest", str(tmp_path / "d"), *ws, env=env).code == 0
    _reproduce_metrics(tmp_path / "m", tmp_path / "d")

    import mlpipe  # the library entry point serve and predict use, through the server

    model = mlpipe.load_model(mlpipe.Workspace(tmp_path / "ws", tracking_uri=url), champion)
    assert model.info["onnx_sha256"] == shown["onnx_sha256"] and model.features == shown["features"]

    # an artifact changed on the server is refused, not served
    stored = next(p for p in artifacts.rglob("model.onnx") if p.read_bytes() == model.onnx)
    stored.write_bytes(model.onnx[:-10])
    try:
        bad = fork_server.run("models", "download", champion, "--dest", str(tmp_path / "bad"), *ws, env=env)
        assert bad.code == 2 and "does not match the registered SHA-256" in bad.stderr, bad.stderr
    finally:
        stored.write_bytes(model.onnx)
    assert fork_server.run("check", *ws, env=env).code == 0
