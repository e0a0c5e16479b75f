"""Step 2, features: time-series features from each group's past, the model's input matrix, and the
preprocessing fitted inside every model pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlpipe.config import Config, parse_duration


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


def feature_spec(config: Config) -> dict:
    """What a scorer needs to rebuild the model's input from raw rows: registered with every model."""
    return {"timestamp": config.data.timestamp, "group": config.data.group, "features": config.data.features,
            "derived": config.features.model_dump(), "target": config.target.model_dump(),
            "model_features": config.model_features}


def feature_matrix(df: pd.DataFrame, config: Config) -> np.ndarray:
    """The model's input columns, in order, as float32: the exact input of the ONNX model."""
    return df[config.model_features].to_numpy(dtype=np.float32)


def make_pipeline(estimator):
    """Median imputation and standard scaling before ``estimator``, all fitted on training rows only.

    They live inside the model, so the registered ONNX graph carries them and serving cannot refit them.
    Scaling runs in float64 between two casts in scikit-learn and in ONNX alike, so the float32 values
    reaching the estimator are bit-identical in both and tree splits cannot flip between them.
    """
    from skl2onnx.sklapi import CastTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("to_float64", CastTransformer(dtype=np.float64)),
        ("scale", StandardScaler()),
        ("to_float32", CastTransformer(dtype=np.float32)),
        ("model", estimator),
    ])
