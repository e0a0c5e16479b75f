"""Shared fixtures: real data slices of the Turku data that mlpipe ships (``builtin:turku-weather``), and a
workspace with one real pipeline run in it. Nothing here reads outside the checkout and the installed packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
TURKU_CONFIG = REPO / "configs" / "turku.toml"


@pytest.fixture(scope="session")
def turku_csv(tmp_path_factory) -> Path:
    """The whole Turku CSV as a file, written from the copy mlpipe ships (``mlpipe/data``)."""
    from mlpipe.sources import turku_weather

    path = tmp_path_factory.mktemp("data") / "turku_weather_processed.csv"
    turku_weather().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def turku_small(turku_csv, tmp_path_factory) -> Path:
    """The first 3,000 rows of the real Turku file, as messy as the whole (unsorted, duplicates, pressure 0)."""
    path = tmp_path_factory.mktemp("data") / "turku_small.csv"
    pd.read_csv(turku_csv).head(3000).to_csv(path, index=False)
    return path


def mlpipe(*args: str, workspace: Path | None = None, check: bool = False, env: dict | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the real ``mlpipe`` command in a subprocess, as a user would."""
    cmd = [sys.executable, "-m", "mlpipe", *args] + (["--workspace", str(workspace)] if workspace else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def run_workspace(turku_small, tmp_path_factory) -> tuple[Path, dict]:
    """A workspace holding one complete ``mlpipe run`` of the Turku config on the small slice."""
    ws = tmp_path_factory.mktemp("ws")
    proc = mlpipe("run", "--config", str(TURKU_CONFIG), "--source", str(turku_small), "--json", "--quiet",
                  workspace=ws, check=True)
    return ws, json.loads(proc.stdout)
