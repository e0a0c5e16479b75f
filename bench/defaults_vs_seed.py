"""Benchmark: ``mlpipe run`` with every search and model setting left to its default, against the seed's serial
training procedure, at book scale, on the same rows and the same time-matched label (issue "Scale": the
defaults are the fast path).

    PYTHONPATH=src python3 bench/defaults_vs_seed.py

Data: the Turku rows tiled 4x (``train_vs_seed.tiled``: 77,156 rows). Label: the weather condition of the same
station 4 hours later, matched by timestamp (rows without that observation dropped), written beside the rows
as ``Condition_in_4h`` for the seed. The seed's procedure (``train_vs_seed.seed_procedure``: time split, random
80/20, StandardScaler, serial GridSearchCV of the SVC, the forest) on that column; mlpipe on
``bench/configs/turku_defaults.toml`` (data, target with ``horizon = "4h"``, registry; nothing else), which
makes the same label itself from ``Current_weather_condition``. One invocation, side by side; writes
``bench/results/defaults_vs_seed.md`` and ``.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from train_vs_seed import mlpipe_run, seed_procedure, tiled  # noqa: E402

from mlpipe.provenance import cpu_model  # noqa: E402

CONFIG = REPO / "bench" / "configs" / "turku_defaults.toml"
LABEL = "Condition_in_4h"


def labelled(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the condition of the same station 4 hours later, by timestamp; rows without it dropped (and
    duplicate timestamps of a station, whose later condition is ambiguous)."""
    ts = pd.to_datetime(df["Timestamp"])
    keyed = df.assign(_t=ts).drop_duplicates(["Location", "_t"], keep=False)
    later = keyed[["Location", "_t", "Current_weather_condition"]].rename(
        columns={"Current_weather_condition": LABEL})
    later["_t"] = later["_t"] - pd.Timedelta(hours=4)
    return keyed.merge(later, on=["Location", "_t"], how="inner").drop(columns="_t")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="mlpipe-defaults") as tmp:
        csv = Path(tmp) / "turku_x4.csv"
        data = labelled(tiled(4))
        data.to_csv(csv, index=False)
        print(f"{len(data)} rows; seed procedure ...", file=sys.stderr, flush=True)
        seed = seed_procedure(csv, LABEL)
        print(f"  seed {seed['wall_s']:.1f} s, F1 {seed['f1']}; mlpipe run ...", file=sys.stderr, flush=True)
        ours = mlpipe_run(csv, Path(tmp) / "ws", CONFIG)
        print(f"  mlpipe {ours['wall_s']:.1f} s, F1 {ours['f1']}", file=sys.stderr, flush=True)
    ratio = seed["wall_s"] / ours["wall_s"]
    margins = {k: ours["f1"][k] - seed["f1"][k] for k in ("svm", "random_forest")}
    lines = ["# mlpipe run with its defaults vs the seed's training procedure (book scale, label by timestamp)", "",
             f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
             f"- machine: {os.cpu_count()} cores (nproc), {cpu_model()}, {platform.machine()}, "
             f"Python {platform.python_version()}",
             "- command: `PYTHONPATH=src python3 bench/defaults_vs_seed.py`",
             f"- mlpipe config: `{CONFIG.relative_to(REPO)}` (data, target, registry: every search and model "
             "setting at its default)", "",
             "| rows | seed wall s (CPU s) | mlpipe wall s (CPU s) | speed-up | test macro F1 svm: seed / mlpipe | "
             "test macro F1 forest: seed / mlpipe | mlpipe champion |", "| --- | --- | --- | --- | --- | --- | --- |",
             f"| {len(data):,} | {seed['wall_s']:.1f} ({seed['cpu_s']:.0f}) | {ours['wall_s']:.1f} ({ours['cpu_s']:.0f}) "
             f"| {ratio:.2f}x | {seed['f1']['svm']:.4f} / {ours['f1']['svm']:.4f} ({margins['svm']:+.4f}) | "
             f"{seed['f1']['random_forest']:.4f} / {ours['f1']['random_forest']:.4f} "
             f"({margins['random_forest']:+.4f}) | {ours['champion']} {ours['best_f1']:.4f} |", "",
             "Where the time goes:", "",
             "- seed: " + ", ".join(f"{k} {v:.1f} s" for k, v in seed["seconds"].items())
             + f" (grid search on {seed['train_rows']} rows; best {seed['svm_best_params']})",
             "- mlpipe: " + ", ".join(f"{k} {v:.1f} s" for k, v in ours["steps_s"].items())
             + f" ({ours['train_rows']} training rows); searches: " + "; ".join(
                 f"{k} {v['evaluations']} trial evaluations, fits {v['fit_s']:.1f} s summed, chose {v['best']}"
                 for k, v in ours["search"].items())]
    out = REPO / "bench" / "results" / "defaults_vs_seed"
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"nproc": os.cpu_count(), "cpu": cpu_model(), "rows": len(data),
                                                    "seed": seed, "mlpipe": ours, "speedup": ratio,
                                                    "f1_margins": margins}, indent=2, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
