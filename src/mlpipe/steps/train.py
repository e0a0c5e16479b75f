"""Step 3, train: the persistence baseline and searched models, cross-validated in time order."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from mlpipe import console
from mlpipe.config import Config, Range, TargetConfig
from mlpipe.errors import ConfigError, DataError
from mlpipe.steps.features import make_pipeline
from mlpipe.steps.threshold import inner, threshold_from_decisions
from mlpipe.training import accelerate, approx, progress, search
from mlpipe.training.plan import Plan, cap_folds, plan, time_stratified

BASELINE = "baseline"


@dataclass(frozen=True)
class ModelKind:
    """How to build one kind of model and what to search by default."""

    make: Callable[[], Any]
    grid: dict[str, list]
    """The default space of strategies grid and halving."""
    ranges: dict[str, Any]
    """The default space of strategies random and tpe: wider, with ranges."""
    final_params: dict[str, Any] = field(default_factory=dict)
    """Set only for the one refit on all training rows (e.g. all cores for a forest)."""
    platt: bool = False
    """Probabilities by Platt scaling of the search's out-of-fold decision values (no extra fits)."""
    make_fast: Callable[[], Any] | None = None
    """The same kind of model fitted by scikit-learn-intelex (``models.<kind>.engine``; see
    ``mlpipe.training.accelerate``: what is scored and registered is always the scikit-learn equivalent)."""
    fast_is_same: bool = False
    """oneDAL fits the very same model (up to float32 rounding), so engine "auto" uses it when installed."""
    threads: bool = False
    """Its scikit-learn fits release the GIL, so local search fits run in threads. Not so for scikit-learn's
    forest: building many small trees is Python-bound enough that threads were slower than worker processes
    here."""
    fast_n_jobs: int = -1
    """Local search fits by oneDAL (``engine``) run in threads, each on this many cores. -1, all, for the SVC:
    oneDAL's SVC holds the GIL throughout a fit, so its fits take turns, each on all cores, while the linear
    kernel's (``accelerate.for_fit``: liblinear's, one at a time, as its random generator is the process's) run
    beside them (the default NYC
    pipeline's SVM step: 27 s instead of 39 s with one fit after another). 1 for the forest: its search fits
    are small next to scoring their scikit-learn copies, whose tree walks release the GIL (1.4 s instead of
    2.4 s one after another, 24 fold fits on the 4x Turku data). The final fit runs on all cores."""


def _svm():
    """max_iter caps libsvm's iterations: without it the linear kernel at C=10 on the 20k NYC training rows
    with time-series features ran for over 10 minutes in libsvm (the linear kernel is now liblinear's,
    ``accelerate.LiblinearSVC``, capped likewise). A capped fit is still a classifier, scored like every
    candidate by the time-ordered CV; whether the final fit converged is logged.

    The default grid reaches C = 10: on the Turku book-scale rows (time-matched labels) the rbf SVM at C = 10
    has test macro F1 0.851, at C = 0.1 (chosen from C in [0.1, 1]) 0.805, the seed's own SVM 0.815.

    Classes are weighted "balanced": rain in 4 h is 6.7% of the NYC rows, and unweighted the hinge loss put
    nearly every row on the dry side: the chosen linear SVM ranked rows barely better than chance (validation
    ROC AUC 0.725) and answered 0 for every test row. Balanced, with C in [0.1, 1] (the default grid), it
    reaches validation ROC AUC 0.909 and macro F1 0.614 (0.551 before), and its search is faster (17 s
    against 25 s): probabilities come from Platt scaling and the threshold is tuned, so the weights change
    the ranking, not the calibration."""
    from sklearn.svm import SVC

    return SVC(cache_size=1000, random_state=0, max_iter=200_000, class_weight="balanced")


def _svm_fast():
    return accelerate.svc(**_svm().get_params())


def _random_forest():
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0, n_jobs=1)


def _random_forest_fast():
    return accelerate.random_forest(**_random_forest().get_params())


def _lightgbm():
    """Bagged (70% of rows per tree, 70% of features): on the NYC validation rows it lifted macro F1 from
    0.626 to 0.643 at the grid's choice (7 leaves, 400 rows per leaf, where the old grid of 15 / 63 leaves
    chose 15 at 0.619)."""
    from lightgbm import LGBMClassifier

    return LGBMClassifier(n_estimators=200, learning_rate=0.05, num_leaves=31, random_state=0, n_jobs=1,
                          subsample=0.7, subsample_freq=1, colsample_bytree=0.7,
                          deterministic=True, force_row_wise=True, verbose=-1)


