"""Serving a model registered on an MLflow tracking server: ``mlpipe serve`` with ``$MLPIPE_TRACKING_URI``
pointing at the server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import pandas as pd

from mlpipe.steps.package import predict_onnx
from tests.robust.conftest import small_config, write_slice
from tests.servers import free_port, wait_healthy


def _post(url: str, body) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_serving_from_the_mlflow_server(fork_server, mlflow_server, turku_frame, tmp_path):
    url, artifacts = mlflow_server
    config = small_config(tmp_path / "run.toml", write_slice(turku_frame, 1500, tmp_path / "slice.csv"), "served")
    env = {"MLPIPE_TRACKING_URI": url}
    ws = ["--workspace", str(tmp_path / "ws")]
    r = fork_server.run("run", "--config", str(config), *ws, "--quiet", "--json", env=env)
    assert r.code == 0, r.stderr[-3000:]
    champion = json.loads(r.stdout)["champion"]
    ref = f"{champion['name']}@champion"
    assert fork_server.run("models", "download", ref, "--dest", str(tmp_path / "m"), *ws, env=env).code == 0
    assert fork_server.run("datasets", "download", "served-test", "--dest", str(tmp_path / "d"), *ws,
                           env=env).code == 0
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    rows = pd.read_parquet(tmp_path / "d" / "data.parquet")[meta["features"]].head(25)

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlpipe", "serve", "--model", ref, "--host", "127.0.0.1",
                             "--port", str(port), *ws], env={**os.environ, **env}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc, 120, lambda: proc.stderr.read().decode(errors="replace"))
        records = json.loads(rows.to_json(orient="records"))
        answer = _post(f"{base}/predict", records)
        assert answer["model"] == {"name": champion["name"], "version": champion["version"]}
        labels, proba = predict_onnx((tmp_path / "m" / "model.onnx").read_bytes(), rows.to_numpy(dtype=np.float32))
        assert [p["label"] for p in answer["predictions"]] == labels.tolist()
        assert np.allclose([p["probability"] for p in answer["predictions"]], proba, atol=1e-6)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)

    # a tampered artifact on the server: serve refuses to start, with one error line
    model = (tmp_path / "m" / "model.onnx").read_bytes()
    stored = next(p for p in artifacts.rglob("model.onnx") if p.read_bytes() == model)
    stored.write_bytes(model[:-10])
    try:
        bad = subprocess.run([sys.executable, "-m", "mlpipe", "serve", "--model", ref, "--port", str(free_port()),
                              *ws], env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and "does not match the registered SHA-256" in bad.stderr, bad.stderr
    finally:
        stored.write_bytes(model)
