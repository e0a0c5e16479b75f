"""Step 1, ingest: validate and clean raw rows, label them by timestamp, split them by time."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from mlpipe.config import Config
from mlpipe.errors import DataError
from mlpipe.featurize import MISSING_CATEGORY, category_text, impossible
from mlpipe.steps.features import add_time_features

LABEL = "label"


@dataclass
class IngestReport:
    """What validation found and did; logged to MLflow and shown in the run's log."""

    rows_read: int = 0
    missing_timestamps_dropped: int = 0
    exact_duplicates_dropped: int = 0
    conflicting_timestamps: int = 0
    conflicting_rows_dropped: int = 0
    backward_time_jumps: int = 0
    impossible_values: dict[str, int] = field(default_factory=dict)
    missing_values: dict[str, int] = field(default_factory=dict)
    unlabelled_dropped: int = 0
    rows_labelled: int = 0
    positive_rate: float = 0.0
    classes: list[str] = field(default_factory=list)
    """A target with several classes: their names, in label order (``target.classes``, or learned here)."""
    class_counts: dict[str, int] = field(default_factory=dict)
    embargo_dropped: int = 0
    train_rows: int = 0
    validation_rows: int = 0
    test_rows: int = 0
    validation_embargo_dropped: int = 0
    train_range: tuple[str, str] = ("", "")
    validation_range: tuple[str, str] = ("", "")
    test_range: tuple[str, str] = ("", "")

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self, horizon: str, series: bool = True) -> list[str]:
        """What was found and done, a line each, as the run's log shows it."""
        r = self
        found = [f"{r.exact_duplicates_dropped} exact duplicate rows dropped",
                 f"{r.conflicting_timestamps} timestamps with conflicting values ({r.conflicting_rows_dropped} rows "
                 f"dropped)",
                 f"{r.backward_time_jumps} backward jumps in time (rows sorted by time)",
                 f"impossible values made missing: {r.impossible_values or 'none'}",
                 f"missing values per feature: {r.missing_values or 'none'}",
                 (f"{r.unlabelled_dropped} rows without an observation {horizon} later dropped" if series else
                  f"{r.unlabelled_dropped} rows without a target value dropped"),
                 (f"{r.rows_labelled} rows labelled, {r.positive_rate:.1%} positive" if not r.classes else
                  f"{r.rows_labelled} rows labelled: " + ", ".join(f"{c} {n}" for c, n in r.class_counts.items())),
                 f"train {r.train_rows} rows {r.train_range[0]} .. {r.train_range[1]}; "
                 f"validation {r.validation_rows} rows {r.validation_range[0]} .. {r.validation_range[1]}; "
                 f"test {r.test_rows} rows {r.test_range[0]} .. {r.test_range[1]} "
                 f"({r.validation_embargo_dropped} train rows dropped whose label lies in the validation period, "
                 f"{r.embargo_dropped} whose label lies in the test period)" if r.train_range[0] else
                 f"train {r.train_rows} rows, validation {r.validation_rows}, test {r.test_rows} (no timestamp: "
                 f"split at random, stratified by class)"]
        if not series:  # independent rows: equal ones are kept, and no timestamp can conflict
            found[:2] = ["rows are independent events (data.series = false): equal rows kept" +
                         (", many may share a timestamp" if r.train_range[0] else "")]
            if not r.train_range[0]:  # no timestamp: nothing was sorted
                del found[1]
        if r.missing_timestamps_dropped:
            found.insert(0, f"{r.missing_timestamps_dropped} rows without a timestamp dropped")
        return found


@dataclass(frozen=True)
class Ingested:
    processed: pd.DataFrame
    train: pd.DataFrame
    """The rows every fit may see: searches, thresholds, the final fits."""
    validation: pd.DataFrame
    """The end of the training period, which no fit and no choice of hyperparameters saw: models, persistence
    and the champion are compared on it."""
    test: pd.DataFrame
    """The last ``test_fraction`` of timestamps, for reporting only: nothing is chosen on it."""
    report: IngestReport


def ingest(raw: pd.DataFrame, config: Config, source: str) -> Ingested:
    """Validate, clean, add the time-series features, label and split ``raw`` as ``config`` says (the run does
    the same in its three steps: ``prepare``, ``features.add_time_features``, ``label_and_split``); ``source``
    names it in errors."""
    df, report = prepare(raw, config, source)
    return label_and_split(add_time_features(df, config), config, report, source)


