"""The decision threshold: chosen on the time-ordered CV folds of the training split, never on the test split,
and carried inside the model (scikit-learn's threshold classifiers; a node in the ONNX graph)."""

from __future__ import annotations

import numpy as np

from mlpipe.config import ModelConfig


def fit_final(pipeline, X: np.ndarray, y: np.ndarray, folds: list, settings: ModelConfig):
    """Fit ``pipeline`` on all training rows and wrap it with its decision threshold.

    ``tuned``: scikit-learn's TunedThresholdClassifierCV scores thresholds on the out-of-fold probabilities of
    ``folds`` for ``settings.threshold_metric`` (each fold trained only on its past), then refits once on all
    rows. A number: FixedThresholdClassifier. ``default``: the estimator's own ``predict``.
    Returns the fitted model and its threshold (None for ``default``).
    """
    from sklearn.model_selection import FixedThresholdClassifier, TunedThresholdClassifierCV

    if settings.threshold == "default":
        return pipeline.fit(X, y), None
    if settings.threshold == "tuned":
        model = TunedThresholdClassifierCV(pipeline, scoring=settings.threshold_metric, cv=folds,
                                           response_method="predict_proba", refit=True).fit(X, y)
        return model, float(model.best_threshold_)
    model = FixedThresholdClassifier(pipeline, threshold=settings.threshold, response_method="predict_proba")
    return model.fit(X, y), float(settings.threshold)


def inner(model):
    """The fitted pipeline inside threshold wrappers and FrozenEstimator (or the model itself)."""
    while hasattr(model, "estimator_") or type(model).__name__ == "FrozenEstimator":
        model = model.estimator_ if hasattr(model, "estimator_") else model.estimator
    return model


