"""The monitoring page: one self-contained HTML file in the style of the run report (a Jinja2 template,
autoescaped; plots as base64 PNGs): what is alerting and why, performance by day beside persistence, and
drift per feature and group against the calibrated thresholds."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from importlib import resources

import numpy as np
import pandas as pd

from mlpipe.report.plots import _figure, _png

TEMPLATE = "monitor.html.j2"
SHOWN_DRIFT = 12


def render(doc: dict) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(resources.files("mlpipe.monitoring").joinpath(TEMPLATE).read_text(encoding="utf-8"))
    versions = [_version(v) for v in doc["versions"]]
    return template.render(doc=doc, versions=versions, written_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def _version(v: dict) -> dict:
    rows = sorted(v["drift"]["features"], key=lambda f: -_ratio(f))
    return {**v, "daily_png": _src(_daily(v)) if v.get("daily") else None,
            "drift_png": _src(_drift_map(v["drift"]["features"])) if v["drift"]["features"] else None,
            "drift_rows": rows[:SHOWN_DRIFT], "drift_hidden": max(0, len(rows) - SHOWN_DRIFT),
            "metric_rows": _metric_rows(v)}


def _ratio(f: dict) -> float:
    """How close a feature is to alerting: the smaller of its two statistics over their thresholds (both
    must pass for drift)."""
    return min(f["psi"] / f["psi_threshold"], f["wasserstein"] / f["wasserstein_threshold"])


def _metric_rows(v: dict) -> list[dict]:
    names = {"f1": "F1 (macro)", "roc_auc": "ROC AUC", "brier": "Brier score (lower is better)", "accuracy": "accuracy"}
    live, pers, reg = v.get("live", {}), v.get("persistence", {}), v.get("registered", {})
    return [{"name": label, "live": live.get(k), "persistence": pers.get(k) if k != "roc_auc" else None,
             "registered": reg.get(k)} for k, label in names.items()]


def _daily(v: dict) -> bytes:
    days = pd.to_datetime([d["day"] for d in v["daily"]])
    fig = _figure(7.2, 2.8)
    ax = fig.add_subplot()
    ax.plot(days, [d["f1"] for d in v["daily"]], marker="o", ms=3, lw=1.4, color="#1f77b4", label="model")
    ax.plot(days, [d["persistence_f1"] for d in v["daily"]], marker="s", ms=3, lw=1.1, color="#8c8c8c",
            label="persistence")
    if v.get("registered", {}).get("f1") is not None:
        ax.axhline(v["registered"]["f1"], color="#1f77b4", ls=":", lw=1, label="registered test F1")
    ax.set_ylabel("macro F1 per day")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=.3)
    fig.autofmt_xdate()
    return _png(fig)


def _drift_map(features: list[dict]) -> bytes:
    frame = pd.DataFrame(features)
    frame["score"] = [_ratio(f) for f in features]
    frame["where"] = frame["group"].fillna("all") + " · " + frame["measure"]
    wide = frame.pivot_table(index="feature", columns="where", values="score", aggfunc="max", sort=False)
    fig = _figure(1.6 + 0.9 * wide.shape[1], 0.8 + 0.22 * wide.shape[0])
    ax = fig.add_subplot()
    image = ax.imshow(np.minimum(wide.to_numpy(), 2.0), aspect="auto", cmap="RdYlGn_r", vmin=0, vmax=2)
    ax.set_yticks(range(wide.shape[0]), wide.index, fontsize=7)
    ax.set_xticks(range(wide.shape[1]), wide.columns, fontsize=7, rotation=30, ha="right")
    fig.colorbar(image, ax=ax, label="statistic / threshold (1 = alert)", shrink=.8)
    return _png(fig)


def _src(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
