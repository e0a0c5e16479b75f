"""The forecast log: every forecast mlpipe answers, kept in the workspace (``forecast_log/<model name>/``) so
``mlpipe monitor`` can join it with the truth when that arrives.

A server appends one JSON line per request to the day's file (``2026-12-01.jsonl``, by the UTC date it was
answered), in one ``write`` on a file opened for appending, before the answer is sent: once a client has its
answer, the line is in the operating system's hands, so killing the server (even with SIGKILL) loses none,
and a line is never written twice. Several worker processes append to the same file; each line arrives
whole. A line holds the request's forecasts in columns: ids (``<request id>:<row>``), model name and
version, where it was answered (``forecast``, ``predict``), group, timestamp and ``forecast_for`` (ISO 8601;
null for ``/predict``, whose records carry neither), label, probability, the answer's time, and the model's
input (float32, row-major, base64: the same bits the model saw).

A batch (``mlpipe predict``) writes one Parquet file per run (``<date>-batch-<id>.parquet``), renamed into
place when the output is: a run that fails logs nothing, as it outputs nothing.

If the log cannot be written (a full disk, a path that is not a folder), the answer still goes out: the
forecasts lost are counted, reported on ``/health`` and stderr, and noted in the log with the next line that
can be written."""

from __future__ import annotations

import base64
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

FOLDER = "forecast_log"


def log_dir(workspace_root, model: str) -> Path:
    return Path(workspace_root) / FOLDER / model


