"""The observation store: raw observations a server receives (``POST /observations``), kept in the workspace
(``observations.db``, SQLite) or in the team's PostgreSQL database (the dataset catalog's) when one is set.

Three tables. ``mlpipe_observation_log`` is append-only: one row for every write that changed something, never
updated or deleted, so a station's history can always be read back as it was received. ``mlpipe_observations``
holds the current value of each (stream, group, timestamp): the latest logged row. Writing a batch is one
transaction: a value equal to the current one is a no-op (a repeat), a different one is logged and replaces it
(counted). ``mlpipe_observation_groups`` keeps each group's latest timestamp. A stream is the registered model name the observations were sent to; it outlives its versions.
Timestamps are stored as integer nanoseconds since the epoch (UTC), values as canonical JSON."""

from __future__ import annotations

import json
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

LOG, CURRENT, GROUPS = "mlpipe_observation_log", "mlpipe_observations", "mlpipe_observation_groups"


@dataclass(frozen=True)
class Written:
    stored: int
    """new (group, timestamp) pairs"""
    repeated: int
    """equal to what was already stored: nothing written"""
    replaced: int
    """a different value for a (group, timestamp) already stored: logged, and now its value"""


def store_uri(workspace) -> str:
    """The team's PostgreSQL database when the dataset catalog is on one, else ``observations.db`` in the
    workspace folder."""
    from mlpipe.store import backends

    if backends.kind(workspace.datasets_uri, "datasets uri") == "postgresql":
        return workspace.datasets_uri
    return f"sqlite:///{workspace.root / 'observations.db'}"


def canonical(values: dict) -> str:
    return json.dumps(values, sort_keys=True, separators=(",", ":"), allow_nan=False)


