"""``mlpipe monitor``: the served model as it really did. Logged forecasts (``monitoring.log``) joined with
the truth that arrived for their ``forecast_for`` (``monitoring.truth``), per model version and group:
matched and pending forecasts, macro F1, ROC AUC and Brier score beside persistence on the same rows and
beside the version's registered test metrics; input and prediction drift against a reference of the same
season (``monitoring.drift``); and what is alerting, and why.

A forecast asked for more than once (a client polling ``/forecast``, late observations changing it) counts
once: its last answer. The window is of data time (forecast timestamps), not of the clock: a replay of
2013 is judged as 2013."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from mlpipe.errors import DataError, NotFoundError

MIN_MATCHED = 50
"""Fewer matched forecasts than this: performance is shown, not judged."""
MIN_DRIFT_ROWS = 24
"""Fewer forecasts of a group in the window than this: its drift is shown, not judged."""
BOOTSTRAP = 2000
CONFIDENCE = 0.95
MIN_EVENTS = 30
"""Live F1 is held against the registered test F1 only when the window has this many of each class: a week
without rain has a macro F1 of at most 0.5 whatever the model does (its rain class scores 0)."""
DEFAULT_TOLERANCE = 0.1
"""How far live macro F1 may fall below the registered test F1 (its 95% interval's upper end, days
resampled). Measured on the built-in test period's ten weeks: F1 0.49 to 0.82 around the whole period's
0.73; the dry weeks (0 to 27 rain hours) are the low ones."""


@dataclass(frozen=True)
class Settings:
    model: Optional[str] = None
    since: Optional[pd.Timestamp] = None
    window: pd.Timedelta = pd.Timedelta(days=7)
    observations: Optional[str] = None
    tolerance: float = DEFAULT_TOLERANCE


def monitor(workspace, settings: Settings) -> dict:
    """The monitoring document (what ``--json`` prints): ``healthy``, ``alerts`` and one entry per model
    version with forecasts in the window."""
    from mlpipe.monitoring.log import FOLDER, read_log

    wanted = _wanted(workspace, settings.model)
    versions_out, alerts, lost, files, damaged, rows_only = [], [], 0, 0, 0, []
    for name, only in wanted:
        infos = _versions(workspace, name)
        if infos and not all(_forecasts(i) for i in infos.values()):
            rows_only.append(name)  # independent rows: no truth arrives later by timestamp to join
            continue
        logged = read_log(workspace.root, name)
        lost += logged.lost
        files += logged.files
        damaged += logged.damaged
        rows = logged.rows
        if only is not None:
            rows = rows[rows["version"] == only]
        for version, part in rows.groupby("version", sort=True):
            info = infos.get(int(version))
            if info is None:
                continue  # a version deleted from the registry since
            entry = _version_report(workspace, info, part, logged.inputs[int(version)], settings)
            if entry is not None:
                versions_out.append(entry)
                alerts += [f"{entry['model']}:{entry['version']}: {a}" for a in entry["alerts"]]
    if not versions_out:
        where = workspace.root / FOLDER
        raise DataError(f"no logged forecasts to monitor in {where}"
                        + (f" for {settings.model}" if settings.model else "")
                        + (f" since {settings.since}" if settings.since is not None else "")
                        + ": serve the model (GET /forecast, POST /predict) or run mlpipe predict first"
                        + (f" (not monitored: {', '.join(rows_only)}, models of independent rows, data.series = "
                           f"false: no truth arrives later by timestamp)" if rows_only else ""))
    return {"healthy": not alerts, "alerts": alerts, "log": {"files": files, "lost": lost, "damaged_lines": damaged},
            "thresholds": _thresholds(settings), "versions": versions_out}


def _forecasts(info: dict) -> bool:
    """Whether a version forecasts a time series (its truth arrives later, by timestamp)."""
    import json

    spec = info.get("tags", {}).get("mlpipe.feature_spec")
    return json.loads(spec).get("series", True) if spec else True


def _thresholds(settings: Settings) -> dict:
    from mlpipe.monitoring import drift

    return {"tolerance": settings.tolerance, "psi": drift.PSI_THRESHOLD,
            "wasserstein": drift.WASSERSTEIN_THRESHOLD, "missing_rise": drift.MISSING_RISE,
            "season_days": drift.SEASON_DAYS, "min_matched": MIN_MATCHED, "min_drift_rows": MIN_DRIFT_ROWS,
            "min_events": MIN_EVENTS}


def _wanted(workspace, ref: Optional[str]) -> list[tuple[str, Optional[int]]]:
    """(model name, version or None for all) to monitor: ``ref``'s, or every model with a forecast log."""
    from mlpipe.monitoring.log import FOLDER

    if ref:
        from mlpipe.store.models import get_version

        found = get_version(workspace, ref)
        return [(found.name, int(found.version) if (":" in ref or "@" in ref) else None)]
    folder = workspace.root / FOLDER
    names = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if not names:
        raise DataError(f"no logged forecasts to monitor in {folder}: serve a model (GET /forecast, POST "
                        f"/predict) or run mlpipe predict first")
    return [(name, None) for name in names]


