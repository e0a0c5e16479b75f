"""What the report shows beyond the run's own numbers, measured again from what the run registered: each
registered model's ONNX answers on the registered test split, permutation importance, and label balance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlpipe.steps.ingest import LABEL

IMPORTANCE_ROWS = 1000
"""Permutation importance uses at most this many test rows (a fixed random sample), so it stays quick: it costs
one pass per feature and shuffle, and an SVM's ONNX graph (its kernel sum is not threaded) took 0.1 s per 2,000
rows at 4,500 support vectors (the 4x Turku benchmark)."""
IMPORTANCE_REPEATS = 3
"""Shuffles per feature. Three, not five: the book-scale SVM's importance (9,618 support vectors, 1,000 rows,
23 features) took 6.6 s of a core beside the next model's training, the largest of its checks."""


@dataclass(frozen=True)
class SplitBalance:
    role: str
    rows: int
    positives: int
    time_range: tuple[str, str]
    counts: tuple[int, ...] = ()
    """Rows per class (label 0, 1, …): what the page shows for a target of several classes."""

    @property
    def positive_rate(self) -> float:
        return self.positives / self.rows if self.rows else float("nan")


@dataclass(frozen=True)
class ModelEvidence:
    """One registered model on the test split: its ONNX positive-class probabilities and feature importance."""

    name: str
    kind: str
    y_true: np.ndarray
    proba: np.ndarray
    importance: pd.DataFrame
    """Columns ``feature``, ``mean``, ``std``: the drop in test macro F1 when that feature is shuffled."""


@dataclass(frozen=True)
class Evidence:
    splits: list[SplitBalance]
    models: dict[str, ModelEvidence]
    """By model name; only models that were packaged and registered."""
    importance_rows: int


class OnnxClassifier:
    """A registered ONNX model behind the ``predict`` / ``predict_proba`` interface scikit-learn's tools use.
    ``fit`` does nothing: the model was trained and checked before it was registered."""

    def __init__(self, onnx: bytes, threads: int = 0):
        from mlpipe.graph import make_session

        self._session = make_session(onnx, threads)  # 0: all cores

    def fit(self, X, y):  # noqa: ARG002 -- scikit-learn's scorers require the estimator interface
        return self

    def _run(self, X) -> tuple[np.ndarray, np.ndarray]:
        from mlpipe.graph import run

        return run(self._session, X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._run(X)[0]

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._run(X)[1]


def measure(onnx: bytes, X: np.ndarray, y: np.ndarray, features: list[str], threads: int = 0,
            proba: np.ndarray | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """What the report shows of one ONNX model on the test split: its positive-class probabilities on every
    row (``proba`` if the caller has them from these same bytes), and permutation importance on a fixed sample
    of rows."""
    model = OnnxClassifier(onnx, threads)
    sample = _sample(len(y))
    if proba is None:
        from mlpipe.graph import positive

        proba = positive(model.predict_proba(X))
    rows = X.iloc[sample] if hasattr(X, "iloc") else X[sample]
    k = proba.shape[1] if proba.ndim == 2 else 2
    return proba, permutation_importance(model, rows, y[sample], features, k)


def gather(result, config, workspace) -> Evidence:
    """The registered train/validation/test datasets' balance, and per registered model what the plots need: measured by
    the run on the very ONNX bytes it registered (``ModelOutcome.evidence``), else measured here from the
    model loaded from the registry."""
    from mlpipe.store.models import load_model

    train = workspace.datasets.load(_ref(result.datasets["train"]))
    test = workspace.datasets.load(_ref(result.datasets["test"]))
    r = result.ingest_report
    k = len(config.target.classes) if config.target.multiclass else 2
    counts = lambda df: tuple(int(n) for n in np.bincount(df[LABEL].to_numpy(), minlength=k))  # noqa: E731
    positives = lambda df: 0 if k > 2 else int(df[LABEL].sum())  # noqa: E731
    splits = [SplitBalance("train", len(train), positives(train), tuple(r.train_range), counts(train))]
    if "validation" in result.datasets:
        validation = workspace.datasets.load(_ref(result.datasets["validation"]))
        splits.append(SplitBalance("validation", len(validation), positives(validation),
                                   tuple(r.validation_range), counts(validation)))
    splits.append(SplitBalance("test", len(test), positives(test), tuple(r.test_range), counts(test)))
    from mlpipe.featurize import feature_matrix

    X, y = feature_matrix(test, config), test[LABEL].to_numpy()
    features = config.model_features + config.categorical
    models = {}
    for o in result.models:
        if o.version is None:
            continue
        proba, importance = o.evidence or measure(load_model(workspace, f"{o.name}:{o.version}").onnx, X, y, features)
        models[o.name] = ModelEvidence(o.name, o.kind, y, proba, importance)
    return Evidence(splits, models, len(_sample(len(y))))


def _ref(dataset) -> str:
    return f"{dataset.name}:{dataset.version}"


def _sample(n: int) -> np.ndarray:
    if n <= IMPORTANCE_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, IMPORTANCE_ROWS, replace=False))


def permutation_importance(model, X: np.ndarray, y: np.ndarray, features: list[str], k: int = 2) -> pd.DataFrame:
    """How much test macro F1 (over ``k`` classes) drops when each feature's values are shuffled (largest
    first)."""
    from sklearn import inspection
    from sklearn.metrics import f1_score

    classes = list(range(k))

    def macro_f1(estimator, X_, y_):
        return f1_score(y_, estimator.predict(X_), labels=classes, average="macro", zero_division=0)

    r = inspection.permutation_importance(model, X, y, scoring=macro_f1, n_repeats=IMPORTANCE_REPEATS,
                                          random_state=0, n_jobs=1)
    table = pd.DataFrame({"feature": features, "mean": r.importances_mean, "std": r.importances_std})
    return table.sort_values("mean", ascending=False, kind="stable").reset_index(drop=True)
