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
    """The fitted pipeline inside a threshold wrapper (or the model itself)."""
    return getattr(model, "estimator_", model)


def threshold_of(model) -> float | None:
    if hasattr(model, "best_threshold_"):
        return float(model.best_threshold_)
    if hasattr(model, "estimator_") and isinstance(getattr(model, "threshold", None), (int, float)):
        return float(model.threshold)
    return None