def _versions(workspace, name: str) -> dict[int, dict]:
    from mlpipe.store.models import describe

    try:
        found = workspace.client.search_model_versions(f"name='{name}'", max_results=10000)
    except Exception as e:  # noqa: BLE001 -- MLflow's own error types vary by store
        raise NotFoundError(f"model {name!r}: {e}") from None
    return {int(v.version): describe(v) for v in found}


def _version_report(workspace, info: dict, rows: pd.DataFrame, inputs: np.ndarray, settings: Settings) -> Optional[dict]:
    from mlpipe.monitoring.truth import join, observed_target
    from mlpipe.serving.forecast import stream_of
    from mlpipe.serving.model import recipe_of

    recipe = recipe_of(info)
    timed = rows[rows["timestamp"].notna()].sort_values("answered_at", kind="stable")
    timed = timed.drop_duplicates(["group", "timestamp"], keep="last") if len(timed) else timed
    untimed = rows[rows["timestamp"].isna()]
    end = timed["timestamp"].max() if len(timed) else untimed["answered_at"].max()
    start = settings.since if settings.since is not None else end - settings.window
    # (end - window, end]: a 7-day window of hourly forecasts holds 168 hours, as a calibration week does
    after = (lambda t: t >= start) if settings.since is not None else (lambda t: t > start)
    timed = timed[after(timed["timestamp"]) & (timed["timestamp"] <= end)]
    untimed = untimed[after(untimed["answered_at"]) & (untimed["answered_at"] <= end)]
    if not len(timed) and not len(untimed):
        return None
    out = {"model": info["name"], "version": info["version"], "aliases": info["aliases"],
           "window": {"start": _iso(start), "end": _iso(end)}, "forecasts": int(len(timed)),
           "without_timestamp": int(len(untimed)), "registered": _headline(info["metrics"]), "alerts": []}
    if recipe is not None and len(timed):
        observed = observed_target(recipe, stream_of(info), workspace, start, end + recipe.horizon,
                                   settings.observations)
        joined = join(timed, observed, recipe)
        out.update(_performance(joined, info, settings, out["alerts"]))
    else:
        out.update({"matched": 0, "pending": 0, "no_truth": int(len(timed)), "groups": [], "daily": []})
    both = pd.concat([timed, untimed])
    out["drift"] = _drift(workspace, info, recipe, both, inputs[both["_x"].to_numpy()], start, end, settings,
                          out["alerts"])
    return out


def _headline(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("f1", "roc_auc", "brier", "accuracy", "precision", "recall") if k in metrics}


def _scores(y: np.ndarray, labels: np.ndarray, proba: np.ndarray) -> dict:
    from mlpipe.steps.evaluate import classification_metrics

    if not len(y):
        return {}
    return _headline(classification_metrics(y, labels, proba))


