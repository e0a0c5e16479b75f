"""The feature engine: time-series features from each group's own past, matched by timestamp, and the recipe
that rebuilds them. One code path for training (``steps.features``, ``steps.ingest``), batch scoring and
serving: a registered model version carries its recipe (``Recipe.spec``, the tag ``mlpipe.feature_spec``), and
whoever holds raw observations computes exactly what training computed. Imports config and errors only."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from mlpipe.config import Config, FeaturesConfig, parse_duration
from mlpipe.errors import DataError

MISSING_CATEGORY = ""
"""A missing category, as the graph's string input carries it (a string tensor has no null)."""


def add_time_features(df: pd.DataFrame, config: Config) -> pd.DataFrame:
    """Add the derived columns ``config.features`` declares (``derive``). ``df`` holds one row per (group,
    timestamp)."""
    if not config.features.derived():
        return df
    group, ts = config.data.group, config.data.timestamp
    times = df[ts] if ts is not None else np.zeros(len(df), dtype=np.int64)  # no clock: differences only
    new = derive(config, times, df[group].to_numpy() if group else None,
                 {c: df[c].to_numpy(dtype="float64") for c in needed_columns(config)}, df[config.target.column])
    return pd.concat([df, pd.DataFrame(new, index=df.index)], axis=1)


def feature_matrix(df: pd.DataFrame, config: Config) -> np.ndarray | pd.DataFrame:
    """The model's input, in order: the numeric columns as float32 (the ONNX model's ``input``), and for a
    model with categorical columns a DataFrame of those float32 columns followed by the categories as text
    (the graph's ``categories``; ``graph.feed`` splits it)."""
    if not config.categorical:
        return df[config.model_features].to_numpy(dtype=np.float32)
    numeric = df[config.model_features].to_numpy(dtype=np.float32)
    frame = pd.DataFrame(numeric, columns=config.model_features)
    for col in config.categorical:  # text already (ingest's category_text), as plain objects for the encoders
        frame[col] = pd.Series(df[col].to_numpy(dtype=object), dtype=object)
    return frame


def needed_columns(config: Config) -> set[str]:
    """The raw numeric columns the derived features are computed from (besides the target)."""
    f = config.features
    return {*f.lags, *f.deltas, *f.rolling_mean, *(c for pair in f.differences.values() for c in pair)}


def derive(config: Config, times, groups: np.ndarray | None, column: dict[str, np.ndarray],
           target) -> dict[str, np.ndarray]:
    """The derived columns, by name, in model input order. Every one is computed per group and matched by
    timestamp, from observations at or before the row's own time: a gap gives a missing value, never the
    value of a neighbouring row, and nothing looks ahead. ``times``: the rows' timestamps (UTC; a datetime
    Series or int64 nanoseconds); ``groups``: their groups (None without); ``column``: the
    ``needed_columns`` as float64 arrays; ``target``: the target column's raw values. Training, batch
    scoring and serving all come here, with DataFrames or with the few rows a forecast needs."""
    spec = config.features
    history = _History(_nanoseconds(times), groups)
    new: dict[str, np.ndarray] = {}
    names = iter(spec.derived())
    for col, durations in spec.lags.items():
        for d in durations:
            new[next(names)] = history.before(column[col], d)
    for col, durations in spec.deltas.items():
        for d in durations:
            new[next(names)] = column[col] - history.before(column[col], d)
    windows = [(next(names), column[col], w) for col, ws in spec.rolling_mean.items() for w in ws]
    needs_target = bool(spec.target_lags or spec.target_share or spec.across_groups)
    holds = _holds(config, target) if needs_target else None
    lags = [(next(names), d) for d in spec.target_lags or []]
    windows += [(next(names), holds, w) for w in spec.target_share or []]
    for (name, _, _), mean in zip(windows, history.means([(v, w) for _, v, w in windows])):
        new[name] = mean
    for name, d in lags:
        new[name] = history.before(holds, d)
    if spec.across_groups:
        new[next(names)] = history.across(holds)
    for cycle in spec.cyclic:
        phase = _phase(history.ns, cycle)
        new[next(names)], new[next(names)] = np.sin(2 * np.pi * phase), np.cos(2 * np.pi * phase)
    for name, (a, b) in spec.differences.items():
        new[next(names)] = column[a] - column[b]
    return {name: new[name] for name in spec.derived()}


def _holds(config: Config, target) -> np.ndarray:
    """1.0 where the target condition holds, 0.0 where not, NaN where the target is missing."""
    if config.target.above is not None and isinstance(target, np.ndarray) and target.dtype == np.float64:
        with np.errstate(invalid="ignore"):
            return np.where(np.isnan(target), np.nan, (target > config.target.above).astype("float64"))
    target = pd.Series(target) if not isinstance(target, pd.Series) else target
    return np.where(target.notna().to_numpy(), config.target.holds(target).to_numpy(dtype="float64"), np.nan)


def _nanoseconds(times) -> np.ndarray:
    if isinstance(times, np.ndarray) and times.dtype == np.int64:
        return times
    return pd.Series(times).to_numpy(dtype="datetime64[ns]").view(np.int64)


