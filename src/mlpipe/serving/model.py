"""The model being served: a verified ONNX graph in one onnxruntime session, and the slot that holds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Optional

import numpy as np

from mlpipe.featurize import Recipe
from mlpipe.graph import CATEGORIES, IMPUTES_TAG, INPUT, OUTPUTS, imputes_missing, make_session, positive


@dataclass(frozen=True)
class ServedModel:
    """One registered model version, ready to answer. Immutable: a swap replaces the whole object."""

    info: dict
    session: Any = field(repr=False)
    nullable: bool
    """True when the graph imputes missing values itself (an ``Imputer`` on its input): null is then allowed."""
    recipe: Optional[Recipe] = field(default=None, repr=False)
    """How its input is computed from raw observations (``mlpipe.feature_spec``); None for versions
    registered without one."""

    @property
    def name(self) -> str:
        return self.info["name"]

    @property
    def version(self) -> int:
        return self.info["version"]

    @property
    def features(self) -> list[str]:
        return self.info["features"]

    @cached_property
    def inputs(self) -> set[str]:
        """The names of the inputs its graph declares (asked once: ``predict`` is a request's hot path)."""
        return {i.name for i in self.session.get_inputs()}

    @property
    def classes(self) -> Optional[list[str]]:
        """The class names of a model of several classes (labels are their positions); None for binary."""
        return self.info.get("classes")

    @property
    def categorical(self) -> list[str]:
        """Its categorical input columns (the graph's string input ``categories``); empty for most models."""
        return self.info.get("categorical", [])

    @property
    def categories(self) -> dict[str, list[str]]:
        """The categories each categorical column met in training (others are answered as unseen)."""
        return self.info.get("categories", {})

    def predict(self, X: np.ndarray, categories: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """Labels and positive-class probabilities for a float32 matrix ``[N, len(features)]`` and, for a model
        with categorical columns, their text ``[N, len(categorical)]`` (missing: ``""``)."""
        if len(X) == 0:  # not every operator takes an empty batch
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        wanted = self.inputs
        feed = {INPUT: X} if INPUT in wanted else {}
        if CATEGORIES in wanted:  # (the class-prior baseline reads only one of them, for the number of rows)
            feed[CATEGORIES] = categories
        labels, proba = self.session.run(OUTPUTS, feed)
        return labels, positive(proba)


def open_model(workspace, ref: str, threads: int = 1) -> ServedModel:
    """Fetch ``ref`` from the registry, check its SHA-256 (``IntegrityError`` on mismatch) and open it."""
    from mlpipe.store.models import load_model

    loaded = load_model(workspace, ref)
    tag = loaded.info.get("tags", {}).get(IMPUTES_TAG)  # recorded at registration from this graph (SHA-256 checked)
    nullable = tag == "true" if tag in ("true", "false") else imputes_missing(loaded.onnx)
    return ServedModel(loaded.info, make_session(loaded.onnx, threads), nullable, recipe_of(loaded.info))


def recipe_of(info: dict) -> Optional[Recipe]:
    """The feature recipe a registered version carries, or None (versions registered without one)."""
    import json

    spec = info.get("tags", {}).get("mlpipe.feature_spec")
    return Recipe.from_spec(json.loads(spec)) if spec else None


class ModelSlot:
    """Holds the model being served. Readers take ``slot.current`` once per request and keep that object to
    the end, so a swap (one reference assignment) never changes a model under a request in flight."""

    def __init__(self, model: ServedModel):
        self.current = model

    def swap(self, model: ServedModel) -> None:
        self.current = model