def _performance(joined: pd.DataFrame, info: dict, settings: Settings, alerts: list) -> dict:
    matched = joined[joined["state"] == "matched"]
    y, labels, proba = (matched[c].to_numpy() for c in ("truth", "label", "probability"))
    pers = matched["persistence"].to_numpy()
    proba = np.nan_to_num(proba.astype(np.float64), nan=0.5)
    out = {"matched": int(len(matched)), "pending": int((joined["state"] == "pending").sum()),
           "no_truth": int((joined["state"] == "no truth").sum()),
           "live": _scores(y, labels, proba), "persistence": _scores(y, pers, pers.astype(np.float64))}
    out["live"]["positive_rate"] = float(labels.mean()) if len(labels) else None
    out["live"]["observed_positive_rate"] = float(y.mean()) if len(y) else None
    groups = []
    for g, part in matched.groupby("group", dropna=False, sort=True):
        yy, ll, pp, ps = (part[c].to_numpy() for c in ("truth", "label", "probability", "persistence"))
        all_rows = joined[joined["group"].fillna("") == ("" if pd.isna(g) else g)]
        groups.append({"group": None if pd.isna(g) else g, "matched": int(len(part)),
                       "pending": int((all_rows["state"] == "pending").sum()),
                       "no_truth": int((all_rows["state"] == "no truth").sum()),
                       "live": _scores(yy, ll, np.nan_to_num(pp.astype(np.float64), nan=0.5)),
                       "persistence": _scores(yy, ps, ps.astype(np.float64))})
    out["groups"] = groups
    days = matched["forecast_for"].dt.floor("D")
    out["daily"] = [{"day": d.strftime("%Y-%m-%d"), "matched": int(len(part)),
                     "f1": _f1(part["truth"].to_numpy(), part["label"].to_numpy()),
                     "persistence_f1": _f1(part["truth"].to_numpy(), part["persistence"].to_numpy())}
                    for d, part in matched.groupby(days, sort=True)]
    judged = len(matched) >= MIN_MATCHED and len(np.unique(y)) == 2
    out["judged"] = judged
    if judged:
        low, high = _f1_gap_interval(matched, days)
        out["f1_over_persistence"] = {"value": out["live"]["f1"] - out["persistence"]["f1"], "low": low, "high": high,
                                      "confidence": CONFIDENCE}
        if high < 0:
            alerts.append(f"live macro F1 {out['live']['f1']:.4f} is below persistence's "
                          f"{out['persistence']['f1']:.4f} on the same {len(matched)} forecasts "
                          f"({CONFIDENCE:.0%} interval of the difference {low:+.4f} to {high:+.4f})")
        test_f1 = info["metrics"].get("f1")
        events = int(min(y.sum(), len(y) - y.sum()))
        out["judged_against_test"] = test_f1 is not None and events >= MIN_EVENTS
        if out["judged_against_test"]:
            f1_low, f1_high = out["f1_interval"] = list(_f1_interval(matched, days))
            if f1_high < test_f1 - settings.tolerance:
                alerts.append(f"live macro F1 {out['live']['f1']:.4f} (95% interval {f1_low:.4f} to {f1_high:.4f}) is "
                              f"more than {settings.tolerance:g} below the registered test F1 {test_f1:.4f}")
    return out


def _f1(y: np.ndarray, labels: np.ndarray) -> Optional[float]:
    """A day's macro F1; a class neither observed nor forecast that day scores 1 for it (a dry day forecast
    dry throughout is perfect, not 0.5)."""
    from sklearn.metrics import f1_score

    return float(f1_score(y, labels, average="macro", labels=[0, 1], zero_division=1.0)) if len(y) else None


def _f1_interval(matched: pd.DataFrame, days: pd.Series) -> tuple[float, float]:
    """A day-block bootstrap interval of live macro F1."""
    y, codes, n_days = matched["truth"].to_numpy(), pd.factorize(days)[0], days.nunique()
    cells = np.zeros((n_days, 4))
    np.add.at(cells, (codes, 2 * y + matched["label"].to_numpy()), 1)
    f1 = _macro_f1(_resampled(n_days) @ cells)
    tail = (1 - CONFIDENCE) / 2
    return float(np.quantile(f1, tail)), float(np.quantile(f1, 1 - tail))


def _resampled(n_days: int) -> np.ndarray:
    """``BOOTSTRAP`` resamples of ``n_days`` days, as how many times each day is drawn (seeded)."""
    picks = np.random.default_rng(0).integers(0, n_days, size=(BOOTSTRAP, n_days))
    return np.stack([np.bincount(p, minlength=n_days) for p in picks])


