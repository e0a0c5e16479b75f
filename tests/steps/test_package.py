import numpy as np
import onnx
import pandas as pd
import pytest

from mlpipe.config import Config
from mlpipe.errors import ParityError
from mlpipe.steps import package
from mlpipe.steps.evaluate import classification_metrics
from mlpipe.steps.features import make_pipeline
from mlpipe.steps.train import Trained, platt_scale, time_folds, train_baseline


def config(target: dict) -> Config:
    return Config.model_validate({"data": {"timestamp": "t", "features": ["a", "rain", "b"]},
                                  "target": {"column": "rain", **target}})


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 3)) * [1.0, 1.0, 300.0] + [0.0, 0.0, 1000.0]
    y = ((X[:, 0] + X[:, 1] > 0.5) ^ (rng.random(2000) < 0.1)).astype(int)
    X[rng.random(X.shape) < 0.05] = np.nan
    return X.astype(np.float32), y


def _fitted(kind: str, X, y):
    from lightgbm import LGBMClassifier
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.svm import SVC

    if kind == "svm_platt":  # Platt scaling fitted on out-of-fold decision values, as train_model does
        folds = time_folds(pd.Series(pd.date_range("2021-01-01", periods=len(y), freq="h")), 3, pd.Timedelta(0))
        decision = [(va, make_pipeline(SVC()).fit(X[tr], y[tr]).decision_function(X[va])) for tr, va in folds]
        pipeline = make_pipeline(SVC()).fit(X, y)
        platt_scale(pipeline.named_steps["model"], decision, y)
        return pipeline
    est = {"random_forest": lambda: RandomForestClassifier(n_estimators=30, max_depth=10, random_state=0),
           "svm": lambda: SVC(probability=True, random_state=0),
           "lightgbm": lambda: LGBMClassifier(n_estimators=100, random_state=0, n_jobs=1, verbose=-1)}[kind]()
    return make_pipeline(est).fit(X, y)


@pytest.mark.parametrize("estimator", ["random_forest", "svm", "svm_platt", "lightgbm"])
def test_onnx_graph_matches_scikit_learn(data, estimator):
    X, y = data
    pipeline = _fitted(estimator, X[:1500], y[:1500])
    onnx_bytes = package.to_onnx(Trained(estimator, pipeline, {}, None, 0.0), config({"above": 0.0}))
    model = onnx.load_from_string(onnx_bytes)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    assert model.graph.input[0].type.tensor_type.shape.dim[1].dim_value == 3  # the feature count, not 1 or 4
    labels, proba = package.predict_onnx(onnx_bytes, X[1500:])
    assert labels.dtype == np.int64 and proba.dtype == np.float32
    sk_labels, sk_proba = pipeline.predict(X[1500:]), pipeline.predict_proba(X[1500:])[:, 1]
    parity = package.check_parity(estimator, onnx_bytes, X[1500:], y[1500:], sk_labels, sk_proba,
                                  classification_metrics(y[1500:], sk_labels, sk_proba))
    assert parity.agreement >= 0.999


@pytest.mark.parametrize("target", [{"above": 0.0}, {"positive": [1, 3]}], ids=["above", "positive"])
def test_persistence_graph_is_later_equals_now(target):
    cfg = config(target)
    X = np.array([[0, 0.0, 1], [0, 1.0, 1], [0, 3.0, 1], [0, np.nan, 1], [0, 0.5, 1]], dtype=np.float32)
    labels, proba = package.predict_onnx(package.to_onnx(train_baseline(cfg), cfg), X)
    expected = [0, 1, 1, 0, 1] if "above" in target else [0, 1, 1, 0, 0]
    assert labels.tolist() == expected
    assert proba.tolist() == [float(v) for v in expected]


def test_no_baseline_graph_when_the_target_is_not_a_feature():
    cfg = Config.model_validate({"data": {"timestamp": "t", "features": ["a"]},
                                 "target": {"column": "sky", "positive": ["rain"]}})
    assert package.to_onnx(train_baseline(cfg), cfg) is None


def test_parity_check_refuses_a_model_that_disagrees(data):
    X, y = data
    cfg = config({"above": 0.0})
    onnx_bytes = package.to_onnx(train_baseline(cfg), cfg)
    labels, proba = package.predict_onnx(onnx_bytes, X)
    wrong = 1 - labels
    with pytest.raises(ParityError, match="agree with scikit-learn on only"):
        package.check_parity("baseline", onnx_bytes, X, y, wrong, proba, classification_metrics(y, wrong, proba))


