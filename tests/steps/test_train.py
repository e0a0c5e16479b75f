import numpy as np
import pandas as pd
import pytest

from mlpipe.config import Config
from mlpipe.errors import ConfigError
from mlpipe.steps.train import Persistence, time_folds, train_model


def config(**models) -> Config:
    return Config.model_validate({
        "data": {"timestamp": "t", "features": ["x0", "x1"]},
        "target": {"column": "x0", "above": 0.0, "horizon": "3h"},
        "split": {"cv_folds": 3}, "models": models})


def hourly(n: int, groups: int = 1) -> pd.Series:
    t = pd.date_range("2021-01-01", periods=n, freq="h", tz="UTC")
    return pd.Series(np.repeat(t, groups))


def test_time_folds_validate_on_later_blocks_with_an_embargo():
    ts = hourly(40, groups=2)  # two stations: rows of one hour must stay in the same fold
    folds = time_folds(ts, 3, pd.Timedelta(hours=3))
    assert len(folds) == 3
    for train_idx, val_idx in folds:
        assert ts[train_idx].max() + pd.Timedelta(hours=3) < ts[val_idx].min()
        assert set(ts[val_idx]) & set(ts[train_idx]) == set()
        assert len(val_idx) % 2 == 0  # both stations of each validation hour
    assert [len(f[0]) for f in folds] == sorted(len(f[0]) for f in folds)  # forward chaining


def test_persistence_predicts_the_current_condition():
    model = Persistence(config().target)
    df = pd.DataFrame({"x0": [0.0, 0.2, np.nan, 1.0]})
    assert model.predict(df).tolist() == [0, 1, 0, 1]
    assert model.predict_proba(df)[:, 1].tolist() == [0.0, 1.0, 0.0, 1.0]


def test_search_covers_the_grid_and_refits_the_best():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.normal(size=300) > 0).astype(int)
    trained = train_model("svm", X, y, hourly(300), config())
    assert len(trained.cv_results) == 6  # kernel {linear, rbf} x C {0.1, 1, 10}
    best = trained.cv_results.loc[trained.cv_results["cv_f1_macro_mean"].idxmax()]
    assert trained.params["kernel"] == best["kernel"] and trained.params["C"] == best["C"]
    from mlpipe.steps.threshold import inner, threshold_of

    assert inner(trained.model).named_steps["model"].probability is True
    assert trained.params["decision_threshold"] == threshold_of(trained.model)
    # the threshold came from the search's out-of-fold answers: labels are probabilities over it
    proba = trained.model.predict_proba(X)[:, 1]
    assert (trained.model.predict(X) == (proba >= threshold_of(trained.model))).all()
    assert (trained.model.predict(X) == y).mean() > 0.8


def test_unknown_hyperparameter_names_the_key():
    X = np.zeros((60, 2), dtype=np.float32)
    y = np.arange(60) % 2
    with pytest.raises(ConfigError, match=r"models.random_forest.space.depth"):
        train_model("random_forest", X, y, hourly(60), config(random_forest={"space": {"depth": [3]}}))


def _require_sklearnex():
    import importlib.util
    import os

    if importlib.util.find_spec("sklearnex") is None:
        if os.environ.get("MLPIPE_REQUIRE_SERVICES") == "1":
            pytest.fail("scikit-learn-intelex is not installed, and MLPIPE_REQUIRE_SERVICES=1 (pip install 'mlpipe[fast]')")
        pytest.skip("scikit-learn-intelex is not installed (pip install 'mlpipe[fast]')")


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_a_onedal_svm_is_handed_on_as_the_equivalent_scikit_learn_svc(kernel):
    _require_sklearnex()
    from sklearn.svm import SVC

    from mlpipe.training import accelerate

    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, 4)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] + 0.5 * X[:, 2] + 0.3 * rng.normal(size=2000) > 0).astype(int)
    fast = accelerate.svc(kernel=kernel, C=3.0).fit(X, y)
    plain = accelerate.to_sklearn(fast)
    assert type(plain) is SVC and type(fast) is not SVC
    # oneDAL sums its kernel terms in float32 here, libsvm in float64
    np.testing.assert_allclose(plain.decision_function(X), fast.decision_function(X), rtol=1e-3, atol=1e-3)
    assert (plain.predict(X) == fast.predict(X)).mean() >= 0.999


