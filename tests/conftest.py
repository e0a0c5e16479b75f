"""Shared fixtures: real data slices from ../shared/data, and a workspace with one real pipeline run in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MLPIPE_SHARED_DATA", REPO.parent / "shared" / "data"))
TURKU_CSV = SHARED_DATA / "turku_weather_processed.csv"
TURKU_CONFIG = REPO / "configs" / "turku.toml"


@pytest.fixture(scope="session")
def turku_csv() -> Path:
    if not TURKU_CSV.exists():
        pytest.fail(f"shared data missing: {TURKU_CSV} (set MLPIPE_SHARED_DATA)")
    return TURKU_CSV


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