KINDS: dict[str, ModelKind] = {
    "svm": ModelKind(_svm, {"kernel": ["linear", "rbf"], "C": [0.1, 1, 10]},
                     {"kernel": ["rbf"], "C": Range(low=0.1, high=100.0, log=True),
                      "gamma": Range(low=0.01, high=10.0, log=True)}, platt=True, make_fast=_svm_fast,
                     fast_is_same=True, threads=True),
    "random_forest": ModelKind(_random_forest, {"max_depth": [8, 10, 12], "class_weight": [None, "balanced"]},
                               {"max_depth": Range(low=4, high=24), "min_samples_leaf": Range(low=1, high=64, log=True),
                                "max_features": ["sqrt", 0.5, 1.0], "class_weight": [None, "balanced"]},
                               {"n_jobs": -1}, make_fast=_random_forest_fast, fast_n_jobs=1),
    "lightgbm": ModelKind(_lightgbm, {"num_leaves": [7, 31], "min_child_samples": [20, 400]},
                          {"num_leaves": Range(low=7, high=255, log=True),
                           "learning_rate": Range(low=0.01, high=0.3, log=True),
                           "n_estimators": Range(low=50, high=800, log=True),
                           "min_child_samples": Range(low=5, high=200, log=True)}),
}


@dataclass(frozen=True)
class Persistence:
    """The baseline "later = now": predicts that the target condition will be what it is now."""

    target: TargetConfig

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return self.target.holds(df[self.target.now_column]).to_numpy(dtype=np.int64)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        p = self.predict(df).astype(np.float64)
        return np.column_stack([1.0 - p, p])


@dataclass(frozen=True)
class Prior:
    """The baseline of rows without a clock (``data.series = false``): the class shares of the training rows
    as every row's probabilities, the majority class as its label. Every model must beat it, as forecasts
    must beat persistence."""

    prior: tuple[float, ...]

    @property
    def majority(self) -> int:
        return int(np.argmax(self.prior))

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return np.full(len(df), self.majority, dtype=np.int64)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        return np.tile(np.asarray(self.prior, dtype=np.float64), (len(df), 1))


def baseline_name(config: Config) -> str:
    """What the baseline is called in messages: persistence for a series, the class prior otherwise."""
    return "persistence" if config.data.series else "the class prior"


@dataclass(frozen=True)
class Trained:
    kind: str
    model: Any
    params: dict[str, Any]
    cv_results: pd.DataFrame
    """The trials table: one row per trial (and halving rung), see ``search.SearchResult.trials``."""
    fit_seconds: float


def train_baseline(config: Config, y: np.ndarray | None = None) -> Trained:
    """Persistence ("later = now") for a series; the class prior of the training labels ``y`` otherwise."""
    if config.data.series:
        return Trained(BASELINE, Persistence(config.target), {"rule": "later = now"}, pd.DataFrame(), 0.0)
    k = len(config.target.classes) if config.target.multiclass else 2
    shares = np.bincount(np.asarray(y, dtype=np.int64), minlength=k) / len(y)
    prior = Prior(tuple(float(v) for v in shares))
    return Trained(BASELINE, prior, {"rule": "class prior", "majority": prior.majority,
                                     "prior": [round(p, 4) for p in prior.prior]}, pd.DataFrame(), 0.0)


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


def stratified_folds(y: np.ndarray, n_splits: int, seed: int, groups=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds of rows without a timestamp: shuffled with ``seed``, each class in every fold in its share; with
    ``groups``, a group's rows all in one fold (``StratifiedGroupKFold``)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    rows = np.zeros(len(y))
    if groups is not None:
        return list(StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
                    .split(rows, y, np.asarray(groups)))
    return list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(rows, y))