def _iso_now(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


@dataclass
class LogCounts:
    logged: int = 0
    """forecasts written"""
    lost: int = 0
    """forecasts answered but not written"""
    last_error: Optional[str] = None


@dataclass
class ForecastLog:
    """Appends a server's forecasts to the day's JSON-lines file; ``counts`` says how it went."""

    root: Path
    """``forecast_log`` in the workspace"""
    counts: LogCounts = field(default_factory=LogCounts)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._open: tuple[str, str, int] | None = None  # (model, day, fd)
        self._unreported = 0  # lost forecasts not yet noted in the log
        self._cut = False  # the last write was cut short

    def write(self, model: str, version: int, source: str, labels, proba, X: np.ndarray,
              groups: Optional[list] = None, times: Optional[list] = None, forecast_for: Optional[list] = None,
              categories: Optional[np.ndarray] = None) -> None:
        """Log one request's forecasts (``X``: the model's float32 input, one row per forecast; ``categories``:
        its string input, if it has one). Never raises for a log that cannot be written: the loss is counted
        instead."""
        from pydantic_core import to_json

        now = time.time()
        n = len(X)
        if n == 0:
            return
        line = {"id": uuid.uuid4().hex, "model": model, "version": version, "source": source,
                "answered_at": _iso_now(now), "n": n, "width": int(X.shape[1]),
                "group": groups, "timestamp": times, "forecast_for": forecast_for,
                "label": np.asarray(labels).tolist(), "probability": np.asarray(proba, dtype=np.float64).tolist(),
                "x": base64.b64encode(np.ascontiguousarray(X, dtype=np.float32).tobytes()).decode("ascii")}
        if categories is not None:
            line["c"] = np.asarray(categories, dtype=object).tolist()
        data = to_json(line) + b"\n"
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        with self._lock:
            try:
                fd = self._fd(model, day)
                if self._unreported:
                    note = {"lost": self._unreported, "error": self.counts.last_error, "noted_at": _iso_now(now)}
                    self._write_all(fd, to_json(note) + b"\n")
                    self._unreported = 0
                self._write_all(fd, data)
                self.counts.logged += n
            except OSError as e:
                self._lost(n, f"{e.strerror or e}: {e.filename or self.root}")

    def _write_all(self, fd: int, data: bytes) -> None:
        """One ``write``; a short one (a full disk) is an error, and the next line starts on a line of its own
        (the reader skips the cut one)."""
        if self._cut:
            data = b"\n" + data
        written = os.write(fd, data)
        self._cut = written != len(data)
        if self._cut:
            raise OSError(28, f"short write ({written} of {len(data)} bytes)", None)

    def _fd(self, model: str, day: str) -> int:
        if self._open is not None and self._open[:2] == (model, day):
            return self._open[2]
        folder = self.root / model
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / f"{day}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self._open is not None:
            os.close(self._open[2])
        self._open = (model, day, fd)
        return fd

    def _lost(self, n: int, error: str) -> None:
        first = self.counts.last_error != error
        self.counts.lost += n
        self._unreported += n
        self.counts.last_error = error
        if first:  # once per distinct error, not once per request
            print(f"warning: forecast log: {error}; answering without logging "
                  f"({self.counts.lost} forecasts not logged so far, see /health)", file=sys.stderr, flush=True)

    def close(self) -> None:
        with self._lock:
            if self._open is not None:
                os.close(self._open[2])
                self._open = None


class BatchLog:
    """A batch run's forecasts, written to a Parquet file beside the server's lines and put in place by
    ``commit`` (when the run's output is). A failure to write is counted, as a server counts it."""

    def __init__(self, workspace_root, model: str, version: int, features: list[str], categorical=()):
        self.model, self.version, self.features, self.categorical = model, version, features, list(categorical)
        self.folder = log_dir(workspace_root, model)
        self.counts = LogCounts()
        self.id = uuid.uuid4().hex
        self._writer = None
        self._tmp: Path | None = None
        self._rows = 0

    def write(self, labels, proba, X: np.ndarray, groups=None, times=None, forecast_for=None,
              categories: Optional[np.ndarray] = None) -> None:
        """One chunk's forecasts; ``times`` and ``forecast_for`` as int64 nanoseconds (UTC); ``categories``: the
        string input of a model with categorical columns."""
        import pyarrow as pa

        n = len(X)
        if n == 0:
            return
        now = time.time()
        cols = {"id": pa.array([f"{self.id}:{i}" for i in range(self._rows, self._rows + n)]),
                "model": pa.array([self.model] * n), "version": pa.array(np.full(n, self.version, np.int64)),
                "source": pa.array(["batch"] * n),
                "answered_at": pa.array(np.full(n, int(now * 1e9), "datetime64[ns]"), pa.timestamp("ns", "UTC")),
                "group": pa.array(groups, pa.string()) if groups is not None else pa.nulls(n, pa.string()),
                "timestamp": _times(times, n), "forecast_for": _times(forecast_for, n),
                "label": pa.array(np.asarray(labels, np.int64)), "probability": _probabilities(proba)}
        for j, name in enumerate(self.features):
            cols[f"x.{name}"] = pa.array(np.ascontiguousarray(X[:, j], dtype=np.float32))
        for j, name in enumerate(self.categorical if categories is not None else []):
            cols[f"c.{name}"] = pa.array(np.asarray(categories)[:, j].tolist(), pa.string())
        table = pa.table(cols)
        if self.counts.lost:  # once a write failed the file may be damaged: the rest is lost too, and not kept
            self.counts.lost += n
            return
        try:
            if self._writer is None:
                import pyarrow.parquet as pq

                self.folder.mkdir(parents=True, exist_ok=True)
                self._tmp = self.folder / f".{self.id}.parquet.tmp"
                self._writer = pq.ParquetWriter(self._tmp, table.schema)
            self._writer.write_table(table)
            self._rows += n
        except OSError as e:
            self.counts.lost += n
            if self.counts.last_error is None:
                self.counts.last_error = f"{e.strerror or e}: {e.filename or self.folder}"

    def commit(self) -> Optional[Path]:
        """Put the run's file in place; None when nothing was logged (or a write failed: then none of it is)."""
        if self._writer is None:
            return None
        if self.counts.lost:
            self.counts.lost += self._rows
            self._rows = 0
            self.abandon()
            return None
        try:
            self._writer.close()
            day = time.strftime("%Y-%m-%d", time.gmtime())
            final = self.folder / f"{day}-batch-{self.id}.parquet"
            os.replace(self._tmp, final)
            self.counts.logged = self._rows
            return final
        except OSError as e:
            self.counts.lost += self._rows
            self.counts.last_error = f"{e.strerror or e}: {e.filename or self.folder}"
            return None

    def abandon(self) -> None:
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError as e:  # the file is being thrown away; the failure is kept, not raised over the cause
                self.counts.last_error = self.counts.last_error or f"{e.strerror or e}: {e.filename or self.folder}"
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)
            self._writer = None


