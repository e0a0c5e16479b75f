"""What logging a forecast costs a request: ``ForecastLog.write`` (the whole of what a served request adds:
encode the line, one ``write`` to the day's file) for the shapes the server writes, against what the same
process takes to score those rows with the built-in champion's ONNX graph, measured in one run.

    python bench/forecast_log.py [--workspace DIR]

Without ``--workspace`` it first runs the built-in pipeline into a temporary workspace. Writes
``bench/results/forecast_log.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def timed(fn, repeat: int) -> float:
    """Median microseconds of ``fn()`` over ``repeat`` calls (after 20 warm-up calls)."""
    for _ in range(20):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return statistics.median(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace")
    parser.add_argument("--model", default="weather-lightgbm@champion")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlpipe-log-"))
    ws_dir = Path(args.workspace) if args.workspace else tmp / "ws"
    if not args.workspace:
        subprocess.run([sys.executable, "-m", "mlpipe", "run", "--workspace", str(ws_dir), "--quiet"], check=True)
    import mlpipe
    from mlpipe.monitoring.log import ForecastLog
    from mlpipe.serving.model import open_model

    model = open_model(mlpipe.Workspace(ws_dir), args.model)
    test = mlpipe.Workspace(ws_dir).datasets.load("weather-test")
    log = ForecastLog(tmp / "forecast_log")
    rows = []
    for n, what, repeat in ((1, "GET /forecast?group= (one station)", 3000), (3, "GET /forecast (three stations)", 3000),
                            (1000, "POST /predict, 1,000 records", 300)):
        X = test[model.features].to_numpy(np.float32)[:n]
        labels, proba = model.predict(X)
        groups = ["JFK"] * n if n <= 3 else None
        times = ["2013-12-30T22:00:00Z"] * n if n <= 3 else None
        after = ["2013-12-31T02:00:00Z"] * n if n <= 3 else None
        write = timed(lambda: log.write(model.name, model.version, "forecast", labels, proba, X, groups, times, after),
                      repeat)
        score = timed(lambda: model.predict(X), repeat)
        rows.append((what, n, write, score))
    log.close()
    when = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = ["# The forecast log: what it adds to a request", "",
             f"Command: `python bench/forecast_log.py`; {when}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}. Medians in one process; the log on "
             f"the local disk (page cache: the line survives a killed server, as the tests check).", "",
             "| request shape | rows | log write µs | ONNX scoring µs | write / scoring |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {w} | {n:,} | {a:.1f} | {b:.1f} | {a / b:.2f} |" for w, n, a, b in rows]
    latency = RESULTS / "forecast_latency.json"
    if latency.exists():
        import json

        p50_us = json.loads(latency.read_text())["get"]["p50"] * 1e3
        lines += ["", f"For scale: GET /forecast?group= over HTTP has a p50 of {p50_us / 1e3:.2f} ms "
                      f"(`bench/results/forecast_latency.md`); one station's log line is {rows[0][2] / p50_us:.2%} of it."]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "forecast_log.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
