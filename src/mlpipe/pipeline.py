"""Runs the steps in order under one MLflow parent run: ingest, features, train, test, package, register."""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mlpipe import console, faults, provenance
from mlpipe.config import Config, load_config
from mlpipe.datasets import DatasetVersion
from mlpipe.models import sha256
from mlpipe.sources import read_source
from mlpipe.steps import evaluate, ingest, package, register, train
from mlpipe.steps.features import feature_matrix, feature_spec
from mlpipe.steps.threshold import labels_and_proba
from mlpipe.workspace import Workspace


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
    with warnings.catch_warnings():  # scikit-learn 1.9 deprecates SVC(probability=True), which skl2onnx needs
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(probability|probA_|probB_).*")
        # libsvm's iteration cap (see train._svm); the model's "converged" parameter records it instead
        warnings.filterwarnings("ignore", message=r"Solver terminated early")
        return _run(config, workspace, started)


def _run(config: Config, ws: Workspace, started: float) -> RunResult:
    import mlflow
    from mlflow.entities import RunTag

    prefix = config.registry.model_prefix
    with console.step("ingest"):
        raw = read_source(config.data.source)
        faults.checkpoint("ingest.read")
        data = ingest.ingest(raw, config, config.data.source)
        faults.checkpoint("ingest.done")
    _log_ingest(data.report, config)
    client = ws.client  # creates the store on first use
    mlflow.set_experiment(experiment_id=ws.experiment_id())  # nested child runs follow: not into "Default" (cwd)
    with mlflow.start_run(experiment_id=ws.experiment_id(), run_name=f"{prefix} pipeline") as parent:
        mlflow.set_tags({"mlflow.source.git.commit": provenance.git_commit(), "mlpipe.prefix": prefix})
        faults.checkpoint("run.started")
        mlflow.log_dict(config.model_dump(), "config.json")
        mlflow.log_dict(data.report.to_dict(), "ingest_report.json")
        mlflow.log_metrics({k: float(v) for k, v in data.report.to_dict().items() if isinstance(v, (int, float))})
        staged = {role: ws.datasets.stage(f"{prefix}-{role}", df)
                  for role, df in (("processed", data.processed), ("train", data.train), ("test", data.test))}
        faults.checkpoint("datasets.staged")
        outcomes = _train_all(config, data, staged, ws)
        with console.step("register"), ws.lock():  # one run at a time decides versions and the champion
            faults.checkpoint("register.locked")
            judged = register.judge_champion(ws, prefix, data.test, staged["test"].digest)
            datasets = register.register_datasets(ws, staged, f"{prefix} pipeline from {config.data.source}")
            faults.checkpoint("register.datasets")
            for run_id in [parent.info.run_id] + [o.run_id for o in outcomes]:
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
            mlflow.set_tags({"mlpipe.champion": f"{champion.name}:{champion.version}"})
        duration = time.perf_counter() - started
        mlflow.log_metric("duration_s", duration)
        faults.checkpoint("run.ending")
        result = RunResult(parent.info.run_id, duration, datasets, outcomes, champion, reason, data.report)
        _write_report(result, config, ws)
    return result


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


def _train_all(config: Config, data: ingest.Ingested, staged: dict, ws: Workspace) -> list[ModelOutcome]:
    X, y = feature_matrix(data.train, config), data.train[ingest.LABEL].to_numpy()
    X_test, y_test = feature_matrix(data.test, config), data.test[ingest.LABEL].to_numpy()
    ts = data.train[config.data.timestamp]
    kinds = [train.BASELINE] + [k for k in train.KINDS if config.model(k).enabled]
    outcomes: list[ModelOutcome] = []
    baseline_metrics: dict[str, float] = {}
    for kind in kinds:
        with console.step(f"train + test + package {kind}"):
            trained = train.train_baseline(config) if kind == train.BASELINE else train.train_model(kind, X, y, ts, config)
            faults.checkpoint("train.fitted")
            if kind == train.BASELINE:
                sk_labels, sk_proba = trained.model.predict(data.test), trained.model.predict_proba(data.test)[:, 1]
            else:
                sk_labels, sk_proba = labels_and_proba(trained.model, X_test)
            outcome = _track_model(trained, config, staged, X_test, y_test, sk_labels, sk_proba, baseline_metrics)
        if kind == train.BASELINE:
            baseline_metrics = outcome.metrics
        m = outcome.metrics
        console.info(f"  [dim]·[/] {kind}: F1 {m['f1']:.4f}  accuracy {m['accuracy']:.4f}  "
                     f"ROC AUC {m.get('roc_auc', float('nan')):.4f}")
        outcomes.append(outcome)
    return outcomes