def test_lightgbm_splits_between_adjacent_float32_values_survive_onnx():
    """LightGBM splits at a double midway between two adjacent float32 values; ONNX stores thresholds as float32,
    and the nearest float32 may be the upper value, which would then take the other branch."""
    from lightgbm import LGBMClassifier
    from sklearn.pipeline import Pipeline

    a = np.nextafter(np.float32(1), np.float32(2))
    b = np.nextafter(a, np.float32(2))  # the midpoint of a and b rounds (to even) to b
    rng = np.random.default_rng(0)
    column = np.where(rng.random(400) < 0.5, a, b).astype(np.float32)
    X = np.column_stack([column, rng.normal(size=400).astype(np.float32)])
    y = (column == b).astype(int)
    pipeline = Pipeline([("model", LGBMClassifier(n_estimators=5, min_child_samples=5, verbose=-1))]).fit(X, y)
    threshold = pipeline.named_steps["model"].booster_.dump_model()["tree_info"][0]["tree_structure"]["threshold"]
    assert float(a) < threshold < float(b) and np.float32(threshold) == b
    labels, proba = package.predict_onnx(package._sklearn_graph(pipeline, 2).SerializeToString(), X)
    assert (labels == pipeline.predict(X)).all()
    assert np.abs(proba - pipeline.predict_proba(X)[:, 1]).max() < 1e-6


@pytest.mark.parametrize("estimator", ["random_forest", "svm_platt", "lightgbm"])
def test_impossible_inputs_are_scored_as_missing_as_at_ingest(data, estimator):
    """A served raw value outside [data.ranges], or infinite, is answered as if it were missing (imputed), as
    ingest made such values missing in the data the model was trained and tested on."""
    X, y = data
    cfg = Config.model_validate({"data": {"timestamp": "t", "features": ["a", "rain", "b"],
                                          "ranges": {"b": [850.0, 1090.1]}},
                                 "target": {"column": "rain", "above": 0.0}})
    pipeline = _fitted(estimator, X[:1500], y[:1500])
    onnx_bytes = package.to_onnx(Trained(estimator, pipeline, {}, None, 0.0), cfg)
    rows = np.repeat(X[1500:1520], 1, axis=0)
    rows[:, 0] = np.where(np.isnan(rows[:, 0]), 0.3, rows[:, 0])
    missing_b, missing_a = rows.copy(), rows.copy()
    missing_b[:, 2], missing_a[:, 0] = np.nan, np.nan
    expected_b, expected_a = (package.predict_onnx(onnx_bytes, m)[1] for m in (missing_b, missing_a))
    for value in (0.0, 849.99, np.float32(1090.1) * 1.0001, np.inf, -np.inf):
        bad = rows.copy()
        bad[:, 2] = value
        np.testing.assert_array_equal(package.predict_onnx(onnx_bytes, bad)[1], expected_b)
    bad = rows.copy()
    bad[:, 0] = np.inf  # no range for a: only the infinite value is impossible
    np.testing.assert_array_equal(package.predict_onnx(onnx_bytes, bad)[1], expected_a)
    edge = rows.copy()
    edge[:, 2] = [850.0, np.float32(1090.1)] * 10  # the bounds themselves are possible values
    np.testing.assert_allclose(package.predict_onnx(onnx_bytes, edge)[1], pipeline.predict_proba(edge)[:, 1],
                               atol=1e-2)


def test_a_range_bound_is_possible_and_beyond_it_is_missing():
    """Persistence on a ranged target: 5 mm holds, 5.01 mm is impossible, hence missing, hence not rain."""
    cfg = Config.model_validate({"data": {"timestamp": "t", "features": ["a", "rain", "b"],
                                          "ranges": {"rain": [0.0, 5.0]}},
                                 "target": {"column": "rain", "above": 0.0}})
    X = np.array([[0, 5.0, 0], [0, 5.01, 0], [0, 0.2, 0], [0, -0.1, 0], [0, np.inf, 0]], dtype=np.float32)
    labels, _ = package.predict_onnx(package.to_onnx(train_baseline(cfg), cfg), X)
    assert labels.tolist() == [1, 0, 1, 0, 0]


def test_float32_bounds_compare_as_the_float64_bounds_do():
    for bound in (0.1, 850.0, -60.0, 1090.1, 1e-7):
        lo, hi = package._float32_at_least(bound), package._float32_at_most(bound)
        for x in np.float32(bound) + np.array([-2, -1, 0, 1, 2]) * np.spacing(np.float32(bound)):
            x = np.float32(x)
            assert (x < np.float32(lo)) == (float(x) < bound)
            assert (x > np.float32(hi)) == (float(x) > bound)
