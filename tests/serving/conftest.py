"""Workspaces that serving tests share: the Turku slice's (the NYC one, ``nyc_workspace``, is in the
top conftest: monitoring tests use it too)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def turku_workspace(run_workspace, turku_small):
    return run_workspace[0], "turku", str(turku_small)
