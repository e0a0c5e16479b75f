"""What the MLflow model answers for a DataFrame: mlpipe's own columns, from mlpipe's own scoring code."""

from __future__ import annotations

import numpy as np
import pandas as pd


def needs_raw(model) -> bool:
    """Whether the model's input is computed from raw observations (its features read the past)."""
    from mlpipe.serving.forecast import has_history

    return has_history(model.recipe)


def answer(model, frame: pd.DataFrame) -> pd.DataFrame:
    """Feature columns -> ``label``, ``probability`` (and ``probability_<class>`` for several classes); raw
    observations, for a model whose features read the past -> the forecasts ``mlpipe predict`` writes
    (timestamp, group, ``forecast_for``, ``label``, ``probability``)."""
    from mlpipe.featurize import category_matrix

    frame = pd.DataFrame(frame)
    if needs_raw(model):
        from mlpipe.serving.raw import RawScorer

        from mlpipe.serving.batch import _iso_times

        scorer = RawScorer(model, model.recipe, "model input")
        answered = pd.concat([scorer.feed(frame), scorer.finish()], ignore_index=True)
        return _iso_times(answered, [model.recipe.timestamp, "forecast_for"])  # ISO 8601 text, UTC
    X = frame[model.features].to_numpy(dtype=np.float32) if model.features else np.empty((len(frame), 0), np.float32)
    C = category_matrix(frame.__getitem__, model.categorical, "model input") if model.categorical else None
    labels, proba = model.predict(X, C)
    if not model.classes:
        return pd.DataFrame({"label": labels.astype(np.int64), "probability": proba.astype(np.float64)})
    rows = np.arange(len(labels))
    out = pd.DataFrame({"label": np.asarray(model.classes, dtype=object)[labels],
                        "probability": proba[rows, labels].astype(np.float64)})
    for j, name in enumerate(model.classes):
        out[f"probability_{name}"] = proba[:, j].astype(np.float64)
    return out
