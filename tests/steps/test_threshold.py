import numpy as np
import pandas as pd

from mlpipe.config import Config, ModelConfig
from mlpipe.steps import package
from mlpipe.steps.features import make_pipeline
from mlpipe.steps.threshold import fit_final, threshold_of
from mlpipe.steps.train import Trained, time_folds


def data(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2)).astype(np.float32)
    y = (X[:, 0] + 0.8 * rng.normal(size=n) > 1.6).astype(int)  # ~10% positives: 0.5 is a poor threshold
    return X, y


def folds(n):
    return time_folds(pd.Series(pd.date_range("2020", periods=n, freq="h", tz="UTC")), 3, pd.Timedelta(hours=1))


def test_tuned_threshold_comes_from_the_training_folds_and_travels_in_the_onnx_graph():
    from sklearn.ensemble import RandomForestClassifier

    X, y = data()
    model, threshold = fit_final(make_pipeline(RandomForestClassifier(n_estimators=30, max_depth=6, random_state=0)),
                                 X[:1000], y[:1000], folds(1000), ModelConfig())
    assert threshold == threshold_of(model) and 0 < threshold < 0.5  # rare positives: a lower cut
    cfg = Config.model_validate({"data": {"timestamp": "t", "features": ["a", "b"]},
                                 "target": {"column": "a", "above": 0.0}})
    onnx_bytes = package.to_onnx(Trained("random_forest", model, {}, pd.DataFrame(), 0.0), cfg)
    labels, proba = package.predict_onnx(onnx_bytes, X[1000:])
    assert (labels == model.predict(X[1000:])).mean() >= 0.999
    assert ((proba >= threshold) == (labels == 1)).all()
    assert labels.sum() > (model.predict_proba(X[1000:])[:, 1] >= 0.5).sum()  # the threshold changed answers


def test_fixed_and_default_thresholds():
    from sklearn.linear_model import LogisticRegression

    X, y = data()
    fixed, t = fit_final(make_pipeline(LogisticRegression()), X, y, folds(len(X)), ModelConfig(threshold=0.3))
    assert t == 0.3 and (fixed.predict(X) == (fixed.predict_proba(X)[:, 1] >= 0.3)).all()
    plain, t = fit_final(make_pipeline(LogisticRegression()), X, y, folds(len(X)), ModelConfig(threshold="default"))
    assert t is None and threshold_of(plain) is None


def test_best_threshold_scores_every_candidate_as_scikit_learn_does():
    """The one-sort confusion counts give the same choice as scoring each candidate with scikit-learn; the
    threshold returned labels every score as that candidate does, and equals none of them."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    from mlpipe.steps.threshold import best_threshold

    reference = {"f1_macro": lambda y, q: f1_score(y, q, average="macro", zero_division=0),
                 "f1": lambda y, q: f1_score(y, q, zero_division=0),
                 "balanced_accuracy": balanced_accuracy_score, "accuracy": accuracy_score}
    rng = np.random.default_rng(1)
    for _ in range(15):
        n = int(rng.integers(50, 3000))
        y = (rng.random(n) < rng.uniform(0.05, 0.6)).astype(int)
        proba = np.round(np.clip(0.5 * y + rng.normal(0.25, 0.3, n), 0, 1), int(rng.integers(1, 4)))  # with ties
        candidates = np.unique(np.quantile(proba, np.linspace(0, 1, 201)))
        for metric, score in reference.items():
            expected = float(max(candidates, key=lambda t: score(y, (proba >= t).astype(int))))
            threshold = best_threshold(y, proba, metric)
            assert ((proba >= threshold) == (proba >= expected)).all(), metric
            assert threshold not in set(proba) and threshold <= proba[proba >= expected].min(), metric


def test_labels_and_proba_answer_as_predict_and_predict_proba_do():
    from sklearn.linear_model import LogisticRegression

    from mlpipe.steps.threshold import labels_and_proba

    X, y = data(n=6000)  # 5,000 rows to answer: in blocks, in threads, where there are two cores or more
    for threshold in ("tuned", 0.3, "default"):
        model, _ = fit_final(make_pipeline(LogisticRegression()), X[:1000], y[:1000], folds(1000),
                             ModelConfig(threshold=threshold))
        labels, proba = labels_and_proba(model, X[1000:])
        assert (labels == model.predict(X[1000:])).all()
        assert np.array_equal(proba, model.predict_proba(X[1000:])[:, 1])


def test_best_threshold_never_splits_scores_float32_cannot_tell_apart():
    """A linear SVM that learned persistence gives every "dry now" row nearly one probability (spread ~1e-5,
    float32 noise in the ONNX graph); splitting that cluster labels its rows by rounding. The threshold lies
    at least THRESHOLD_GAP / 2 from every score, outside every cluster, and labels no better cluster split."""
    from mlpipe.steps.threshold import THRESHOLD_GAP, best_threshold

    rng = np.random.default_rng(3)
    dry_now = 0.32 + rng.uniform(0, 2e-5, 4000)          # one cluster, wider than float32 noise, far below the gap
    wet_now = 0.71 + rng.uniform(0, 2e-5, 1000)
    proba = np.concatenate([dry_now, wet_now])
    # inside the dry cluster the truth follows the score's noise: the best raw split is within the cluster
    truth = np.concatenate([(dry_now > np.quantile(dry_now, 0.7)).astype(int), np.ones(1000, int)])
    threshold = best_threshold(truth, proba, "f1_macro")
    assert np.min(np.abs(proba - threshold)) >= THRESHOLD_GAP / 2
    assert ((proba >= threshold) == (proba >= 0.5)).all() or (proba >= threshold).all()
