"""Forecasts from raw observations (``mlpipe predict`` on the training source's schema): the feature engine
gives batch scoring exactly what it gave training, carried across chunks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import mlpipe
from mlpipe.featurize import Recipe
from mlpipe.sources import read_source
from tests.conftest import mlpipe as cli


def _raw_in_time_order(source: str, spec: dict, path) -> pd.DataFrame:
    raw = read_source(source)
    order = pd.to_datetime(raw[spec["timestamp"]], utc=True, format="ISO8601").argsort(kind="stable")
    raw = raw.iloc[order].reset_index(drop=True)
    raw.to_csv(path, index=False)
    return raw


def _keyed(df: pd.DataFrame, spec: dict) -> pd.DataFrame:
    keys = [spec["timestamp"]] + ([spec["group"]] if spec["group"] else [])
    df = df.assign(**{spec["timestamp"]: pd.to_datetime(df[spec["timestamp"]], utc=True)})
    return df.set_index(keys).sort_index()


@pytest.mark.parametrize("which", ["nyc_workspace", "turku_workspace"])
def test_raw_observations_reproduce_the_registered_test_split(which, request, tmp_path):
    ws, prefix, source = request.getfixturevalue(which)
    workspace = mlpipe.Workspace(ws)
    model = mlpipe.load_model(workspace, f"{prefix}-lightgbm")
    spec = json.loads(model.info["tags"]["mlpipe.feature_spec"])
    assert spec["lookback_s"] == 24 * 3600 and spec["model_features"] == model.features
    test = _keyed(workspace.datasets.load(f"{prefix}-test"), spec)
    raw = _raw_in_time_order(source, spec, tmp_path / "raw.csv")

    # the features, computed by the engine from the raw rows (those before the test period as look-back)
    recipe = Recipe.from_spec(spec)
    clean = recipe.impossible_to_missing(raw[recipe.raw_columns].assign(**{
        spec["timestamp"]: pd.to_datetime(raw[spec["timestamp"]], utc=True, format="ISO8601")})).drop_duplicates()
    engine = _keyed(recipe.features(clean.reset_index(drop=True)), spec).loc[test.index]
    np.testing.assert_array_equal(engine[model.features].to_numpy(np.float32), test[model.features].to_numpy(np.float32))

    # mlpipe predict on the raw rows, in chunks far smaller than the look-back: the registered test labels
    registered, _ = mlpipe.predict_onnx(model.onnx, test[model.features].to_numpy(np.float32))
    out = tmp_path / "forecast.csv"
    proc = cli("predict", "--model", f"{prefix}-lightgbm", "--input", str(tmp_path / "raw.csv"), "--output", str(out),
               "--chunk-rows", "97", "--quiet", workspace=ws)
    assert proc.returncode == 0, proc.stderr
    forecast = _keyed(pd.read_csv(out), spec)
    assert list(pd.read_csv(out, nrows=0).columns) == [*forecast.index.names, "forecast_for", "label", "probability"]
    np.testing.assert_array_equal(forecast.loc[test.index, "label"].to_numpy(), registered)
    horizon = pd.Timedelta(spec["target"]["horizon"])
    assert (pd.to_datetime(forecast["forecast_for"], utc=True) - forecast.index.get_level_values(0) == horizon).all()


def test_raw_rows_out_of_time_order_exit_2_naming_the_row(turku_workspace, tmp_path):
    ws, prefix, source = turku_workspace
    raw = read_source(source)  # the file's own order: 9 backward jumps in time
    raw.to_csv(tmp_path / "raw.csv", index=False)
    proc = cli("predict", "--model", f"{prefix}-lightgbm", "--input", str(tmp_path / "raw.csv"), "--output",
               str(tmp_path / "out.csv"), "--chunk-rows", "200", "--quiet", workspace=ws)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith(f"error: {tmp_path / 'raw.csv'}: row ") and "time order" in line and "\n" not in line
    assert not (tmp_path / "out.csv").exists()


def test_feature_vectors_still_score_as_before(turku_workspace, tmp_path):
    ws, prefix, _ = turku_workspace
    test = mlpipe.Workspace(ws).datasets.load(f"{prefix}-test")
    test.to_csv(tmp_path / "test.csv", index=False)
    proc = cli("predict", "--model", f"{prefix}-lightgbm", "--input", str(tmp_path / "test.csv"), "--output",
               str(tmp_path / "out.csv"), "--quiet", workspace=ws)
    assert proc.returncode == 0, proc.stderr
    assert {"input_label", "label", "probability"} <= set(pd.read_csv(tmp_path / "out.csv").columns)
