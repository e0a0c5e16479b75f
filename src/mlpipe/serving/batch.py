"""Batch scoring: a CSV or Parquet file through a registered ONNX model, chunk by chunk, so memory stays
bounded however large the file. Two kinds of input, told apart by their columns (or ``kind``):

- feature vectors (the model's ``features``): the input's columns, then ``label`` and ``probability``;
- raw observations in the schema of the training source (``serving.raw``): the derived features computed as
  training computed them; out: timestamp, group, ``forecast_for``, ``label``, ``probability``."""

from __future__ import annotations

import csv
import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from mlpipe.errors import DataError
from mlpipe.monitoring.log import BatchLog

FORMATS = (".csv", ".parquet")
OUTPUT_COLUMNS = ("label", "probability")
MAX_CSV_BLOCK = 1 << 20
"""pyarrow's streaming CSV reader reads a few dozen blocks ahead: with 1 MiB blocks that is ~32 MiB, however
large the file (with 6 MiB blocks it held ~190 MiB of a 187 MB file)."""
CLASH_PREFIX = "input_"
"""An input column already called ``label`` or ``probability`` (a test set's truth) is kept as ``input_label``."""


@dataclass(frozen=True)
class Scored:
    rows: int
    model: str
    """``NAME:VERSION`` of the model that scored the file."""


def predict_file(workspace, ref: str, input: Path, output: Path, chunk_rows: int = 65536,
                 threads: int = 0, kind: str = "auto", log: bool = True) -> Scored:
    """Score ``input`` with the model ``ref`` into ``output`` (written whole or not at all). ``kind``:
    "features", "raw", or "auto" (raw when the input lacks the model's derived features but holds the
    training source's columns). ``log``: keep the forecasts in the workspace's forecast log
    (``mlpipe.monitoring.log``), in place when the output is."""
    from mlpipe.serving.model import open_model

    input, output = Path(input), Path(output)
    _check_format(input, "input")
    _check_format(output, "output")
    if not input.is_file():
        raise DataError(f"input file {input} does not exist")
    if kind not in ("auto", "features", "raw"):
        raise DataError(f"input kind {kind!r}: use auto, features or raw")
    model = open_model(workspace, ref, threads)
    recipe = model.recipe
    if kind == "raw" and recipe is None:
        raise DataError(f"model {model.name}:{model.version} records no feature recipe: it scores feature vectors")
    logbook = BatchLog(workspace.root, model.name, model.version, model.features, model.categorical) if log else None
    try:
        if kind == "raw" or (kind == "auto" and recipe is not None and _looks_raw(input, model.features, recipe)):
            scored = _predict_raw(model, recipe, input, output, chunk_rows, logbook)
        else:
            scored = _predict_features(model, input, output, chunk_rows, logbook)
    except BaseException:
        if logbook is not None:
            logbook.abandon()
        raise
    if logbook is not None:
        logbook.commit()
        if logbook.counts.lost:
            from mlpipe.console import warn

            warn(f"forecast log: {logbook.counts.lost} forecasts not logged ({logbook.counts.last_error}); "
                 f"{output} is complete")
    return scored


def _predict_features(model, input: Path, output: Path, chunk_rows: int, logbook) -> Scored:
    reader = _open(input, model.features, chunk_rows)
    _check_columns(input, reader.schema.names, model.features + model.categorical)
    rows = 0
    with _progress(reader.total, reader.unit, f"scoring {input.name}") as advance, _atomic(output) as tmp:
        writer = None
        try:
            for batch in reader.batches:
                scored, X, C, labels, proba = _score(model, batch, str(input))
                if logbook is not None:
                    logbook.write(labels, proba, X, categories=C)
                if writer is None:
                    writer = _writer(tmp, scored.schema)
                writer.write_batch(scored)
                rows += batch.num_rows
                advance(reader.position())
            if writer is None:  # no rows at all: still write the header / schema
                writer = _writer(tmp, _output_schema(reader.schema))
        finally:
            if writer is not None:
                writer.close()
    return Scored(rows, f"{model.name}:{model.version}")


def _looks_raw(path: Path, features: list[str], recipe) -> bool:
    columns = _columns_of(path)
    return (recipe.config.data.series and not set(features) <= set(columns)
            and set(recipe.raw_columns) <= set(columns))


def _columns_of(path: Path) -> list[str]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            return next(csv.reader(fh), None) or []
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).schema_arrow.names
    except Exception:  # noqa: BLE001 -- _open says what is wrong with the file
        return []


