"""Hyperparameter search: strategies (grid, random, tpe, halving) and where trials run (local cores, Ray).

A trial is one parameter set scored by macro F1 over the time-ordered folds; its fold fits are independent tasks,
run in parallel by a runner. Everything that decides which parameters win is seeded and evaluated in a fixed
order, so the same config chooses the same parameters on local cores and on a Ray cluster.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol

import numpy as np
import pandas as pd

from mlpipe.config import ComputeConfig, ModelConfig, Range
from mlpipe.errors import ConfigError

DEFAULT_TRIALS = 20


@dataclass(frozen=True)
class FoldTask:
    """One fit: a candidate on one fold's training rows (or a seeded subsample of them), scored on its
    validation block."""

    trial: int
    rung: int
    fold: int
    params: dict[str, Any]
    fraction: float
    seed: int


@dataclass(frozen=True)
class FoldResult:
    trial: int
    rung: int
    fold: int
    score: float
    fit_seconds: float
    node: str
    worker: str
    decision: np.ndarray = field(repr=False)
    """Out-of-fold scores on the validation rows, if asked for: decision values (for Platt scaling) or
    positive-class probabilities (for choosing a decision threshold); else empty."""


@dataclass
class Evaluation:
    """One trial scored at one rung (one row of the trials table)."""

    trial: int
    rung: int
    params: dict[str, Any]
    fraction: float
    folds: list[FoldResult]
    status: str = "complete"

    @property
    def score(self) -> float:
        return float(np.mean([f.score for f in self.folds]))


@dataclass(frozen=True)
class SearchResult:
    best_params: dict[str, Any]
    trials: pd.DataFrame
    """One row per evaluated trial (and rung): trial, rung, fraction, the parameters, cv_f1_macro_mean/std,
    fit_seconds (summed over folds), node, worker, status, best."""
    best_decision: list[tuple[np.ndarray, np.ndarray]]
    """Per fold: (validation row indices, the best trial's out-of-fold scores on them), if asked for."""


# --------------------------------------------------------------------------------------------- the fold fit

def rows(X, idx: np.ndarray):
    """Rows of a float32 matrix, or of a frame with categories (``steps.features.feature_matrix``)."""
    return X.iloc[idx] if hasattr(X, "iloc") else X[idx]


def fit_fold(template, X: np.ndarray, y: np.ndarray, folds, task: FoldTask, want_decision: bool | str,
             tuned_metric: str | None = None) -> FoldResult:
    """Fit ``template`` with ``task.params`` on one fold's (subsampled) training rows; macro F1 on its
    validation rows: of its own labels, or with ``tuned_metric`` (a model whose decision threshold will be
    tuned for that metric), of its decision values or probabilities labelled at the best threshold for it on
    these rows -- the candidates are then compared as they will decide. Pure: runs the same in this process, a
    local worker process or a Ray worker."""
    from sklearn.base import clone
    from sklearn.metrics import f1_score

    from mlpipe.training.accelerate import as_scored, for_fit

    train_idx, val_idx = folds[task.fold]
    train_idx = subsample(train_idx, task.fraction, task.seed, task.fold)
    model = for_fit(clone(template).set_params(**{f"model__{k}": v for k, v in task.params.items()}))
    started = time.perf_counter()
    model = as_scored(model.fit(rows(X, train_idx), y[train_idx]))  # a oneDAL fit, scored as its scikit-learn copy
    fit_seconds = time.perf_counter() - started
    if want_decision == "proba":  # one pass: these classifiers' predict is the most probable class
        proba = model.predict_proba(rows(X, val_idx))
        decision, predicted = proba[:, 1].astype(np.float64), model.classes_[np.argmax(proba, axis=1)]
    elif want_decision:  # one pass over the validation rows: a binary SVC predicts the sign of its decision
        decision = model.decision_function(rows(X, val_idx)).astype(np.float64)
        predicted = model.classes_[(decision > 0).astype(int)]
    else:
        decision, predicted = np.empty(0), model.predict(rows(X, val_idx))
    if tuned_metric is not None and len(decision):  # labelled as the tuned model will label (any monotone score)
        from mlpipe.steps.threshold import best_threshold

        predicted = model.classes_[(decision >= best_threshold(y[val_idx], decision, tuned_metric)).astype(int)]
    score = float(f1_score(y[val_idx], predicted, average="macro"))
    node, worker = _where()
    return FoldResult(task.trial, task.rung, task.fold, score, fit_seconds, node, worker, decision)


def subsample(idx: np.ndarray, fraction: float, seed: int, fold: int) -> np.ndarray:
    """A seeded subsample of ``fraction`` of ``idx`` (in time order), the same for every candidate of a rung."""
    if fraction >= 1.0:
        return idx
    n = max(2, int(round(fraction * len(idx))))
    rng = np.random.default_rng([seed, fold, n])
    return np.sort(rng.choice(idx, size=min(n, len(idx)), replace=False))


def _where() -> tuple[str, str]:
    """(node id, worker id) of the process running a fit: Ray's ids in a Ray worker, else host and pid."""
    import sys

    ray = sys.modules.get("ray")  # imported only where Ray runs this
    if ray is not None and ray.is_initialized():
        ctx = ray.get_runtime_context()
        return ctx.get_node_id(), ctx.get_worker_id()
    return socket.gethostname(), f"pid-{os.getpid()}"


# ----------------------------------------------------------------------------------------------- runners

class Runner(Protocol):
    def run(self, tasks: list[FoldTask]) -> Iterator[FoldResult]:
        """Run the tasks in parallel; yield results as they finish (any order)."""

    def close(self) -> None: ...


class LocalRunner:
    """Fold fits in parallel on this machine's cores: joblib's process pool (big arrays are memory-mapped), or
    threads for estimators whose fits release the GIL (no worker processes to start and import into)."""

    def __init__(self, template, X, y, folds, want_decision: bool | str, n_jobs: int = -1, threads: bool = False,
                 tuned_metric: str | None = None):
        self.args = (template, X, y, folds)
        self.want = (want_decision, tuned_metric)
        self.n_jobs = n_jobs
        self.prefer = "threads" if threads else "processes"

    def run(self, tasks: list[FoldTask]) -> Iterator[FoldResult]:
        from joblib import Parallel, delayed

        if self.n_jobs == 1 or len(tasks) == 1:
            for t in tasks:
                yield fit_fold(*self.args, t, *self.want)
            return
        parallel = Parallel(n_jobs=self.n_jobs, return_as="generator_unordered", prefer=self.prefer)
        yield from parallel(delayed(fit_fold)(*self.args, t, *self.want) for t in tasks)

    def close(self) -> None:
        pass


class RayRunner:
    """Fold fits as Ray tasks on the cluster at ``address``; the data is put in its object store once."""

    def __init__(self, address: str, template, X, y, folds, want_decision: bool | str,
                 tuned_metric: str | None = None):
        host, port = check_compute(ComputeConfig(backend="ray", address=address))
        import ray

        try:  # the workers import mlpipe.training.search: mlpipe is installed on every node, like scikit-learn
            ray.init(address=f"{host}:{port}", log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, TimeoutError, ValueError) as e:
            raise ConfigError(f"compute.address {address!r}: cannot connect to a Ray cluster: "
                              f"{' '.join(str(e).split())[:300]}") from None
        self.ray = ray
        self.refs = [ray.put(a) for a in (template, X, y, folds)]
        self.want = (want_decision, tuned_metric)
        self.remote = ray.remote(num_cpus=1, max_retries=0)(fit_fold)

    def run(self, tasks: list[FoldTask]) -> Iterator[FoldResult]:
        pending = [self.remote.remote(*self.refs, t, *self.want) for t in tasks]
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            yield self.ray.get(done[0])

    def close(self) -> None:
        self.ray.shutdown()


def check_compute(compute: ComputeConfig) -> tuple[str, int] | None:
    """Fail fast, naming the key, when trials cannot go where ``compute`` says: Ray missing, or nothing
    listening at its address (Ray itself would retry for minutes). Returns the Ray head's (host, port)."""
    if compute.backend != "ray":
        return None
    _require_ray()
    host, port = _reachable(compute.address)
    if host in ("127.0.0.1", "localhost", "::1"):
        # Ray swaps a loopback address for the machine's network IP unless told that this is a one-machine
        # cluster; a head started on 127.0.0.1 with the same variable listens on loopback only.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    return host, port


def _reachable(address: str) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ConfigError(f"compute.address {address!r}: expected HOST:PORT of a Ray head (ray start --head)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise ConfigError(f"compute.address {address!r}: no Ray head answers there ({e.strerror or e})") from None
    return host, int(port)


def _require_ray() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise ConfigError("compute.backend 'ray' needs Ray: pip install 'mlpipe[ray]'")


def make_runner(compute: ComputeConfig, template, X, y, folds, want_decision: bool | str,
                threads: bool = False, tuned_metric: str | None = None) -> Runner:
    if compute.backend == "ray":
        return RayRunner(compute.address, template, X, y, folds, want_decision, tuned_metric)
    return LocalRunner(template, X, y, folds, want_decision, compute.n_jobs, threads, tuned_metric)


# ------------------------------------------------------------------------------------------- strategies

def search(template, space: dict[str, list | Range], settings: ModelConfig, X: np.ndarray, y: np.ndarray,
           folds: list[tuple[np.ndarray, np.ndarray]], compute: ComputeConfig, *, key: str,
           want_decision: bool | str = False, progress: "Progress | None" = None,
           threads: bool = False) -> SearchResult:
    """Search ``space`` for ``template`` (a pipeline whose last step is ``model``) by ``settings.strategy``,
    scoring macro F1 over ``folds``; return the best parameters and every trial. ``threads``: local fits
    may run in threads (the estimator releases the GIL while it fits)."""
    # candidates whose threshold is tuned on their out-of-fold probabilities are compared at that threshold; an
    # SVM's at the sign of its decision value: oneDAL's SVM decision values vary a little with its thread count
    # (a Ray worker's one core against local threads), and a threshold tuned on them moved one trial's score
    tuned = settings.threshold_metric if settings.threshold == "tuned" and want_decision == "proba" else None
    runner = make_runner(compute, template, X, y, folds, want_decision, threads, tuned)
    progress = progress or Progress.silent()
    try:
        if settings.strategy == "grid":
            evaluations = _grid(space, settings, runner, len(folds), progress)
        elif settings.strategy in ("random", "tpe"):
            evaluations = _optuna(space, settings, runner, len(folds), progress, key)
        else:
            evaluations = _halving(space, settings, runner, len(folds), progress, key)
    finally:
        runner.close()
    final = [e for e in evaluations if e.rung == max(ev.rung for ev in evaluations)]
    best = max(final, key=lambda e: (e.score, -e.trial))  # ties: the earlier trial
    decision = [(folds[f.fold][1], f.decision) for f in sorted(best.folds, key=lambda f: f.fold)]
    return SearchResult(dict(best.params), _table(evaluations, best), decision)


def _evaluate(runner: Runner, batch: list[tuple[int, dict]], rung: int, fraction: float, seed: int, n_folds: int,
              progress: "Progress") -> list[Evaluation]:
    """Run a batch of trials (all their folds in parallel); evaluations in trial order."""
    tasks = [FoldTask(trial, rung, fold, params, fraction, seed) for trial, params in batch for fold in range(n_folds)]
    by_trial: dict[int, list[FoldResult]] = {trial: [] for trial, _ in batch}
    for result in runner.run(tasks):
        by_trial[result.trial].append(result)
        if len(by_trial[result.trial]) == n_folds:
            progress.advance(float(np.mean([r.score for r in by_trial[result.trial]])))
    # folds in fold order, whatever order they finished in: a mean's last bit depends on the order of its
    # terms, and two trials tied on F1 must stay tied (the earlier wins) on Ray as on local cores
    return [Evaluation(trial, rung, params, fraction, sorted(by_trial[trial], key=lambda r: r.fold))
            for trial, params in batch]


def _grid(space, settings: ModelConfig, runner, n_folds, progress) -> list[Evaluation]:
    candidates = grid_candidates(space)
    progress.start(len(candidates))
    out: list[Evaluation] = []
    started = time.perf_counter()
    for i in range(0, len(candidates), settings.batch):
        if out and _out_of_time(settings, started):
            break
        batch = list(enumerate(candidates))[i:i + settings.batch]
        out += _evaluate(runner, batch, 0, 1.0, settings.seed, n_folds, progress)
    return out


def grid_candidates(space: dict[str, list]) -> list[dict[str, Any]]:
    from sklearn.model_selection import ParameterGrid

    return [{k: _plain(v) for k, v in p.items()} for p in ParameterGrid(space)]


def _optuna(space, settings: ModelConfig, runner, n_folds, progress, key) -> list[Evaluation]:
    """random / tpe: Optuna's ask-and-tell, ``batch`` trials at a time, seeded."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = _distributions(space, key)
    n_trials = settings.trials or DEFAULT_TRIALS
    sampler = (optuna.samplers.RandomSampler(seed=settings.seed) if settings.strategy == "random" else
               optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=min(10, max(1, n_trials // 2))))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    progress.start(n_trials)
    out: list[Evaluation] = []
    started = time.perf_counter()
    while len(out) < n_trials and not (out and _out_of_time(settings, started)):
        asked = [study.ask(distributions) for _ in range(min(settings.batch, n_trials - len(out)))]
        batch = [(t.number, {k: _plain(v) for k, v in t.params.items()}) for t in asked]
        evaluations = _evaluate(runner, batch, 0, 1.0, settings.seed, n_folds, progress)
        for t, e in zip(asked, evaluations):
            study.tell(t, e.score)
        out += evaluations
    return out


def _halving(space, settings: ModelConfig, runner, n_folds, progress, key) -> list[Evaluation]:
    """Successive halving: every candidate on a small seeded fraction of each fold's training rows, then the
    best 1/factor on factor times more rows, until one candidate is left (it is then refitted on all rows)."""
    if all(isinstance(v, list) for v in space.values()):
        candidates = grid_candidates(space)
    else:
        candidates = sample_candidates(space, settings.trials or DEFAULT_TRIALS, settings.seed, key)
    factor = settings.factor
    rungs = max(1, math.ceil(math.log(len(candidates)) / math.log(factor) - 1e-9))
    first = settings.min_fraction or float(factor) ** -rungs
    sizes = [len(candidates)]
    for _ in range(rungs - 1):
        sizes.append(max(1, math.ceil(sizes[-1] / factor)))
    progress.start(sum(sizes))
    alive = list(enumerate(candidates))
    out: list[Evaluation] = []
    started = time.perf_counter()
    for rung in range(rungs):
        fraction = min(1.0, first * factor ** rung)
        evaluations = _evaluate(runner, alive, rung, fraction, settings.seed, n_folds, progress)
        out += evaluations
        keep = max(1, math.ceil(len(alive) / factor))
        ranked = sorted(evaluations, key=lambda e: (-e.score, e.trial))
        if rung < rungs - 1:
            for e in ranked[keep:]:
                e.status = "pruned"
            for e in ranked[:keep]:
                e.status = "promoted"
        alive = sorted((e.trial, e.params) for e in ranked[:keep])
        if len(alive) == 1 or _out_of_time(settings, started):
            break
    last = max(e.rung for e in out)
    for e in out:
        if e.rung == last:
            e.status = "complete"
    return out


def sample_candidates(space, n: int, seed: int, key: str) -> list[dict[str, Any]]:
    """``n`` seeded random parameter sets from ``space`` (Optuna's random sampler)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    distributions = _distributions(space, key)
    return [{k: _plain(v) for k, v in study.ask(distributions).params.items()} for _ in range(n)]


def _distributions(space, key: str) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for name, values in space.items():
        if isinstance(values, Range):
            if values.is_int:
                out[name] = IntDistribution(values.low, values.high, log=values.log, step=values.step or 1)
            else:
                out[name] = FloatDistribution(values.low, values.high, log=values.log, step=values.step)
        else:
            if len({json.dumps(v) for v in values}) < len(values):
                raise ConfigError(f"key '{key}.{name}': repeated value in {values}")
            out[name] = CategoricalDistribution(values)
    return out


def _out_of_time(settings: ModelConfig, started: float) -> bool:
    return settings.timeout_s is not None and time.perf_counter() - started > settings.timeout_s


def _table(evaluations: list[Evaluation], best: Evaluation) -> pd.DataFrame:
    rows = []
    for e in sorted(evaluations, key=lambda e: (e.rung, e.trial)):
        scores = [f.score for f in e.folds]
        rows.append({"trial": e.trial, "rung": e.rung, "fraction": e.fraction, **e.params,
                     "params": json.dumps(e.params, sort_keys=True),
                     "cv_f1_macro_mean": float(np.mean(scores)), "cv_f1_macro_std": float(np.std(scores)),
                     "fit_seconds": float(sum(f.fit_seconds for f in e.folds)),
                     "node": ",".join(sorted({f.node for f in e.folds})),
                     "worker": ",".join(sorted({f.worker for f in e.folds})),
                     "status": e.status, "best": e is best})
    return pd.DataFrame(rows)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# -------------------------------------------------------------------------------------------- progress

class Progress:
    """Trials done / total, best CV score so far and elapsed time, as a Rich bar on stderr."""

    def __init__(self, label: str, bar: Any = None):
        self.label, self.bar, self.task, self.best = label, bar, None, float("-inf")

    @classmethod
    def silent(cls) -> "Progress":
        return cls("")

    def start(self, total: int) -> None:
        if self.bar is not None:
            self.task = self.bar.add_task(self.label, total=total, best="–")

    def advance(self, score: float) -> None:
        self.best = max(self.best, score)
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, advance=1, best=f"{self.best:.4f}")


def progress_columns() -> list:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return [TextColumn("  [bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("trials  best CV F1 {task.fields[best]}"), TimeElapsedColumn(), TextColumn("left"),
            TimeRemainingColumn()]
