"""The feature engine: time-series features from each group's own past, matched by timestamp, and the recipe
that rebuilds them. One code path for training (``steps.features``, ``steps.ingest``), batch scoring and
serving: a registered model version carries its recipe (``Recipe.spec``, the tag ``mlpipe.feature_spec``), and
whoever holds raw observations computes exactly what training computed. Imports config and errors only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlpipe.config import Config, FeaturesConfig, parse_duration


def add_time_features(df: pd.DataFrame, config: Config) -> pd.DataFrame:
    """Add the derived columns ``config.features`` declares. Every one is computed per group and matched by
    timestamp, from observations at or before the row's own time: a gap gives a missing value, never the
    value of a neighbouring row, and nothing looks ahead. ``df`` holds one row per (group, timestamp)."""
    spec = config.features
    if not spec.derived():
        return df
    history = _History(df, config)
    new: dict[str, np.ndarray] = {}
    names = iter(spec.derived())
    for col, durations in spec.lags.items():
        for d in durations:
            new[next(names)] = history.before(df[col], d)
    for col, durations in spec.deltas.items():
        for d in durations:
            new[next(names)] = df[col].to_numpy() - history.before(df[col], d)
    for col, windows in spec.rolling_mean.items():
        for w in windows:
            new[next(names)] = history.mean(df[col], w)
    holds = config.target.holds(df[config.target.column]).astype("float64").where(df[config.target.column].notna())
    for d in spec.target_lags or []:
        new[next(names)] = history.before(holds, d)
    for w in spec.target_share or []:
        new[next(names)] = history.mean(holds, w)
    if spec.across_groups:
        new[next(names)] = holds.groupby(df[config.data.timestamp]).transform("mean").to_numpy()
    ts = df[config.data.timestamp]
    for cycle in spec.cyclic:
        phase = _phase(ts, cycle)
        new[next(names)], new[next(names)] = np.sin(2 * np.pi * phase), np.cos(2 * np.pi * phase)
    for name, (a, b) in spec.differences.items():
        new[next(names)] = (df[a] - df[b]).to_numpy()
    return pd.concat([df, pd.DataFrame(new, index=df.index)], axis=1)


def _phase(ts: pd.Series, cycle: str) -> np.ndarray:
    hours = ts.dt.hour + ts.dt.minute / 60
    if cycle == "hour_of_day":
        return (hours / 24).to_numpy()
    return ((ts.dt.day_of_year - 1 + hours / 24) / 365.25).to_numpy()


class _History:
    """Look-ups into each group's own past, by timestamp."""

    def __init__(self, df: pd.DataFrame, config: Config):
        self.ts, self.group = config.data.timestamp, config.data.group
        self.keys = [self.ts] + ([self.group] if self.group else [])
        self.frame = df[self.keys].reset_index(drop=True)

    def before(self, values: pd.Series, duration: str) -> np.ndarray:
        """The value of the same group exactly ``duration`` earlier (missing where there is no observation)."""
        then = self.frame.assign(_v=values.to_numpy())
        then[self.ts] = then[self.ts] + pd.Timedelta(seconds=parse_duration(duration))
        return self.frame.merge(then, on=self.keys, how="left")["_v"].to_numpy()

    def mean(self, values: pd.Series, window: str) -> np.ndarray:
        """The mean over the group's observations in the window ``(t - window, t]``."""
        frame = self.frame.assign(_v=values.to_numpy(), _row=np.arange(len(self.frame)))
        frame = frame.sort_values(self.keys[::-1], kind="stable")  # by group, then time
        rolled = frame.groupby(self.group if self.group else np.zeros(len(frame)), sort=False) \
            .rolling(pd.Timedelta(seconds=parse_duration(window)), on=self.ts)["_v"].mean()
        out = np.empty(len(frame))
        out[frame["_row"].to_numpy()] = rolled.to_numpy()
        return out


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def impossible(values: pd.Series, bounds: list[float] | None) -> pd.Series:
    """Where a value lies outside ``bounds`` (its ``[data.ranges]``), or beyond float32 without them: what
    ingest, batch scoring and serving all make missing."""
    lo, hi = bounds if bounds is not None else (-_FLOAT32_MAX, _FLOAT32_MAX)
    return values.notna() & ~values.between(lo, hi)


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
        cols = [self.timestamp] + ([self.group] if self.group else []) + list(self.config.data.features)
        return cols + ([self.config.target.column] if self.config.target.column not in cols else [])

    @property
    def lookback(self) -> pd.Timedelta:
        return pd.Timedelta(seconds=lookback_seconds(self.config.features))

    @property
    def horizon(self) -> pd.Timedelta:
        return pd.Timedelta(seconds=self.config.target.horizon_seconds)

    def impossible_to_missing(self, df: pd.DataFrame) -> pd.DataFrame:
        """Values outside their ``[data.ranges]``, or beyond float32, made missing, as ingest does."""
        for col in self.config.data.features:
            df[col] = df[col].mask(impossible(df[col], self.config.data.ranges.get(col)))
        return df

    def features(self, df: pd.DataFrame) -> pd.DataFrame:
        """``df`` (clean raw rows, one per group and timestamp) with the derived columns added."""
        return add_time_features(df, self.config)