def _predict_raw(model, recipe, input: Path, output: Path, chunk_rows: int, logbook) -> Scored:
    """Raw observations in time order, chunk by chunk through ``serving.raw.RawScorer``."""
    import pyarrow as pa

    from mlpipe.serving.raw import RawScorer

    reader = _open(input, list(recipe.config.data.features), chunk_rows)
    _check_columns(input, reader.schema.names, recipe.raw_columns)
    scorer = RawScorer(model, recipe, str(input))
    rows = 0
    with _progress(reader.total, reader.unit, f"forecasting {input.name}") as advance, _atomic(output) as tmp:
        writer = None
        try:
            for batch in itertools.chain(_gather(reader.batches, chunk_rows), [None]):  # None: the end
                answered = scorer.finish() if batch is None else scorer.feed(batch.to_pandas())
                if logbook is not None and len(answered):
                    logbook.write(answered["label"].to_numpy(), answered["probability"].to_numpy(), scorer.inputs,
                                  groups=answered[recipe.group].tolist() if recipe.group else None,
                                  times=_ns(answered[recipe.timestamp]), forecast_for=_ns(answered["forecast_for"]))
                if len(answered) or (batch is None and writer is None):
                    if output.suffix.lower() == ".csv":
                        answered = _iso_times(answered, [recipe.timestamp, "forecast_for"])
                    table = pa.RecordBatch.from_pandas(answered, preserve_index=False)
                    if writer is None:
                        writer = _writer(tmp, table.schema)
                    if len(answered):
                        writer.write_batch(table)
                rows += len(answered)
                if batch is not None:
                    advance(reader.position())
        finally:
            if writer is not None:
                writer.close()
    if scorer.conflicting:
        from mlpipe.console import warn

        warn(f"{input}: {scorer.conflicting} rows dropped: their group and timestamp were observed twice with "
             f"different values (as training drops them)")
    return Scored(rows, f"{model.name}:{model.version}")


def _ns(times) -> np.ndarray:
    """A UTC datetime Series as int64 nanoseconds."""
    return times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ns]").view(np.int64)


def _iso_times(frame, columns: list[str]):
    """Timestamp columns as ISO 8601 text in UTC (``2013-12-30T22:00:00Z``), formatted once per distinct
    time: many stations share each hour, and Arrow's CSV writer formats every value (most of a run's time)."""
    import pandas as pd

    out = frame.copy()
    for col in columns:
        codes, times = pd.factorize(frame[col])
        text = np.array([t.isoformat().replace("+00:00", "Z") for t in times] + [""], dtype=object)
        out[col] = text[codes]  # code -1 (missing) -> ""
    return out


def _gather(batches: Iterator, rows: int) -> Iterator:
    """Record batches joined into tables of about ``rows`` rows: a CSV reader's blocks hold ~10,000 rows,
    and each chunk of raw rows recomputes its look-back context (24 h of every station), so fewer, larger
    chunks cost less."""
    import pyarrow as pa

    pending, count = [], 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(pending)
            pending, count = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


def _check_format(path: Path, role: str) -> None:
    if path.suffix.lower() not in FORMATS:
        raise DataError(f"{role} file {path}: unsupported format {path.suffix or '(none)'!r}; use .csv or .parquet")


@dataclass
class _Reader:
    schema: object
    batches: Iterator
    total: int
    unit: str
    position: Callable[[], int]


def _open(path: Path, features: list[str], chunk_rows: int) -> _Reader:
    return _open_csv(path, features, chunk_rows) if path.suffix.lower() == ".csv" else \
        _open_parquet(path, features, chunk_rows)


def _open_csv(path: Path, features: list[str], chunk_rows: int) -> _Reader:
    """Features are read as numbers (empty, NA, NaN, null: missing); every other column as text, so a value
    that only a later chunk holds cannot break a type guessed from the first (and CSV text comes back as it
    was)."""
    import pyarrow as pa
    from pyarrow import csv as pacsv

    with open(path, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), None)
        sample = fh.read(1 << 16)
    if not header:
        raise DataError(f"input file {path} is empty (no header line)")
    _check_columns(path, header, features)
    line_bytes = max(16, len(sample) // max(1, sample.count("\n")))
    block = min(MAX_CSV_BLOCK, max(1 << 14, chunk_rows * line_bytes))
    source = pa.OSFile(str(path))
    types = {c: (pa.float64() if c in features else pa.string()) for c in header}
    reader = pacsv.open_csv(
        source, read_options=pacsv.ReadOptions(block_size=block),
        convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False))
    return _Reader(reader.schema, _csv_batches(reader, path, header), path.stat().st_size, "bytes", source.tell)


