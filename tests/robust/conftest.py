"""Fixtures for the robustness tests: a fork server running the real CLI, small real-data slices and small
model configs, and throw-away PostgreSQL databases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import TURKU_CONFIG, turku_winter
from tests.robust.forkserver import ForkServer
from tests.servers import free_port, wait_healthy

FEATURES = ["Temperature_C", "Humidity", "Wind_speed_kmph", "Wind_bearing_degrees", "Visibility_km",
            "Pressure_millibars", "Current_weather_condition"]
PG_ADMIN = os.environ.get("MLPIPE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def fork_server():
    server = ForkServer(env={"LOKY_MAX_CPU_COUNT": "1"})  # tiny data: no worker processes per search
    yield server
    server.close()


@pytest.fixture(scope="session")
def turku_frame() -> pd.DataFrame:
    return turku_winter()


def write_slice(frame: pd.DataFrame, rows: int, path: Path) -> Path:
    frame.head(rows).to_csv(path, index=False)
    return path


def small_config(path: Path, source: Path, prefix: str, *, svm: str = "kernel = ['linear'], C = [1]",
                 forest: str | None = "max_depth = [4, 8]", extra: str = "") -> Path:
    """The Turku config with a small search: one linear SVM, a 2-value forest grid of 20 trees, no LightGBM."""
    text = TURKU_CONFIG.read_text().replace('model_prefix = "turku"', f'model_prefix = "{prefix}"')
    text = text.replace('source = "builtin:turku-weather"', f'source = "{source}"')
    text += f"\n[models.svm]\nspace = {{ {svm} }}\n[models.lightgbm]\nenabled = false\n"
    text += ("[models.random_forest]\nenabled = false\n" if forest is None else
             f"[models.random_forest]\nspace = {{ {forest} }}\nparams = {{ n_estimators = 20 }}\n")
    path.write_text(text + extra)
    return path


def pg_available() -> bool:
    """PostgreSQL answers at ``PG_ADMIN``. Only "cannot connect" (or no PostgreSQL driver installed) means
    unavailable; any other exception -- a bug here or in mlpipe -- propagates rather than skipping tests."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    from mlpipe.store.backends import normalize

    try:
        engine = sqlalchemy.create_engine(normalize(PG_ADMIN), poolclass=NullPool,
                                          connect_args={"connect_timeout": 3})
    except ModuleNotFoundError as e:  # driver not installed (SQLAlchemy imports it here)
        if e.name in ("psycopg2", "psycopg"):
            return False
        raise
    try:
        with engine.connect():
            return True
    except sqlalchemy.exc.OperationalError:  # refused, timed out, unknown host, bad credentials
        return False
    finally:
        engine.dispose()


def need_service(ok: bool, what: str) -> None:
    if not ok:
        if os.environ.get("MLPIPE_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{what} is required here (MLPIPE_REQUIRE_SERVICES=1) but not available")
        pytest.skip(f"{what} not available")


def new_pg_database(tag: str) -> str:
    """A fresh database for one test (or module), made here and dropped with ``drop_pg_database``."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    from mlpipe.store.backends import normalize

    name = f"mlpipe_test_{tag}_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(normalize(PG_ADMIN), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(uri: str) -> None:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    from mlpipe.store.backends import normalize

    admin = sqlalchemy.create_engine(normalize(PG_ADMIN), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{uri.rsplit("/", 1)[1]}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1, its store on a fresh PostgreSQL database, its artifacts in a folder."""
    need_service(pg_available(), "PostgreSQL on 127.0.0.1:5432")
    from mlpipe.store.backends import normalize

    uri = new_pg_database("server")
    artifacts = tmp_path_factory.mktemp("server-artifacts")
    port = free_port()
    log = open(artifacts.parent / f"mlflow-server-{port}.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", normalize(uri), "--host", "127.0.0.1",
         "--port", str(port), "--artifacts-destination", str(artifacts), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no job-runner processes
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, 180, lambda: Path(log.name).read_text(errors="replace"))
        yield url, artifacts
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:  # the server's group: whatever it started and left behind
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()
        drop_pg_database(uri)
