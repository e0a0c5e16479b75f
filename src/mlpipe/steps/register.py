"""Step 6, register: datasets, then model versions, then the ``champion`` alias. It runs last, after every
model has passed its ONNX parity check, so a run that fails registers nothing. The datasets' files are staged
(written at their content addresses, not registered) earlier, beside the training."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlpipe import faults, provenance
from mlpipe.config import Config
from mlpipe.errors import IntegrityError
from mlpipe.graph import IMPUTES_TAG, predict_onnx
from mlpipe.steps import ingest
from mlpipe.steps.evaluate import classification_metrics
from mlpipe.steps.features import feature_spec
from mlpipe.steps.train import BASELINE, baseline_name
from mlpipe.store.datasets import DatasetVersion, Staged
from mlpipe.store.models import CHAMPION, PENDING_CHAMPION, describe, load_model, sha256

ROLES = ("processed", "train", "validation", "test")
METRIC_NAMES = {"f1": "macro F1", "roc_auc": "ROC AUC", "brier": "Brier score"}
LOWER_IS_BETTER = {"brier"}


@dataclass(frozen=True)
class Candidate:
    """A registered version as the champion gate sees it: its validation score (``[registry] select_by``)."""

    name: str
    version: int
    kind: str
    score: float
    """On the validation rows; NaN where it cannot be computed (ROC AUC of a one-class validation block)."""
    one_class: int | None = None
    """The class it answers for every validation row, if it does: such a model is never promoted."""


def gain(metric: str, score: float, than: float) -> float:
    """How much better ``score`` is than ``than`` in ``metric`` (positive: better)."""
    return than - score if metric in LOWER_IS_BETTER else score - than


def stage_datasets(workspace, prefix: str, data: ingest.Ingested) -> dict[str, Staged]:
    """The three datasets' files written at their content addresses (``DatasetRegistry.stage``), not registered."""
    staged = {role: workspace.datasets.stage(f"{prefix}-{role}", getattr(data, role)) for role in ROLES}
    faults.checkpoint("datasets.staged")
    return staged


def register_run(workspace, config: Config, data: ingest.Ingested, staged: dict[str, Staged], outcomes: list,
                 parent_id: str) -> tuple[dict[str, DatasetVersion], Candidate | None, str]:
    """Register what a run made, under the registry's lock (one run at a time decides versions and the
    champion): its datasets, recorded as the inputs of its runs; a version per model with an ONNX graph
    (``outcomes``: ``flow.results.ModelOutcome``, each given its ``version``); then the ``champion`` alias.
    Returns the datasets, the champion after the move and the reason."""
    from mlflow.entities import RunTag

    prefix, client = config.registry.model_prefix, workspace.client
    with workspace.lock():
        faults.checkpoint("register.locked")
        select_by = config.registry.select_by
        judged = judge_champion(workspace, prefix, data.validation, staged["validation"].digest, select_by)
        datasets = register_datasets(workspace, staged, f"{prefix} pipeline from {config.data.source}")
        faults.checkpoint("register.datasets")
        for run_id in [parent_id] + [o.run_id for o in outcomes]:
            log_dataset_inputs(client, run_id, datasets)
        for o in outcomes:
            client.log_batch(o.run_id, tags=[RunTag(k, v) for k, v in dataset_tags(datasets).items()])
        faults.checkpoint("register.inputs")
        for o in outcomes:
            if o.onnx_sha256 is not None:
                o.version = register_model(client, o.name, o.run_id, model_source(client, o.run_id),
                                           version_tags(o, config, datasets), description(o, config))
        faults.checkpoint("register.models")
        candidates = [Candidate(o.name, o.version, o.kind, o.validation.get(select_by, float("nan")),
                                o.validation_one_class) for o in outcomes if o.version is not None]
        champion, reason = move_champion(workspace, config, candidates, judged)
        faults.checkpoint("register.done")
    return datasets, champion, reason


def model_source(client, run_id: str) -> str:
    """Where a model run's files are (``flow.model_work.log_model_files``): the version's source."""
    return f"{client.get_run(run_id).info.artifact_uri}/model"


def version_tags(o, config: Config, datasets: dict[str, DatasetVersion]) -> dict[str, str]:
    tags = {"mlpipe.kind": o.kind, "mlpipe.features": json.dumps(config.model_features),
            "mlpipe.feature_spec": json.dumps(feature_spec(config)),
            "mlpipe.onnx_sha256": o.onnx_sha256, "mlpipe.git_commit": provenance.git_commit(),
            "mlpipe.target": json.dumps(config.target.model_dump())}
    if o.imputes_missing is not None:
        tags[IMPUTES_TAG] = "true" if o.imputes_missing else "false"
    if config.target.multiclass:
        tags["mlpipe.classes"] = json.dumps(config.target.classes)
    if config.categorical:
        tags["mlpipe.categorical"] = json.dumps(config.categorical)
        listed = json.dumps(o.categories)
        if len(listed) <= 5000:  # MLflow's tag length; model.json keeps them all
            tags["mlpipe.categories"] = listed
    tags.update(dataset_tags(datasets))
    tags.update({f"metric.{k}": repr(v) for k, v in o.metrics.items()})
    tags.update({f"validation.{k}": repr(v) for k, v in o.validation.items()})
    tags.update({f"param.{k}": short(v) for k, v in o.params.items()})
    return tags


