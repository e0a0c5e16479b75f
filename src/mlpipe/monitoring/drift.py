"""Input and prediction drift of a window of served forecasts against a reference.

Two measures per feature, each standard and each with a default that its literature defends:

- the population stability index (PSI) over the reference's deciles, missing values a bin of their own,
  empty bins at 0.0001 (as Evidently does): below 0.1 no change, 0.1-0.25 a moderate one, above 0.25 a
  significant shift (Siddiqi, *Credit Risk Scorecards*, 2006; Yurdakul, *Statistical properties of the
  population stability index*, 2018);
- the Wasserstein distance (``scipy.stats.wasserstein_distance``) divided by the reference's standard
  deviation, "how many standard deviations the mass moved": 0.1 is Evidently's default threshold for a
  numerical feature.

A feature drifts when both pass their threshold: PSI alone flags small moves of a narrow distribution across
decile edges, the distance alone flags a few extreme values; a faulty sensor moves both. A feature whose
values went missing (a dead sensor) drifts when its missing share rises by ``MISSING_RISE``.

The reference is of the same season (``season_mask``): weather is seasonal, and against a whole training
year every winter week would look drifted. Even so, one week of weather differs from its season by more
than those fixed thresholds allow (measured on the built-in data: a week's wind speed at LGA, PSI 1.3 against
its ±15 days). So each threshold is also calibrated on the version's own data, as NannyML calibrates its
drift thresholds on reference chunks: every week of the reference is compared with its season (itself left
out), and a feature of a group drifts only beyond the mean + k standard deviations of what those ordinary
weeks gave (``calibrate``), never below the fixed thresholds; k (at least 3) is set so that at most 5% of
the reference's own weeks would raise any alarm among all the checks (``family_sigmas``).

A week of odd weather at one station is a week of odd weather at its neighbours too; a faulty sensor is
not. So where a model has several groups, each feature is also compared as its departure from the
groups at the same time (``departures``: the value minus the median of all groups), the spatial consistency check
of meteorological quality control. On the built-in data an 8 hPa offset on one station's barometer moves its
level less than an ordinary week does (PSI 1.6, under its calibrated threshold), and its departure by many times
an ordinary week's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

PSI_THRESHOLD = 0.25
WASSERSTEIN_THRESHOLD = 0.1
MISSING_RISE = 0.25
BINS = 10
EMPTY = 1e-4
SEASON_DAYS = 15
"""The reference holds rows within this many days of the window's days of the year, in any year."""


@dataclass(frozen=True)
class Drift:
    psi: float
    wasserstein: float
    """normalised by the reference's standard deviation"""
    missing_live: float
    missing_reference: float

    def drifted(self, psi: float = PSI_THRESHOLD, wasserstein: float = WASSERSTEIN_THRESHOLD) -> bool:
        return bool((self.psi >= psi and self.wasserstein >= wasserstein)
                    or self.missing_live - self.missing_reference >= MISSING_RISE)


def psi(reference: np.ndarray, live: np.ndarray) -> float:
    """PSI of ``live`` against ``reference`` over the reference's deciles (missing values: a bin of their own)."""
    ref, cur = reference[~np.isnan(reference)], live[~np.isnan(live)]
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, BINS + 1)[1:-1])) if len(ref) else np.array([])

    def shares(values: np.ndarray, whole: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
        counts = np.append(counts, np.isnan(whole).sum())
        return np.maximum(counts / max(len(whole), 1), EMPTY)

    p, q = shares(ref, reference), shares(cur, live)
    return float(np.sum((q - p) * np.log(q / p)))


def wasserstein(reference: np.ndarray, live: np.ndarray) -> float:
    """The Wasserstein distance between the observed values, in reference standard deviations."""
    from scipy.stats import wasserstein_distance

    ref, cur = reference[~np.isnan(reference)], live[~np.isnan(live)]
    if not len(ref) or not len(cur):
        return 0.0
    scale = float(np.std(ref))
    distance = float(wasserstein_distance(ref, cur))
    if scale == 0.0:
        return 0.0 if distance == 0.0 else float("inf")
    return distance / scale


def drift(reference: np.ndarray, live: np.ndarray) -> Drift:
    reference, live = np.asarray(reference, np.float64), np.asarray(live, np.float64)
    return Drift(psi(reference, live), wasserstein(reference, live), float(np.isnan(live).mean()) if len(live) else 0.0,
                 float(np.isnan(reference).mean()) if len(reference) else 0.0)


def season_mask(times: pd.Series, start: pd.Timestamp, end: pd.Timestamp, days: int = SEASON_DAYS) -> np.ndarray:
    """Rows whose time of year lies within ``days`` of the window ``[start, end]``, in any year: the circular
    distance from the window's middle, in days of a 365.25-day year (the band wraps around New Year, and a
    leap day shifts nothing)."""
    year = 365.25 * 86400

    def phase(t):
        return (t - t.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0, nanosecond=0)).total_seconds()

    middle = start + (end - start) / 2
    half = (end - start).total_seconds() / 2 + days * 86400
    if half * 2 >= year:
        return np.ones(len(times), bool)
    t = pd.DatetimeIndex(times)
    t = t.tz_convert("UTC").tz_localize(None) if t.tz is not None else t
    since_new_year = (t - t.to_period("Y").to_timestamp()).total_seconds().to_numpy()
    gap = np.abs(since_new_year - phase(middle)) % year
    return np.minimum(gap, year - gap) <= half