def _phase(ns: np.ndarray, cycle: str) -> np.ndarray:
    """Where in the day (or the year) each UTC time lies, in [0, 1)."""
    minutes = ns // 60_000_000_000  # whole minutes, as the hour and minute of the time give them
    hours = (minutes % 1440) / 60
    if cycle == "hour_of_day":
        return hours / 24
    day_of_year = (minutes // 1440).astype("datetime64[D]") - minutes.astype("datetime64[m]").astype("datetime64[Y]")
    return (day_of_year.astype(np.int64) + hours / 24) / 365.25


class _History:
    """Look-ups into each group's own past, by timestamp, on sorted integer keys (numpy, no joins): a row's
    key is its group's code times the number of distinct timestamps plus the rank of its timestamp, so "the
    same group at time t" is one binary search. The result of a row depends only on the rows of its group
    inside its window, never on where the frame starts, so a scorer that sees a group's look-back and a
    training run that sees its whole history compute the same numbers."""

    def __init__(self, ns: np.ndarray, groups: np.ndarray | None):
        self.ns = ns
        self.times, rank = np.unique(self.ns, return_inverse=True)
        codes = pd.factorize(groups)[0] if groups is not None else np.zeros(len(ns), dtype=np.int64)
        self.codes = codes.astype(np.int64)
        keys = self.codes * len(self.times) + rank
        self.order = np.argsort(keys, kind="stable")  # by group, then time
        self.sorted_keys = keys[self.order]
        self.position = np.empty(len(ns), dtype=np.int64)
        self.position[self.order] = np.arange(len(ns))
        self._earlier: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _first_at_or_after(self, ns: np.ndarray, side: str) -> np.ndarray:
        """For each row, where in the sorted rows its own group's first timestamp at (side="left") or after
        (side="right") ``ns`` would be."""
        keys = self.codes * len(self.times) + np.searchsorted(self.times, ns, side=side)
        return np.searchsorted(self.sorted_keys, keys, side="left")

    def before(self, values: np.ndarray, duration: str) -> np.ndarray:
        """The value of the same group exactly ``duration`` earlier (missing where there is no observation)."""
        if duration not in self._earlier:  # one look-up per duration, shared by every column lagged by it
            then = self.ns - int(parse_duration(duration) * 1e9)
            at = self.order[np.minimum(self._first_at_or_after(then, "left"), len(self.order) - 1)]
            self._earlier[duration] = at, (self.ns[at] == then) & (self.codes[at] == self.codes)
        at, found = self._earlier[duration]
        return np.where(found, values[at], np.nan)

    def means(self, wanted: list[tuple[np.ndarray, str]]) -> list[np.ndarray]:
        """For each (values, window): the mean over the group's observations in ``(t - window, t]``
        (missing values skipped; missing when there are none), summed oldest first, all windows at once."""
        if not wanted:
            return []
        v = np.column_stack([values for values, _ in wanted])[self.order]
        left = np.column_stack([self._first_at_or_after(self.ns - int(parse_duration(w) * 1e9), "right")
                                for _, w in wanted])[self.order]
        i = np.arange(len(v))[:, None]
        total, count = np.zeros(v.shape), np.zeros(v.shape)
        # From the oldest row of the widest window to the row itself; a row outside a window adds 0.0, which
        # changes no sum, so a row's mean does not depend on how wide other rows' windows are.
        for k in range(int((i - left).max(initial=-1)), -1, -1):
            j = np.maximum(i[:, 0] - k, 0)
            use = (i - k >= left) & ~np.isnan(v[j])
            total += np.where(use, v[j], 0.0)
            count += use
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(count > 0, total / count, np.nan)[self.position]
        return [out[:, c] for c in range(out.shape[1])]

    def across(self, v: np.ndarray) -> np.ndarray:
        """The mean over every group's value at the row's own timestamp (missing values skipped)."""
        rank = np.searchsorted(self.times, self.ns)
        known = ~np.isnan(v)
        total = np.bincount(rank, weights=np.where(known, v, 0.0), minlength=len(self.times))
        count = np.bincount(rank, weights=known, minlength=len(self.times))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / count, np.nan)[rank]


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def category_matrix(column, names: list[str], where: str) -> np.ndarray:
    """The graph's string input ``[N, len(names)]``: ``column(name)`` (any column of values) of each name
    through ``category_text``. Training's frame, a batch file's chunk, a request's records and the MLflow
    model's input all come here."""
    columns = [category_text(column(name), where, name) for name in names]
    return np.column_stack(columns) if columns else np.empty((0, 0), dtype=object)


