"""Forecasts from raw observations: rows in the schema of the training source (timestamp, group, the raw
features), their derived features computed by the feature engine (``mlpipe.featurize``) exactly as training
computed them, chunk by chunk, each group's look-back carried from one chunk to the next.

A file is read in time order (it is a stream of observations): a chunk whose rows are older than what was
already forecast is an error, naming the row. Rows are cleaned as ingest cleans them: values outside their
``[data.ranges]`` become missing, exact duplicates count once, and a (group, timestamp) observed twice with
different values is dropped (both rows, as in training) and counted."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlpipe.errors import DataError
from mlpipe.featurize import Recipe

CONTEXT = "__mlpipe_context"
OUTPUT = ("forecast_for", "label", "probability")


class RawScorer:
    """Feed it chunks of raw rows (DataFrames) in time order; each call returns the forecasts it can make:
    every row but those at the latest timestamp seen, which wait for the next chunk (other groups' rows at
    that time may still come, and ``target_share_groups`` needs them all). ``finish`` answers the rest."""

    def __init__(self, model, recipe: Recipe, source: str):
        if not recipe.config.data.series:
            raise DataError(f"{source}: model {model.name}:{model.version} answers independent rows "
                            f"(data.series = false): give it its feature columns, not raw observations")
        if recipe.config.categorical:
            raise DataError(f"{source}: model {model.name}:{model.version} has categorical inputs "
                            f"({', '.join(recipe.config.categorical)}); raw observations are scored for numeric "
                            f"models only so far: give the model's feature columns instead")
        self.model, self.recipe, self.source = model, recipe, source
        self.carry: pd.DataFrame | None = None
        """Already forecast rows within the look-back (context), then rows waiting for their timestamp to close."""
        self.done_until: pd.Timestamp | None = None
        self.conflicting = 0
        self.rows_read = 0
        self.inputs = np.empty((0, len(model.features)), np.float32)
        """the model's input for the forecasts the last call returned, row by row"""

    def feed(self, chunk: pd.DataFrame) -> pd.DataFrame:
        return self._score(self._prepare(chunk), final=False)

    def finish(self) -> pd.DataFrame:
        return self._score(None, final=True)

    def _prepare(self, chunk: pd.DataFrame) -> pd.DataFrame:
        r, ts = self.recipe, self.recipe.timestamp
        df = chunk[r.raw_columns].copy()
        parsed = pd.to_datetime(df[ts], utc=True, format="ISO8601", errors="coerce")
        bad = parsed.isna()
        if bad.any():
            raise DataError(f"{self.source}: column {ts!r}: row {self.rows_read + int(np.argmax(bad.to_numpy())) + 2} "
                            f"has no readable timestamp ({df[ts][bad].iloc[0]!r})")
        df[ts] = parsed
        numeric = list(r.config.data.features) + ([r.config.target.column] if r.config.target.above is not None
                                                  and r.config.target.column not in r.config.data.features else [])
        for col in numeric:
            if pd.api.types.is_float_dtype(df[col]):  # as the CSV and Parquet readers give them
                continue
            values = pd.to_numeric(df[col], errors="coerce")
            wrong = values.isna() & df[col].notna() & (df[col].astype(str).str.strip() != "")
            if wrong.any():
                raise DataError(f"{self.source}: column {col!r} is not numeric (first bad value: "
                                f"{df[col][wrong].iloc[0]!r})")
            df[col] = values.astype("float64")
        if r.group and not (pd.api.types.is_string_dtype(df[r.group]) and not df[r.group].isna().any()):
            df[r.group] = df[r.group].astype("string").fillna("").astype(str)
        if self.done_until is not None and (df[ts] <= self.done_until).any():
            row = self.rows_read + int(np.argmax((df[ts] <= self.done_until).to_numpy())) + 2
            raise DataError(f"{self.source}: row {row} ({df[ts][df[ts] <= self.done_until].iloc[0]}) is older than "
                            f"rows already forecast ({self.done_until}); raw observations are read in time order: "
                            f"sort the file by {ts!r}")
        self.rows_read += len(df)
        df[CONTEXT] = False
        return r.impossible_to_missing(df)

    def _score(self, new: pd.DataFrame | None, final: bool) -> pd.DataFrame:
        r, ts = self.recipe, self.recipe.timestamp
        keys = [ts] + ([r.group] if r.group else [])
        parts = [f for f in (self.carry, new) if f is not None and len(f)]
        if not parts:
            return self._empty()
        frame = pd.concat(parts, ignore_index=True).drop_duplicates()
        conflicting = frame.duplicated(subset=keys, keep=False)
        self.conflicting += int(conflicting[~frame[CONTEXT]].sum())
        frame = frame[~conflicting].sort_values(keys, kind="stable").reset_index(drop=True)
        latest = frame[ts].max()
        waiting = (frame[ts] == latest) & ~frame[CONTEXT] if not final else pd.Series(False, index=frame.index)
        ready = frame[~waiting]
        if not (~ready[CONTEXT]).any():
            self.carry = frame
            return self._empty()
        featured = r.features(ready.drop(columns=CONTEXT).reset_index(drop=True))
        answer = ~ready[CONTEXT].to_numpy()
        out = featured[answer]
        X = self.inputs = out[self.model.features].to_numpy(dtype=np.float32)
        labels, proba = self.model.predict(X)
        self.done_until = out[ts].max()
        context = ready[ready[ts] > self.done_until - r.lookback].assign(**{CONTEXT: True})
        self.carry = pd.concat([context, frame[waiting]], ignore_index=True)
        result = out[keys].reset_index(drop=True)
        result["forecast_for"] = result[ts] + r.horizon
        result["label"], result["probability"] = labels.astype(np.int64), proba.astype(np.float32)
        return result

    def _empty(self) -> pd.DataFrame:
        self.inputs = np.empty((0, len(self.model.features)), np.float32)
        r = self.recipe
        cols = [r.timestamp] + ([r.group] if r.group else [])
        return pd.DataFrame({c: [] for c in cols + list(OUTPUT)})
