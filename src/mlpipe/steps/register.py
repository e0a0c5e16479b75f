"""Step 6, register: datasets, then model versions, then the ``champion`` alias. It runs last, after every
model has passed its ONNX parity check, so a run that fails registers nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlpipe.datasets import DatasetVersion, Staged
from mlpipe.models import CHAMPION, describe, load_model
from mlpipe.steps.evaluate import classification_metrics
from mlpipe.steps.package import predict_onnx

ROLES = ("processed", "train", "test")


@dataclass(frozen=True)
class Candidate:
    name: str
    version: int
    f1: float


def register_datasets(workspace, staged: dict[str, Staged], description: str) -> dict[str, DatasetVersion]:
    return {role: workspace.datasets.commit(s, f"{description}: {role} rows") for role, s in staged.items()}


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
    """A new version of ``name`` with all its tags, created in one call."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description=f"mlpipe models '{name}'")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, source, run_id=run_id, tags=tags, description=description)
    return int(version.version)


def current_champion(workspace, prefix: str):
    """The registered version holding ``champion`` among this prefix's models, or None."""
    for rm in workspace.client.search_registered_models(filter_string=f"name LIKE '{prefix}-%'"):
        if CHAMPION in (rm.aliases or {}):
            return workspace.client.get_model_version_by_alias(rm.name, CHAMPION)
    return None


def champion_f1_on(workspace, champion, test: pd.DataFrame, test_digest: str) -> float | None:
    """The current champion's macro F1 on this run's test set: its registered figure when it was tested on
    the same data, else measured now with its ONNX model; None when its features are not in this data."""
    info = describe(champion)
    if info["datasets"]["test"]["digest"] == test_digest:
        return info["metrics"]["f1"]
    if not set(info["features"]) <= set(test.columns):
        return None
    model = load_model(workspace, f"{champion.name}:{champion.version}")
    labels, proba = predict_onnx(model.onnx, test[model.features].to_numpy(dtype=np.float32))
    return classification_metrics(test["label"].to_numpy(), labels, proba)["f1"]


def move_champion(workspace, prefix: str, candidates: list[Candidate], test: pd.DataFrame,
                  test_digest: str) -> tuple[Candidate | None, str]:
    """Give ``champion`` to the best candidate when it beats the current champion (or there is none).
    Returns the champion after the move and the reason."""
    if not candidates:
        return None, "no candidate model"
    best = max(candidates, key=lambda c: c.f1)
    current = current_champion(workspace, prefix)
    if current is not None:
        f1 = champion_f1_on(workspace, current, test, test_digest)
        holder = Candidate(current.name, int(current.version), f1 if f1 is not None else float("nan"))
        if f1 is not None and best.f1 <= f1:
            return holder, (f"{best.name}:{best.version} (test F1 {best.f1:.4f}) does not beat champion "
                            f"{holder.name}:{holder.version} (test F1 {f1:.4f})")
    client = workspace.client
    client.set_registered_model_alias(best.name, CHAMPION, str(best.version))
    if current is not None and current.name != best.name:
        client.delete_registered_model_alias(current.name, CHAMPION)
    why = "no champion before" if current is None else f"beats {current.name}:{current.version}"
    return best, f"{best.name}:{best.version} (test F1 {best.f1:.4f}) {why}"
