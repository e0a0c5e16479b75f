"""``mlpipe predict``: batch scoring of CSV and Parquet files through the registered ONNX model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlpipe.serving.batch import predict_file
from mlpipe.steps.evaluate import classification_metrics
from mlpipe.store.models import describe, get_version
from mlpipe.store.workspace import Workspace
from tests.conftest import mlpipe

HEADLINE = ("accuracy", "precision", "recall", "f1", "roc_auc")


@pytest.fixture(scope="module")
def champion(run_workspace) -> str:
    return f"{run_workspace[1]['champion']['name']}@champion"


@pytest.fixture(scope="module")
def info(run_workspace, champion) -> dict:
    return describe(get_version(Workspace(run_workspace[0]), champion))


@pytest.fixture(scope="module")
def test_set(run_workspace) -> pd.DataFrame:
    return Workspace(run_workspace[0]).datasets.load("turku-test")


@pytest.fixture(scope="module")
def test_csv(test_set, tmp_path_factory):
    path = tmp_path_factory.mktemp("predict") / "test.csv"
    test_set.to_csv(path, index=False)
    return path


def score(workspace, model: str, src, dest, *args: str):
    return mlpipe("predict", "--model", model, "--input", str(src), "--output", str(dest), *args,
                  workspace=workspace)


def read(path) -> pd.DataFrame:
    return pd.read_csv(path) if str(path).endswith(".csv") else pd.read_parquet(path)


def assert_reproduces(scored: pd.DataFrame, info: dict) -> None:
    metrics = classification_metrics(scored["input_label"].to_numpy(), scored["label"].to_numpy(),
                                      scored["probability"].to_numpy())
    for key in HEADLINE:
        # label metrics exactly; ROC AUC ranks probabilities, which onnxruntime sums in a thread-count-dependent
        # order (the server may use more threads than the pipeline): near-ties may swap, and CSV text rounds them: so 1e-3
        assert metrics[key] == pytest.approx(info["metrics"][key], abs=1e-3 if key == "roc_auc" else 1e-9), key


@pytest.fixture(scope="module")
def test_parquet(test_set, tmp_path_factory):
    path = tmp_path_factory.mktemp("predict") / "test.parquet"
    test_set.to_parquet(path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_scoring_the_test_set_reproduces_the_registered_test_metrics(run_workspace, champion, info, request,
                                                                     tmp_path, fmt):
    src, out = request.getfixturevalue(f"test_{fmt}"), tmp_path / f"scored.{fmt}"
    proc = score(run_workspace[0], champion, src, out)
    assert proc.returncode == 0, proc.stderr
    scored, given = read(out), read(src)
    assert list(scored.columns) == [c if c != "label" else "input_label" for c in given.columns] + \
        ["label", "probability"]
    assert len(scored) == len(given)
    pd.testing.assert_series_equal(scored["Timestamp"], given["Timestamp"])  # same rows, same order
    assert_reproduces(scored, info)
    assert f"{len(scored)} rows scored with {info['name']}:{info['version']}" in proc.stderr


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_small_chunks_give_the_same_answers(run_workspace, champion, info, request, tmp_path, fmt):
    src, ws = request.getfixturevalue(f"test_{fmt}"), Workspace(run_workspace[0])
    whole, chunked = tmp_path / f"whole.{fmt}", tmp_path / f"chunked.{fmt}"
    predict_file(ws, champion, src, whole)
    assert predict_file(ws, champion, src, chunked, chunk_rows=20).rows == len(read(src))
    pd.testing.assert_frame_equal(read(whole), read(chunked))
    assert_reproduces(read(chunked), info)


def test_missing_values_are_scored(run_workspace, champion, info, test_set, tmp_path):
    src = tmp_path / "gaps.csv"
    gaps = test_set.head(20).copy()
    gaps.loc[gaps.index[::2], info["features"][0]] = np.nan
    gaps.to_csv(src, index=False)
    predict_file(Workspace(run_workspace[0]), champion, src, tmp_path / "out.csv")
    scored = read(tmp_path / "out.csv")
    assert scored["label"].isin([0, 1]).all() and scored["probability"].between(0, 1).all()


def test_a_missing_feature_column_exits_2_naming_it(run_workspace, champion, info, test_set, tmp_path):
    src = tmp_path / "short.csv"
    test_set.drop(columns=[info["features"][2]]).to_csv(src, index=False)
    proc = score(run_workspace[0], champion, src, tmp_path / "out.csv")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert repr(info["features"][2]) in proc.stderr and str(src) in proc.stderr


def test_text_in_a_feature_column_exits_2_and_writes_nothing(run_workspace, champion, info, test_set, tmp_path):
    src, out = tmp_path / "text.csv", tmp_path / "out.csv"
    bad = test_set.astype({info["features"][1]: object})
    bad.loc[bad.index[len(bad) - 20], info["features"][1]] = "humid"  # in a late chunk: earlier ones were written
    bad.to_csv(src, index=False)
    proc = score(run_workspace[0], champion, src, out, "--chunk-rows", "50", "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and repr(info["features"][1]) in proc.stderr
    assert "humid" in proc.stderr
    assert not out.exists() and list(tmp_path.glob(".out*")) == []


@pytest.mark.parametrize("name", ["data.json", "data"])
def test_an_unsupported_format_exits_2(run_workspace, champion, test_csv, tmp_path, name):
    proc = score(run_workspace[0], champion, test_csv, tmp_path / name)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: output file") and "use .csv or .parquet" in proc.stderr