class ObservationStore:
    def __init__(self, uri: str):
        from sqlalchemy import create_engine, event

        from mlpipe.store import backends

        self.uri = uri
        self.sqlite = uri.startswith("sqlite")
        self._checkpointer = None
        self._local = threading.local()
        if self.sqlite:
            backends.sqlite_path(uri).parent.mkdir(parents=True, exist_ok=True)
            args = {"timeout": backends.SQLITE_TIMEOUT_S, "check_same_thread": False}
            self.engine = create_engine(uri, connect_args=args)
            self.reader = create_engine(uri, connect_args=args)
            for engine in (self.engine, self.reader):
                event.listen(engine, "connect", _sqlite_connection)

            @event.listens_for(self.engine, "connect")
            def _no_checkpoint_in_a_write(dbapi_connection, _record):
                dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")  # _Checkpointer does it, off the request

            @event.listens_for(self.engine, "begin")
            def _write_lock_first(conn):
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # a batch's check-then-write cannot interleave

            self._checkpointer = _Checkpointer(backends.sqlite_path(uri))
        else:
            backends.check_reachable(uri, "observation store")
            self.engine = self.reader = create_engine(backends.normalize(uri), pool_pre_ping=True)
        self._create()

    @classmethod
    def of(cls, workspace) -> "ObservationStore":
        return cls(store_uri(workspace))

    def _create(self) -> None:
        from sqlalchemy import text

        seq = "INTEGER PRIMARY KEY AUTOINCREMENT" if self.sqlite else "BIGSERIAL PRIMARY KEY"
        with self.engine.begin() as conn:
            if not self.sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key("create")})
            conn.execute(text(f"CREATE TABLE IF NOT EXISTS {LOG} (seq {seq}, stream TEXT NOT NULL, "
                              "grp TEXT NOT NULL, ts BIGINT NOT NULL, record TEXT NOT NULL, "
                              "received_at DOUBLE PRECISION NOT NULL)"))
            conn.execute(text(f"CREATE TABLE IF NOT EXISTS {CURRENT} (stream TEXT NOT NULL, grp TEXT NOT NULL, "
                              "ts BIGINT NOT NULL, record TEXT NOT NULL, PRIMARY KEY (stream, ts, grp))"))
            conn.execute(text(f"CREATE INDEX IF NOT EXISTS {CURRENT}_by_group ON {CURRENT} (stream, grp, ts)"))
            conn.execute(text(f"CREATE TABLE IF NOT EXISTS {GROUPS} (stream TEXT NOT NULL, grp TEXT NOT NULL, "
                              "latest BIGINT NOT NULL, PRIMARY KEY (stream, grp))"))

    def add(self, stream: str, rows: list[tuple[str, int, str]]) -> Written:
        """Write ``(group, ts_ns, canonical record)`` rows in one transaction; a batch that names a key twice
        keeps its last value for it."""
        latest = {(g, int(ts)): rec for g, ts, rec in rows}  # int: numpy's int64 binds as bytes in SQLite
        sql = self._sql
        with self.engine.begin() as conn:
            if not self.sqlite:  # serialise writers of a stream, as BEGIN IMMEDIATE does on SQLite
                conn.exec_driver_sql(sql("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(stream)})
            known = {}
            keys = list(latest)
            for lo in range(0, len(keys), 500):
                times = sorted({ts for _, ts in keys[lo:lo + 500]})
                marks = ", ".join(f":t{i}" for i in range(len(times)))
                found = conn.exec_driver_sql(sql(f"SELECT grp, ts, record FROM {CURRENT} WHERE stream = :s AND ts IN "
                                                 f"({marks})"), {"s": stream, **{f"t{i}": t for i, t in enumerate(times)}})
                known.update({(g, ts): rec for g, ts, rec in found if (g, ts) in latest})
            changed = [(g, ts, rec) for (g, ts), rec in latest.items() if known.get((g, ts)) != rec]
            if changed:
                now = time.time()
                conn.exec_driver_sql(sql(f"INSERT INTO {LOG} (stream, grp, ts, record, received_at) "
                                         "VALUES (:s, :g, :ts, :r, :now)"),
                                     [{"s": stream, "g": g, "ts": ts, "r": rec, "now": now} for g, ts, rec in changed])
                conn.exec_driver_sql(sql(f"INSERT INTO {CURRENT} (stream, grp, ts, record) VALUES (:s, :g, :ts, :r) "
                                         "ON CONFLICT (stream, ts, grp) DO UPDATE SET record = excluded.record"),
                                     [{"s": stream, "g": g, "ts": ts, "r": rec} for g, ts, rec in changed])
                newest: dict[str, int] = {}
                for g, ts, _ in changed:
                    newest[g] = max(ts, newest.get(g, ts))
                greatest = "MAX" if self.sqlite else "GREATEST"
                conn.exec_driver_sql(sql(f"INSERT INTO {GROUPS} (stream, grp, latest) VALUES (:s, :g, :ts) "
                                         f"ON CONFLICT (stream, grp) DO UPDATE SET latest = "
                                         f"{greatest}({GROUPS}.latest, excluded.latest)"),
                                     [{"s": stream, "g": g, "ts": ts} for g, ts in newest.items()])
        replaced = sum((g, ts) in known for g, ts, _ in changed)
        return Written(stored=len(changed) - replaced, repeated=len(rows) - len(changed), replaced=replaced)

    def window(self, stream: str, start_ns: int, end_ns: int, group: str | None = None,
               also_at: tuple[int] | None = None) -> list[tuple]:
        """Current ``(group, ts_ns, record)`` rows with ``start_ns <= ts <= end_ns`` (of one group, or all),
        and with ``also_at``, every group's row at that time too."""
        query = f"SELECT grp, ts, record FROM {CURRENT} WHERE stream = :s AND ts BETWEEN :a AND :b" + (
            " AND grp = :g" if group is not None else "")
        if also_at is not None:  # a second indexed look-up in the same statement (an OR would scan)
            query += f" UNION SELECT grp, ts, record FROM {CURRENT} WHERE stream = :s AND ts = :t"
        params = {"s": stream, "a": int(start_ns), "b": int(end_ns)}
        params.update({"g": group} if group is not None else {})
        params.update({"t": int(also_at[0])} if also_at is not None else {})
        with self._read() as conn:
            return list(conn.exec_driver_sql(self._sql(query), params))

    def latest(self, stream: str, group: str | None = None) -> dict[str, int]:
        """Each group's latest timestamp (ns), or only ``group``'s."""
        where = "stream = :s" + (" AND grp = :g" if group is not None else "")
        params = {"s": stream, **({"g": group} if group is not None else {})}
        with self._read() as conn:  # kept by every write: one row per group, not a scan
            found = conn.exec_driver_sql(self._sql(f"SELECT grp, latest FROM {GROUPS} WHERE {where}"), params)
            return {g: int(ts) for g, ts in found}

    def _sql(self, query: str) -> str:
        """``query`` in the driver's own parameter style (``:name`` for sqlite3, ``%(name)s`` for psycopg): run
        with ``exec_driver_sql``, it skips SQLAlchemy's statement compilation, a third of a small request."""
        return query if self.sqlite else _pyformat(query)

    def counts(self, stream: str) -> tuple[int, int]:
        """(observations now, rows logged): the difference is how many replacements the log holds."""
        from sqlalchemy import text

        with self._read() as conn:
            now = conn.execute(text(f"SELECT COUNT(*) FROM {CURRENT} WHERE stream = :s"), {"s": stream}).scalar()
            logged = conn.execute(text(f"SELECT COUNT(*) FROM {LOG} WHERE stream = :s"), {"s": stream}).scalar()
        return int(now), int(logged)

    @contextmanager
    def _read(self):
        """A connection for reading: on SQLite each thread keeps its own open (a checkout from the pool and
        back costs more than a small query); on PostgreSQL one from the pool."""
        if not self.sqlite:
            with self.reader.connect() as conn:
                yield conn
            return
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.reader.connect()
        yield conn

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()
        self.reader.dispose()


class _Checkpointer:
    """Copies the SQLite write-ahead log into the database every ``EVERY_S`` seconds, in a thread of its own.
    SQLite would otherwise do it inside whichever write fills the log past 1,000 pages, and that write's
    request waits for the copy and its fsync (tens of milliseconds here). Passive: it never blocks a writer
    or a reader; the driver releases the GIL while it works. On exit (even SIGKILL) nothing is lost: the log
    is part of the database until it is copied."""

    EVERY_S = 1.0

    def __init__(self, path):
        self.path, self._stop = path, threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mlpipe-wal-checkpoint", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import sqlite3

        con = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        try:
            while not self._stop.wait(self.EVERY_S):
                con.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            con.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _sqlite_connection(dbapi_connection, _record) -> None:
    """Statements autocommit at the driver (the writer's BEGIN IMMEDIATE is SQLAlchemy's); WAL, so readers
    never wait for the writer; synchronous=NORMAL: a commit survives the process being killed (even by
    SIGKILL), though not a power cut in the instant after it, and costs no fsync."""
    dbapi_connection.isolation_level = None
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


@lru_cache(maxsize=256)
def _pyformat(query: str) -> str:
    return re.sub(r"(?<!:):(\w+)", r"%(\1)s", query)


def _lock_key(name: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(f"mlpipe:observations:{name}".encode()).digest()[:8], "big", signed=True)

