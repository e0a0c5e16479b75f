"""Runs the steps in order under one MLflow parent run: ingest, features, train, test, package, register."""

from __future__ import annotations

import json
import tempfile
import threading
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mlpipe import console, faults, provenance
from mlpipe.config import Config, load_config
from mlpipe.graph import INPUT, OUTPUTS
from mlpipe.report.evidence import measure
from mlpipe.report.plots import palette
from mlpipe.report.render import model_pngs, ranking_pngs
from mlpipe.sources import read_source
from mlpipe.steps import evaluate, ingest, package, register, train
from mlpipe.steps.features import feature_matrix, feature_spec
from mlpipe.steps.threshold import labels_and_proba
from mlpipe.store.datasets import DatasetVersion
from mlpipe.store.models import sha256
from mlpipe.store.workspace import Workspace
from mlpipe.training import fitcache
from mlpipe.training.worker import Trainer, quiet_warnings


@dataclass
class ModelOutcome:
    """One trained model: its test metrics (computed from its ONNX answers) and where it was registered."""

    kind: str
    name: str
    run_id: str
    params: dict
    metrics: dict[str, float]
    confusion: list[list[int]]
    onnx_sha256: str | None
    cv_results: pd.DataFrame = field(repr=False)
    evidence: tuple[np.ndarray, pd.DataFrame] | None = field(default=None, repr=False)
    """For the report, measured on the ONNX bytes registered: test probabilities and permutation importance."""
    pngs: dict[str, bytes] = field(default_factory=dict, repr=False)
    """The report's plots of this model alone, drawn while the next model trained (``render.model_pngs``)."""
    version: int | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "kind": self.kind, "metrics": self.metrics,
                "onnx_sha256": self.onnx_sha256, "run_id": self.run_id, "confusion_matrix": self.confusion}


@dataclass
class RunResult:
    run_id: str
    duration_s: float
    datasets: dict[str, DatasetVersion]
    models: list[ModelOutcome]
    champion: register.Candidate | None
    champion_reason: str
    ingest_report: ingest.IngestReport
    ranking_pngs: tuple[tuple[str, ...], dict[str, bytes]] | None = field(default=None, repr=False)
    """The report's plots of all models on one axis (``render.ranking_pngs``) and the models they show, drawn
    while the run registered; None to draw them with the report."""

    def to_dict(self) -> dict:
        """The contract's ``run --json`` object."""
        return {
            "run_id": self.run_id, "duration_s": round(self.duration_s, 2),
            "datasets": {role: d.summary() for role, d in self.datasets.items()},
            "models": [m.to_dict() for m in self.models],
            "champion": {"name": self.champion.name, "version": self.champion.version} if self.champion else None,
            "champion_reason": self.champion_reason,
            "ingest": self.ingest_report.to_dict(),
        }


def run(config: Config | str | Path | None = None, workspace: Workspace | str | Path | None = None) -> RunResult:
    """Run the whole pipeline; ``config`` is a Config, a TOML path, or None for the built-in weather pipeline."""
    config = config if isinstance(config, Config) else load_config(config)
    workspace = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    started = time.perf_counter()
    with warnings.catch_warnings():
        quiet_warnings()
        return _run(config, workspace, started)


def _run(config: Config, ws: Workspace, started: float) -> RunResult:
    with ExitStack() as stack:
        with console.step("ingest"):
            raw = read_source(config.data.source)
            faults.checkpoint("ingest.read")
            # the data could be read: the training worker starts, and imports while the data is checked
            trainer = stack.enter_context(Trainer(console.console.quiet))
            data = ingest.ingest(raw, config, config.data.source)
            faults.checkpoint("ingest.done")
        _log_ingest(data.report, config)
        return _train_and_register(config, ws, data, trainer, started)


