"""The feature engine's look-ups against pandas' own joins and time-based rolling windows, on irregular data
with gaps, missing values and groups that start at different times; and its results do not depend on where
the frame starts (what lets a scorer with only the look-back compute what training computed)."""

import numpy as np
import pandas as pd
import pytest

from mlpipe.config import Config
from mlpipe.featurize import add_time_features


def config(group="g") -> Config:
    return Config.model_validate({
        "data": {"timestamp": "t", "group": group, "features": ["x", "y"]},
        "target": {"column": "y", "above": 0.5},
        "features": {"lags": {"x": ["1h", "3h"]}, "deltas": {"x": ["2h"]}, "rolling_mean": {"x": ["5h", "30min"]},
                     "target_lags": ["1h"], "target_share": ["6h"], "across_groups": group is not None}})


def irregular(seed=0, n=3000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hours = np.sort(rng.choice(np.arange(0, 4 * n), size=n, replace=False))  # gaps
    t = pd.Timestamp("2021-03-01T00:00Z") + pd.to_timedelta(hours % 2000, unit="h") \
        + pd.to_timedelta(rng.choice([0, 30], size=n), unit="min")
    df = pd.DataFrame({"t": t, "g": rng.choice(["a", "b", "c", "d"], size=n, p=[0.4, 0.3, 0.2, 0.1]),
                       "x": rng.normal(1000, 50, n), "y": rng.random(n)})
    df.loc[rng.random(n) < 0.1, "x"] = np.nan
    df.loc[rng.random(n) < 0.05, "y"] = np.nan
    return df.drop_duplicates(["t", "g"]).sort_values(["t", "g"]).reset_index(drop=True)


def pandas_reference(df: pd.DataFrame) -> pd.DataFrame:
    """The same features from pandas' merge on (group, timestamp) and groupby-rolling by time."""
    out = pd.DataFrame(index=df.index)
    keys = ["t", "g"]

    def before(col, hours):
        then = df[keys + [col]].assign(t=df["t"] + pd.Timedelta(hours=hours))
        return df[keys].merge(then, on=keys, how="left")[col].to_numpy()

    def rolling(values, window):
        frame = df[keys].assign(v=values.to_numpy(), row=np.arange(len(df))).sort_values(["g", "t"])
        rolled = frame.groupby("g", sort=False).rolling(pd.Timedelta(window), on="t")["v"].mean()
        res = np.empty(len(df))
        res[frame["row"].to_numpy()] = rolled.to_numpy()
        return res

    holds = (df["y"] > 0.5).astype("float64").where(df["y"].notna())
    out["x_lag_1h"], out["x_lag_3h"] = before("x", 1), before("x", 3)
    out["x_delta_2h"] = df["x"].to_numpy() - before("x", 2)
    out["x_mean_5h"], out["x_mean_30min"] = rolling(df["x"], "5h"), rolling(df["x"], "30min")
    out["target_lag_1h"] = df[keys].merge(df[keys].assign(h=holds, t=df["t"] + pd.Timedelta(hours=1)),
                                          on=keys, how="left")["h"].to_numpy()
    out["target_share_6h"] = rolling(holds, "6h")
    out["target_share_groups"] = holds.groupby(df["t"]).transform("mean").to_numpy()
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_engine_matches_pandas_joins_and_rolling_windows(seed):
    df = irregular(seed)
    ours = add_time_features(df, config())
    ref = pandas_reference(df)
    assert ref["x_lag_3h"].notna().sum() > 50 and ref["x_mean_5h"].notna().sum() > 1000  # the data has both
    for col in ref:
        np.testing.assert_allclose(ours[col].to_numpy(), ref[col].to_numpy(), rtol=1e-12, atol=1e-12,
                                   equal_nan=True, err_msg=col)


def test_results_do_not_depend_on_where_the_frame_starts():
    df = irregular(3)
    whole = add_time_features(df, config())
    cut = df["t"].iloc[len(df) // 2]
    lookback = pd.Timedelta(hours=6)
    late = df[df["t"] >= cut - lookback].reset_index(drop=True)
    part = add_time_features(late, config())
    keep = (part["t"] >= cut).to_numpy()
    derived = config().features.derived()
    expect = whole.loc[whole["t"] >= cut, derived].reset_index(drop=True)
    pd.testing.assert_frame_equal(part.loc[keep, derived].reset_index(drop=True), expect, check_exact=True)


def test_without_groups_the_frame_is_one_series():
    df = irregular(4).drop_duplicates("t").reset_index(drop=True)
    ours = add_time_features(df, config(group=None))
    expect = df["x"].to_numpy() - df[["t"]].merge(df[["t", "x"]].assign(t=df["t"] + pd.Timedelta(hours=2)),
                                                  on="t", how="left")["x"].to_numpy()
    np.testing.assert_array_equal(ours["x_delta_2h"].to_numpy(), expect)
