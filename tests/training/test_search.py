"""Search strategies and budgets on small real-shaped data; where trials run is tested in test_search_ray.py."""

import json

import numpy as np
import pandas as pd
import pytest

from mlpipe.config import ComputeConfig, Config, ModelConfig
from mlpipe.errors import ConfigError
from mlpipe.steps.features import make_pipeline
from mlpipe.steps.threshold import inner
from mlpipe.steps.train import time_folds, train_model
from mlpipe.training import search


def config(**models) -> Config:
    return Config.model_validate({
        "data": {"timestamp": "t", "features": ["x0", "x1"]},
        "target": {"column": "x0", "above": 0.0, "horizon": "3h"},
        "split": {"cv_folds": 3}, "models": models, "compute": {"n_jobs": 2}})


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 2)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] ** 2 + 0.5 * rng.normal(size=600) > 0.5).astype(int)
    ts = pd.Series(pd.date_range("2021-01-01", periods=600, freq="h", tz="UTC"))
    return X, y, ts


def test_tpe_runs_the_trial_budget_and_the_same_seed_chooses_the_same(data):
    X, y, ts = data
    cfg = config(random_forest={"strategy": "tpe", "trials": 6, "batch": 3, "seed": 7, "params": {"n_estimators": 10},
                                "space": {"max_depth": {"low": 2, "high": 12},
                                          "min_samples_leaf": {"low": 1, "high": 30, "log": True},
                                          "max_features": [0.5, 1.0]}})
    first, second = (train_model("random_forest", X, y, ts, cfg) for _ in range(2))
    table = first.cv_results
    assert table["trial"].tolist() == list(range(6)) and (table["status"] == "complete").all()
    assert table["max_depth"].between(2, 12).all() and table["min_samples_leaf"].between(1, 30).all()
    assert all(isinstance(v, int) for v in table["max_depth"])  # integer ranges give integers
    assert set(table["max_features"]) <= {0.5, 1.0}
    best = table.loc[table["cv_f1_macro_mean"].idxmax()]
    assert table["best"].sum() == 1 and bool(table.loc[table["cv_f1_macro_mean"].idxmax(), "best"])
    assert first.params["max_depth"] == best["max_depth"]  # the best is what was refitted
    assert inner(first.model).named_steps["model"].max_depth == best["max_depth"]
    pd.testing.assert_frame_equal(table.drop(columns=["fit_seconds", "worker"]),
                                  second.cv_results.drop(columns=["fit_seconds", "worker"]))
    assert {"cv_f1_macro_std", "fit_seconds", "node", "worker", "params", "rung", "fraction"} <= set(table.columns)


def test_random_search_samples_log_ranges_within_bounds(data):
    X, y, ts = data
    cfg = config(svm={"strategy": "random", "trials": 5, "batch": 5,
                      "space": {"C": {"low": 0.01, "high": 100.0, "log": True}, "kernel": ["rbf"]}})
    table = train_model("svm", X, y, ts, cfg).cv_results
    assert len(table) == 5 and table["C"].between(0.01, 100.0).all()
    assert table["C"].nunique() == 5


def test_halving_keeps_the_best_third_on_three_times_more_rows(data):
    X, y, ts = data
    cfg = config(random_forest={"strategy": "halving", "params": {"n_estimators": 10},
                                "space": {"max_depth": [2, 3, 4, 6, 8, 10, 12, 14, 16]}})
    trained = train_model("random_forest", X, y, ts, cfg)
    table = trained.cv_results
    first, second = table[table["rung"] == 0], table[table["rung"] == 1]
    assert len(first) == 9 and len(second) == 3 and set(table["rung"]) == {0, 1}
    assert second["fraction"].iloc[0] == pytest.approx(3 * first["fraction"].iloc[0])
    assert first["fraction"].iloc[0] == pytest.approx(1 / 9)
    promoted = first.nlargest(3, "cv_f1_macro_mean")["trial"]
    assert sorted(second["trial"]) == sorted(promoted)
    assert set(first.loc[~first["trial"].isin(promoted), "status"]) == {"pruned"}
    winner = second.loc[second["cv_f1_macro_mean"].idxmax()]
    assert bool(winner["best"]) and trained.params["max_depth"] == winner["max_depth"]
    assert (second["fit_seconds"] > 0).all()


def test_a_time_budget_stops_starting_batches(data):
    X, y, ts = data
    cfg = config(svm={"strategy": "random", "trials": 50, "batch": 2, "timeout_s": 0.001,
                      "space": {"C": {"low": 0.1, "high": 10.0}}})
    table = train_model("svm", X, y, ts, cfg).cv_results
    assert len(table) == 2  # the first batch always runs, then the budget is spent