def train_model(kind: str, X: np.ndarray, y: np.ndarray, ts: pd.Series | None, config: Config,
                size_plan: Plan | None = None) -> Trained:
    """Search ``kind`` over time-ordered folds (macro F1) as ``models.<kind>`` says, then fit the best
    parameters once on all rows. ``ts``: the rows' timestamps; without a timestamp, their groups (folds keep a
    group together) or None: then the folds are stratified by class. ``size_plan``: how it trains at this
    size (``training.plan``; default: the plan of these rows), recorded in its parameters as ``plan``."""
    spec, settings = KINDS[kind], config.model(kind)
    several = config.target.multiclass  # no decision threshold, no Platt scaling: binary only
    size_plan = size_plan or plan(kind, len(y), settings, len(config.target.classes) if several else 2)
    settings = settings.model_copy(update={"strategy": size_plan.strategy})
    fast = _onedal(kind, spec, settings.engine) and not several
    pipeline = make_pipeline(spec.make_fast() if fast else spec.make(), X, config.data.onehot_max)
    platt = spec.platt and not several
    tuned = settings.threshold == "tuned" and not several
    _set_params(pipeline, settings.params, f"models.{kind}.params")
    space = settings.space if settings.space is not None else (
        spec.grid if settings.strategy in ("grid", "halving") else spec.ranges)
    _check_names(pipeline, space, f"models.{kind}.space")
    _check_values(pipeline, space, f"models.{kind}.space")
    threads = spec.threads
    if fast and config.compute.backend == "local":
        pipeline.set_params(model__n_jobs=spec.fast_n_jobs)
        threads = True
    if ts is not None and pd.api.types.is_datetime64_any_dtype(ts):
        folds = time_folds(ts, config.split.cv_folds, pd.Timedelta(seconds=config.target.horizon_seconds))
    else:  # no clock: ``ts`` holds the rows' groups, or is None
        folds = stratified_folds(y, config.split.cv_folds, config.split.seed, ts)
    for i, (tr, _) in enumerate(folds):
        if len(np.unique(y[tr])) < 2:
            raise DataError(f"cross-validation fold {i + 1} of {len(folds)} has training rows of one class only; "
                            f"give more data or fewer split.cv_folds")
    folds = cap_folds(folds, size_plan.search_rows, settings.seed)
    with console.progress_bar(search.progress_columns()) as bar:
        result = search.search(pipeline, space, settings, X, y, folds, config.compute, key=f"models.{kind}.space",
                               want_decision=True if platt else "proba" if tuned else False,
                               progress=search.Progress(f"search {kind}", bar), threads=threads)
    best = {k: _plain(v) for k, v in result.best_params.items()}
    started = time.perf_counter()
    final = {**best, **spec.final_params}
    if size_plan.tree_rows:
        final["max_samples"] = size_plan.tree_rows
    if size_plan.all_cores:
        final["n_jobs"] = -1
    pipeline.set_params(**{f"model__{k}": v for k, v in final.items()})
    pipeline = accelerate.for_fit(pipeline)
    fitted_by = accelerate.engine(pipeline.steps[-1][1])
    X_fit, y_fit, ts_fit = X, y, ts
    if size_plan.fit_rows:  # a time-stratified sample (no copy of every row where the plan fits them all)
        rows = time_stratified(np.arange(len(y)), size_plan.fit_rows, settings.seed)
        X_fit, y_fit, ts_fit = search.rows(X, rows), y[rows], ts.iloc[rows] if ts is not None else None
    if several and kind == "svm":  # the estimator's own class; its probabilities (the SVM: libsvm's, pairwise
        # coupling, which skl2onnx converts; asked for in the final fit only, as they cost libsvm five extra fits)
        pipeline.set_params(model__probability=True)
    if size_plan.approximate:  # the SVM above its budget: an SVC over landmarks (``training.approx``)
        fitted, approximation = approx.fit(pipeline, X_fit, y_fit, settings.seed)
    else:
        fitted, approximation = accelerate.as_registered(_final_fit(pipeline, X_fit, y_fit, ts_fit, config, kind)), None
    if several:
        model, threshold = fitted, None
    elif platt:  # probabilities and threshold from the search's own out-of-fold decision values
        platt_scale(fitted.named_steps["model"], result.best_decision, y)
        model, threshold = threshold_from_decisions(fitted, X, y, result.best_decision, settings)
    else:  # the threshold from the search's own out-of-fold probabilities
        model, threshold = threshold_from_decisions(fitted, X, y, result.best_decision, settings, platt=False)
    estimator = inner(model).named_steps["model"]
    params = {**{k: _plain(v) for k, v in estimator.get_params().items()}, **best, "decision_threshold": threshold,
              "engine": fitted_by, "plan": size_plan.describe(), "fit_rows": len(y_fit)}
    if approximation:  # what was fitted, and whether liblinear converged
        params["approximation"] = approximation
    params.update(getattr(estimator, "distributed_fit_", {}))  # engine, workers and Ray nodes of a fit on Ray
    if not approximation and hasattr(estimator, "n_iter_") and getattr(estimator, "max_iter", -1) not in (-1, None):
        params["converged"] = bool(np.max(estimator.n_iter_) < estimator.max_iter)
    return Trained(kind, model, params, result.trials, time.perf_counter() - started)


