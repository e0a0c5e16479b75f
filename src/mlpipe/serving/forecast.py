"""Forecasts from the observation store (``POST /observations``, ``GET /forecast``): raw observations are
checked and written to the store (``mlpipe.store.observations``); a forecast reads back the rows its features
need (the group's look-back, and every group at that time for ``target_share_groups``), computes them with the
feature engine exactly as training did, and scores them with the served model. Nothing is kept in memory
between requests, so a restarted server, or a second worker, answers from everything stored."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, create_model

from mlpipe.featurize import Recipe
from mlpipe.store.observations import ObservationStore, Written, canonical

def has_history(recipe: Optional[Recipe]) -> bool:
    """Whether the model's input needs the past (lags, deltas, windows, the share of groups): only then can
    it be served from raw observations; others keep ``/predict`` alone."""
    return recipe is not None and (recipe.lookback > pd.Timedelta(0) or recipe.config.features.across_groups)


def stream_of(info: dict) -> str:
    """The store's name for a model's observations: its registry prefix (``weather`` for ``weather-lightgbm``),
    shared by every model trained on the same data and by all their versions."""
    kind = info.get("kind")
    return info["name"].removesuffix(f"-{kind}") if kind else info["name"]


def observation_model(recipe: Recipe) -> type[BaseModel]:
    """One raw observation: timestamp and group (required), the raw features (numbers, or null / left out
    when not measured), and the target column (a number, or one of its classes). Unknown fields are refused.
    Fields are ``f0, f1, …`` with the column names as aliases, so any column name works."""
    c = recipe.config
    number = Optional[StrictFloat]
    target: Any = number if c.target.above is not None else Optional[Union[StrictInt, StrictFloat, StrictStr,
                                                                             StrictBool]]
    fields: dict[str, Any] = {"f0": (StrictStr, Field(alias=recipe.timestamp, min_length=1, description=(
        "the observation's time, ISO 8601; without a zone it is UTC")))}
    if recipe.group:
        fields["f1"] = (StrictStr, Field(alias=recipe.group, min_length=1, description="the group (station)"))
    for i, name in enumerate(c.data.features, start=2):  # model inputs, so numbers (the target too, if one)
        fields[f"f{i}"] = (number, Field(None, alias=name, allow_inf_nan=False, description=(
            f"{name!r}: a number, or null / absent when not observed")))
    if c.target.column not in c.data.features:
        fields["f_target"] = (target, Field(None, alias=c.target.column, allow_inf_nan=False,
                                            description=f"the target column {c.target.column!r}"))
    return create_model("Observation", __config__=ConfigDict(extra="forbid", populate_by_name=False), **fields)


@dataclass(frozen=True)
class Answered:
    forecasts: list[dict]
    """as ``GET /forecast`` answers them, ordered by group, then time"""
    inputs: np.ndarray
    """the model's input, one row per forecast"""
    labels: np.ndarray
    proba: np.ndarray


@dataclass
class Rejected(Exception):
    """An observation or query that cannot be used; ``loc`` as FastAPI's validation errors give it."""

    loc: list
    msg: str


