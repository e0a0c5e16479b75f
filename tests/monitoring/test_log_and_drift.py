"""The forecast log's format and the drift measures, on small inputs whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlpipe.monitoring import drift
from mlpipe.monitoring.log import ForecastLog, read_log


def test_the_log_reads_back_what_was_written_and_skips_a_line_cut_short(tmp_path):
    log = ForecastLog(tmp_path / "forecast_log")
    X1 = np.array([[1.5, np.nan, 3.0]], np.float32)
    X2 = np.array([[4.0, 5.0, 6.0], [7.0, 8.0, 9.25]], np.float32)
    log.write("m", 2, "forecast", [1], [0.75], X1, ["A"], ["2013-01-01T00:00:00Z"], ["2013-01-01T04:00:00Z"])
    [path] = list((tmp_path / "forecast_log" / "m").glob("*.jsonl"))
    with open(path, "ab") as fh:
        fh.write(b'{"id": "cut", "n": 3, "x": "AAAA\n')  # what a full disk leaves of a line
    log.write("m", 2, "predict", [0, 1], [0.25, 0.5], X2)
    log.close()
    logged = read_log(tmp_path, "m")
    rows = logged.rows
    assert logged.damaged == 1 and logged.lost == 0 and log.counts.logged == 3
    assert rows["source"].tolist() == ["forecast", "predict", "predict"]
    assert rows["group"].tolist()[0] == "A" and rows["timestamp"].isna().tolist() == [False, True, True]
    assert rows["forecast_for"].iloc[0] == pd.Timestamp("2013-01-01T04:00Z")
    np.testing.assert_array_equal(logged.inputs[2][rows["_x"].to_numpy()], np.vstack([X1, X2]))
    assert rows["probability"].tolist() == [0.75, 0.25, 0.5] and rows["id"].is_unique


def test_psi_and_wasserstein_see_a_shift_and_not_a_resample():
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 5000)
    same = drift.drift(ref, rng.normal(0, 1, 500))
    moved = drift.drift(ref, rng.normal(1, 1, 500))
    assert same.psi < 0.1 and same.wasserstein < 0.1 and not same.drifted()
    assert moved.psi > 0.25 and moved.wasserstein == pytest.approx(1.0, abs=0.15) and moved.drifted()
    dead = drift.drift(ref, np.full(500, np.nan))  # a sensor that stopped: its values all missing
    assert dead.missing_live == 1.0 and dead.drifted()


def test_departures_place_a_fault_at_its_group_with_three_groups():
    t = pd.date_range("2013-01-01", periods=48, freq="h", tz="UTC")
    weather = np.sin(np.arange(48) / 5) * 10 + 1000
    frame = pd.concat([pd.DataFrame({"t": t, "g": g, "p": weather + (8.0 if g == "B" else 0.0)}) for g in "ABC"],
                      ignore_index=True)
    dep = drift.departures(frame, "t", "g", ["p"])["p"]
    assert np.allclose(dep[frame["g"] == "B"], 8.0) and np.allclose(dep[frame["g"] != "B"], 0.0)


def test_the_season_band_wraps_new_year():
    t = pd.Series(pd.date_range("2013-01-01", "2013-12-31 23:00", freq="h", tz="UTC"))
    band = t[drift.season_mask(t, pd.Timestamp("2013-12-24T00:00Z"), pd.Timestamp("2013-12-31T00:00Z"))]
    assert set(band.dt.month) == {1, 12}
    assert band[band.dt.month == 1].max() < pd.Timestamp("2013-01-16T00:00Z")
    assert band[band.dt.month == 12].min() > pd.Timestamp("2013-12-08T00:00Z")
