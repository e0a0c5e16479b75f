"""Size plans (``mlpipe.training.plan``): how each kind trains as the rows grow, and that a trained model keeps
to its plan."""

import numpy as np
import pandas as pd
import pytest

from mlpipe.config import ModelConfig
from mlpipe.steps import package
from mlpipe.steps.evaluate import classification_metrics
from mlpipe.steps.threshold import inner, labels_and_proba
from mlpipe.steps.train import train_model
from mlpipe.training import approx
from mlpipe.training.plan import (FOREST_TREE_ROWS, HALVING_ABOVE, SEARCH_ROWS, SVM_MAX_ROWS, SVM_SEARCH_ROWS,
                                  cap_folds, plan, time_stratified)
from tests.training.test_search import config


def test_small_data_is_searched_and_fitted_on_every_row():
    for kind in ("svm", "random_forest", "lightgbm"):
        rows = SVM_SEARCH_ROWS if kind == "svm" else HALVING_ABOVE
        p = plan(kind, rows, ModelConfig())
        assert (p.strategy, p.search_rows, p.fit_rows, p.tree_rows) == ("grid", None, None, None), kind
        assert p.describe() == f"grid search on every row; final fit on all {rows:,} rows"


def test_large_data_gets_halving_bounded_searches_and_bounded_fits():
    rows = 10_000_000
    svm, forest, lgbm = (plan(k, rows, ModelConfig()) for k in ("svm", "random_forest", "lightgbm"))
    assert forest.strategy == lgbm.strategy == "halving" and svm.strategy == "grid"
    assert svm.search_rows == SVM_SEARCH_ROWS and svm.approximate and svm.fit_rows == approx.ROWS  # never left out
    exact = plan("svm", rows, ModelConfig(approximate=False))
    assert not exact.approximate and exact.fit_rows == SVM_MAX_ROWS
    assert not plan("svm", rows, ModelConfig(), classes=3).approximate  # binary only
    assert forest.search_rows == lgbm.search_rows == SEARCH_ROWS
    assert forest.fit_rows is None and forest.tree_rows == FOREST_TREE_ROWS
    assert lgbm.fit_rows is None and lgbm.tree_rows is None and lgbm.all_cores
    assert lgbm.describe().endswith("final fit on all 10,000,000 rows, on every core")
    assert not plan("lightgbm", 1_000_000, ModelConfig()).all_cores
    assert svm.describe() == ("grid search on samples of 15,000 rows per fold fit; final fit through a kernel "
                              "approximation (500 landmarks) on a time-stratified sample of 100,000 of 10,000,000 rows")
    assert exact.describe().endswith("final fit on a time-stratified sample of 50,000 of 10,000,000 rows")
    assert forest.describe().endswith("final fit on all 10,000,000 rows, 200,000 per tree")


def test_what_the_config_says_wins_over_the_plan():
    p = plan("random_forest", 10_000_000, ModelConfig(strategy="grid", params={"max_samples": 0.1}, max_rows=5000))
    assert (p.strategy, p.search_rows, p.fit_rows, p.tree_rows) == ("grid", 5000, 5000, None)


