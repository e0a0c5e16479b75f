import numpy as np
import pandas as pd
import pytest

from mlpipe.config import Config
from mlpipe.errors import ConfigError
from mlpipe.steps.features import add_time_features


def config(**features) -> Config:
    return Config.model_validate({"data": {"timestamp": "t", "group": "g", "features": ["rain", "p"]},
                                  "target": {"column": "rain", "above": 0.0}, "features": features})


def frame(hours=(0, 1, 2, 4), rain=((0, 1.0, 0, 2), (0, 0, 0, 0.0)), p=((1, 2, 3, 4.0), (10, 20, 30, 40.0))):
    t = pd.Timestamp("2020-01-01T00:00Z") + pd.to_timedelta(list(hours), unit="h")
    parts = [pd.DataFrame({"t": t, "g": g, "rain": r, "p": v}) for g, r, v in zip("AB", rain, p)]
    return pd.concat(parts).sort_values(["t", "g"]).reset_index(drop=True)


def column(df, name, group="A"):
    return df.loc[df["g"] == group, name].tolist()


def test_lags_and_deltas_match_by_timestamp_per_group_and_leave_gaps_missing():
    out = add_time_features(frame(), config(lags={"p": ["1h"]}, deltas={"p": ["2h"]}))
    assert column(out, "p_lag_1h")[:3] == [pytest.approx(np.nan, nan_ok=True), 1.0, 2.0]
    assert np.isnan(column(out, "p_lag_1h")[3])  # 03:00 does not exist: missing, not 02:00's value
    assert column(out, "p_lag_1h", "B")[1:3] == [10.0, 20.0]  # B's own past, not A's
    assert column(out, "p_delta_2h")[2:] == [2.0, 1.0]  # 02:00-00:00 and 04:00-02:00


def test_rolling_windows_are_time_based_and_include_now():
    out = add_time_features(frame(), config(rolling_mean={"p": ["3h"]}, target_share=["3h"]))
    assert column(out, "p_mean_3h") == [1.0, 1.5, 2.0, 3.5]  # 04:00: (01:00, 04:00] holds 02:00 and 04:00
    assert column(out, "target_share_3h") == pytest.approx([0.0, 0.5, 1 / 3, 0.5])


def test_target_lags_across_groups_cyclic_and_differences():
    out = add_time_features(frame(), config(target_lags=["1h"], across_groups=True, cyclic=["hour_of_day"],
                                            differences={"gap": ["p", "rain"]}))
    assert column(out, "target_lag_1h")[1:3] == [0.0, 1.0]
    assert column(out, "target_share_groups") == [0.0, 0.5, 0.0, 0.5]
    assert column(out, "hour_of_day_sin")[2] == pytest.approx(np.sin(2 * np.pi * 2 / 24))
    assert column(out, "hour_of_day_cos")[0] == pytest.approx(1.0)
    assert column(out, "gap") == [1.0, 1.0, 3.0, 2.0]


def test_features_never_look_ahead():
    spec = dict(lags={"p": ["1h"]}, deltas={"p": ["1h"]}, rolling_mean={"p": ["6h"]}, target_share=["6h"],
                target_lags=["2h"], across_groups=True)
    base = add_time_features(frame(), config(**spec))
    future_changed = frame(p=((1, 2, 3, 400.0), (10, 20, 30, -40.0)), rain=((0, 1.0, 0, 0), (0, 0, 0, 9.0)))
    changed = add_time_features(future_changed, config(**spec))
    early = base["t"] < pd.Timestamp("2020-01-01T04:00Z")
    derived = config(**spec).features.derived()
    pd.testing.assert_frame_equal(base.loc[early, derived], changed.loc[early, derived])


def test_column_order_is_the_model_input_order():
    cfg = config(deltas={"p": ["1h"]}, cyclic=["day_of_year"], target_lags=["1h"])
    out = add_time_features(frame(), cfg)
    assert cfg.model_features == ["rain", "p", "p_delta_1h", "target_lag_1h", "day_of_year_sin", "day_of_year_cos"]
    assert set(cfg.model_features) <= set(out.columns)


@pytest.mark.parametrize("features, match", [
    ({"lags": {"humidity": ["1h"]}}, "column 'humidity' is not in data.features"),
    ({"deltas": {"p": ["soon"]}}, "does not parse"),
    ({"cyclic": ["minute_of_hour"]}, "features.cyclic"),
], ids=["unknown-column", "bad-duration", "unknown-cycle"])
def test_bad_feature_config_names_the_problem(tmp_path, features, match):
    import tomli_w

    from mlpipe.config import load_config

    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps({"data": {"timestamp": "t", "features": ["rain", "p"]},
                                   "target": {"column": "rain", "above": 0.0}, "features": features}))
    with pytest.raises(ConfigError, match=match):
        load_config(path)