def _train_and_register(config: Config, ws: Workspace, data: ingest.Ingested, trainer: Trainer,
                        started: float) -> RunResult:
    prefix = config.registry.model_prefix
    with Tracker(ws, config, data.report) as tracker:  # MLflow from here on, beside the training
        staging = tracker.compute(_stage, ws, prefix, data)  # beside the training, which does not need it
        outcomes, ranking = _train_all(config, data, staging, tracker, trainer)
        trainer.release()  # its last task (storing fits) is queued: it exits while the run registers
        staged = staging.result()
        from mlflow.entities import RunTag

        client, parent_id = ws.client, tracker.parent_id
        with console.step("register"), ws.lock():  # one run at a time decides versions and the champion
            faults.checkpoint("register.locked")
            judged = register.judge_champion(ws, prefix, data.test, staged["test"].digest)
            datasets = register.register_datasets(ws, staged, f"{prefix} pipeline from {config.data.source}")
            faults.checkpoint("register.datasets")
            for run_id in [parent_id] + [o.run_id for o in outcomes]:
                register.log_dataset_inputs(client, run_id, datasets)
            for o in outcomes:
                client.log_batch(o.run_id, tags=[RunTag(k, v) for k, v in register.dataset_tags(datasets).items()])
            faults.checkpoint("register.inputs")
            for o in outcomes:
                if o.onnx_sha256 is not None:
                    o.version = register.register_model(client, o.name, o.run_id, _model_source(client, o.run_id),
                                                        _version_tags(o, config, datasets), _description(o, config))
            faults.checkpoint("register.models")
            candidates = [register.Candidate(o.name, o.version, o.metrics["f1"])
                          for o in outcomes if o.version is not None and o.kind != train.BASELINE]
            champion, reason = register.move_champion(ws, prefix, candidates, data.test, datasets["test"].digest,
                                                      judged)
            faults.checkpoint("register.done")
        console.info(f"champion: {reason}")
        if champion:
            client.set_tag(parent_id, "mlpipe.champion", f"{champion.name}:{champion.version}")
        duration = time.perf_counter() - started
        client.log_metric(parent_id, "duration_s", duration)
        faults.checkpoint("run.ending")
        result = RunResult(parent_id, duration, datasets, outcomes, champion, reason, data.report, ranking.result())
        _write_report(result, config, ws)
    return result


def _stage(ws: Workspace, prefix: str, data: ingest.Ingested) -> dict:
    """The three datasets' files written at their content addresses (``DatasetRegistry.stage``), not registered."""
    staged = {role: ws.datasets.stage(f"{prefix}-{role}", df)
              for role, df in (("processed", data.processed), ("train", data.train), ("test", data.test))}
    faults.checkpoint("datasets.staged")
    return staged


class Tracker:
    """MLflow bookkeeping on one background thread, in submission order, while the main thread trains: the
    store (created on first use), the parent run, then per trained model its child run. Each model's test,
    parity check and measures run beside it on two threads of their own (``compute``). Leaving the block ends
    the parent run: FINISHED, or FAILED on an exception."""

    def __init__(self, ws: Workspace, config: Config, report: ingest.IngestReport):
        from concurrent.futures import ThreadPoolExecutor

        self.ws = ws
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="mlpipe-tracking")
        self._checks = ThreadPoolExecutor(2, thread_name_prefix="mlpipe-checks")
        self._parent = self._pool.submit(self._open, config, report)
        self._pending: list = []

    def _open(self, config: Config, report: ingest.IngestReport) -> tuple[str, str]:
        from mlflow.entities import Metric
        from mlflow.tracking.context.registry import resolve_tags

        client = self.ws.client  # creates the store on first use
        experiment_id = self.ws.experiment_id()
        prefix = config.registry.model_prefix
        run = client.create_run(experiment_id, run_name=f"{prefix} pipeline", tags=resolve_tags(
            {"mlflow.source.git.commit": provenance.git_commit(), "mlpipe.prefix": prefix}))
        run_id = run.info.run_id
        faults.checkpoint("run.started")
        client.log_dict(run_id, config.model_dump(), "config.json")
        client.log_dict(run_id, report.to_dict(), "ingest_report.json")
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in report.to_dict().items()
                                          if isinstance(v, (int, float))])
        return experiment_id, run_id

    @property
    def parent_id(self) -> str:
        return self._parent.result()[1]

    def submit(self, fn, *args):
        """Run ``fn(client, experiment_id, parent_run_id, *args)`` on the tracking thread, after what came before."""
        future = self._pool.submit(lambda: fn(self.ws.client, *self._parent.result(), *args))
        self._pending.append(future)
        return future

    def compute(self, fn, *args):
        """Run ``fn(*args)`` -- work that needs no MLflow, such as a model's checks -- on one of two threads of
        its own, so it need not wait for the store to open nor for the models before it to be logged."""
        future = self._checks.submit(fn, *args)
        self._pending.append(future)
        return future

    def check(self) -> None:
        """Raise now the error of any tracking work that has already failed."""
        for future in [self._parent, *self._pending]:
            if future.done() and future.exception() is not None:
                raise future.exception()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, kind, error, tb) -> None:
        for future in self._pending:
            future.cancel()
        self._checks.shutdown(wait=True)
        self._pool.shutdown(wait=True)
        if self._parent.done() and self._parent.exception() is None:
            status = "FINISHED" if kind is None else "KILLED" if kind is KeyboardInterrupt else "FAILED"
            self.ws.client.set_terminated(self.parent_id, status)