def prepare(raw: pd.DataFrame, config: Config, source: str) -> tuple[pd.DataFrame, IngestReport]:
    """Validate and clean ``raw``: the configured columns, one row per (group, timestamp), sorted by time,
    impossible values made missing. Returns the rows and what was found and done."""
    report = IngestReport(rows_read=len(raw))
    df = validate(raw, config, source)
    return clean(df, config, report), report


def label_and_split(df: pd.DataFrame, config: Config, report: IngestReport, source: str) -> Ingested:
    """Label clean rows (their features added) by timestamp, and split them by time (at random, stratified
    by class, without a timestamp)."""
    df = add_label(df, config, report, source)
    if df.empty:
        raise DataError(f"{source}: no row has an observation {config.target.horizon} later to label it"
                        if config.data.series else f"{source}: no row has a value of {config.target.column!r}")
    if config.data.timestamp is None:
        train, validation, test = split_stratified(df, config, report)
    else:
        train, validation, test = split_by_time(df, config, report)
    check_trainable(train, test, settled(config, report), source)
    return Ingested(processed=df, train=train, validation=validation, test=test, report=report)


def validate(raw: pd.DataFrame, config: Config, source: str) -> pd.DataFrame:
    """Check that the configured columns exist and have usable types; return just those columns."""
    if raw.empty:
        raise DataError(f"{source}: has a header but no data rows" if len(raw.columns) else f"{source}: file is empty")
    if len(raw) == 1:
        raise DataError(f"{source}: only 1 data row; a model needs rows to train on and later rows to test on")
    data, target = config.data, config.target
    columns = _columns(config)
    for col in columns:
        if col not in raw.columns:
            raise DataError(f"{source}: missing column {col!r} (columns found: {', '.join(map(str, raw.columns[:12]))})")
    for col in config.data.ranges:
        if col not in raw.columns:
            raise DataError(f"{source}: column {col!r} named in data.ranges does not exist")
    df = raw[columns].copy()
    if data.timestamp is not None:
        df[data.timestamp] = _parse_timestamps(df[data.timestamp], source, data.timestamp)
    for col in data.features:
        df[col] = _numeric(df[col], source, col)
    for col in data.categorical:
        df[col] = category_text(df[col], source, col)
    if target.above is not None and target.column not in data.features:
        df[target.column] = _numeric(df[target.column], source, target.column)
    if target.multiclass:  # classes by name: text, integer codes as their text, missing as ""
        values = df[target.column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            odd = values[values.notna() & (values % 1 != 0)]
            if len(odd):
                raise DataError(f"{source}: column {target.column!r} holds measurements (first: "
                                f"{float(odd.iloc[0])!r}), not classes: give target.above (or positive) for a "
                                f"binary target")
        df[target.column] = category_text(values, source, target.column)
    if data.group is not None:
        df[data.group] = df[data.group].astype("string").fillna("").astype(str)
    return df


def _columns(config: Config) -> list[str]:
    data = config.data
    cols = [data.timestamp] * (data.timestamp is not None) + ([data.group] if data.group else [])
    cols += [c for c in [*data.features, *data.categorical] if c not in cols]
    return cols + ([config.target.column] if config.target.column not in cols else [])


def _parse_timestamps(col: pd.Series, source: str, name: str) -> pd.Series:
    """``col`` as UTC times. Text is checked and parsed once per distinct value (a network's stations share
    their timestamps: 10 M rows of 520 stations hold 19,289 distinct ones), then spread back to the rows."""
    if pd.api.types.is_datetime64_any_dtype(col):
        return _parse_distinct(col, source, name)
    codes, distinct = pd.factorize(col, use_na_sentinel=True)
    rows = np.bincount(codes[codes >= 0], minlength=len(distinct))  # rows per distinct value, for the messages
    parsed = _parse_distinct(pd.Series(distinct, dtype=object), source, name, rows)
    out = pd.Series(parsed.to_numpy().take(np.maximum(codes, 0)), index=col.index)
    out[codes < 0] = pd.NaT
    return out


def _parse_distinct(col: pd.Series, source: str, name: str, rows: np.ndarray | None = None) -> pd.Series:
    rows = pd.Series(np.ones(len(col), dtype=np.int64) if rows is None else rows, index=col.index)
    present = col.notna() & (col.astype("string").str.strip() != "")
    if not present.any():
        raise DataError(f"{source}: column {name!r} has no values")
    _check_time_zones(col[present], source, name, rows[present])
    try:
        parsed = pd.to_datetime(col, utc=True, format="ISO8601", errors="coerce")
    except (ValueError, TypeError) as e:
        raise DataError(f"{source}: column {name!r}: timestamps do not parse: {e}") from None
    bad = present & parsed.isna()
    if bad.any():
        first = col[bad].iloc[0]
        raise DataError(f"{source}: column {name!r}: {int(rows[bad].sum())} timestamps do not parse (first: {first!r})")
    return parsed


_OFFSET = r"(?:Z|[+-]\d{2}(?::?\d{2})?)\s*$"


def _check_time_zones(col: pd.Series, source: str, name: str, rows: pd.Series) -> None:
    """Offsets are honoured (``+02:00`` and ``+03:00`` across a DST change are fine), but a column where some
    times carry an offset and others do not has no single meaning: which zone are the bare ones in?"""
    if pd.api.types.is_datetime64_any_dtype(col) or not (pd.api.types.is_object_dtype(col)
                                                          or pd.api.types.is_string_dtype(col)):
        return
    text = col.astype("string").str.strip()
    aware = text.str.contains(_OFFSET, regex=True) & text.str.contains(r"\d[T ]\d", regex=True)
    if aware.any() and not aware.all():
        raise DataError(f"{source}: column {name!r}: mixed time zones: {int(rows[aware].sum())} timestamps carry a "
                        f"UTC offset and {int(rows[~aware].sum())} do not (first without: {text[~aware].iloc[0]!r})")


def _numeric(col: pd.Series, source: str, name: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        return col.astype("float64")
    converted = pd.to_numeric(col, errors="coerce")
    bad = col.notna() & converted.isna() & (col.astype(str).str.strip() != "")
    if bad.any():
        raise DataError(f"{source}: column {name!r} is not numeric (first bad value: {col[bad].iloc[0]!r})")
    return converted.astype("float64")


def clean(df: pd.DataFrame, config: Config, report: IngestReport) -> pd.DataFrame:
    """Impossible values -> missing; drop exact duplicates and conflicting duplicate timestamps; sort by time."""
    data = config.data
    ts, keys = data.timestamp, _keys(config)
    if ts is not None:
        missing_ts = df[ts].isna()
        report.missing_timestamps_dropped = int(missing_ts.sum())
        df = df[~missing_ts]
    numeric = [c for c in df.columns if c not in keys and pd.api.types.is_float_dtype(df[c])]
    for col in numeric:
        bad = impossible(df[col], data.ranges.get(col))
        if bad.any():
            report.impossible_values[col] = int(bad.sum())
            df.loc[bad, col] = np.nan
    report.backward_time_jumps = _backward_jumps(df, config)  # in file order, before anything is dropped
    if not data.series:  # independent rows: two equal ones are two events (two flights alike), none conflict
        df = (df.sort_values(ts, kind="stable") if ts is not None else df).reset_index(drop=True)
        report.missing_values = _missing(df, config)
        return df
    exact = df.duplicated()
    report.exact_duplicates_dropped = int(exact.sum())
    df = df[~exact]
    conflicting = df.duplicated(subset=keys, keep=False)
    report.conflicting_rows_dropped = int(conflicting.sum())
    report.conflicting_timestamps = int(df[conflicting].drop_duplicates(subset=keys).shape[0])
    df = df[~conflicting]
    df = df.sort_values([ts] + keys[1:], kind="stable").reset_index(drop=True)
    report.missing_values = _missing(df, config)
    return df


def _missing(df: pd.DataFrame, config: Config) -> dict[str, int]:
    """Missing values per input column (a category's missing value is ``MISSING_CATEGORY``)."""
    counts = {c: int(n) for c, n in df[config.data.features].isna().sum().items() if n}
    for c in config.data.categorical:
        n = int((df[c] == MISSING_CATEGORY).sum())
        if n:
            counts[c] = n
    return counts


def _keys(config: Config) -> list[str]:
    return [config.data.timestamp] * (config.data.timestamp is not None) + (
        [config.data.group] if config.data.group else [])


def _backward_jumps(df: pd.DataFrame, config: Config) -> int:
    if config.data.timestamp is None:
        return 0
    ts = df[config.data.timestamp]
    steps = ts.groupby(df[config.data.group]).diff() if config.data.group else ts.diff()
    return int((steps < pd.Timedelta(0)).sum())


def add_label(df: pd.DataFrame, config: Config, report: IngestReport, source: str = "data") -> pd.DataFrame:
    """``label`` = the target condition of the same group exactly ``horizon`` later, matched by timestamp; for
    independent rows the row's own. A target of several classes: the position of its value in
    ``target.classes`` (or in the sorted values the rows hold, recorded in ``report.classes``)."""
    target, ts = config.target, config.data.timestamp
    if config.data.series:  # a merge of the keys alone: the rows' other columns are not copied
        keys = _keys(config)
        future = df[keys + [target.column]].rename(columns={target.column: "_future"})
        future[ts] = future[ts] - pd.Timedelta(seconds=target.horizon_seconds)
        later = df[keys].merge(future, on=keys, how="left", validate="one_to_one")["_future"]
        later.index = df.index
    else:  # the row's own target
        later = df[target.column]
    labelled = later.notna() & (later != MISSING_CATEGORY if target.multiclass else True)
    report.unlabelled_dropped = int((~labelled).sum())
    out, later = (df, later) if labelled.all() else (df[labelled], later[labelled])
    if target.multiclass:
        codes = _class_codes(later, config, report, source)
    else:
        codes = target.holds(later).to_numpy(dtype="int64")
    out = out.assign(**{LABEL: codes}).reset_index(drop=True)
    report.rows_labelled = len(out)
    report.positive_rate = float(out[LABEL].mean()) if len(out) and not target.multiclass else 0.0
    return out


def _class_codes(values: pd.Series, config: Config, report: IngestReport, source: str) -> np.ndarray:
    given = config.target.classes
    seen = sorted(values.unique().tolist())
    if given is not None:
        unknown = [v for v in seen if v not in given]
        if unknown:
            raise DataError(f"{source}: column {config.target.column!r} holds {unknown[0]!r}, not one of "
                            f"target.classes ({', '.join(given)})")
    classes = list(given) if given is not None else seen
    if len(classes) < 3:
        n = len(classes)
        raise DataError(f"{source}: column {config.target.column!r} holds {n} class{'' if n == 1 else 'es'} "
                        f"({', '.join(map(repr, classes))}); a target of several classes needs 3 or more "
                        f"(for two, give target.positive or target.above)")
    report.classes = classes
    codes = pd.Categorical(values, categories=classes).codes.astype("int64")
    report.class_counts = {c: int(n) for c, n in zip(classes, np.bincount(codes, minlength=len(classes)))}
    return codes


def settled(config: Config, report: IngestReport) -> Config:
    """``config`` with the classes ingest found (a target of several classes without ``target.classes``)."""
    if not report.classes or config.target.classes == report.classes:
        return config
    return config.model_copy(update={"target": config.target.model_copy(update={"classes": report.classes})})


def split_stratified(df: pd.DataFrame, config: Config,
                     report: IngestReport) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Without a timestamp: test = ``test_fraction`` of the rows, validation = ``validation_fraction`` of the
    rest, drawn at random with ``split.seed``, stratified by class; with a ``group``, whole groups are drawn
    (a group's rows never sit on two sides)."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    def cut(frame: pd.DataFrame, fraction: float, what: str):
        if config.data.group is not None:  # one fold of about `fraction` of the rows, whole groups, stratified
            groups = frame[config.data.group]
            n = max(2, round(1 / fraction))
            if groups.nunique() < n:
                raise DataError(f"too few groups in data.group {config.data.group!r} ({groups.nunique()}) to split "
                                f"off {what} of {fraction:.0%} by whole groups (need {n})")
            rest, end = next(StratifiedGroupKFold(n, shuffle=True, random_state=config.split.seed)
                             .split(frame, frame[LABEL], groups))
            return frame.iloc[rest].reset_index(drop=True), frame.iloc[end].reset_index(drop=True)
        try:
            rest, end = train_test_split(frame, test_size=fraction, random_state=config.split.seed,
                                         stratify=frame[LABEL])
        except ValueError as e:
            raise DataError(f"{config.data.source}: too few rows of a class of {config.target.column!r} to split off "
                            f"{what} stratified by class ({e})") from None
        return rest.reset_index(drop=True), end.reset_index(drop=True)

    train, test = cut(df, config.split.test_fraction, "a test set")
    train, validation = cut(train, config.split.validation_fraction, "a validation set")
    report.train_rows, report.validation_rows, report.test_rows = len(train), len(validation), len(test)
    return train, validation, test


def split_by_time(df: pd.DataFrame, config: Config,
                  report: IngestReport) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Test = the last ``test_fraction`` of distinct timestamps; validation = the last
    ``validation_fraction`` of the timestamps before it; train = the rest. Rows whose label lies in a later
    period (``t + horizon >= that period's start``) are dropped, so no observation of the validation or test
    period reaches a fit, nor one of the test period the validation rows."""
    train, test, report.embargo_dropped = _split_off_end(df, config, config.split.test_fraction, "a test set")
    train, validation, report.validation_embargo_dropped = _split_off_end(
        train, config, config.split.validation_fraction, "a validation set")
    report.train_rows, report.validation_rows, report.test_rows = len(train), len(validation), len(test)
    report.train_range = _range(train, config)
    report.validation_range = _range(validation, config)
    report.test_range = _range(test, config)
    return train, validation, test


def _split_off_end(df: pd.DataFrame, config: Config, fraction: float,
                   what: str) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """(the rows before the last ``fraction`` of timestamps less the embargo, those last rows, rows embargoed)."""
    ts = df[config.data.timestamp]
    times = np.sort(ts.unique())
    n_end = max(1, math.ceil(fraction * len(times)))
    if n_end >= len(times):
        raise DataError(f"too few distinct timestamps ({len(times)}) to split off {what}")
    end_start = times[-n_end]
    horizon = pd.Timedelta(seconds=config.target.horizon_seconds)
    if ts.is_monotonic_increasing:  # rows in time order (as ingest leaves them): slices, no copies
        end, kept = int(ts.searchsorted(end_start)), int(ts.searchsorted(end_start - horizon))
        return (df.iloc[:kept].reset_index(drop=True), df.iloc[end:].reset_index(drop=True), int(end - kept))
    is_end = ts >= end_start
    embargo = ~is_end & (ts + horizon >= end_start)
    return df[~is_end & ~embargo].reset_index(drop=True), df[is_end].reset_index(drop=True), int(embargo.sum())


def _range(df: pd.DataFrame, config: Config) -> tuple[str, str]:
    ts = df[config.data.timestamp]
    return (str(ts.min()), str(ts.max())) if len(df) else ("", "")


def check_trainable(train: pd.DataFrame, test: pd.DataFrame, config: Config, source: str) -> None:
    """Refuse data that cannot train and test a classifier, with the reason."""
    min_rows = 10 * (config.split.cv_folds + 1)
    if len(train) < min_rows:
        raise DataError(f"{source}: too few rows to split: {len(train)} training rows, need at least {min_rows}")
    name = (lambda code: repr(config.target.classes[code])) if config.target.multiclass else str
    if train[LABEL].nunique() < 2:
        raise DataError(f"{source}: all training rows are one class (label {name(int(train[LABEL].iloc[0]))}); "
                        f"column {config.target.column!r} never changes class under the target rule")
    k = len(config.target.classes) if config.target.multiclass else 2
    counts = train[LABEL].value_counts().reindex(range(k), fill_value=0)
    folds = config.split.cv_folds
    if counts.min() < folds:
        rare = int(counts.idxmin())
        raise DataError(f"{source}: class {name(rare)} of column {config.target.column!r} has {int(counts.min())} "
                        f"training rows, fewer than split.cv_folds = {folds}: every fold needs each class")
    for col in config.data.features:
        if train[col].isna().all():
            raise DataError(f"{source}: column {col!r} has no valid value in the training split")
