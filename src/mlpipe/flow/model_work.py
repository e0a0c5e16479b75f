"""The work each trained model gets on the run's lanes (``flow.lanes``): its checks (test answers, ONNX parity,
the report's measures and plots) on a checks thread, and its MLflow child run on the tracking thread."""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mlpipe import faults, provenance
from mlpipe.config import Config
from mlpipe.flow.results import ModelOutcome
from mlpipe.graph import CATEGORIES, INPUT, OUTPUTS, imputes_missing, predict_onnx
from mlpipe.report.evidence import measure
from mlpipe.report.render import model_pngs, ranking_pngs
from mlpipe.steps import evaluate, package, train
from mlpipe.steps.features import feature_spec, known_categories
from mlpipe.steps.register import short
from mlpipe.steps.threshold import labels_and_proba
from mlpipe.store.models import sha256
from mlpipe.training import fitcache

if TYPE_CHECKING:
    from mlpipe.flow.lanes import Lanes


_drawing = threading.Lock()
"""matplotlib is not thread-safe: one model's plots are drawn at a time."""


@dataclass(frozen=True)
class CachedFit:
    """Where a searched model comes from: ``key`` in the fit cache (None: cache off), ``hit`` if reused."""

    key: str | None
    hit: fitcache.Hit | None
    lanes: "Lanes"

    def tags(self) -> dict[str, str]:
        if self.key is None:
            return {"mlpipe.fit_cache": "off"}
        if self.hit is None:
            return {"mlpipe.fit_cache": "miss", "mlpipe.fit_key": self.key}
        return {"mlpipe.fit_cache": "hit", "mlpipe.fit_key": self.key, "mlpipe.fitted_in_run": self.hit.fitted_in_run}

    def store(self, run_id: str) -> None:
        """Keep a newly trained, checked model for the next run (a reused one is there already)."""
        if self.key is not None and self.hit is None:
            self.lanes.store_fit(self.key, run_id)


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
    validation: dict[str, float]
    """Metrics on the validation rows, from the graph's answers where there is a graph."""
    validation_one_class: int | None
    """The class answered for every validation row, if only one is."""
    example: pd.DataFrame
    """A few test rows, every column: the MLflow Model's input example (``mlflow_model``)."""


@dataclass(frozen=True)
class Split:
    """One held-out split as the checks need it: what scikit-learn's side reads (a DataFrame for the
    baseline, the feature matrix for a searched model), the graph's float32 input, and the labels."""

    frame: pd.DataFrame
    X: np.ndarray
    y: np.ndarray


def check_model(trained: train.Trained, onnx: bytes | None, name: str, config: Config, test: Split,
                validation: Split, colour: str, threads: int) -> Checked:
    """Test and check one trained model: scikit-learn's answers on the test split, its ONNX graph against
    them, and the graph's answers on the validation rows (what the champion is chosen by). ``threads``:
    onnxruntime's for the permutation importance; 1 beside the training, 0 (all) after it."""
    baseline = trained.kind == train.BASELINE
    X_test, y_test = test.X, test.y
    sk_labels, sk_proba = labels_and_proba(trained.model, test.frame if baseline else X_test)
    sk_metrics = evaluate.classification_metrics(y_test, sk_labels, sk_proba)
    faults.checkpoint("package.converted")
    metrics, parity, labels, proba, evidence = sk_metrics, None, sk_labels, sk_proba, None
    if onnx is not None:  # from here on, every figure is the registered artifact's own
        parity = package.check_parity(trained.kind, onnx, X_test, y_test, sk_labels, sk_proba, sk_metrics)
        metrics, labels, proba = parity.metrics, parity.labels, parity.proba
        evidence = measure(onnx, X_test, y_test, config.model_features + config.categorical, threads=threads,
                           proba=parity.proba)
    confusion = evaluate.confusion(y_test, labels, len(config.target.classes) if config.target.multiclass else 2)
    if onnx is not None:
        val_labels, val_proba = predict_onnx(onnx, validation.X)
    else:
        val_labels, val_proba = labels_and_proba(trained.model, validation.frame if baseline else validation.X)
    val_metrics = evaluate.classification_metrics(validation.y, val_labels, val_proba)
    classes = np.unique(val_labels)
    one_class = int(classes[0]) if len(classes) == 1 else None
    try:
        with _drawing:
            pngs = model_pngs(name, confusion, evidence and evidence[1], trained.cv_results, colour,
                              config.target.classes)
    except Exception:  # noqa: BLE001 -- not lost: the report draws it again at the end and warns if it fails
        pngs = {}
    return Checked(sk_metrics, parity, metrics, labels, proba, confusion, evidence, pngs, val_metrics, one_class,
                   test.frame.head(5))


