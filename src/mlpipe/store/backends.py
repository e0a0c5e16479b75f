"""Where a workspace's registries live, and the locks that let several runs share them.

Three backends for tracking and the model registry: SQLite in the workspace folder (one person), MLflow's SQL
store on PostgreSQL (a team sharing a database), or an MLflow tracking server (``http://…``). The dataset
catalog is SQLite or PostgreSQL. Registration is decided one run at a time under ``registry_lock``: a file lock
for a workspace folder, a PostgreSQL advisory lock for a shared database (released by the server when the
holder dies, even by SIGKILL).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from mlpipe.errors import BackendError, ConfigError

T = TypeVar("T")
SQLITE_TIMEOUT_S = 60
"""SQLite waits this long for another writer's lock before it reports "database is locked"."""
CONNECT_TIMEOUT_S = 10
LOCK_RETRIES = 8
_KINDS = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql",
          "postgresql+psycopg2": "postgresql", "postgresql+psycopg": "postgresql", "http": "http", "https": "http"}


def kind(uri: str, what: str = "tracking uri", allowed: tuple[str, ...] = ("sqlite", "postgresql", "http")) -> str:
    """``sqlite``, ``postgresql`` or ``http``; a ConfigError naming ``what`` for anything else."""
    scheme = uri.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", uri) else ""
    found = _KINDS.get(scheme)
    if found is None or found not in allowed:
        schemes = ", ".join(f"{k}://" for k in allowed)
        raise ConfigError(f"{what} {redact(uri)!r}: unsupported; use one of {schemes}")
    if found == "postgresql" and not re.match(r"^[^:]+://[^/]*[^/]/[^/?]+", uri):
        raise ConfigError(f"{what} {redact(uri)!r}: give host and database, "
                          f"e.g. postgresql://user@127.0.0.1:5432/mlpipe")
    if found == "http" and not re.match(r"^https?://[^/]+", uri):
        raise ConfigError(f"{what} {redact(uri)!r}: give host and port, e.g. http://127.0.0.1:5000")
    return found


def normalize(uri: str) -> str:
    """``postgres://`` / ``postgresql://`` -> ``postgresql+<driver>://`` with the installed driver (psycopg2,
    from the ``postgres`` extra, else psycopg 3): SQLAlchemy's default driver differs between its versions."""
    import importlib.util

    uri = uri.rstrip("/")
    scheme, sep, rest = uri.partition("://")
    if sep and scheme.lower() in ("postgres", "postgresql"):
        driver = next((d for d in ("psycopg2", "psycopg") if importlib.util.find_spec(d)), None)
        return f"postgresql{'+' + driver if driver else ''}://{rest}"
    return uri


def redact(uri: str) -> str:
    """The URI without its password, for messages."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", uri)


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path}?timeout={SQLITE_TIMEOUT_S}"


def sqlite_path(uri: str) -> Path:
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def prepare_sqlite(path: Path) -> None:
    """Create the tracking database file: a new one as MLflow's empty schema (``schema_cache``); in WAL mode
    (persistent), so readers never block the one writer."""
    import sqlite3

    from mlpipe.store import schema_cache

    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        schema_cache.copy_empty_schema(path)
    con = sqlite3.connect(path, timeout=SQLITE_TIMEOUT_S)
    try:
        con.execute("PRAGMA journal_mode=WAL")
    finally:
        con.close()


def check_reachable(uri: str, what: str = "tracking uri") -> None:
    """Fail fast (BackendError, exit 2) on a server that does not answer, rather than in MLflow's long
    retry loops."""
    k = kind(uri, what)
    if k == "postgresql":
        with _pg_connection(uri, what):
            pass
    elif k == "http":
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=CONNECT_TIMEOUT_S) as resp:
                resp.read()
        except (urllib.error.URLError, OSError) as e:
            raise BackendError(f"{what} {redact(uri)}: the MLflow server does not answer: "
                               f"{getattr(e, 'reason', e)}") from None


@contextmanager
def _pg_connection(uri: str, what: str) -> Iterator:
    try:
        from sqlalchemy import create_engine, exc
        from sqlalchemy.pool import NullPool

        engine = create_engine(normalize(uri), poolclass=NullPool,
                               connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    except ModuleNotFoundError:
        raise BackendError(f"{what} {redact(uri)}: PostgreSQL needs its driver: "
                           f"pip install 'mlpipe[postgres]'") from None
    try:
        conn = engine.connect()
    except exc.OperationalError as e:
        reason = " ".join(str(e.orig).split()) if e.orig is not None else str(e)
        raise BackendError(f"{what} {redact(uri)}: cannot connect: {reason}") from None
    try:
        yield conn
    finally:
        conn.close()
        engine.dispose()


def _pg_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"mlpipe:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def pg_lock(uri: str, name: str, what: str = "datasets uri") -> Iterator[None]:
    """A PostgreSQL session-level advisory lock: one holder at a time across every machine using the
    database; the server releases it when the holder's connection ends (also when the process is killed)."""
    from sqlalchemy import text

    key = _pg_key(name)
    with _pg_connection(uri, what) as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.commit()


@contextmanager
def file_lock(root: Path, name: str) -> Iterator[None]:
    """Serialise a critical section across the processes sharing a workspace folder (released on exit or
    when the holder dies, even by SIGKILL)."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_lock_error(e: BaseException) -> bool:
    text = str(e).lower()
    return "database is locked" in text or "database table is locked" in text or "deadlock detected" in text


def retry_locked(fn: Callable[..., T], *args, **kwargs) -> T:
    """Call ``fn``; when the store reports a lock conflict (SQLite past its busy timeout, a PostgreSQL
    deadlock), try again with jittered backoff, at most ``LOCK_RETRIES`` times, then let it raise."""
    for attempt in range(LOCK_RETRIES):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if attempt == LOCK_RETRIES - 1 or not is_lock_error(e):
                raise
            time.sleep(min(5.0, 0.2 * 2 ** attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


class RetryingClient:
    """An MlflowClient whose calls are retried on lock conflicts (``retry_locked``); everything else about it
    is the client's own (``.unwrap`` gives the client itself)."""

    def __init__(self, client):
        self.unwrap = client

    def __getattr__(self, name: str):
        attr = getattr(self.unwrap, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            return retry_locked(attr, *args, **kwargs)

        return call


def env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None