class Forecaster:
    def __init__(self, store: ObservationStore, stream: str, recipe: Recipe, max_clock_skew_s: float):
        self.store, self.stream, self.recipe, self.skew_ns = store, stream, recipe, int(max_clock_skew_s * 1e9)
        self.values = [c for c in recipe.raw_columns if c not in (recipe.timestamp, recipe.group)]

    # -- writing -----------------------------------------------------------------------------------------
    def observe(self, records: list[dict], where: list) -> Written:
        """Store validated records (dicts by column name); ``Rejected`` names the first unusable one, and then
        nothing is stored."""
        r = self.recipe
        ns = _parse_times([rec[r.timestamp] for rec in records])
        bad = np.flatnonzero(ns == _NAT)
        if bad.size:
            raise Rejected([*where(int(bad[0])), r.timestamp],
                           f"not a timestamp: {records[int(bad[0])][r.timestamp]!r} (ISO 8601, e.g. 2013-05-01T14:00Z, "
                           f"after 1678)")
        ahead = np.flatnonzero(ns > time.time_ns() + self.skew_ns)
        if ahead.size:
            raise Rejected([*where(int(ahead[0])), r.timestamp],
                           f"{records[int(ahead[0])][r.timestamp]!r} is more than the allowed clock skew "
                           f"({self.skew_ns / 1e9:g} s) in the future")
        if r.group:
            for i, rec in enumerate(records):
                if not rec[r.group].isprintable() or _unencodable(rec[r.group]):
                    raise Rejected([*where(i), r.group], f"not a usable group name: {rec[r.group]!r} "
                                                         "(printable text)")
        rows = [(rec[r.group] if r.group else "", int(t), canonical({c: rec.get(c) for c in self.values}))
                for rec, t in zip(records, ns)]
        return self.store.add(self.stream, rows)

    # -- reading -----------------------------------------------------------------------------------------
    def forecast(self, model, group: Optional[str], at: Optional[str]) -> "Answered":
        """Forecasts for ``group`` (every group when None) at its latest observation, or at ``at``."""
        r = self.recipe
        if at is not None:
            at_ns = _parse_times([at])[0]
            if at_ns == _NAT:
                raise Rejected(["query", "at"], f"not a timestamp: {at!r} (ISO 8601, e.g. 2013-05-01T14:00Z)")
            present = self.store.window(self.stream, at_ns, at_ns, group)
            wanted = {(g, int(ts)) for g, ts, _ in present}
        else:
            wanted = {(g, ts) for g, ts in self.store.latest(self.stream, group).items()}
        if not wanted:
            return Answered([], np.empty((0, len(model.features)), np.float32), np.empty(0), np.empty(0))
        lookback = int(r.lookback.total_seconds() * 1e9)
        rows = []
        # each asked time's look-back (windows that overlap read once: a station that stopped reporting a
        # month ago does not make every other station's month be read); for one group, also every group at
        # the asked time (the share of groups)
        for lo, hi in _merged(sorted({ts for _, ts in wanted}), lookback):
            also = (hi,) if group is not None and r.config.features.across_groups else None
            rows += self.store.window(self.stream, lo, hi, group, also_at=also)
        rows = sorted({(g, int(ts), rec) for g, ts, rec in rows}, key=lambda row: (row[1], row[0]))
        picked = np.flatnonzero([(g, ts) in wanted for g, ts, _ in rows])
        X = self._inputs(model, rows)[picked]
        labels, proba = model.predict(X)
        out = []
        for row, x, lab, p in zip(picked, X, labels.tolist(), proba.tolist()):
            g, ts = rows[row][0], pd.Timestamp(rows[row][1], tz="UTC")
            out.append({"group": g if r.group else None, "timestamp": _iso(ts), "forecast_for": _iso(ts + r.horizon),
                        "label": lab, "probability": p if math.isfinite(p) else None,
                        "missing": [f for f, m in zip(model.features, np.isnan(x)) if m]})
        order = sorted(range(len(out)), key=lambda i: (out[i]["group"] or "", out[i]["timestamp"]))
        return Answered([out[i] for i in order], X[order], labels[order], proba[order])

    def _inputs(self, model, rows: list[tuple]) -> np.ndarray:
        """The model's input for stored rows (sorted by time, then group): the raw values cleaned as ingest
        cleans them, and the derived features from the feature engine (``featurize.derive``)."""
        from mlpipe.featurize import derive, needed_columns

        r, c = self.recipe, self.recipe.config
        records = [json.loads(rec) for _, _, rec in rows]
        raw = {col: r.clean(col, np.array([np.nan if (v := rec.get(col)) is None else v for rec in records],
                                          dtype="float64"))
               for col in c.data.features}
        if c.target.column in raw:  # cleaned, as batch scoring and training clean it
            target = raw[c.target.column]
        else:
            target = [rec.get(c.target.column) for rec in records]  # as given: classes may be text
            if c.target.above is not None:
                target = np.array([np.nan if v is None else v for v in target], dtype="float64")
        groups = np.array([g for g, _, _ in rows], dtype=object) if r.group else None
        new = derive(c, np.array([ts for _, ts, _ in rows], dtype=np.int64), groups,
                     {col: raw[col] for col in needed_columns(c)}, target)
        return np.column_stack([new[f] if f in new else raw[f] for f in model.features]).astype(np.float32)


_NAT = np.iinfo(np.int64).min


def _parse_times(values: list) -> np.ndarray:
    """Timestamps as int64 nanoseconds (UTC; naive ones taken as UTC, as ``mlpipe predict`` reads them);
    ``_NAT`` where one does not parse. A few are read by the standard library's ISO 8601 parser (a
    millisecond less per request); a value it does not take goes to pandas', as a file's would."""
    if len(values) <= 16:
        try:
            return np.array([_fast_ns(v) for v in values], dtype=np.int64)
        except ValueError:
            pass
    parsed = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601", errors="coerce")
    late = parsed > _LAST  # beyond what nanoseconds hold: far in the future, which the clock-skew check refuses
    parsed = parsed.mask(late | (parsed < _FIRST))
    ns = parsed.to_numpy(dtype="datetime64[ns]").view(np.int64).copy()
    ns[late.to_numpy()] = np.iinfo(np.int64).max
    return ns


_FIRST, _LAST = pd.Timestamp("1678-01-01T00:00Z"), pd.Timestamp("2262-01-01T00:00Z")


def _fast_ns(value: str) -> int:
    from datetime import datetime, timezone

    t = datetime.fromisoformat(value)
    t = t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t
    if not _FIRST <= t <= _LAST:
        raise ValueError(value)  # pandas' path says which
    return int(pd.Timestamp(t).value)


def _merged(times: list[int], lookback: int) -> list[tuple[int, int]]:
    """The windows ``[t - lookback, t]`` of sorted ``times``, overlapping ones merged."""
    out: list[list[int]] = []
    for t in times:
        if out and t - lookback <= out[-1][1]:
            out[-1][1] = t
        else:
            out.append([t - lookback, t])
    return [(lo, hi) for lo, hi in out]


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:  # a lone surrogate, which JSON can carry and no database stores
        return True


def _iso(ts: pd.Timestamp) -> str:
    return ts.isoformat().replace("+00:00", "Z")