def track_model(client, experiment_id: str, parent_id: str, trained: train.Trained, onnx: bytes | None,
                name: str, checked, config: Config, staging, y_test: np.ndarray, baseline,
                fit: CachedFit | None) -> ModelOutcome:
    """One child run of the model registered as ``name``: parameters, the datasets (``staging``, a future of
    ``register.stage_datasets``), CV scores, and once ``checked`` (a future of ``check_model``) is done, the test
    metrics and the model's ONNX graph (``onnx``, None if it has none). ``baseline``: the baseline's outcome (a
    future), for the margins; None for the baseline itself. ``fit``: for a searched model, whether it came from
    the fit cache; one that did not is stored there once logged."""
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
                  **{k: short(v) for k, v in trained.params.items()}}
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
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()] +
                         [Metric(f"val_{k}", float(v), now, 0) for k, v in c.validation.items()])
        client.log_dict(run_id, {"metrics": metrics, "validation": c.validation, "sklearn_metrics": c.sk_metrics,
                                 "onnx_label_agreement": parity and parity.agreement,
                                 "onnx_max_probability_gap": parity and parity.max_proba_gap,
                                 "confusion_matrix": confusion, "confusion_matrix_layout":
                                     "[[tn, fp], [fn, tp]]" if c.proba.ndim == 1 else
                                     "rows: true class, columns: predicted class, in the order of classes",
                                 "classes": config.target.classes,
                                 "reliability": evaluate.reliability(y_test, c.proba) if c.proba.ndim == 1 else None},
                        "evaluation.json")
        digest, report_evidence = None, c.evidence
        if onnx is not None:
            client.log_dict(run_id, {"permutation_importance": report_evidence[1].to_dict(orient="records")},
                            "importance.json")
            digest = sha256(onnx)
            categories = known_categories(trained.model)
            inputs = [{"name": INPUT, "dtype": "float32", "shape": [None, len(config.model_features)]}] * bool(
                config.model_features) + [{"name": CATEGORIES, "dtype": "string", "shape": [None, len(
                    config.categorical)]}] * bool(config.categorical)
            log_model_files(client, run_id, onnx, {
                "name": name, "kind": trained.kind, "features": config.model_features,
                "categorical": config.categorical, "categories": categories, "classes": config.target.classes,
                "feature_spec": feature_spec(config),
                "input": inputs[0], "inputs": inputs,
                "outputs": list(OUTPUTS), "params": trained.params, "metrics": metrics,
                "validation": c.validation, "onnx_sha256": digest}, c.example)
            client.set_tag(run_id, "mlpipe.onnx_sha256", digest)
            faults.checkpoint("model.logged")
            if fit is not None:
                fit.store(run_id)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return ModelOutcome(trained.kind, name, run_id, trained.params, metrics, confusion, digest, trained.cv_results,
                        report_evidence, pngs=c.pngs, validation=c.validation,
                        validation_one_class=c.validation_one_class,
                        imputes_missing=imputes_missing(onnx) if onnx is not None else None,
                        categories=known_categories(trained.model) if onnx is not None else {})


def log_model_files(client, run_id: str, onnx: bytes, meta: dict, example: pd.DataFrame) -> None:
    """The version's ``model`` folder: ``model.onnx``, ``model.json`` and the MLflow Model around them
    (``mlflow_model``: MLmodel with the onnx and python_function flavours, signature, input example)."""
    from mlpipe import mlflow_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        mlflow_model.write(folder, onnx, meta, example)
        client.log_artifacts(run_id, str(folder), "model")


def draw_ranking(checks: dict, y_test: np.ndarray, colours: dict[str, str]):
    """The report's ROC, precision-recall and reliability plots of the models measured on their ONNX graphs
    (``checks``: model name -> future of its ``Checked``), and their names; None if they could not be drawn
    (the report draws them again, and warns if that fails too)."""
    evidence = {name: c.result().evidence for name, c in checks.items()}
    curves = {name: (y_test, e[0]) for name, e in evidence.items() if e and e[0].ndim == 1}  # binary models
    if not curves:  # none to draw (a target of several classes)
        return (), {}
    try:
        with _drawing:
            return tuple(curves), ranking_pngs(curves, colours)
    except Exception:  # noqa: BLE001 -- not lost: see above
        return None