def _track_model(trained: train.Trained, config: Config, staged: dict, X_test: np.ndarray, y_test: np.ndarray,
                 sk_labels: np.ndarray, sk_proba: np.ndarray, baseline: dict[str, float]) -> ModelOutcome:
    """One child run: parameters, CV scores, test metrics, and the ONNX model checked for parity."""
    import mlflow

    name = f"{config.registry.model_prefix}-{trained.kind}"
    parent = mlflow.active_run()  # the child run belongs to the parent's experiment, not MLflow's Default
    with mlflow.start_run(run_name=trained.kind, nested=True, experiment_id=parent.info.experiment_id) as child:
        mlflow.set_tags({"mlflow.source.git.commit": provenance.git_commit(), "mlpipe.kind": trained.kind})
        mlflow.log_params({f"version.{k}": v for k, v in provenance.versions().items()})
        mlflow.log_params({f"dataset.{role}.{k}": v for role, s in staged.items() for k, v in
                           (("name", s.name), ("digest", s.digest))})
        mlflow.log_params({k: _short(v) for k, v in trained.params.items()})
        if not trained.cv_results.empty:
            mlflow.log_table(trained.cv_results, "cv_results.json")
            for i, score in enumerate(trained.cv_results["cv_f1_macro_mean"]):
                mlflow.log_metric("cv_f1_macro", float(score), step=i)
        sk_metrics = evaluate.classification_metrics(y_test, sk_labels, sk_proba)
        onnx = package.to_onnx(trained, config)
        faults.checkpoint("package.converted")
        metrics, parity, labels, proba = sk_metrics, None, sk_labels, sk_proba
        if onnx is not None:  # from here on, every figure is the registered artifact's own
            parity = package.check_parity(trained.kind, onnx, X_test, y_test, sk_labels, sk_proba, sk_metrics)
            metrics, labels, proba = parity.metrics, parity.labels, parity.proba
        metrics = {**metrics, **evaluate.margins(metrics, baseline)} if baseline else metrics
        confusion = evaluate.confusion(y_test, labels)
        mlflow.log_metrics(metrics)
        mlflow.log_dict({"metrics": metrics, "sklearn_metrics": sk_metrics,
                         "onnx_label_agreement": parity and parity.agreement,
                         "onnx_max_probability_gap": parity and parity.max_proba_gap,
                         "confusion_matrix": confusion, "confusion_matrix_layout": "[[tn, fp], [fn, tp]]",
                         "reliability": evaluate.reliability(y_test, proba)},
                        "evaluation.json")
        digest = None
        if onnx is not None:
            digest = sha256(onnx)
            _log_model_files(onnx, {"name": name, "kind": trained.kind, "features": config.model_features,
                                    "input": {"name": package.INPUT, "dtype": "float32",
                                              "shape": [None, len(config.model_features)]},
                                    "outputs": list(package.OUTPUTS), "params": trained.params,
                                    "metrics": metrics, "onnx_sha256": digest})
            mlflow.set_tag("mlpipe.onnx_sha256", digest)
            faults.checkpoint("model.logged")
    return ModelOutcome(trained.kind, name, child.info.run_id, trained.params, metrics, confusion, digest,
                        trained.cv_results)


def _log_model_files(onnx: bytes, meta: dict) -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.onnx").write_bytes(onnx)
        (Path(tmp) / "model.json").write_text(json.dumps(meta, indent=2, default=str))
        mlflow.log_artifacts(tmp, "model")


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
