"""Step 4, test: metrics of a model's answers on the held-out test split."""

from __future__ import annotations

import numpy as np

METRIC_KEYS = ("accuracy", "precision", "recall", "f1", "roc_auc")


def classification_metrics(y_true: np.ndarray, labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy; precision, recall and F1 macro-averaged and per class; the Brier score of the probabilities;
    ROC AUC from the positive-class probability (left out when the test split holds one class only).
    ``proba``: the positive class's probabilities, or for k > 2 classes the ``[N, k]`` matrix: then the Brier
    score is the mean over rows of the squared distance to the one-hot truth (summed over classes) and ROC AUC
    is one-vs-rest, macro-averaged."""
    from sklearn.metrics import (accuracy_score, brier_score_loss, precision_recall_fscore_support,
                                 roc_auc_score)

    proba = np.clip(proba, 0.0, 1.0)  # float32 softmax/sigmoid outputs can overshoot 1 by an ulp
    classes = list(range(proba.shape[1])) if proba.ndim == 2 else [0, 1]
    p, r, f, _ = precision_recall_fscore_support(y_true, labels, labels=classes, zero_division=0)
    out = {
        "accuracy": accuracy_score(y_true, labels),
        "precision": p.mean(), "recall": r.mean(), "f1": f.mean(),
        **{f"precision_{c}": p[c] for c in classes},
        **{f"recall_{c}": r[c] for c in classes},
        **{f"f1_{c}": f[c] for c in classes},
    }
    if proba.ndim == 2:
        truth = np.eye(len(classes))[np.asarray(y_true, dtype=np.int64)]
        out["brier"] = float(np.mean(np.sum((proba - truth) ** 2, axis=1))) if len(truth) else float("nan")
        if len(np.unique(y_true)) == len(classes):
            out["roc_auc"] = roc_auc_score(y_true, proba / proba.sum(axis=1, keepdims=True), multi_class="ovr",
                                           average="macro", labels=classes)
        return {k: float(v) for k, v in out.items()}
    out["brier"] = brier_score_loss(y_true, proba, labels=[0, 1])
    if len(np.unique(y_true)) == 2:
        out["roc_auc"] = roc_auc_score(y_true, proba)
    return {k: float(v) for k, v in out.items()}


def confusion(y_true: np.ndarray, labels: np.ndarray, k: int = 2) -> list[list[int]]:
    """[[true negatives, false positives], [false negatives, true positives]]; for k classes the k x k matrix,
    rows the true class, columns the predicted one."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(y_true, labels, labels=list(range(k))).tolist()


def margins(metrics: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """How far each headline metric is above the persistence baseline's."""
    return {f"{k}_over_baseline": metrics[k] - baseline[k] for k in METRIC_KEYS if k in metrics and k in baseline}


def reliability(y_true: np.ndarray, proba: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """The reliability curve: observed positive rate against mean predicted probability, in quantile bins."""
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(y_true, np.clip(proba, 0.0, 1.0), n_bins=bins, strategy="quantile")
    return {"mean_predicted": predicted.tolist(), "fraction_positive": observed.tolist()}
