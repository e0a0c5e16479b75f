"""``mlpipe ui``: the MLflow UI server on a workspace's store, and the URLs of its pages."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from mlpipe.errors import MlpipeError
from mlpipe.store.workspace import EXPERIMENT


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on, before the server starts and fails less clearly."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise MlpipeError(f"port {port} on {host} is in use; choose another with --port") from None


def server_command(workspace, host: str, port: int) -> list[str]:
    """``mlflow ui`` on the workspace's store; artifacts it is asked to store go into the workspace too."""
    workspace.client  # noqa: B018 -- create the store, so the UI opens on an initialised database
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", workspace.tracking_uri,
            "--registry-store-uri", workspace.tracking_uri,
            "--artifacts-destination", workspace.artifact_root.as_uri(), "--host", host, "--port", str(port),
            "--workers", "1"]


def server_env() -> dict[str, str]:
    """The server's environment: without MLflow's GenAI job runner (seven worker processes that mlpipe's
    pages never use), unless the user asks for it."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}


def run_server(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Run the server in its own process group until it exits or we are interrupted or terminated; then stop
    the whole group (``mlflow ui`` starts uvicorn and job workers as children, which would outlive it)."""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)

    def _interrupt(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        _stop_group(proc)
        return 0


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group outlived its leader
    except ProcessLookupError:
        pass
    proc.wait()


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """The page of one run in the MLflow UI (a single-page app: the route is in the fragment)."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def latest_run_url(workspace, base: str) -> str | None:
    """The page of the newest pipeline (parent) run, or None before the first run."""
    client = workspace.client
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return None
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=100)
    parent = next((r for r in runs if "mlflow.parentRunId" not in r.data.tags), None)
    return run_url(base, experiment.experiment_id, parent.info.run_id) if parent else None
