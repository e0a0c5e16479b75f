"""Benchmark: ``mlpipe run`` as the data grows, from 0.3 M to 10 M rows (issue "Scale").

    PYTHONPATH=src python3 bench/scale.py                       # 16, 52, 156 and 520 stations
    PYTHONPATH=src python3 bench/scale.py --stations 16 52      # some of them

Data: the Turku rows as a network of stations (``bench/stations.py``: station k a jittered copy, same
timestamps), written as Parquet in a temporary folder. Config: ``configs/turku.toml`` as it ships (its time-series
features; every search and model setting left to mlpipe's defaults), ``--source`` the stations' file.
Each size: one ``mlpipe run`` end to end in a fresh workspace (ingest, features, every enabled model searched,
tested, packaged, parity-checked on every test row, registered, reported), timed around the whole command;
peak memory is the largest proportional set size (PSS) of the run and all its child processes together
(sampled every 0.2 s from /proc; shared pages counted once); per step, the run's own step lines. Writes ``bench/results/scale.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from stations import write_stations  # noqa: E402

from mlpipe.provenance import cpu_model  # noqa: E402  (PYTHONPATH=src, as the docstring says)

CONFIG = REPO / "configs" / "turku.toml"
STEP = re.compile(r"✓ (.+?) \((\d+\.\d+) s\)")


def _tree_pss(pid: int) -> dict[str, int]:
    """Proportional set size of ``pid`` and every process below it (Linux: /proc), each shared page counted
    once over the processes that share it (resident memory summed would count it in each): by role, the run
    itself (``run``), its training worker (``worker``, its child) and the processes below that (``search``)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parent[int(entry)] = int(fields["PPid"])
    role, frontier = {pid: "run"}, [pid]
    while frontier:
        below = [p for p, pp in parent.items() if pp in frontier and p not in role]
        for p in below:
            role[p] = "worker" if parent[p] == pid else "search"
        frontier = below
    out = {"run": 0, "worker": 0, "search": 0}
    for p, r in role.items():
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    out[r] += int(line.split()[1]) * 1024
        except OSError:
            pass
    return out


def run_once(source: Path, workspace: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "mlpipe", "run", "--config", str(CONFIG), "--source", str(source),
           "--workspace", str(workspace), "--json"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak, done = {"total": 0}, threading.Event()

    def sample() -> None:
        while not done.is_set():
            by_role = _tree_pss(proc.pid)
            if sum(by_role.values()) > peak["total"]:
                peak.update(total=sum(by_role.values()), at_s=time.perf_counter() - started, **by_role)
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"mlpipe run failed ({proc.returncode}) on {source}:\n{stderr[-4000:]}")
    result = json.loads(stdout)
    plans = dict(re.findall(r"· (svm|random_forest|lightgbm): (\w+ search .+)", stderr))
    return {"wall_s": wall, "peak_pss_gb": peak["total"] / 2**30,
            "peak": {k: v / 2**30 if k != "at_s" else v for k, v in peak.items() if k != "total"}, "steps_s": {m[1]: float(m[2]) for m in STEP.finditer(stderr)},
            "rows_read": result["ingest"]["rows_read"], "train_rows": result["ingest"]["train_rows"],
            "test_rows": result["ingest"]["test_rows"], "plans": plans,
            "f1": {m["kind"]: m["metrics"]["f1"] for m in result["models"]},
            "champion": result["champion"] and result["champion"]["name"]}


def report(results: list[dict], command: str) -> str:
    lines = ["# mlpipe run as the data grows", "",
             f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
             f"- machine: {os.cpu_count()} cores (nproc), {cpu_model()}, {platform.machine()}, "
             f"Python {platform.python_version()}, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
             f"- command: `{command}`", f"- config: `{CONFIG.relative_to(REPO)}` (as shipped: default models and searches), data: `bench/stations.py`",
             "", "| stations | rows | training rows | wall s | peak memory GB (PSS) | test macro F1 (per model) | champion |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        f1 = ", ".join(f"{k} {v:.4f}" for k, v in r["f1"].items())
        lines.append(f"| {r['stations']} | {r['rows_read']:,} | {r['train_rows']:,} | {r['wall_s']:.1f} | "
                     f"{r['peak_pss_gb']:.2f} | {f1} | {r['champion']} |")
    steps = list(dict.fromkeys(s for r in results for s in r["steps_s"]))
    lines += ["", "Per step (seconds, the run's own step lines; steps overlap, so they do not add up to the wall "
              "time):", "", "| rows | " + " | ".join(steps) + " |", "| --- |" + " --- |" * len(steps)]
    for r in results:
        lines.append(f"| {r['rows_read']:,} | " + " | ".join(f"{r['steps_s'].get(s, float('nan')):.1f}" for s in steps) + " |")
    by_rows = {r["rows_read"]: r for r in results}
    small = [r for r in results if 900_000 <= r["rows_read"] <= 1_100_000]
    large = [r for r in results if r["rows_read"] >= 9_000_000]
    if small and large:
        a, b = small[0], large[0]
        lines += ["", f"Cost from {a['rows_read']:,} to {b['rows_read']:,} rows ({b['rows_read'] / a['rows_read']:.1f}x "
                  f"the rows): {b['wall_s'] / a['wall_s']:.2f}x the wall time; per step: " + ", ".join(
                      f"{s} {b['steps_s'][s] / a['steps_s'][s]:.1f}x" for s in steps
                      if a["steps_s"].get(s) and b["steps_s"].get(s))]
    lines += ["", "Where the peak memory was (GB PSS, by process; seconds after the run started):", ""]
    for r in results:
        p = r["peak"]
        lines.append(f"- {r['rows_read']:,} rows: {r['peak_pss_gb']:.2f} GB at {p['at_s']:.0f} s: the run's own "
                     f"process {p['run']:.2f}, the training worker {p['worker']:.2f}, search processes {p['search']:.2f}")
    lines += ["", "Plans the run printed (largest size):", ""]
    last = max(by_rows.values(), key=lambda r: r["rows_read"])
    lines += [f"- {k}: {v}" for k, v in last["plans"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, nargs="+", default=[16, 52, 156, 520])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale")
    args = parser.parse_args()
    command = "PYTHONPATH=src python3 bench/scale.py" + (
        f" --stations {' '.join(map(str, args.stations))}" if args.stations != [16, 52, 156, 520] else "")
    results = []
    with tempfile.TemporaryDirectory(prefix="mlpipe-scale") as tmp:
        for n in args.stations:
            source = Path(tmp) / f"stations-{n}.parquet"
            write_stations(n, source)
            print(f"{n} stations: mlpipe run ...", file=sys.stderr, flush=True)
            r = {"stations": n, **run_once(source, Path(tmp) / f"ws-{n}")}
            print(f"  {r['rows_read']:,} rows: {r['wall_s']:.1f} s, peak {r['peak_pss_gb']:.2f} GB, steps {r['steps_s']}",
                  file=sys.stderr, flush=True)
            results.append(r)
            source.unlink()
            args.out.parent.mkdir(parents=True, exist_ok=True)  # written after every size: a long run keeps its part
            text = report(results, command)
            args.out.with_suffix(".md").write_text(text)
            args.out.with_suffix(".json").write_text(json.dumps(
                {"nproc": os.cpu_count(), "cpu": cpu_model(), "command": command, "results": results}, indent=2))
    print(text)


if __name__ == "__main__":
    main()
