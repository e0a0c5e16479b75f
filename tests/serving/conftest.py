"""Workspaces that serving tests share: the built-in NYC pipeline (three stations, every kind of time-series
feature) and the Turku slice's."""

from __future__ import annotations

import pytest

from mlpipe.config import BUILTIN_CONFIG
from tests.conftest import mlpipe as cli


@pytest.fixture(scope="session")
def nyc_workspace(tmp_path_factory):
    """The built-in NYC pipeline (time-series features across three stations), LightGBM only, for speed."""
    tmp = tmp_path_factory.mktemp("nyc")
    config = tmp / "nyc.toml"
    config.write_text(BUILTIN_CONFIG.read_text() + "\n[models.svm]\nenabled = false\n"
                      "[models.random_forest]\nenabled = false\n")
    cli("run", "--config", str(config), "--quiet", "--json", workspace=tmp / "ws", check=True)
    return tmp / "ws", "weather", "builtin:nycflights13-weather"


@pytest.fixture(scope="session")
def turku_workspace(run_workspace, turku_small):
    return run_workspace[0], "turku", str(turku_small)