def short(value) -> str:
    """A parameter's value as MLflow takes it: text of at most 5,000 characters."""
    return str(value)[:5000]


def description(o, config: Config) -> str:
    inputs = len(config.model_features) + len(config.categorical)
    if config.target.multiclass:
        what = f"telling {config.target.column} apart ({', '.join(config.target.classes)})"
    elif config.data.series:
        what = f"forecasting whether {config.target.column} meets the target rule {config.target.horizon} later"
    else:
        what = f"predicting whether {config.target.column} meets the target rule"
    return f"{o.kind} {what}, from {inputs} features; test macro F1 {o.metrics['f1']:.4f}"


def register_datasets(workspace, staged: dict[str, Staged], description: str) -> dict[str, DatasetVersion]:
    out = {}
    for role, s in staged.items():
        out[role] = workspace.datasets.commit(s, f"{description}: {role} rows")
        faults.checkpoint("register.dataset")
    return out


def log_dataset_inputs(client, run_id: str, datasets: dict[str, DatasetVersion]) -> None:
    """Record the exact dataset versions a run used (``mlflow.log_input``: name, version, digest)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for role, d in datasets.items():
        source = json.dumps({"name": d.name, "version": d.version, "digest": d.digest, "rows": d.rows})
        dataset = Dataset(name=d.name, digest=d.digest[:36], source_type="mlpipe", source=source,
                          schema=json.dumps({"columns": d.columns}), profile=json.dumps({"rows": d.rows}))
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", role),
                                                   InputTag("version", str(d.version))]))
    client.log_inputs(run_id, datasets=inputs)


def dataset_tags(datasets: dict[str, DatasetVersion]) -> dict[str, str]:
    tags = {}
    for role, d in datasets.items():
        tags.update({f"dataset.{role}.name": d.name, f"dataset.{role}.version": str(d.version),
                     f"dataset.{role}.digest": d.digest})
    return tags


def register_model(client, name: str, run_id: str, source: str, tags: dict[str, str], description: str) -> int:
    """A new version of ``name`` with all its tags, created in one call (one transaction), after its ONNX
    artifact has been read back from the artifact store and found to match ``tags["mlpipe.onnx_sha256"]``:
    a version exists complete or not at all."""
    from mlflow.exceptions import MlflowException

    _verify_artifact(source, tags["mlpipe.onnx_sha256"], name)
    try:
        client.create_registered_model(name, description=f"mlpipe models '{name}'")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    faults.checkpoint("register.model.created")
    version = client.create_model_version(name, source, run_id=run_id, tags=tags, description=description)
    faults.checkpoint("register.model.version")
    return int(version.version)


def _verify_artifact(source: str, digest: str, name: str) -> None:
    import tempfile
    from pathlib import Path

    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"{source}/model.onnx", dst_path=tmp)
        if sha256(Path(local).read_bytes()) != digest:
            raise IntegrityError(f"model {name}: the stored ONNX artifact at {source} does not match the model "
                                 f"just built; nothing registered for it")


def _prefix_models(client, prefix: str) -> list:
    return [rm for rm in client.search_registered_models(filter_string=f"name LIKE '{prefix}-%'", max_results=1000)
            if rm.name.startswith(f"{prefix}-")]


def current_champion(workspace, prefix: str):
    """The registered version holding ``champion`` among this prefix's models, or None. A move that a
    killed run left half-done is finished first (call under the registration lock)."""
    client = workspace.client
    models = _prefix_models(client, prefix)
    for rm in models:
        pending = (rm.tags or {}).get(PENDING_CHAMPION)
        if pending is not None:
            _give_champion(client, models, rm.name, int(pending))
            return client.get_model_version_by_alias(rm.name, CHAMPION)
    for rm in models:
        if CHAMPION in (rm.aliases or {}):
            return client.get_model_version_by_alias(rm.name, CHAMPION)
    return None


def _give_champion(client, models: list, name: str, version: int) -> None:
    """Move ``champion`` to ``name:version`` so that no moment has two champions and no crash loses the
    decision: record the intent on the new holder, remove the old holder's alias, set the new one, clear the
    intent. A run killed in between leaves the intent, and the next run finishes the move."""
    client.set_registered_model_tag(name, PENDING_CHAMPION, str(version))
    faults.checkpoint("champion.intent")
    for rm in models:
        if rm.name != name and CHAMPION in (rm.aliases or {}):
            client.delete_registered_model_alias(rm.name, CHAMPION)
            faults.checkpoint("champion.old_removed")
    client.set_registered_model_alias(name, CHAMPION, str(version))
    faults.checkpoint("champion.set")
    client.delete_registered_model_tag(name, PENDING_CHAMPION)


def champion_score_on(workspace, champion, validation: pd.DataFrame, digest: str, select_by: str) -> float | None:
    """The current champion's ``select_by`` on this run's validation rows: its registered figure when it was
    validated on the same rows, else measured now through its registered ONNX graph (versions registered before
    mlpipe held out validation rows are measured so too); None when its features are not in this data."""
    info = describe(champion)
    registered = info.get("validation", {})
    if info["datasets"].get("validation", {}).get("digest") == digest and select_by in registered:
        return registered[select_by]
    if not set(info["features"]) <= set(validation.columns):
        return None
    model = load_model(workspace, f"{champion.name}:{champion.version}")
    categorical = info.get("categorical", [])
    if not set(categorical) <= set(validation.columns):
        return None
    numeric = validation[model.features].to_numpy(dtype=np.float32)
    labels, proba = predict_onnx(model.onnx, (numeric, validation[categorical].to_numpy(dtype=object)))
    return classification_metrics(validation["label"].to_numpy(), labels, proba).get(select_by)


@dataclass(frozen=True)
class Judged:
    """The current champion and its score on this run's validation rows, measured before anything is
    registered (so a champion that cannot be measured fails the run while nothing is registered yet)."""

    current: object | None
    score: float | None


def judge_champion(workspace, prefix: str, validation: pd.DataFrame, digest: str, select_by: str) -> Judged:
    current = current_champion(workspace, prefix)
    score = champion_score_on(workspace, current, validation, digest, select_by) if current is not None else None
    return Judged(current, score)


def move_champion(workspace, config: Config, candidates: list[Candidate],
                  judged: Judged) -> tuple[Candidate | None, str]:
    """Give ``champion`` to the candidate ``decide_champion`` promotes, if any. Returns the champion after the
    decision (the old holder when the alias did not move) and the reason, in one line with the figures."""
    promote, holder, reason = decide_champion(config, candidates, judged)
    if promote is None:
        return holder, reason
    client = workspace.client
    _give_champion(client, _prefix_models(client, config.registry.model_prefix), promote.name, promote.version)
    return promote, reason


def decide_champion(config: Config, candidates: list[Candidate],
                    judged: Judged) -> tuple[Candidate | None, Candidate | None, str]:
    """(the learned candidate to promote or None, the current holder or None, why). The best learned candidate
    on the validation rows is promoted when it beats persistence and the current champion there by at least
    ``[registry] min_improvement``; ties never promote, nor does a model that answers one class for every
    validation row."""
    metric, need = config.registry.select_by, config.registry.min_improvement
    what, base = METRIC_NAMES[metric], baseline_name(config)
    learned = [c for c in candidates if c.kind != BASELINE]
    current = judged.current
    holder = Candidate(current.name, int(current.version), "", judged.score if judged.score is not None
                       else float("nan")) if current is not None else None
    stays = (f"; champion stays {holder.name}:{holder.version}" if holder else "; no champion") + " (no alias moved)"
    able = [c for c in learned if c.one_class is None and not np.isnan(c.score)]
    if not able:
        return None, holder, ("no learned model can be champion: " + ", ".join(
            f"{c.name}:{c.version} answers {c.one_class} for every validation row" if c.one_class is not None
            else f"{c.name}:{c.version} has no validation {what}" for c in learned) if learned
            else "no learned model was trained") + stays
    best = max(able, key=lambda c: -c.score if metric in LOWER_IS_BETTER else c.score)
    figure = f"{best.name}:{best.version} (validation {what} {best.score:.4f})"
    baseline = next((c for c in candidates if c.kind == BASELINE and not np.isnan(c.score)), None)
    if baseline is not None:
        margin = gain(metric, best.score, baseline.score)
        if not (margin > 0 and margin >= need):
            return None, holder, (f"no learned model beats {base} on the validation rows: best {figure}, "
                                  f"{base} {baseline.score:.4f} (margin {margin:+.4f}, need +{need})") + stays
    if holder is not None and judged.score is not None:
        margin = gain(metric, best.score, judged.score)
        if not (margin > 0 and margin >= need):
            return None, holder, (f"{figure} does not beat champion {holder.name}:{holder.version} "
                                  f"(validation {what} {judged.score:.4f}, margin {margin:+.4f}, need +{need})"
                                  " (no alias moved)")
    over = f" beats {base} by {gain(metric, best.score, baseline.score):+.4f}" if baseline else ""
    if current is None:
        why = "no champion before"
    elif judged.score is None:
        why = f"replaces {current.name}:{current.version} (its features are not in this data)"
    else:
        why = f"beats {current.name}:{current.version} by {gain(metric, best.score, judged.score):+.4f}"
    return best, holder, f"{figure}{over}; {why}"