def category_text(values, where: str, name: str) -> np.ndarray:
    """A categorical column as the graph reads it: an object array of strings, integer codes as their text
    (``3`` and ``3.0`` -> ``"3"``), missing values as ``MISSING_CATEGORY``. Numbers that are not whole are
    refused (``DataError`` naming ``where`` and the column): such a column is numeric, not categorical.
    Training, batch scoring and serving all come here."""
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    present = s.notna().to_numpy()
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        numbers = s.to_numpy(dtype="float64", na_value=np.nan)
        whole = ~present | (np.mod(numbers, 1) == 0)
        if not whole.all():
            raise DataError(f"{where}: column {name!r} is declared categorical but holds numbers that are not "
                            f"integer codes (first: {float(numbers[~whole][0])!r}); list it in data.features")
        text = np.full(len(s), MISSING_CATEGORY, dtype=object)
        text[present] = [str(int(v)) for v in numbers[present]]
        return text
    out = s.astype(object).to_numpy(dtype=object, copy=True)
    out[~present] = MISSING_CATEGORY
    if present.any():  # "3.0" and "03" as "3": how a CSV column of codes reads for training (pandas parses it)
        text = pd.Series(out[present], dtype=object)
        numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64")
        whole = np.isfinite(numbers) & (np.mod(numbers, 1) == 0) & (np.abs(numbers) < 2 ** 53)
        if whole.any():
            idx = np.flatnonzero(present)[whole]
            out[idx] = [str(int(v)) for v in numbers[whole]]
    odd = [i for i in np.flatnonzero(present) if not isinstance(out[i], str)]
    for i in odd:  # a number among text (a Parquet object column, a JSON body): its text, as above
        v = out[i]
        out[i] = str(int(v)) if isinstance(v, (int, float, np.number)) and float(v) % 1 == 0 else str(v)
    return out


def impossible(values, bounds: list[float] | None):
    """Where a value lies outside ``bounds`` (its ``[data.ranges]``), or beyond float32 without them: what
    ingest, batch scoring and serving all make missing. A Series gives a Series, an array an array; a
    missing value is never impossible."""
    lo, hi = bounds if bounds is not None else (-_FLOAT32_MAX, _FLOAT32_MAX)
    with np.errstate(invalid="ignore"):
        return (values < lo) | (values > hi)  # NaN compares False


def lookback_seconds(features: FeaturesConfig) -> float:
    """How far into a group's past the features reach: the longest lag, delta or window (0 without any)."""
    durations = [d for ds in (*features.lags.values(), *features.deltas.values(), *features.rolling_mean.values())
                 for d in ds] + list(features.target_lags or []) + list(features.target_share or [])
    return max((parse_duration(d) for d in durations), default=0.0)


def spec(config: Config) -> dict:
    """What a scorer needs to rebuild the model's input from raw rows: registered with every model version
    (``mlpipe.feature_spec``): the raw columns, the timestamp and group columns, the possible ranges, the
    recipe of derived features, the target rule, the model's input order and the longest look-back."""
    return {"timestamp": config.data.timestamp, "group": config.data.group, "features": config.data.features,
            "categorical": config.data.categorical, "series": config.data.series,
            "ranges": config.data.ranges, "derived": config.features.model_dump(),
            "target": config.target.model_dump(), "model_features": config.model_features,
            "lookback_s": lookback_seconds(config.features)}


@dataclass(frozen=True)
class Recipe:
    """A registered version's feature recipe, rebuilt from its ``spec``: enough of the training config to
    compute its input from raw observations."""

    config: Config

    @classmethod
    def from_spec(cls, spec: dict) -> "Recipe":
        data = {"timestamp": spec["timestamp"], "group": spec.get("group"), "features": spec["features"],
                "categorical": spec.get("categorical", []), "series": spec.get("series", True),
                "ranges": spec.get("ranges", {})}  # versions registered before ranges were recorded: none
        return cls(Config.model_validate({"data": data, "target": spec["target"], "features": spec["derived"]}))

    @property
    def timestamp(self) -> str:
        return self.config.data.timestamp

    @property
    def group(self) -> str | None:
        return self.config.data.group

    @property
    def raw_columns(self) -> list[str]:
        """The columns of a raw observation: timestamp, group (if any), the configured features, the target."""
        cols = [self.timestamp] * (self.timestamp is not None) + ([self.group] if self.group else [])
        cols += [c for c in self.config.data.features if c not in cols]
        cols += [c for c in self.config.data.categorical if c not in cols]
        return cols + ([self.config.target.column] if self.config.target.column not in cols else [])

    @cached_property
    def lookback(self) -> pd.Timedelta:
        return pd.Timedelta(seconds=lookback_seconds(self.config.features))

    @cached_property
    def horizon(self) -> pd.Timedelta:
        return pd.Timedelta(seconds=self.config.target.horizon_seconds)

    def impossible_to_missing(self, df: pd.DataFrame) -> pd.DataFrame:
        """Values outside their ``[data.ranges]``, or beyond float32, made missing, as ingest does."""
        for col in self.config.data.features:
            values = df[col].to_numpy(dtype="float64")
            cleaned = self.clean(col, values)
            if cleaned is not values:
                df[col] = cleaned
        return df

    def clean(self, col: str, values: np.ndarray) -> np.ndarray:
        """``values`` (float64) of a raw feature with those outside its range made missing (``values`` itself
        when none is)."""
        outside = impossible(values, self.config.data.ranges.get(col))
        return np.where(outside, np.nan, values) if outside.any() else values

    def features(self, df: pd.DataFrame) -> pd.DataFrame:
        """``df`` (clean raw rows, one per group and timestamp) with the derived columns added."""
        return add_time_features(df, self.config)