def _write_report(result: RunResult, config: Config, ws: Workspace) -> None:
    """The run's HTML report (``mlpipe.report``). Models are registered by now, so a report that cannot be
    written is a warning, not a failed run."""
    import sys

    from mlpipe.report import write_report

    try:
        with console.step("report"):
            path = write_report(result, config, ws)
    except Exception as e:  # noqa: BLE001 -- the run and its registrations stand without the report
        print(f"warning: run report not written: {type(e).__name__}: {e}", file=sys.stderr)
        return
    console.info(f"report: {path}")


def _log_ingest(report: ingest.IngestReport, config: Config) -> None:
    r = report
    console.info(f"read {r.rows_read} rows from {config.data.source}")
    found = [f"{r.exact_duplicates_dropped} exact duplicate rows dropped",
             f"{r.conflicting_timestamps} timestamps with conflicting values ({r.conflicting_rows_dropped} rows dropped)",
             f"{r.backward_time_jumps} backward jumps in time (rows sorted by time)",
             f"impossible values made missing: {r.impossible_values or 'none'}",
             f"missing values per feature: {r.missing_values or 'none'}",
             f"{r.unlabelled_dropped} rows without an observation {config.target.horizon} later dropped",
             f"{r.rows_labelled} rows labelled, {r.positive_rate:.1%} positive",
             f"train {r.train_rows} rows {r.train_range[0]} .. {r.train_range[1]}; "
             f"test {r.test_rows} rows {r.test_range[0]} .. {r.test_range[1]} "
             f"({r.embargo_dropped} train rows dropped whose label lies in the test period)"]
    if r.missing_timestamps_dropped:
        found.insert(0, f"{r.missing_timestamps_dropped} rows without a timestamp dropped")
    for line in found:
        console.info(f"  [dim]·[/] {line}")


def _train_all(config: Config, data: ingest.Ingested, staging, tracker: Tracker, trainer: Trainer):
    """Train each kind in turn, in the trainer's worker process (which also packages it as ONNX, or reuses an
    identical fit); each trained model is tested and checked on the checks threads and tracked on the tracking
    thread while the next one trains. Returns the outcomes, and a future of the report's plots that rank them
    all (``_draw_ranking``), drawn while the run registers."""
    X, y = feature_matrix(data.train, config), data.train[ingest.LABEL].to_numpy()
    X_test, y_test = feature_matrix(data.test, config), data.test[ingest.LABEL].to_numpy()
    ts = data.train[config.data.timestamp]
    kinds = [train.BASELINE] + [k for k in train.KINDS if config.model(k).enabled]
    names = {kind: f"{config.registry.model_prefix}-{kind}" for kind in kinds}
    colours = palette(list(names.values()))
    futures, checks = [], {}
    for kind in kinds:
        tracker.check()
        with console.step(f"train {kind}", spinner=kind == train.BASELINE):  # the worker shows its search
            fit = None
            if kind == train.BASELINE:
                trained = train.train_baseline(config)
                onnx, test_input = package.to_onnx(trained, config), data.test
            else:
                fit_key = fitcache.key(kind, X, y, ts, config) if config.compute.cache else None
                trained, onnx, hit = trainer.train(kind, X, y, ts, config, tracker.ws.root, fit_key)
                fit, test_input = CachedFit(fit_key, hit, trainer, tracker.ws.root), X_test
                if hit is not None:
                    console.info(f"  [dim]·[/] {kind}: the fit of run {hit.fitted_in_run} reused (same training "
                                 f"rows, settings and code; {hit.path})")
            faults.checkpoint("train.fitted")
        baseline = futures[0] if futures else None
        name = names[kind]
        checks[name] = checked = tracker.compute(_check_model, trained, onnx, name, config, test_input, X_test,
                                                 y_test, colours[name], 0 if kind == kinds[-1] else 1)
        futures.append(tracker.submit(_track_model, trained, onnx, name, checked, config, staging, y_test, baseline,
                                      fit))
    ranking = tracker.compute(_draw_ranking, checks, y_test, colours)
    with console.step("test + package + track"):
        outcomes = [f.result() for f in futures]
    for outcome in outcomes:
        m = outcome.metrics
        console.info(f"  [dim]·[/] {outcome.kind}: F1 {m['f1']:.4f}  accuracy {m['accuracy']:.4f}  "
                     f"ROC AUC {m.get('roc_auc', float('nan')):.4f}")
    return outcomes, ranking