SIGMAS = 3.0


def calibrate(values: np.ndarray, times: pd.Series, window: pd.Timedelta, days: int = SEASON_DAYS,
              min_rows: int = 24) -> dict:
    """One feature of one group on its reference rows: each ``window``-long chunk (a week) against its season
    band without it. ``weeks``: chunk start -> [PSI, Wasserstein]; ``mean`` and ``sd`` of the two."""
    t = times.reset_index(drop=True)
    weeks = {}
    if len(t):
        start, last = t.min(), t.max()
        while start + window <= last + pd.Timedelta(hours=1):
            inside = ((t >= start) & (t < start + window)).to_numpy()
            if inside.sum() >= min_rows:
                band = season_mask(t, start, start + window, days) & ~inside
                if band.sum() >= min_rows:
                    pair = [psi(values[band], values[inside]), wasserstein(values[band], values[inside])]
                    weeks[start.isoformat()] = [x if np.isfinite(x) else None for x in pair]
            start += window
    a = np.array([[np.nan if x is None else x for x in w] for w in weeks.values()]).reshape(-1, 2)
    ok = len(a) >= 3
    return {"weeks": weeks, "mean": np.nanmean(a, axis=0).tolist() if ok else None,
            "sd": np.nanstd(a, axis=0).tolist() if ok else None}


def family_sigmas(calibrations: list[dict], quantile: float = 0.95) -> float:
    """How many standard deviations above its ordinary weeks' mean a check must be for an alarm, chosen so
    that at most 5% of the reference's own weeks raise any alarm among all the checks (each week's largest
    score, where a check's score is the smaller of its two statistics' z-scores); never below ``SIGMAS``.
    Per check, mean + 3 sd alone would alarm on ordinary weeks: with 156 checks, some check of most weeks
    passes its own (measured: 5 of the built-in test period's 10 weeks)."""
    by_week: dict[str, float] = {}
    for c in calibrations:
        if c["mean"] is None:
            continue
        (m0, m1), (s0, s1) = c["mean"], c["sd"]
        for week, (p, w) in c["weeks"].items():
            if p is None or w is None:
                continue
            z = min((p - m0) / s0 if s0 > 0 else 0.0, (w - m1) / s1 if s1 > 0 else 0.0)
            by_week[week] = max(by_week.get(week, -np.inf), z)
    if len(by_week) < 10:
        return SIGMAS
    return float(max(SIGMAS, np.quantile(list(by_week.values()), quantile)))


def limits(calibration: dict, sigmas: float) -> dict:
    """The thresholds of one check: its ordinary weeks' mean + ``sigmas`` sd, never below the fixed floors."""
    if calibration["mean"] is None:
        return {"psi": PSI_THRESHOLD, "wasserstein": WASSERSTEIN_THRESHOLD, "chunks": len(calibration["weeks"])}
    (m0, m1), (s0, s1) = calibration["mean"], calibration["sd"]
    return {"psi": float(max(PSI_THRESHOLD, m0 + sigmas * s0)),
            "wasserstein": float(max(WASSERSTEIN_THRESHOLD, m1 + sigmas * s1)), "chunks": len(calibration["weeks"])}


def departures(frame: pd.DataFrame, ts: str, group: str, columns: list[str]) -> pd.DataFrame:
    """Each row's values minus the median of all groups' values at the same timestamp. With three or more
    groups the median is robust to one faulty group, so the fault shows at that group alone; with two, the
    gap between them (a fault cannot then be placed)."""
    out = pd.DataFrame(index=frame.index)
    keys = frame[[ts, group]]
    for col in columns:
        wide = frame.pivot_table(index=ts, columns=group, values=col, aggfunc="last", dropna=False)
        values = wide.to_numpy(np.float64)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a time no group has a value at
            result = values - np.nanmedian(values, axis=1, keepdims=True)
        if values.shape[1] < 3:  # the median of two is their mean: the other group's half of the gap
            result = result * 2
        dep = pd.DataFrame(result, index=wide.index, columns=wide.columns).stack(future_stack=True)
        out[col] = dep.reindex(pd.MultiIndex.from_frame(keys)).to_numpy()
    return out