def _csv_batches(reader, path: Path, header: list[str]) -> Iterator:
    import pyarrow as pa

    while True:
        try:
            yield reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as e:
            raise DataError(f"input file {path}: {_name_csv_column(str(e), header)}") from None


def _name_csv_column(message: str, header: list[str]) -> str:
    """pyarrow says "In CSV column #3: …"; say which column that is."""
    import re

    m = re.search(r"CSV column #(\d+)", message)
    if m and int(m[1]) < len(header):
        message = message.replace(m[0], f"column {header[int(m[1])]!r}")
    return " ".join(message.split())


def _open_parquet(path: Path, features: list[str], chunk_rows: int) -> _Reader:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"input file {path} is not a readable Parquet file: {e}") from None
    schema = pf.schema_arrow
    _check_columns(path, schema.names, features)
    for name in features:
        t = schema.field(name).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t)):
            raise DataError(f"input file {path}: column {name!r} is {t}, not a number")
    done = [0]

    def batches():
        for batch in pf.iter_batches(batch_size=chunk_rows):
            done[0] += batch.num_rows
            yield batch

    return _Reader(schema, batches(), pf.metadata.num_rows, "rows", lambda: done[0])


def _check_columns(path: Path, columns: list[str], features: list[str]) -> None:
    missing = [f for f in features if f not in columns]
    if missing:
        raise DataError(f"input file {path} has no column {missing[0]!r} (the model needs "
                        f"{', '.join(features)})")


def _score(model, batch, where: str):
    """The batch with the input's ``label``/``probability`` renamed, then the model's two columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mlpipe.featurize import category_matrix

    X = np.empty((batch.num_rows, len(model.features)), dtype=np.float32)
    for j, name in enumerate(model.features):
        X[:, j] = pc.cast(batch.column(name), pa.float32()).to_numpy(zero_copy_only=False)
    # text as training read it: integer codes as their text, empty or null as missing
    C = category_matrix(lambda name: batch.column(name).to_pandas(), model.categorical, where) \
        if model.categorical else None
    labels, proba = model.predict(X, C)
    names = [_rename(n) for n in batch.schema.names]
    if model.classes:  # several classes: the class by name, its probability, then each class's
        k = np.asarray(labels, dtype=np.int64)
        out = [pa.array(np.asarray(model.classes, dtype=object)[k], pa.string()),
               pa.array(proba[np.arange(len(k)), k], pa.float32()),
               *(pa.array(proba[:, j], pa.float32()) for j in range(len(model.classes)))]
        scored = pa.RecordBatch.from_arrays([*batch.columns, *out], names=[
            *names, *OUTPUT_COLUMNS, *(f"probability_{c}" for c in model.classes)])
        return scored, X, C, labels, proba
    scored = pa.RecordBatch.from_arrays([*batch.columns, pa.array(labels, pa.int64()), pa.array(proba, pa.float32())],
                                        names=[*names, *OUTPUT_COLUMNS])
    return scored, X, C, labels, proba


def _rename(name: str) -> str:
    return CLASH_PREFIX + name if name in OUTPUT_COLUMNS else name


def _output_schema(schema):
    import pyarrow as pa

    fields = [schema.field(i).with_name(_rename(n)) for i, n in enumerate(schema.names)]
    return pa.schema([*fields, pa.field("label", pa.int64()), pa.field("probability", pa.float32())])


def _writer(path: Path, schema):
    if path.suffix.lower() == ".csv":
        from pyarrow import csv as pacsv

        return pacsv.CSVWriter(str(path), schema)
    import pyarrow.parquet as pq

    return pq.ParquetWriter(str(path), schema)


class _atomic:
    """A temporary file beside ``path`` (same suffix), renamed to ``path`` only when the block succeeds."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.stem}.", suffix=self.path.suffix)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


class _progress:
    """A Rich progress bar on stderr (silent with ``--quiet``); calling the bound function moves it."""

    def __init__(self, total: int, unit: str, description: str):
        self.total, self.unit, self.description = total, unit, description

    def __enter__(self):
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from mlpipe.console import console

        amount = DownloadColumn() if self.unit == "bytes" else MofNCompleteColumn()
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), amount, TimeElapsedColumn(),
                            TimeRemainingColumn(), console=console, transient=False)
        self.bar.__enter__()
        task = self.bar.add_task(self.description, total=self.total)
        return lambda done: self.bar.update(task, completed=done)

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)