def _draw_ranking(checks: dict, y_test: np.ndarray, colours: dict[str, str]):
    """The report's ROC, precision-recall and reliability plots of the models measured on their ONNX graphs
    (``checks``: model name -> future of its ``Checked``), and their names; None if they could not be drawn
    (the report draws them again, and warns if that fails too)."""
    evidence = {name: c.result().evidence for name, c in checks.items()}
    curves = {name: (y_test, e[0]) for name, e in evidence.items() if e}
    try:
        with _drawing:
            return tuple(curves), ranking_pngs(curves, colours)
    except Exception:  # noqa: BLE001 -- not lost: see above
        return None


@dataclass(frozen=True)
class CachedFit:
    """Where a searched model comes from: ``key`` in the fit cache (None: cache off), ``hit`` if reused."""

    key: str | None
    hit: fitcache.Hit | None
    trainer: Trainer
    root: Path

    def tags(self) -> dict[str, str]:
        if self.key is None:
            return {"mlpipe.fit_cache": "off"}
        if self.hit is None:
            return {"mlpipe.fit_cache": "miss", "mlpipe.fit_key": self.key}
        return {"mlpipe.fit_cache": "hit", "mlpipe.fit_key": self.key, "mlpipe.fitted_in_run": self.hit.fitted_in_run}

    def store(self, run_id: str) -> None:
        """Keep a newly trained, checked model for the next run (a reused one is there already)."""
        if self.key is not None and self.hit is None:
            self.trainer.store(self.root, self.key, run_id)


@dataclass(frozen=True)
class Checked:
    """A trained model tested on the test split: scikit-learn's answers, then -- where it has an ONNX graph --
    that graph checked against them, and every figure from here on the graph's own."""

    sk_metrics: dict[str, float]
    parity: package.Parity | None
    metrics: dict[str, float]
    labels: np.ndarray
    proba: np.ndarray
    confusion: list[list[int]]
    evidence: tuple[np.ndarray, pd.DataFrame] | None
    """For the report: test probabilities and permutation importance, measured on the ONNX bytes."""
    pngs: dict[str, bytes]
    """The report's plots of this model (``render.model_pngs``); empty if they could not be drawn."""


_drawing = threading.Lock()
"""matplotlib is not thread-safe: one model's plots are drawn at a time."""


def _check_model(trained: train.Trained, onnx: bytes | None, name: str, config: Config, test_input,
                 X_test: np.ndarray, y_test: np.ndarray, colour: str, threads: int) -> Checked:
    """``threads``: onnxruntime's for the permutation importance; 1 beside the training, 0 (all) after it."""
    sk_labels, sk_proba = labels_and_proba(trained.model, test_input)
    sk_metrics = evaluate.classification_metrics(y_test, sk_labels, sk_proba)
    faults.checkpoint("package.converted")
    metrics, parity, labels, proba, evidence = sk_metrics, None, sk_labels, sk_proba, None
    if onnx is not None:  # from here on, every figure is the registered artifact's own
        parity = package.check_parity(trained.kind, onnx, X_test, y_test, sk_labels, sk_proba, sk_metrics)
        metrics, labels, proba = parity.metrics, parity.labels, parity.proba
        evidence = measure(onnx, X_test, y_test, config.model_features, threads=threads, proba=parity.proba)
    confusion = evaluate.confusion(y_test, labels)
    try:
        with _drawing:
            pngs = model_pngs(name, confusion, evidence and evidence[1], trained.cv_results, colour)
    except Exception:  # noqa: BLE001 -- not lost: the report draws it again at the end and warns if it fails
        pngs = {}
    return Checked(sk_metrics, parity, metrics, labels, proba, confusion, evidence, pngs)


