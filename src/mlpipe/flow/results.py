"""What a run returns: one ``ModelOutcome`` per trained model, and the ``RunResult`` (the ``run --json`` object)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlpipe.steps import ingest, register
from mlpipe.store.datasets import DatasetVersion


@dataclass
class ModelOutcome:
    """One trained model: its test metrics (computed from its ONNX answers) and where it was registered."""

    kind: str
    name: str
    run_id: str
    params: dict
    metrics: dict[str, float]
    """On the test split, from the ONNX graph's answers: what is registered and reported."""
    confusion: list[list[int]]
    onnx_sha256: str | None
    cv_results: pd.DataFrame = field(repr=False)
    evidence: tuple[np.ndarray, pd.DataFrame] | None = field(default=None, repr=False)
    """For the report, measured on the ONNX bytes registered: test probabilities and permutation importance."""
    pngs: dict[str, bytes] = field(default_factory=dict, repr=False)
    """The report's plots of this model alone, drawn while the next model trained (``render.model_pngs``)."""
    version: int | None = None
    validation: dict[str, float] = field(default_factory=dict)
    """On the validation rows, from the ONNX graph's answers: what the champion is chosen by."""
    validation_one_class: int | None = None
    """The class it answers for every validation row, if it does (never promoted)."""
    imputes_missing: bool | None = None
    """Whether its graph imputes missing inputs itself (``graph.imputes_missing``), registered as a tag."""
    categories: dict[str, list[str]] = field(default_factory=dict)
    """Per categorical column, the categories its encoder learned (``features.known_categories``)."""

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "kind": self.kind, "metrics": self.metrics,
                "validation": self.validation, "validation_one_class": self.validation_one_class,
                "onnx_sha256": self.onnx_sha256, "run_id": self.run_id,
                "confusion_matrix": self.confusion}


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
        """The ``run --json`` object (docs/interface.md)."""
        return {
            "run_id": self.run_id, "duration_s": round(self.duration_s, 2),
            "datasets": {role: d.summary() for role, d in self.datasets.items()},
            "models": [m.to_dict() for m in self.models],
            "champion": {"name": self.champion.name, "version": self.champion.version} if self.champion else None,
            "champion_reason": self.champion_reason,
            "ingest": self.ingest_report.to_dict(),
        }
