"""Step 3, train: the persistence baseline and searched models, cross-validated in time order."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from mlpipe.config import Config, TargetConfig
from mlpipe.errors import ConfigError, DataError
from mlpipe.steps.features import make_pipeline
from mlpipe.steps.threshold import fit_final, inner

BASELINE = "baseline"


@dataclass(frozen=True)
class ModelKind:
    """How to build one kind of model and what to search by default."""

    make: Callable[[], Any]
    space: dict[str, list]
    final_params: dict[str, Any]
    """Set only for the one refit on all training rows (e.g. SVC's probability calibration)."""


def _svm():
    """max_iter caps libsvm's iterations: without it the linear kernel at C=10 on the 20k NYC training rows
    with time-series features runs for over 10 minutes. A capped fit is still a linear classifier, scored
    like every candidate by the time-ordered CV; whether the final fit converged is logged."""
    from sklearn.svm import SVC

    return SVC(cache_size=1000, random_state=0, max_iter=200_000)


def _random_forest():
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0, n_jobs=1)


KINDS: dict[str, ModelKind] = {
    "svm": ModelKind(_svm, {"kernel": ["linear", "rbf"], "C": [1, 10]}, {"probability": True}),
    "random_forest": ModelKind(_random_forest, {"max_depth": [8, 10, 12], "class_weight": [None, "balanced"]}, {}),
}


@dataclass(frozen=True)
class Persistence:
    """The baseline "later = now": predicts that the target condition will be what it is now."""

    target: TargetConfig

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return self.target.holds(df[self.target.column]).to_numpy(dtype=np.int64)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        p = self.predict(df).astype(np.float64)
        return np.column_stack([1.0 - p, p])


@dataclass(frozen=True)
class Trained:
    kind: str
    model: Any
    params: dict[str, Any]
    cv_results: pd.DataFrame
    """One row per candidate: its parameters, mean and std CV macro F1, mean fit time."""
    fit_seconds: float


def train_baseline(config: Config) -> Trained:
    return Trained(BASELINE, Persistence(config.target), {"rule": "later = now"}, pd.DataFrame(), 0.0)


def time_folds(ts: pd.Series, n_splits: int, horizon: pd.Timedelta) -> list[tuple[np.ndarray, np.ndarray]]:
    """Forward-chaining folds over distinct timestamps: validate on a later block, train on what came before
    it, less an embargo of ``horizon`` so no training label is observed inside the validation block."""
    from sklearn.model_selection import TimeSeriesSplit

    t = ts.dt.tz_convert(None).to_numpy() if ts.dt.tz is not None else ts.to_numpy()
    times = np.unique(t)
    folds = []
    for train_t, val_t in TimeSeriesSplit(n_splits=n_splits).split(times):
        start, end = times[val_t[0]], times[val_t[-1]]
        folds.append((np.flatnonzero(t + horizon < start), np.flatnonzero((t >= start) & (t <= end))))
    return folds


def train_model(kind: str, X: np.ndarray, y: np.ndarray, ts: pd.Series, config: Config) -> Trained:
    """Grid-search ``kind`` over time-ordered folds (macro F1), then fit the best candidate once on all rows."""
    from sklearn.model_selection import GridSearchCV

    spec, settings = KINDS[kind], config.model(kind)
    pipeline = make_pipeline(spec.make())
    _set_params(pipeline, settings.params, f"models.{kind}.params")
    space = settings.space if settings.space is not None else spec.space
    grid = {f"model__{k}": v for k, v in space.items()}
    _check_names(pipeline, grid, f"models.{kind}.space")
    folds = time_folds(ts, config.split.cv_folds, pd.Timedelta(seconds=config.target.horizon_seconds))
    for i, (tr, _) in enumerate(folds):
        if len(np.unique(y[tr])) < 2:
            raise DataError(f"cross-validation fold {i + 1} of {len(folds)} has training rows of one class only; "
                            f"give more data or fewer split.cv_folds")
    search = GridSearchCV(pipeline, grid, scoring="f1_macro", cv=folds, refit=False, n_jobs=-1,
                          error_score="raise")
    search.fit(X, y)
    best = {k.removeprefix("model__"): _plain(v) for k, v in search.best_params_.items()}
    started = time.perf_counter()
    pipeline.set_params(**{f"model__{k}": v for k, v in {**best, **spec.final_params}.items()})
    model, threshold = fit_final(pipeline, X, y, folds, settings)
    estimator = inner(model).named_steps["model"]
    params = {**{k: _plain(v) for k, v in estimator.get_params().items()}, **best, "decision_threshold": threshold}
    if hasattr(estimator, "n_iter_") and getattr(estimator, "max_iter", -1) not in (-1, None):
        params["converged"] = bool(np.max(estimator.n_iter_) < estimator.max_iter)
    return Trained(kind, model, params, _cv_table(search.cv_results_), time.perf_counter() - started)


def _set_params(pipeline, params: dict, key: str) -> None:
    _check_names(pipeline, {f"model__{k}": v for k, v in params.items()}, key)
    try:
        pipeline.set_params(**{f"model__{k}": v for k, v in params.items()})
    except (ValueError, TypeError) as e:
        raise ConfigError(f"key '{key}': {e}") from None


def _check_names(pipeline, grid: dict, key: str) -> None:
    allowed = pipeline.named_steps["model"].get_params()
    for name in grid:
        short = name.removeprefix("model__")
        if short not in allowed:
            raise ConfigError(f"key '{key}.{short}': unknown hyperparameter; "
                              f"possible: {', '.join(sorted(allowed))}")


def _cv_table(results: dict) -> pd.DataFrame:
    table = pd.DataFrame(results["params"]).rename(columns=lambda c: c.removeprefix("model__"))
    table["cv_f1_macro_mean"] = results["mean_test_score"]
    table["cv_f1_macro_std"] = results["std_test_score"]
    table["fit_seconds_mean"] = results["mean_fit_time"]
    return table


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so parameters serialise to JSON and MLflow."""
    return value.item() if isinstance(value, np.generic) else value