def test_accelerated_and_plain_svm_choose_alike_and_register_a_scikit_learn_svc():
    _require_sklearnex()
    from sklearn.svm import SVC

    from mlpipe.steps.threshold import inner

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 2)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.normal(size=600) > 0).astype(int)
    fast = train_model("svm", X, y, hourly(600), config())
    slow = train_model("svm", X, y, hourly(600), config(svm={"engine": "sklearn"}))
    for trained in (fast, slow):
        assert type(inner(trained.model).named_steps["model"]) is SVC
    assert (fast.params["kernel"], fast.params["C"]) == (slow.params["kernel"], slow.params["C"])
    assert (fast.params["engine"], slow.params["engine"]) == (
        "sklearn" if fast.params["kernel"] == "linear" else "onedal", "sklearn")
    assert (fast.model.predict(X) == slow.model.predict(X)).mean() > 0.98


def test_linear_svm_fits_are_liblinears_and_registered_as_one_support_vector():
    """oneDAL and libsvm solve the linear kernel slowly: such a fit, in the search or the final refit, is
    liblinear's (``accelerate.LiblinearSVC``) with the same parameters, registered as a plain SVC whose one
    support vector is the weights; other kernels stay oneDAL's."""
    _require_sklearnex()
    from sklearn.svm import SVC

    from mlpipe.steps.features import make_pipeline
    from mlpipe.steps.threshold import inner
    from mlpipe.training import accelerate

    linear = accelerate.for_fit(make_pipeline(accelerate.svc(kernel="linear", C=2.5, cache_size=300))).steps[-1][1]
    assert type(linear) is accelerate.LiblinearSVC and (linear.kernel, linear.C, linear.cache_size) == ("linear", 2.5, 300)
    rbf = accelerate.for_fit(make_pipeline(accelerate.svc(kernel="rbf"))).steps[-1][1]
    assert accelerate.engine(rbf) == "onedal" and accelerate.engine(linear) == "liblinear"

    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 2)).astype(np.float32)
    y = (X[:, 0] + 0.3 * rng.normal(size=400) > 0).astype(int)
    for kernel, fitted_by in (("linear", "liblinear"), ("rbf", "onedal")):
        trained = train_model("svm", X, y, hourly(400), config(svm={"space": {"kernel": [kernel], "C": [1]}}))
        assert trained.params["engine"] == fitted_by
        registered = inner(trained.model).named_steps["model"]
        assert type(registered) is SVC
        if kernel == "linear":  # its answers agree with libsvm's own linear SVM
            assert registered.support_vectors_.shape[0] == 1
            exact = make_pipeline(SVC(kernel="linear", C=1, class_weight="balanced"), X).fit(X, y)
            assert (inner(trained.model).decision_function(X) > 0).mean() == pytest.approx(
                (exact.decision_function(X) > 0).mean(), abs=0.01)


def test_a_onedal_forest_is_scored_and_registered_as_its_scikit_learn_copy():
    """oneDAL grows the trees; the search scores, and the pipeline registers, the scikit-learn forest of those
    trees, never oneDAL's own (different) answers."""
    _require_sklearnex()
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import f1_score

    from mlpipe.steps.features import make_pipeline
    from mlpipe.steps.threshold import inner
    from mlpipe.training import accelerate
    from mlpipe.training.search import FoldTask, fit_fold

    rng = np.random.default_rng(5)
    X = rng.normal(size=(1500, 3)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] ** 2 + 0.5 * rng.normal(size=1500) > 0.8).astype(int)
    params = {"n_estimators": 20, "max_depth": 6, "random_state": 0, "n_jobs": 1}
    plain = accelerate.to_sklearn(accelerate.random_forest(**params).fit(X, y))
    assert type(plain) is RandomForestClassifier
    np.testing.assert_allclose(plain.predict_proba(X)[:, 1],
                               np.mean([t.predict_proba(X)[:, 1] for t in plain.estimators_], axis=0))

    folds = time_folds(hourly(1500), 3, pd.Timedelta(hours=1))
    scored = fit_fold(make_pipeline(accelerate.random_forest(**params)), X, y, folds,
                      FoldTask(0, 0, 2, {}, 1.0, 0), want_decision=False)
    train_idx, val_idx = folds[2]
    copy = accelerate.as_scored(make_pipeline(accelerate.random_forest(**params)).fit(X[train_idx], y[train_idx]))
    assert type(copy.steps[-1][1]) is RandomForestClassifier
    assert scored.score == f1_score(y[val_idx], copy.predict(X[val_idx]), average="macro")

    for engine, grown_by in (("onedal", "onedal"), ("auto", "sklearn")):  # auto: oneDAL's is another forest
        trained = train_model("random_forest", X, y, hourly(1500), config(random_forest={"engine": engine}))
        assert type(inner(trained.model).named_steps["model"]) is RandomForestClassifier
        assert trained.params["engine"] == grown_by