def _times(values, n: int):
    import pyarrow as pa

    kind = pa.timestamp("ns", "UTC")
    if values is None:
        return pa.nulls(n, kind)
    return pa.array(np.asarray(values, dtype=np.int64)).cast(kind)  # nanoseconds since the epoch, UTC


# -- reading ---------------------------------------------------------------------------------------------

@dataclass
class Logged:
    """A model's logged forecasts: one row per forecast (id, version, source, group, timestamp, forecast_for,
    label, probability, answered_at) and each version's input matrix, row-aligned with its rows."""

    rows: "object"
    """a pandas DataFrame; ``_x`` is the row's index in ``inputs[version]``"""
    inputs: dict
    """version -> float32 matrix, one row per row of ``rows`` of that version (in their order)"""
    lost: int
    """forecasts the server answered but could not log, as noted in the log"""
    files: int
    damaged: int = 0
    """lines that do not decode (cut short by a full disk)"""


def read_log(workspace_root, model: str) -> Logged:
    """Everything logged for ``model``."""
    import json

    import pandas as pd

    folder = log_dir(workspace_root, model)
    frames, inputs, lost, files, damaged = [], {}, 0, 0, 0
    paths = sorted(folder.glob("*.jsonl")) + sorted(folder.glob("*-batch-*.parquet")) if folder.is_dir() else []
    cols: dict[str, list] = {k: [] for k in ("id", "model", "version", "source", "answered_at", "group", "timestamp",
                                             "forecast_for", "label", "probability")}
    for path in paths:
        files += 1
        if path.suffix == ".parquet":
            part = pd.read_parquet(path)
            xs = [c for c in part.columns if c.startswith("x.")]
            for v, rows in part.groupby("version", sort=False):
                inputs.setdefault(int(v), []).append(rows[xs].to_numpy(np.float32))
            frames.append(part.drop(columns=xs))
            continue
        with open(path, "rb") as fh:  # one request a line, its forecasts in columns: gathered, then one frame
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # a line still being written by a live server
                try:
                    line = json.loads(raw)
                except ValueError:
                    damaged += 1  # a line cut short by a full disk (its forecasts were counted lost)
                    continue
                if "lost" in line:
                    lost += int(line["lost"])
                    continue
                n = line["n"]
                X = np.frombuffer(base64.b64decode(line["x"]), dtype=np.float32).reshape(n, line["width"])
                inputs.setdefault(int(line["version"]), []).append(X)
                cols["id"] += [f"{line['id']}:{i}" for i in range(n)]
                for k in ("model", "version", "source", "answered_at"):
                    cols[k] += [line[k]] * n
                for k in ("group", "timestamp", "forecast_for"):
                    cols[k] += line[k] if line[k] is not None else [None] * n
                cols["label"] += line["label"]
                cols["probability"] += line["probability"]
    if cols["id"]:
        lines = pd.DataFrame(cols)
        for c in ("answered_at", "timestamp", "forecast_for"):
            lines[c] = pd.to_datetime(lines[c], utc=True, format="ISO8601")
        frames.insert(0, lines)  # JSON lines files come first in ``paths``, so their inputs were gathered first
    columns = ["id", "model", "version", "source", "answered_at", "group", "timestamp", "forecast_for", "label",
               "probability"]
    if not frames:
        return Logged(pd.DataFrame({c: [] for c in columns}), {}, lost, files, damaged)
    rows = pd.concat([f[columns] for f in frames], ignore_index=True)
    for c in ("answered_at", "timestamp", "forecast_for"):
        rows[c] = pd.to_datetime(rows[c], utc=True)
    rows["version"] = rows["version"].astype("int64")
    rows["_x"] = rows.groupby("version").cumcount()  # the row of inputs[version] that is this forecast's input
    return Logged(rows, {v: np.concatenate(xs) for v, xs in inputs.items()}, lost, files, damaged)


def _probabilities(proba):
    """The positive class's probabilities, or for several classes each row's list of them."""
    import pyarrow as pa

    proba = np.asarray(proba, np.float64)
    return pa.array(proba) if proba.ndim == 1 else pa.array(proba.tolist(), pa.list_(pa.float64()))
