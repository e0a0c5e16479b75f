"""Identical fits reused across runs (``mlpipe.training.fitcache``): real runs of the CLI in one workspace."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlpipe.config import load_config
from mlpipe.store.workspace import Workspace
from mlpipe.training import fitcache
from tests.conftest import TURKU_CONFIG, mlpipe

SEARCHED = ("svm", "random_forest", "lightgbm")


def _run(ws: Path, csv: Path, *extra: str) -> tuple[dict, str]:
    proc = mlpipe("run", "--config", str(TURKU_CONFIG), "--source", str(csv), "--json", "--quiet", *extra,
                  workspace=ws, check=True)
    return json.loads(proc.stdout), proc.stderr


def _child_runs(ws: Path, result: dict) -> dict:
    client = Workspace(ws).client
    return {m["kind"]: client.get_run(m["run_id"]) for m in result["models"] if m["kind"] in SEARCHED}


def _trials(ws: Path, run_id: str, tmp_path: Path) -> dict:
    client = Workspace(ws).client
    return json.loads(Path(client.download_artifacts(run_id, "cv_results.json", str(tmp_path))).read_text())


@pytest.fixture
def workspace(run_workspace, tmp_path) -> Path:
    """A copy of a workspace holding one run, and so one cached fit per searched model."""
    ws = tmp_path / "ws"
    shutil.copytree(run_workspace[0], ws)
    return ws


def test_a_second_run_reuses_each_fit_and_checks_and_registers_it_anew(workspace, run_workspace, turku_small,
                                                                       tmp_path):
    first = {m["kind"]: m for m in run_workspace[1]["models"]}
    second, _ = _run(workspace, turku_small)
    runs = _child_runs(workspace, second)
    for kind, run in runs.items():
        tags = run.data.tags
        assert tags["mlpipe.fit_cache"] == "hit", kind
        assert tags["mlpipe.fitted_in_run"] == first[kind]["run_id"]
        assert (workspace / "cache" / "fits" / tags["mlpipe.fit_key"] / "model.skops").is_file()
        m = next(m for m in second["models"] if m["kind"] == kind)
        assert m["onnx_sha256"] == first[kind]["onnx_sha256"]
        assert m["metrics"] == first[kind]["metrics"]  # measured again, on the same checked graph
        assert m["version"] == first[kind]["version"] + 1
        assert _trials(workspace, run.info.run_id, tmp_path / kind) == _trials(workspace, first[kind]["run_id"],
                                                                               tmp_path / f"{kind}-first")
        assert {"onnx_label_agreement", "sklearn_metrics"} <= set(json.loads(Path(Workspace(workspace).client
            .download_artifacts(run.info.run_id, "evaluation.json", str(tmp_path / kind))).read_text()))

    third, _ = _run(workspace, turku_small, "--no-cache")
    for kind, run in _child_runs(workspace, third).items():
        assert run.data.tags["mlpipe.fit_cache"] == "off", kind
        assert "mlpipe.fitted_in_run" not in run.data.tags
        # searched and fitted anew, in another process: the very model the cache gave, to the byte
        assert next(m for m in third["models"] if m["kind"] == kind)["onnx_sha256"] == first[kind]["onnx_sha256"]


@pytest.mark.parametrize("damage", ["untrusted type in model.skops", "model.onnx altered"])
def test_an_entry_that_cannot_be_trusted_is_not_used_and_the_model_is_fitted_again(workspace, run_workspace,
                                                                                   turku_small, damage):
    first = {m["kind"]: m for m in run_workspace[1]["models"]}
    key = Workspace(workspace).client.get_run(first["svm"]["run_id"]).data.tags["mlpipe.fit_key"]
    entry = workspace / "cache" / "fits" / key
    if damage.startswith("untrusted"):
        import os

        import skops.io as sio
        from sklearn.preprocessing import FunctionTransformer

        sio.dump(FunctionTransformer(func=os.system), entry / "model.skops")  # loading it must not be possible
    else:
        (entry / "model.onnx").write_bytes((entry / "model.onnx").read_bytes() + b"\0")

    second, stderr = _run(workspace, turku_small)
    warnings = [line for line in stderr.splitlines() if line.startswith("warning: fit cache entry")]
    assert len(warnings) == 1 and str(entry) in warnings[0], stderr
    assert ("Untrusted" if damage.startswith("untrusted") else "SHA-256") in warnings[0]
    runs = _child_runs(workspace, second)
    assert runs["svm"].data.tags["mlpipe.fit_cache"] == "miss"
    assert runs["random_forest"].data.tags["mlpipe.fit_cache"] == "hit"
    # the refitted model took the entry's place, and is the same model
    assert fitcache.load(workspace, key).fitted_in_run == runs["svm"].info.run_id
    assert next(m for m in second["models"] if m["kind"] == "svm")["onnx_sha256"] == first["svm"]["onnx_sha256"]


def test_the_key_follows_what_a_fit_depends_on_and_nothing_else(tmp_path):
    config = load_config(TURKU_CONFIG)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, len(config.model_features))).astype(np.float32)
    y = rng.integers(0, 2, 50)
    ts = pd.Series(pd.date_range("2020-01-01", periods=50, freq="h", tz="UTC"))
    base = fitcache.key("svm", X, y, ts, config)
    assert fitcache.key("svm", X.copy(), y.copy(), ts.copy(), config) == base

    X2 = X.copy()
    X2[7, 3] += 1e-3
    space = config.model("svm").model_copy(update={"space": {"C": [1, 2]}})
    changed = {
        "one feature value": fitcache.key("svm", X2, y, ts, config),
        "one label": fitcache.key("svm", X, 1 - y, ts, config),
        "the timestamps (the CV folds)": fitcache.key("svm", X, y, ts + pd.Timedelta("1h"), config),
        "the kind": fitcache.key("random_forest", X, y, ts, config),
        "the search space": fitcache.key("svm", X, y, ts, config.model_copy(
            update={"models": {**config.models, "svm": space}})),
        "the CV folds": fitcache.key("svm", X, y, ts, config.model_copy(
            update={"split": config.split.model_copy(update={"cv_folds": 4})})),
    }
    assert all(k != base for k in changed.values()), changed
    assert len(set(changed.values())) == len(changed)
    same = {
        "the registry prefix": config.model_copy(
            update={"registry": config.registry.model_copy(update={"model_prefix": "other"})}),
        "the data's path": config.model_copy(update={"data": config.data.model_copy(update={"source": "x.csv"})}),
        "another model's settings": config.model_copy(update={"models": {
            **config.models, "random_forest": config.model("random_forest").model_copy(update={"seed": 9})}}),
    }
    for what, other in same.items():
        assert fitcache.key("svm", X, y, ts, other) == base, what