def labels_and_proba(model, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and positive-class probabilities from one ``predict_proba`` pass: a threshold classifier's
    ``predict`` would compute the same probabilities again, then label ``proba >= threshold`` as below."""
    proba = _predict_proba(model, X)
    threshold = threshold_of(model)
    if threshold is None:
        return model.predict(X), proba[:, 1] if proba.shape[1] == 2 else proba
    return model.classes_[(proba[:, 1] >= threshold).astype(int)], proba[:, 1]


def _predict_proba(model, X) -> np.ndarray:
    """``model.predict_proba(X)``, a block of rows per core in threads when ``X`` is an array: libsvm and
    scikit-learn's trees answer one row at a time without holding the GIL, so the blocks run in parallel."""
    import os

    blocks = min(os.cpu_count() or 1, len(X) // 1000)
    if not isinstance(X, np.ndarray) or blocks < 2:
        return model.predict_proba(X)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(blocks) as pool:
        return np.concatenate(list(pool.map(model.predict_proba, np.array_split(X, blocks))))


def threshold_of(model) -> float | None:
    if hasattr(model, "best_threshold_"):
        return float(model.best_threshold_)
    if hasattr(model, "estimator_") and isinstance(getattr(model, "threshold", None), (int, float)):
        return float(model.threshold)
    return None


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


_METRICS = {  # each from the confusion counts at every candidate threshold at once (arrays)
    "f1_macro": lambda tp, fp, fn, tn: (_ratio(2 * tp, 2 * tp + fp + fn) + _ratio(2 * tn, 2 * tn + fn + fp)) / 2,
    "f1": lambda tp, fp, fn, tn: _ratio(2 * tp, 2 * tp + fp + fn),
    "balanced_accuracy": lambda tp, fp, fn, tn: (_ratio(tp, tp + fn) + _ratio(tn, tn + fp)) / 2,
    "accuracy": lambda tp, fp, fn, tn: (tp + tn) / (tp + fp + fn + tn),
}


THRESHOLD_GAP = 1e-4
"""A decision threshold lies in a gap at least this wide between the out-of-fold scores it was chosen on.
Scores closer together than this are one cluster that no threshold splits: their order is noise at the level of
float32 arithmetic, where the ONNX graph and scikit-learn part ways (onnxruntime's SVM sums its kernel terms in
float32: probability gaps up to ~1.3e-5 measured on the Turku data). A linear SVM that has learned persistence,
say, gives every "dry now" row nearly the same probability (spread ~1e-5); a threshold inside that cluster
labels those rows by rounding noise, and the graph then agreed with scikit-learn on only 97.35% of test rows."""


def best_threshold(truth: np.ndarray, proba: np.ndarray, metric: str) -> float:
    """The threshold t (label 1 where ``proba >= t``) that labels ``proba`` as the best of 201 quantiles of
    ``proba`` does for ``metric`` (ties go to the lowest), each quantile moved down to the start of its cluster
    of scores (``THRESHOLD_GAP``), and t placed halfway between that start and the next lower score: at least
    ``THRESHOLD_GAP / 2`` from every score it was chosen on. A forest's probabilities are averages of few
    values, so many test rows tie at a score the threshold would otherwise equal, and float32 rounding in the
    ONNX graph would flip them all. Confusion counts for all candidates come from one sort."""
    scores, candidates, values = _scan(truth, proba, metric)
    best = float(candidates[int(np.argmax(values))])
    below = scores[scores < best]
    if len(below):
        return (float(below.max()) + best) / 2
    return best - max(abs(best) / 2, THRESHOLD_GAP / 2)  # every score is labelled 1


def _scan(truth: np.ndarray, proba: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(the distinct scores, the candidate thresholds, ``metric`` at each candidate)."""
    scores = np.unique(proba)
    starts_cluster = np.r_[True, np.diff(scores) >= THRESHOLD_GAP]
    cluster_start = scores[starts_cluster][np.cumsum(starts_cluster) - 1]  # of each distinct score
    first_at_or_above = np.searchsorted(scores, np.quantile(proba, np.linspace(0.0, 1.0, 201)), side="left")
    candidates = np.unique(cluster_start[first_at_or_above[first_at_or_above < len(scores)]])
    positives, negatives = np.sort(proba[truth == 1]), np.sort(proba[truth != 1])
    tp = len(positives) - np.searchsorted(positives, candidates, side="left")  # scores >= t
    fp = len(negatives) - np.searchsorted(negatives, candidates, side="left")
    fn, tn = len(positives) - tp, len(negatives) - fp
    return scores, candidates, _METRICS[metric](*(a.astype(np.float64) for a in (tp, fp, fn, tn)))


def threshold_from_decisions(model, X: np.ndarray, y: np.ndarray, decisions: list[tuple[np.ndarray, np.ndarray]],
                             settings: ModelConfig, platt: bool = True):
    """The threshold chosen on the search's out-of-fold answers (each from a model trained on that fold's past
    only): a Platt-scaled SVC's decision values mapped through its fitted sigmoid, or (``platt=False``) the
    positive-class probabilities themselves. No extra fits. The fitted model is wrapped, frozen, in
    scikit-learn's FixedThresholdClassifier."""
    from sklearn.frozen import FrozenEstimator
    from sklearn.model_selection import FixedThresholdClassifier

    if settings.threshold == "default":
        return model, None
    if settings.threshold == "tuned":
        f = np.concatenate([d for _, d in decisions])
        truth = y[np.concatenate([idx for idx, _ in decisions])]
        if platt:
            svc = model.named_steps["model"]
            proba = 1.0 / (1.0 + np.exp(svc._probA[0] * f - svc._probB[0]))  # P(label 1), libsvm's Platt form
        else:
            proba = f
        threshold = best_threshold(truth, proba, settings.threshold_metric)
    else:
        threshold = float(settings.threshold)
    wrapped = FixedThresholdClassifier(FrozenEstimator(model), threshold=threshold, response_method="predict_proba")
    return wrapped.fit(X, y), threshold