def _track_model(client, experiment_id: str, parent_id: str, trained: train.Trained, onnx: bytes | None,
                 name: str, checked, config: Config, staging, y_test: np.ndarray, baseline,
                 fit: CachedFit | None) -> ModelOutcome:
    """One child run of the model registered as ``name``: parameters, the datasets (``staging``, a future of
    ``_stage``), CV scores, and once ``checked`` (a future of ``_check_model``) is done, the test metrics and the
    model's ONNX graph (``onnx``, None if it has none). ``baseline``: the baseline's outcome (a future), for the
    margins; None for the baseline itself. ``fit``: for a searched model, whether it came from the fit cache; one
    that did not is stored there once logged."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking.context.registry import resolve_tags

    run = client.create_run(experiment_id, run_name=trained.kind, tags=resolve_tags({
        "mlflow.parentRunId": parent_id, "mlflow.source.git.commit": provenance.git_commit(),
        "mlpipe.kind": trained.kind, **(fit.tags() if fit else {})}))
    run_id = run.info.run_id
    try:
        params = {**{f"version.{k}": v for k, v in provenance.versions().items()},
                  **{f"dataset.{role}.{k}": v for role, s in staging.result().items() for k, v in
                     (("name", s.name), ("digest", s.digest))},
                  **{k: _short(v) for k, v in trained.params.items()}}
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        now = int(time.time() * 1000)
        if not trained.cv_results.empty:
            client.log_table(run_id, trained.cv_results, "cv_results.json")
            client.log_batch(run_id, metrics=[Metric("cv_f1_macro", float(score), now, i) for i, score
                                              in enumerate(trained.cv_results["cv_f1_macro_mean"])])
        c: Checked = checked.result()
        metrics, parity = c.metrics, c.parity
        if baseline is not None:
            metrics = {**metrics, **evaluate.margins(metrics, baseline.result().metrics)}
        confusion = c.confusion
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        client.log_dict(run_id, {"metrics": metrics, "sklearn_metrics": c.sk_metrics,
                                 "onnx_label_agreement": parity and parity.agreement,
                                 "onnx_max_probability_gap": parity and parity.max_proba_gap,
                                 "confusion_matrix": confusion, "confusion_matrix_layout": "[[tn, fp], [fn, tp]]",
                                 "reliability": evaluate.reliability(y_test, c.proba)},
                        "evaluation.json")
        digest, report_evidence = None, c.evidence
        if onnx is not None:
            client.log_dict(run_id, {"permutation_importance": report_evidence[1].to_dict(orient="records")},
                            "importance.json")
            digest = sha256(onnx)
            _log_model_files(client, run_id, onnx, {
                "name": name, "kind": trained.kind, "features": config.model_features,
                "input": {"name": INPUT, "dtype": "float32", "shape": [None, len(config.model_features)]},
                "outputs": list(OUTPUTS), "params": trained.params, "metrics": metrics,
                "onnx_sha256": digest})
            client.set_tag(run_id, "mlpipe.onnx_sha256", digest)
            faults.checkpoint("model.logged")
            if fit is not None:
                fit.store(run_id)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return ModelOutcome(trained.kind, name, run_id, trained.params, metrics, confusion, digest, trained.cv_results,
                        report_evidence, pngs=c.pngs)


def _log_model_files(client, run_id: str, onnx: bytes, meta: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.onnx").write_bytes(onnx)
        (Path(tmp) / "model.json").write_text(json.dumps(meta, indent=2, default=str))
        client.log_artifacts(run_id, tmp, "model")


def _model_source(client, run_id: str) -> str:
    return f"{client.get_run(run_id).info.artifact_uri}/model"


def _version_tags(o: ModelOutcome, config: Config, datasets: dict[str, DatasetVersion]) -> dict[str, str]:
    tags = {"mlpipe.kind": o.kind, "mlpipe.features": json.dumps(config.model_features),
            "mlpipe.feature_spec": json.dumps(feature_spec(config)),
            "mlpipe.onnx_sha256": o.onnx_sha256, "mlpipe.git_commit": provenance.git_commit(),
            "mlpipe.target": json.dumps(config.target.model_dump())}
    tags.update(register.dataset_tags(datasets))
    tags.update({f"metric.{k}": repr(v) for k, v in o.metrics.items()})
    tags.update({f"param.{k}": _short(v) for k, v in o.params.items()})
    return tags


def _description(o: ModelOutcome, config: Config) -> str:
    return (f"{o.kind} forecasting whether {config.target.column} meets the target rule {config.target.horizon} "
            f"later, from {len(config.model_features)} features; test macro F1 {o.metrics['f1']:.4f}")


def _short(value) -> str:
    return str(value)[:5000]