def test_subsamples_are_seeded_sorted_and_shared_by_a_rung():
    idx = np.arange(100, 1100)
    a, b = search.subsample(idx, 0.1, 0, 1), search.subsample(idx, 0.1, 0, 1)
    assert len(a) == 100 and np.array_equal(a, b) and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, search.subsample(idx, 0.1, 1, 1))
    assert search.subsample(idx, 1.0, 0, 1) is idx


def test_svm_probabilities_come_from_out_of_fold_platt_scaling(data):
    X, y, ts = data
    trained = train_model("svm", X, y, ts, config(svm={"space": {"kernel": ["rbf"], "C": [1]}, "threshold": "default"}))
    svc = trained.model.named_steps["model"]
    assert len(svc.probA_) == 1 and svc.probA_[0] < 0  # larger decision values -> more likely positive
    proba = trained.model.predict_proba(X)[:, 1]
    order = np.argsort(trained.model.decision_function(X))
    assert np.all(np.diff(proba[order]) >= -1e-2) and 0 < proba.min() and proba.max() < 1
    assert ((proba > 0.5) == (trained.model.predict(X) == 1)).mean() > 0.95


@pytest.mark.parametrize("models, match", [
    ({"svm": {"space": {"C": [1, 1]}, "strategy": "random"}}, r"models.svm.space.C': repeated value"),
    ({"svm": {"space": {"C": [-1.0]}}}, r"models.svm.space.C'"),
    ({"random_forest": {"space": {"max_depth": {"low": 0, "high": 3}}, "strategy": "tpe"}},
     r"models.random_forest.space.max_depth'"),
], ids=["repeated", "invalid-value", "invalid-range-end"])
def test_bad_spaces_name_the_key(data, models, match):
    X, y, ts = data
    kind = next(iter(models))
    with pytest.raises(ConfigError, match=match):
        train_model(kind, X, y, ts, config(**models))


def test_grid_candidates_follow_the_space():
    assert search.grid_candidates({"C": [1, 10], "kernel": ["linear", "rbf"]}) == [
        {"C": 1, "kernel": "linear"}, {"C": 1, "kernel": "rbf"}, {"C": 10, "kernel": "linear"}, {"C": 10, "kernel": "rbf"}]


def test_local_runner_records_the_worker_processes(data):
    from sklearn.linear_model import LogisticRegression

    X, y, ts = data
    folds = time_folds(ts, 3, pd.Timedelta(hours=3))
    result = search.search(make_pipeline(LogisticRegression()), {"C": [0.1, 1.0]}, ModelConfig(), X, y, folds,
                           ComputeConfig(n_jobs=2), key="models.x.space")
    assert all(w.startswith("pid-") for ws in result.trials["worker"] for w in ws.split(","))
    trials = result.trials  # in trial order: idxmax is the first of equal scores, as the search breaks ties
    top = trials.loc[trials["cv_f1_macro_mean"].idxmax()]
    assert result.best_params == json.loads(top["params"]), (result.best_params, trials[["C", "cv_f1_macro_mean"]])
    assert trials["best"].tolist() == [i == top.name for i in trials.index]


def test_the_report_plots_the_searched_hyperparameters_not_the_trials_bookkeeping(data):
    from mlpipe.report import plots

    X, y, ts = data
    cfg = config(random_forest={"strategy": "halving", "params": {"n_estimators": 5},
                                "space": {"max_depth": [2, 4, 8], "min_samples_leaf": [1, 5, 20]}})
    table = train_model("random_forest", X, y, ts, cfg).cv_results
    assert plots.searched_params(table) == ["max_depth", "min_samples_leaf"]
    assert plots.trials(table, "search") is not None


def test_a_tuned_threshold_comes_from_the_search_folds_with_one_final_fit(data, monkeypatch):
    from sklearn.ensemble import RandomForestClassifier

    from mlpipe.steps.threshold import threshold_of

    X, y, ts = data
    rare = (X[:, 0] + 0.8 * np.random.default_rng(1).normal(size=len(y)) > 1.4).astype(int)  # ~10% positive
    fits = []
    original = RandomForestClassifier.fit
    monkeypatch.setattr(RandomForestClassifier, "fit", lambda self, *a, **k: fits.append(id(self)) or original(self, *a, **k))
    trained = train_model("random_forest", X, rare, ts,  # the search's fold fits run in worker processes
                          config(random_forest={"space": {"max_depth": [3, 6]}, "params": {"n_estimators": 20}}))
    assert len(set(fits)) == 1  # here: only the final forest (grown ten trees a call), no fold refits for the threshold
    threshold = trained.params["decision_threshold"]
    assert threshold == threshold_of(trained.model) and 0 < threshold < 0.5  # rare positives: a lower cut
    proba = trained.model.predict_proba(X)[:, 1]
    assert (trained.model.predict(X) == (proba >= threshold)).all()