def _f1_gap_interval(matched: pd.DataFrame, days: pd.Series) -> tuple[float, float]:
    """A day-block bootstrap interval of (live macro F1 - persistence's): days resampled whole, since rain
    comes in spells and hours of one day are not independent."""
    codes, _ = pd.factorize(days)
    n_days = codes.max() + 1
    y = matched["truth"].to_numpy()
    counts = {}
    for name, pred in (("model", matched["label"].to_numpy()), ("persistence", matched["persistence"].to_numpy())):
        cells = np.zeros((n_days, 4))
        np.add.at(cells, (codes, 2 * y + pred), 1)  # per day: tn, fp, fn, tp
        counts[name] = cells
    weights = _resampled(n_days)
    gap = _macro_f1(weights @ counts["model"]) - _macro_f1(weights @ counts["persistence"])
    tail = (1 - CONFIDENCE) / 2
    return float(np.quantile(gap, tail)), float(np.quantile(gap, 1 - tail))


def _macro_f1(cells: np.ndarray) -> np.ndarray:
    tn, fp, fn, tp = cells.T
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_pos = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        f1_neg = np.where(2 * tn + fn + fp > 0, 2 * tn / (2 * tn + fn + fp), 0.0)
    return (f1_pos + f1_neg) / 2


def _drift(workspace, info: dict, recipe, rows: pd.DataFrame, X: np.ndarray, start, end, settings: Settings,
           alerts: list) -> dict:
    """Per feature and group: the level against its season, and (several groups) the departure from the other
    groups at the same time; each with thresholds calibrated on the version's own weeks."""
    from mlpipe.monitoring import drift

    features = info["features"]
    calendar = {f"{c}_{f}" for c in (recipe.config.features.cyclic if recipe else []) for f in ("sin", "cos")}
    checked = [f for f in features if f not in calendar]
    whole = _reference(workspace, info, recipe)
    if whole is None or recipe is None:
        return {"reference": None, "features": [], "prediction": None, "calendar_skipped": sorted(calendar)}
    ts, group_col = recipe.timestamp, recipe.group
    live = pd.DataFrame(X, columns=features).assign(**{ts: rows["timestamp"].to_numpy()})
    if group_col:
        live[group_col] = rows["group"].to_numpy()
    measures = {"level": (whole, live)}
    timed = live[live[ts].notna()]
    if group_col:  # departures only at times every group was forecast for: a median of fewer is another quantity
        every = whole[group_col].nunique()
        timed = timed[timed.groupby(ts)[group_col].transform("nunique").to_numpy() == every]
    if group_col and whole[group_col].nunique() > 1 and len(timed):
        measures["departure"] = (whole[[ts, group_col]].join(drift.departures(whole, ts, group_col, checked)),
                                 timed[[ts, group_col]].join(drift.departures(timed, ts, group_col, checked)))
    thresholds = _thresholds(settings)
    out_features = []
    cache = _calibration_file(workspace, info, settings.window)
    calibration = _read_json(cache)
    known = len(calibration)
    plan = []  # (measure, group, feature, reference values of the group, its rows in season, live values)
    for measure, (ref_all, cur) in measures.items():
        times = ref_all[ts]
        in_season = drift.season_mask(times, start, end) & ~((times >= start) & (times <= end)).to_numpy()
        groups = sorted(cur[group_col].dropna().unique()) if group_col else [None]
        for g in groups:
            mine = (ref_all[group_col].astype(str).to_numpy() == g) if g is not None else np.ones(len(ref_all), bool)
            cur_g = cur[cur[group_col] == g] if g is not None else cur
            order = np.argsort(times[mine].to_numpy(), kind="stable")
            for name in checked:
                ref_values = ref_all[name].to_numpy(np.float64)
                key = f"{measure}|{g}|{name}"
                if key not in calibration:
                    calibration[key] = drift.calibrate(ref_values[mine][order], times[mine].iloc[order], settings.window)
                plan.append((measure, g, name, key, ref_values[mine & in_season], cur_g[name].to_numpy(np.float64)))
    sigmas = drift.family_sigmas([calibration[key] for *_, key, _, _ in plan])
    for measure, g, name, key, ref_values, live_values in plan:
        limits = drift.limits(calibration[key], sigmas)
        limits = {**limits, "psi": max(limits["psi"], thresholds["psi"]),
                  "wasserstein": max(limits["wasserstein"], thresholds["wasserstein"])}
        d = drift.drift(ref_values, live_values)
        flagged = len(live_values) >= MIN_DRIFT_ROWS and d.drifted(limits["psi"], limits["wasserstein"])
        out_features.append({"feature": name, "group": g, "measure": measure, "live_rows": int(len(live_values)),
                             "reference_rows": int(len(ref_values)), "psi": d.psi, "wasserstein": d.wasserstein,
                             "psi_threshold": limits["psi"], "wasserstein_threshold": limits["wasserstein"],
                             "calibration_weeks": limits["chunks"], "missing_live": d.missing_live,
                             "missing_reference": d.missing_reference, "drifted": flagged})
        if flagged:
            where = f" at {g}" if g is not None else ""
            what = "its departure from the median of the groups" if measure == "departure" else "its level"
            alerts.append(f"input drift: {name}{where}, {what} (PSI {d.psi:.2f} >= {limits['psi']:.2f}, "
                          f"Wasserstein {d.wasserstein:.2f} sd >= {limits['wasserstein']:.2f})"
                          + (f", missing {d.missing_live:.0%} vs {d.missing_reference:.0%}" if
                             d.missing_live - d.missing_reference >= drift.MISSING_RISE else ""))
    if len(calibration) > known:
        _write_json(cache, calibration)
    times = whole[ts]
    reference = whole[drift.season_mask(times, start, end) & ~((times >= start) & (times <= end)).to_numpy()]
    prediction = None
    if len(reference):
        ref_proba, ref_labels = _reference_proba(workspace, info, reference[features].to_numpy(np.float32))
        prediction = {"live_positive_rate": float(rows["label"].mean()),
                      "reference_positive_rate": float((ref_labels == 1).mean()),
                      "psi": drift.psi(ref_proba.astype(np.float64), rows["probability"].to_numpy(np.float64))}
    span = {"rows": int(len(reference)), "season_days": drift.SEASON_DAYS,
            "from": _iso(reference[ts].min()) if len(reference) else None,
            "to": _iso(reference[ts].max()) if len(reference) else None,
            "datasets": [f"{d['name']}:{d['version']}" for d in info["datasets"].values() if d.get("name")]}
    return {"reference": span, "features": out_features, "prediction": prediction, "sigmas": sigmas,
            "calendar_skipped": sorted(calendar)}