def _final_fit(pipeline, X, y: np.ndarray, ts, config: Config, kind: str):
    """The one final fit (on the rows of the size plan): here, or data-parallel over Ray Train workers when
    ``models.<kind>.workers`` asks (``mlpipe.training.distributed``; its record is kept on the estimator)."""
    if config.model(kind).workers is None:
        return progress.fit(pipeline, X, y, kind)
    from mlpipe.training import distributed

    fitted = distributed.fit_on_ray(pipeline, X, y, ts, config, kind)
    fitted.pipeline.named_steps["model"].distributed_fit_ = fitted.record
    return fitted.pipeline


def _onedal(kind: str, spec: ModelKind, engine: str) -> bool:
    """Whether oneDAL fits this kind (``models.<kind>.engine``)."""
    if engine == "sklearn":
        return False
    if engine == "auto":
        return spec.fast_is_same and accelerate.available()
    if spec.make_fast is None:
        raise ConfigError(f"key 'models.{kind}.engine': no oneDAL engine for {kind}; use 'sklearn' or 'auto'")
    if not accelerate.available():
        raise ConfigError(f"key 'models.{kind}.engine': 'onedal' needs scikit-learn-intelex: "
                          f"pip install 'mlpipe[fast]'")
    return True


def platt_scale(svc, decision: list[tuple[np.ndarray, np.ndarray]], y: np.ndarray) -> None:
    """Give a fitted SVC ``predict_proba`` by Platt's sigmoid fitted on out-of-fold decision values -- those of
    the search's time-ordered validation blocks -- instead of libsvm's 5 extra random-fold fits."""
    from scipy.optimize import minimize

    f = np.concatenate([d for _, d in decision])
    t = y[np.concatenate([idx for idx, _ in decision])].astype(np.float64)
    n_pos, n_neg = t.sum(), len(t) - t.sum()
    target = np.where(t > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))  # Platt's smoothed targets

    def loss(ab):  # P(y = 1) = 1 / (1 + exp(a f + b)), as in libsvm
        z = ab[0] * f + ab[1]
        return float(np.sum(np.logaddexp(0, z) - (1 - target) * z))

    a, b = minimize(loss, x0=[-1.0, 0.0], method="L-BFGS-B").x
    # libsvm keeps P(class 0) = 1 / (1 + exp(A d + B)) of its own decision value d = -f: A = a, B = -b
    svc.probability = True
    svc._probA, svc._probB = np.array([a]), np.array([-b])


def _set_params(pipeline, params: dict, key: str) -> None:
    _check_names(pipeline, {f"model__{k}": v for k, v in params.items()}, key)
    try:
        pipeline.set_params(**{f"model__{k}": v for k, v in params.items()})
    except (ValueError, TypeError) as e:
        raise ConfigError(f"key '{key}': {e}") from None


def _check_values(pipeline, space: dict, key: str) -> None:
    """Every listed value and range end must be a valid value of its hyperparameter (scikit-learn's checks)."""
    estimator = pipeline.named_steps["model"]
    if not hasattr(estimator, "_parameter_constraints"):
        return
    from sklearn.base import clone

    for name, values in space.items():
        for value in ([values.low, values.high] if isinstance(values, Range) else values):
            try:
                clone(estimator).set_params(**{name: value})._validate_params()
            except (ValueError, TypeError) as e:
                raise ConfigError(f"key '{key}.{name}': {' '.join(str(e).split())}") from None


def _check_names(pipeline, grid: dict, key: str) -> None:
    allowed = pipeline.named_steps["model"].get_params()
    for name in grid:
        short = name.removeprefix("model__")
        if short not in allowed:
            raise ConfigError(f"key '{key}.{short}': unknown hyperparameter; "
                              f"possible: {', '.join(sorted(allowed))}")


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so parameters serialise to JSON and MLflow."""
    return value.item() if isinstance(value, np.generic) else value
