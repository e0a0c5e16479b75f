"""Backend settings: URI checks, where things live for each backend, which setting wins, and the bounded
retries on a locked SQLite database (a real one, locked by another connection)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from mlpipe.config import load_config
from mlpipe.errors import ConfigError
from mlpipe.store import backends
from mlpipe.store.workspace import Workspace, run_workspace
from tests.conftest import TURKU_CONFIG


@pytest.mark.parametrize("uri, kind", [
    ("sqlite:////tmp/x/mlflow.db", "sqlite"), ("postgresql://u@127.0.0.1:5432/db", "postgresql"),
    ("postgres://u:pw@h/db", "postgresql"), ("postgresql+psycopg2://u@h:1/db", "postgresql"),
    ("http://127.0.0.1:5000", "http"), ("https://mlflow.example", "http"),
])
def test_supported_uris(uri, kind):
    assert backends.kind(uri) == kind


@pytest.mark.parametrize("uri, message", [
    ("mysql://root@h/db", "unsupported"), ("ftp://h", "unsupported"), ("just-a-path", "unsupported"),
    ("postgresql://127.0.0.1:5432", "give host and database"), ("http://", "give host and port"),
])
def test_unsupported_uris_name_the_setting(uri, message):
    with pytest.raises(ConfigError, match=f"tracking uri .*{message}"):
        backends.kind(uri)


def test_passwords_never_reach_messages():
    assert backends.redact("postgresql://alice:s3cret@db:5432/m") == "postgresql://alice:***@db:5432/m"
    with pytest.raises(ConfigError) as e:
        backends.kind("mysql://alice:s3cret@db/m")
    assert "s3cret" not in str(e.value)


def test_postgresql_uris_get_an_installed_driver():
    uri = backends.normalize("postgres://u@h:5432/db")
    assert uri.split("://")[0] in ("postgresql+psycopg2", "postgresql+psycopg", "postgresql")
    assert uri.endswith("://u@h:5432/db")


def test_where_things_live_for_each_backend(tmp_path, monkeypatch):
    for var in ("MLPIPE_TRACKING_URI", "MLPIPE_DATASETS_URI", "MLPIPE_ARTIFACT_LOCATION"):
        monkeypatch.delenv(var, raising=False)
    local = Workspace(tmp_path)
    assert local.backend == "sqlite" and local.tracking_uri.startswith(f"sqlite:///{tmp_path}/mlflow.db")
    assert local.datasets_uri == f"sqlite:///{tmp_path}/datasets.db"
    assert local.dataset_storage == str(tmp_path / "datasets")
    assert local.run_artifact_location("e") == (tmp_path / "artifacts" / "e").as_uri()

    pg = Workspace(tmp_path, tracking_uri="postgresql://u@127.0.0.1:5432/team")
    assert pg.backend == "postgresql" and pg.datasets_uri == pg.tracking_uri  # the catalog follows
    assert pg.exists()

    server = Workspace(tmp_path, tracking_uri="http://127.0.0.1:5000/")
    assert server.tracking_uri == "http://127.0.0.1:5000"
    assert server.run_artifact_location("e") is None  # the server's own artifact store
    assert server.dataset_storage == "mlflow-artifacts:/mlpipe-datasets"
    assert server.datasets_uri == f"sqlite:///{tmp_path}/datasets.db"

    shared = Workspace(tmp_path, tracking_uri="http://h:1", datasets_uri="postgresql://u@h/d",
                       artifact_location=str(tmp_path / "team"))
    assert shared.datasets_uri.endswith("://u@h/d") and shared.dataset_storage == str(tmp_path / "team" / "datasets")
    assert shared.run_artifact_location("e") == (tmp_path / "team" / "e").as_uri()


def test_option_beats_environment_beats_config(tmp_path, monkeypatch):
    config_file = tmp_path / "c.toml"
    config_file.write_text(TURKU_CONFIG.read_text() + '\n[tracking]\nuri = "http://config:1"\n'
                           '[datasets]\nuri = "postgresql://u@config/d"\n')
    config = load_config(config_file)
    monkeypatch.delenv("MLPIPE_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLPIPE_DATASETS_URI", raising=False)
    assert run_workspace(tmp_path, config).tracking_uri == "http://config:1"
    assert run_workspace(tmp_path, config).datasets_uri.endswith("://u@config/d")
    monkeypatch.setenv("MLPIPE_TRACKING_URI", "http://env:1")
    assert run_workspace(tmp_path, config).tracking_uri == "http://env:1"
    assert run_workspace(tmp_path, config, tracking_uri="http://option:1").tracking_uri == "http://option:1"


def test_a_bad_uri_in_the_config_names_file_and_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(TURKU_CONFIG.read_text() + '\n[datasets]\nuri = "http://not-a-database:1"\n')
    with pytest.raises(ConfigError, match=r"c\.toml: key 'datasets\.uri': datasets uri .* unsupported"):
        load_config(path)


def test_retry_locked_outlasts_a_writer_holding_sqlite(tmp_path):
    db = tmp_path / "x.db"
    backends.prepare_sqlite(db)
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (v INTEGER)")
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process's write transaction
    threading.Timer(0.6, lambda: holder.execute("COMMIT")).start()
    attempts = []

    def write():
        attempts.append(time.monotonic())
        con = sqlite3.connect(db, timeout=0.05)  # a short busy timeout: "database is locked" at once
        try:
            with con:
                con.execute("INSERT INTO t VALUES (1)")
        finally:
            con.close()

    backends.retry_locked(write)
    assert len(attempts) > 1  # it was refused at first, retried, and got through
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (1,)
    holder.close()


def test_retry_locked_gives_up_after_a_bound_and_passes_other_errors_at_once():
    calls = []

    def always_locked():
        calls.append(1)
        raise sqlite3.OperationalError("database is locked")

    backends.LOCK_RETRIES, saved = 3, backends.LOCK_RETRIES
    try:
        with pytest.raises(sqlite3.OperationalError):
            backends.retry_locked(always_locked)
    finally:
        backends.LOCK_RETRIES = saved
    assert len(calls) == 3
    with pytest.raises(ValueError):
        backends.retry_locked(lambda: (_ for _ in ()).throw(ValueError("no")))


def test_new_workspaces_start_from_one_cached_mlflow_schema(tmp_path, monkeypatch):
    """The first workspace makes the template (tables and Alembic version, no rows) in the cache; later
    ones copy it, and MLflow opens each as its own store: the default experiment, runs and registered
    models work, with artifacts in that workspace."""
    import mlflow

    from mlpipe.store import schema_cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = tmp_path / "cache" / "mlpipe" / f"mlflow-{mlflow.__version__}-schema.db"
    for name in ("one", "two"):
        ws = Workspace(tmp_path / name)
        client = ws.client
        assert template.exists()
        run = client.create_run(ws.experiment_id())
        client.log_metric(run.info.run_id, "m", 1.0)
        client.create_registered_model(f"model-{name}")
        assert [m.name for m in client.search_registered_models()] == [f"model-{name}"]
        assert client.get_experiment("0").name == "Default"
        assert run.info.artifact_uri.startswith((tmp_path / name).as_uri())
    with sqlite3.connect(template) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"experiments", "runs", "registered_models", "alembic_version"} <= tables
        assert con.execute("SELECT count(*) FROM experiments").fetchone() == (0,)
    assert not list(template.parent.glob(".schema-*")) and schema_cache.cache_dir() == template.parent


def test_without_a_writable_cache_mlflow_creates_the_tables_itself(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # its mlpipe/ folder cannot be made
    ws = Workspace(tmp_path / "ws")
    run = ws.client.create_run(ws.experiment_id())
    assert ws.client.get_run(run.info.run_id).info.status == "RUNNING"
    assert not (blocker / "mlpipe").exists()