def test_a_time_stratified_sample_draws_once_from_every_stretch_of_time():
    idx = np.arange(1_000_000)
    picked = time_stratified(idx, 1000, seed=3)
    assert len(picked) == 1000 and (np.diff(picked) > 0).all()
    assert (picked // 1000 == np.arange(1000)).all()  # one row from each block of 1,000 consecutive rows
    assert (time_stratified(idx, 1000, seed=3) == picked).all()  # seeded
    assert not (time_stratified(idx, 1000, seed=4) == picked).all()
    assert (time_stratified(idx[:10], 1000) == idx[:10]).all()  # fewer rows than asked: all of them
    folds = cap_folds([(np.arange(5000), np.arange(5000, 9000))], 100)
    assert [len(a) for a in folds[0]] == [100, 100] and folds[0][1].min() >= 5000


@pytest.mark.parametrize("kind,approximate", [("svm", False), ("svm", True), ("random_forest", False)])
def test_a_model_above_its_budget_trains_on_a_sample_and_still_converts(kind, approximate):
    rng = np.random.default_rng(0)
    n = 1200
    X = rng.normal(size=(n, 2)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] ** 2 + 0.5 * rng.normal(size=n) > 0.5).astype(int)
    ts = pd.Series(pd.date_range("2021-01-01", periods=n, freq="h", tz="UTC"))
    settings = {"max_rows": 300, "space": {"max_depth": [4]}, "params": {"n_estimators": 10}}
    if kind == "svm":
        settings = {"max_rows": 300, "approximate": approximate, "space": {"C": [1.0], "kernel": ["rbf"]}}
    cfg = config(**{kind: settings})
    trained = train_model(kind, X, y, ts, cfg)
    estimator = inner(trained.model).named_steps["model"]
    if approximate:  # an SVC over Nystroem's landmarks, fitted on every row here (fewer than approx.ROWS)
        assert trained.params["fit_rows"] == n and estimator.support_vectors_.shape[0] == min(n, approx.LANDMARKS)
        assert trained.params["approximation"] == ("Nystroem's rbf approximation with 500 landmarks, a linear SVM "
                                                   "(liblinear) on 1,200 rows")
        assert trained.params["plan"].endswith("final fit through a kernel approximation (500 landmarks) on a "
                                               "time-stratified sample of 1,200 of 1,200 rows")
    else:
        assert trained.params["fit_rows"] == 300
        assert trained.params["plan"] == "grid search on samples of 300 rows per fold fit; final fit on a " \
                                         "time-stratified sample of 300 of 1,200 rows"
        if kind == "svm":
            assert estimator.support_vectors_.shape[0] <= 300
        else:
            assert estimator.estimators_[0].tree_.weighted_n_node_samples[0] <= 300
    assert set(trained.cv_results["fraction"]) == {1.0}
    labels, proba = labels_and_proba(trained.model, X)  # answers every row, and its graph agrees
    metrics = classification_metrics(y, labels, proba)
    parity = package.check_parity(kind, package.to_onnx(trained, cfg), X, y, labels, proba, metrics)
    assert parity.agreement == 1.0
    assert metrics["f1"] > 0.75  # learned (this rule is not linear: a constant answer scores under 0.5)


def test_the_approximation_is_exactly_an_svc_and_close_to_the_exact_kernel_svm():
    """Its SVC's decision values are the linear SVM's on Nystroem's features (checked inside ``approx.fit``);
    on a curved rule its test macro F1 stays near the exact kernel SVM's."""
    from sklearn.metrics import f1_score
    from sklearn.svm import SVC

    from mlpipe.steps.features import make_pipeline

    rng = np.random.default_rng(1)
    X = rng.normal(size=(6000, 3)).astype(np.float32)
    y = (np.sin(2 * X[:, 0]) + X[:, 1] ** 2 - 0.5 * X[:, 2] + 0.3 * rng.normal(size=6000) > 0.5).astype(int)
    train, test = slice(0, 4000), slice(4000, None)
    template = SVC(C=1.0, kernel="rbf", class_weight="balanced")
    pipeline, _ = approx.fit(make_pipeline(template, X[train]), X[train], y[train])
    exact = make_pipeline(SVC(C=1.0, kernel="rbf", class_weight="balanced"), X[train]).fit(X[train], y[train])
    f1_approx = f1_score(y[test], pipeline.predict(X[test]), average="macro")
    f1_exact = f1_score(y[test], exact.predict(X[test]), average="macro")
    assert pipeline.named_steps["model"].support_vectors_.shape[0] == approx.LANDMARKS
    assert exact.named_steps["model"].support_vectors_.shape[0] > approx.LANDMARKS  # the answers cost less
    assert f1_approx > f1_exact - 0.03, (f1_approx, f1_exact)
    linear, _ = approx.fit(make_pipeline(SVC(C=1.0, kernel="linear"), X[train]), X[train], y[train])
    assert linear.named_steps["model"].support_vectors_.shape[0] == 1  # the weights: one support vector


def test_the_final_fit_shows_its_progress_and_grows_the_same_forest():
    """The forest grown ten trees at a time (its progress bar) is the forest grown at once."""
    from sklearn.ensemble import RandomForestClassifier

    from mlpipe.steps.features import make_pipeline
    from mlpipe.training import progress

    rng = np.random.default_rng(2)
    X = rng.normal(size=(500, 3)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int)
    make = lambda: make_pipeline(RandomForestClassifier(n_estimators=25, max_depth=5, random_state=3,  # noqa: E731
                                                        max_samples=0.5), X)
    stepped, steps = make(), []
    progress._forest(stepped, X, y, steps.append)
    once = make().fit(X, y)
    assert steps == [10, 20, 25]
    model = stepped.named_steps["model"]
    assert len(model.estimators_) == 25 and model.n_estimators == 25 and model.warm_start is False
    assert np.array_equal(stepped.predict_proba(X), once.predict_proba(X))
