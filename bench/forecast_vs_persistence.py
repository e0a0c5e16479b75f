"""Do the models beat "in 4 hours = now"? Validation and test figures of the persistence baseline and every
model, with and without the time-series features, on the built-in NYC weather and on the Turku data, and which
model the champion gate promoted.

    python bench/forecast_vs_persistence.py [--turku PATH] [--out bench/results/forecast_vs_persistence.md]

Each pipeline runs end to end (`mlpipe.run`) in a temporary workspace; thresholds are tuned on the training
folds only, the champion is chosen on the validation rows, and the figures are those of the registered ONNX
models.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import mlpipe
from mlpipe.config import FeaturesConfig, load_config

REPO = Path(__file__).resolve().parents[1]


def run(config, label: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as ws:
        started = time.perf_counter()
        result = mlpipe.run(config, ws)
        seconds = time.perf_counter() - started
    rows = []
    for m in result.models:
        rows.append({"data": label, "model": m.kind, "f1": m.metrics["f1"], "roc_auc": m.metrics.get("roc_auc"),
                     "val_f1": m.validation["f1"], "val_roc_auc": m.validation.get("roc_auc", float("nan")),
                     "reason": result.champion_reason,
                     "accuracy": m.metrics["accuracy"], "brier": m.metrics.get("brier"),
                     "threshold": m.params.get("decision_threshold"), "features": len(config.model_features),
                     "champion": result.champion is not None and result.champion.name == m.name,
                     "seconds": seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turku", default="builtin:turku-weather", help="the Turku data (default: the copy mlpipe ships)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "forecast_vs_persistence.md"))
    args = parser.parse_args()
    rows = []
    for name, config in (("NYC weather (built-in)", load_config()),
                         ("Turku", load_config(REPO / "configs" / "turku.toml", source=args.turku))):
        for features, cfg in (("with", config), ("without", config.model_copy(update={"features": FeaturesConfig()}))):
            rows += run(cfg, f"{name}, {features} time-series features")
    lines = [
        "# Forecasts against persistence (\"in 4 hours = now\")", "",
        f"Command: `python bench/forecast_vs_persistence.py`; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, mlpipe {mlpipe.__version__}.",
        "Test split = the last 20% of timestamps, validation = the last 15% of the timestamps before it (no fit",
        "sees it; the champion is chosen there, by the config's `[registry] select_by`: macro F1 for NYC, ROC AUC",
        "for Turku); thresholds tuned on time-ordered folds of the rest; figures computed from the registered ONNX",
        "models. Goal (NYC with features): champion test macro F1 >= baseline's and ROC AUC >= baseline's + 0.10.",
        "",
        "| data | model | features | val macro F1 | val ROC AUC | test macro F1 | test ROC AUC | test accuracy | "
        "test Brier | threshold | champion | run s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|---:|",
    ]
    for r in rows:
        thr = "" if r["threshold"] is None else f"{r['threshold']:.3f}"
        lines.append(f"| {r['data']} | {r['model']} | {r['features']} | {r['val_f1']:.4f} | {r['val_roc_auc']:.4f} | "
                     f"{r['f1']:.4f} | {r['roc_auc']:.4f} | {r['accuracy']:.4f} | {r['brier']:.4f} | {thr} | "
                     f"{'yes' if r['champion'] else ''} | {r['seconds']:.0f} |")
    lines += ["", "Goal check (champion vs baseline, same run):", ""]
    for data in dict.fromkeys(r["data"] for r in rows):
        base = next(r for r in rows if r["data"] == data and r["model"] == "baseline")
        champ = next((r for r in rows if r["data"] == data and r["champion"]), None)
        if champ is None:
            lines.append(f"- {data}: no champion: {base['reason']}")
            continue
        ok = champ["f1"] >= base["f1"] and champ["roc_auc"] >= base["roc_auc"] + 0.10
        lines.append(f"- {data}: champion {champ['model']} F1 {champ['f1']:.4f} vs {base['f1']:.4f} "
                     f"({champ['f1'] - base['f1']:+.4f}), ROC AUC {champ['roc_auc']:.4f} vs {base['roc_auc']:.4f} "
                     f"({champ['roc_auc'] - base['roc_auc']:+.4f}): {'goal met' if ok else 'goal NOT met'}; "
                     f"gate: {champ['reason']}")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
