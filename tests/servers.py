"""Test helpers for ``mlpipe serve``: start the real server as a subprocess on a free loopback port, wait for
/health, stop it after; and registry edits made on a private copy of a workspace."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pandas as pd

START_TIMEOUT_S = 90


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(workspace: Path, ref: str, *args: str, env: dict | None = None, log_dir: Path) -> Iterator[Server]:
    """``python -m mlpipe serve --model REF`` on a free port; yields once /health answers 200."""
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "mlpipe", "serve", "--model", ref, "--port", str(port),
           "--workspace", str(workspace), *args]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        _wait_healthy(server)
        yield server
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_healthy(server: Server) -> None:
    wait_healthy(server.url, server.proc, START_TIMEOUT_S, server.log_text)


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float, log) -> None:
    """Until ``url``/health answers 200; fail with the tail of ``log()`` if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}:\n{log()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server at {url} not healthy after {timeout_s} s:\n{log()[-3000:]}")


def wait_until(predicate, timeout_s: float, every_s: float = 0.2):
    """Poll ``predicate`` until it returns something truthy (returned) or the time runs out (None)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    return None


def records(df: pd.DataFrame, features: list[str]) -> list[dict]:
    """Rows as JSON records keyed by feature name, missing values as null."""
    sub = df[features].astype(object)
    return sub.where(pd.notna(sub), None).to_dict(orient="records")


def copy_workspace(src: Path, dest: Path) -> Path:
    """A private copy of a workspace's registry, for tests that change it. (Artifacts are referenced by
    absolute path, so the copy still reads the original's model files, and never writes them.)"""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".*.lock"))
    return dest


def add_version(workspace, name: str, like, source: str | None = None) -> int:
    """Register a new version of ``name`` holding the model (files and tags) of registered version ``like``,
    or the files at ``source`` with ``like``'s tags (so its SHA-256 tag may not match them)."""
    client = workspace.client
    version = client.create_model_version(name, source or like.source, run_id=like.run_id, tags=dict(like.tags))
    return int(version.version)


def tampered_copy(onnx: bytes, folder: Path) -> Path:
    """``model.onnx`` with one byte changed: no longer the file whose SHA-256 the registry holds."""
    folder.mkdir(parents=True, exist_ok=True)
    data = bytearray(onnx)
    data[-200] ^= 0x01
    (folder / "model.onnx").write_bytes(bytes(data))
    return folder
