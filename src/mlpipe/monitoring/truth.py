"""The truth of logged forecasts: the target observed at ``forecast_for`` in the same group, labelled as
training labelled it (``target.holds``), and persistence on the same rows ("later = now": the target's
condition at the forecast's own timestamp). Observations come from the observation store the server wrote,
or from a file in the training source's schema."""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from mlpipe.errors import DataError
from mlpipe.featurize import Recipe


def observed_target(recipe: Recipe, stream: str, workspace, start: pd.Timestamp, end: pd.Timestamp,
                    observations: Optional[str] = None) -> pd.DataFrame:
    """``group, timestamp, target`` (the target as training cleaned it; NaN when not observed) for every
    observation in ``[start, end]``."""
    c = recipe.config
    if observations is None:
        import json

        from mlpipe.store.observations import ObservationStore

        store = ObservationStore.of(workspace)
        try:
            rows = store.window(stream, start.value, end.value)
        finally:
            store.close()
        groups = [g for g, _, _ in rows]
        times = pd.to_datetime(np.array([ts for _, ts, _ in rows], dtype=np.int64), utc=True)
        target = [json.loads(rec).get(c.target.column) for _, _, rec in rows]
    else:
        from mlpipe.sources import read_source

        raw = read_source(observations)
        for col in (recipe.timestamp, c.target.column) + ((recipe.group,) if recipe.group else ()):
            if col not in raw.columns:
                raise DataError(f"{observations}: no column {col!r} (the model's observations need "
                                f"{', '.join(recipe.raw_columns)})")
        times = pd.to_datetime(raw[recipe.timestamp], utc=True, format="ISO8601", errors="coerce")
        if times.isna().any():
            bad = raw[recipe.timestamp][times.isna()].iloc[0]
            raise DataError(f"{observations}: column {recipe.timestamp!r}: not a timestamp: {bad!r}")
        keep = ((times >= start) & (times <= end)).to_numpy()
        times = pd.DatetimeIndex(times[keep])
        groups = raw[recipe.group][keep].astype(str).tolist() if recipe.group else [""] * len(times)
        target = raw[c.target.column][keep].tolist()
    if c.target.above is not None:
        values = pd.to_numeric(pd.Series(target, dtype=object), errors="coerce").to_numpy(np.float64)
        if c.target.column in c.data.features:
            values = recipe.clean(c.target.column, values)
        target = pd.Series(values)
    else:
        target = pd.Series(target, dtype=object)
    frame = pd.DataFrame({"group": pd.Series(groups, dtype=object) if recipe.group else "",
                          "timestamp": times, "target": target})
    return frame.drop_duplicates(["group", "timestamp"], keep="last")


def join(forecasts: pd.DataFrame, observed: pd.DataFrame, recipe: Recipe) -> pd.DataFrame:
    """``forecasts`` (group, timestamp, forecast_for, ...) with ``state``: "matched" (``truth`` 0/1 and
    ``persistence`` 0/1 set), "pending" (its group has no observation at or after ``forecast_for`` yet) or
    "no truth" (the time has passed, the target at it was not observed)."""
    c = recipe.config
    key = observed.set_index(["group", "timestamp"])["target"]
    grp = forecasts["group"].fillna("").astype(str) if recipe.group else pd.Series("", index=forecasts.index)
    future = key.reindex(pd.MultiIndex.from_arrays([grp, forecasts["forecast_for"]])).to_numpy()
    present = key.reindex(pd.MultiIndex.from_arrays([grp, forecasts["timestamp"]])).to_numpy()
    seen = pd.notna(future)
    latest = observed.groupby("group")["timestamp"].max()
    last = pd.to_datetime(grp.map(latest), utc=True)  # the group's latest observation (NaT: none)
    pending = ~seen & ~(last >= forecasts["forecast_for"]).to_numpy()
    out = forecasts.copy()
    out["state"] = np.where(seen, "matched", np.where(pending, "pending", "no truth"))
    out["truth"] = np.where(seen, c.target.holds(pd.Series(future)).to_numpy(), 0).astype(np.int64)
    out["persistence"] = c.target.holds(pd.Series(present)).to_numpy().astype(np.int64)
    return out