def _calibration_file(workspace, info: dict, window: pd.Timedelta):
    """Where a version's calibrated thresholds are kept: its registered rows never change, so they are computed
    once per version and window length (most of a first run's time)."""
    from mlpipe.monitoring import drift

    tag = f"{info['name']}-{info['version']}-{int(window.total_seconds())}s-{drift.SEASON_DAYS}d-weeks"
    return workspace.root / "monitoring" / "calibration" / f"{tag}.json"


def _read_json(path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        return {}  # a file cut short (a killed run): computed again


def _write_json(path, data: dict) -> None:
    import json
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _reference(workspace, info: dict, recipe) -> Optional[pd.DataFrame]:
    """The version's own rows: training, validation and test (the datasets it was registered with)."""
    parts = []
    for role in ("train", "validation", "test"):
        d = info["datasets"].get(role) or {}
        if d.get("name") and d.get("version"):
            try:
                parts.append(workspace.datasets.load(f"{d['name']}:{d['version']}"))
            except NotFoundError:
                continue  # a dataset version removed since; the others still make a reference
    if not parts:
        return None
    frame = pd.concat(parts, ignore_index=True)
    if recipe is not None:
        frame[recipe.timestamp] = pd.to_datetime(frame[recipe.timestamp], utc=True)
    return frame


def _reference_proba(workspace, info: dict, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from mlpipe.serving.model import open_model

    model = open_model(workspace, f"{info['name']}:{info['version']}")
    labels, proba = model.predict(X)
    return proba, labels


def _iso(t) -> Optional[str]:
    if t is None or pd.isna(t):
        return None
    return pd.Timestamp(t).isoformat().replace("+00:00", "Z")
