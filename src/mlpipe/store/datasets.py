"""The dataset registry: named, integer-versioned, content-addressed tables.

A catalog (SQLAlchemy: SQLite in the workspace by default, or any SQL URL) holds one row per version;
the data lives as Parquet files named by their SHA-256 content digest. Registering content that is
already registered under the name returns that version. Files are written before the catalog row
(temporary file, then rename), so a catalog row never points at a missing or partial file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from mlpipe.errors import IntegrityError, NotFoundError

_RETRIES = 20


@dataclass(frozen=True)
class DatasetVersion:
    name: str
    version: int
    description: str
    digest: str
    rows: int
    columns: list[dict[str, str]]
    created_at: str
    path: str

    def to_dict(self) -> dict:
        """The contract's ``datasets show`` object (plus the file's path)."""
        return asdict(self)

    def summary(self) -> dict:
        return {"name": self.name, "version": self.version, "digest": self.digest, "rows": self.rows}


@dataclass(frozen=True)
class Staged:
    """Data written to the store and digested, not yet a registered version."""

    name: str
    path: str
    """Relative to the store: ``NAME/DIGEST.parquet``."""
    digest: str
    rows: int
    columns: list[dict[str, str]]


def content_digest(df: pd.DataFrame) -> str:
    """SHA-256 over column names, dtypes and every value, independent of the file's encoding."""
    h = hashlib.sha256(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


CHUNK_ROWS = 1_000_000
"""Datasets are written and their digests read back this many rows at a time: a 10 M-row dataset is never
held twice (as Arrow beside pandas, or read back whole beside the frame it was written from)."""


def file_digest(path: str | os.PathLike) -> str:
    """``content_digest`` of a Parquet file's data as ``pd.read_parquet`` reads it, streamed ``CHUNK_ROWS``
    rows at a time (each row's hash depends on that row alone, so the chunks' hashes in order are the whole's)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    h = hashlib.sha256(json.dumps([[str(c), str(t)] for c, t in _read(schema.empty_table()).dtypes.items()]).encode())
    for batch in parquet.iter_batches(batch_size=CHUNK_ROWS):
        part = _read(pa.Table.from_batches([batch], schema=schema))
        h.update(pd.util.hash_pandas_object(part, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _read(table) -> pd.DataFrame:
    """An Arrow table as ``pd.read_parquet`` would give it (pandas 3's own conversion where it has one;
    ``tests/store/test_datasets.py`` holds the two digests equal)."""
    try:
        from pandas.io._util import arrow_table_to_pandas
    except ImportError:  # pandas 2
        return table.to_pandas()
    return arrow_table_to_pandas(table)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """``df`` as one Parquet file, converted to Arrow ``CHUNK_ROWS`` rows at a time (the first chunk's schema
    for all, as ``df.to_parquet`` would write it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.Schema.from_pandas(df, preserve_index=False)
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(df), CHUNK_ROWS):
            writer.write_table(pa.Table.from_pandas(df.iloc[start:start + CHUNK_ROWS], schema=schema,
                                                    preserve_index=False))
        if not len(df):
            writer.write_table(schema.empty_table())


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``NAME`` or ``NAME:VERSION``."""
    name, _, version = ref.partition(":")
    if version and not version.isdigit():
        raise NotFoundError(f"dataset reference {ref!r}: version must be a whole number")
    return name, int(version) if version else None


class DatasetRegistry:
    def __init__(self, url: str, storage):
        """``url``: the catalog (SQLAlchemy URL: SQLite or PostgreSQL); ``storage``: a folder, or an MLflow
        artifact URI (see ``mlpipe.store.storage``)."""
        from mlpipe.store.storage import open_store

        self.url, self.store = url, open_store(storage)
        self._engine = None

    # -- catalog ---------------------------------------------------------------------------------------
    def _exists(self) -> bool:
        return not self.url.startswith("sqlite:///") or Path(self.url.removeprefix("sqlite:///").split("?")[0]).exists()

    @property
    def engine(self):
        if self._engine is None:
            from sqlalchemy import create_engine, event

            if self.url.startswith("sqlite:///"):
                Path(self.url.removeprefix("sqlite:///").split("?")[0]).parent.mkdir(parents=True, exist_ok=True)
                self._engine = create_engine(self.url, connect_args={"timeout": 60})
                event.listen(self._engine, "connect", _sqlite_wal)
            else:
                self._engine = create_engine(self.url, pool_pre_ping=True)
            _create_table(self._engine)
        return self._engine

    def list(self) -> list[DatasetVersion]:
        """The newest version of every name."""
        if not self._exists():
            return []
        from sqlalchemy import func, select

        T = _table()
        newest = select(T.c.name, func.max(T.c.version).label("v")).group_by(T.c.name).subquery()
        query = select(T).join(newest, (T.c.name == newest.c.name) & (T.c.version == newest.c.v))
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query.order_by(T.c.name))]

    def get(self, ref: str) -> DatasetVersion:
        from sqlalchemy import select

        T = _table()
        name, version = parse_ref(ref)
        if self._exists():
            query = select(T).where(T.c.name == name)
            query = query.where(T.c.version == version) if version else query.order_by(T.c.version.desc())
            with self.engine.connect() as conn:
                row = conn.execute(query.limit(1)).first()
            if row is not None:
                return _row(row)
        raise NotFoundError(f"dataset {ref!r} does not exist")

    def find(self, name: str, digest: str) -> DatasetVersion | None:
        if not self._exists():
            return None
        from sqlalchemy import select

        T = _table()
        with self.engine.connect() as conn:
            row = conn.execute(select(T).where((T.c.name == name) & (T.c.digest == digest))).first()
        return _row(row) if row is not None else None

    # -- data ------------------------------------------------------------------------------------------
    def register(self, name: str, df: pd.DataFrame, description: str = "") -> DatasetVersion:
        """Store ``df`` under ``name``: a new version, or the existing one holding the same content."""
        return self.commit(self.stage(name, df), description)

    def stage(self, name: str, df: pd.DataFrame) -> "Staged":
        """Write the data file (content-addressed, so harmless if never committed); no version yet."""
        path, digest = self._write(name, df)
        return Staged(name, path, digest, len(df), _schema(df))

    def commit(self, staged: "Staged", description: str = "") -> DatasetVersion:
        """Give staged data a version under its name, or return the version already holding it."""
        from sqlalchemy import exc, func, select

        T = _table()
        for _ in range(_RETRIES):
            existing = self.find(staged.name, staged.digest)
            if existing is not None:
                return existing
            try:
                with self.engine.begin() as conn:
                    top = conn.execute(select(func.max(T.c.version)).where(T.c.name == staged.name)).scalar()
                    version = (top or 0) + 1
                    conn.execute(T.insert().values(
                        name=staged.name, version=version, description=description, digest=staged.digest,
                        rows=staged.rows, columns=json.dumps(staged.columns),
                        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        path=staged.path))
                return self.get(f"{staged.name}:{version}")
            except (exc.IntegrityError, exc.OperationalError):
                continue  # another process took that version (or held the lock): look again
        raise RuntimeError(f"could not register dataset {staged.name!r} after {_RETRIES} attempts")

    def _write(self, name: str, df: pd.DataFrame) -> tuple[str, str]:
        """Write ``df`` as Parquet at its content address; the digest is of the data as read back."""
        from mlpipe import faults

        with self.store.staging(name) as folder:
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".parquet.tmp")
            os.close(fd)
            try:
                write_parquet(df, tmp)
                digest = file_digest(tmp)
                faults.checkpoint("dataset.file.written")
                rel = self.store.name_for(name, digest)
                self.store.put(Path(tmp), rel)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return rel, digest

    def load(self, ref: str) -> pd.DataFrame:
        """The data of a version, checked against its registered digest."""
        version = self.get(ref)
        where = self.store.where(version.path)
        label = f"dataset {version.name}:{version.version}"
        try:
            with self.store.local_copy(version.path) as path:
                df = pd.read_parquet(path)
        except FileNotFoundError:
            raise IntegrityError(f"{label}: file {where} is missing") from None
        except Exception as e:  # a truncated or garbled file: pyarrow raises several types
            raise IntegrityError(f"{label}: file {where} is unreadable: {' '.join(str(e).split())}") from None
        if content_digest(df) != version.digest:
            raise IntegrityError(f"{label}: file {where} does not match its digest (tampered or truncated)")
        return df

    def download(self, ref: str, dest: Path) -> DatasetVersion:
        """Write ``dest/data.parquet`` and ``dest/dataset.json``."""
        from mlpipe.store.models import write_atomic

        version, df = self.get(ref), self.load(ref)
        dest.mkdir(parents=True, exist_ok=True)
        write_atomic(dest / "data.parquet", df.to_parquet(index=False))
        write_atomic(dest / "dataset.json", json.dumps(version.to_dict(), indent=2).encode())
        return version


def _schema(df: pd.DataFrame) -> list[dict[str, str]]:
    return [{"name": str(c), "dtype": str(t)} for c, t in df.dtypes.items()]


def _row(r) -> DatasetVersion:
    m = r._mapping
    return DatasetVersion(m["name"], m["version"], m["description"], m["digest"], m["rows"],
                          json.loads(m["columns"]), m["created_at"], m["path"])


def _create_table(engine) -> None:
    """Create the catalog table once, also when several processes open a new catalog at the same moment."""
    from sqlalchemy import exc, text

    for attempt in range(_RETRIES):
        try:
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":  # serialise concurrent CREATE TABLEs
                    conn.execute(text("SELECT pg_advisory_xact_lock(7208123140291001)"))
                _table().metadata.create_all(conn, checkfirst=True)
            return
        except (exc.OperationalError, exc.IntegrityError, exc.ProgrammingError):
            if attempt == _RETRIES - 1:
                raise
            time.sleep(0.1 * (attempt + 1))


def _sqlite_wal(dbapi_conn, _record) -> None:
    dbapi_conn.execute("PRAGMA journal_mode=WAL")
    dbapi_conn.execute("PRAGMA busy_timeout=60000")


@functools.cache
def _table():
    from sqlalchemy import Column, Integer, MetaData, String, Table, Text, UniqueConstraint

    return Table(
        "dataset_versions", MetaData(),
        Column("name", String(255), primary_key=True),
        Column("version", Integer, primary_key=True),
        Column("description", Text, nullable=False),
        Column("digest", String(64), nullable=False),
        Column("rows", Integer, nullable=False),
        Column("columns", Text, nullable=False),
        Column("created_at", String(40), nullable=False),
        Column("path", Text, nullable=False),
        UniqueConstraint("name", "digest"),
    )
