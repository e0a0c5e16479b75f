"""Serving benchmarks: in-process ONNX vs scikit-learn, the REST API over HTTP, and ``mlpipe predict``.

    python bench/serve.py [--workspace DIR] [--quick]

Needs the ``serve`` extra and two load generators from Debian (``apt-get install wrk hey``): ``hey`` sends the
fixed-rate load (it paces each client), ``wrk`` the maximum-throughput load (one C thread, so it leaves most
of the cores to the server). Without ``--workspace`` it runs the Turku pipeline on the whole Turku data into
a temporary workspace first. Writes ``bench/results/serve.json`` and ``bench/results/serve.md``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import shutil
import signal
import socket
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
BATCHES = (1, 100, 100_000)


# -- in process -----------------------------------------------------------------------------------------------
def refit_registered(ws, name: str):
    """The scikit-learn pipeline of a registered model, refitted on its registered training set with its
    registered hyperparameters (training is deterministic), and the registered ONNX bytes."""
    from mlpipe.steps import train
    from mlpipe.steps.features import make_pipeline
    from mlpipe.store.models import describe, get_version, load_model

    info = describe(get_version(ws, name))
    spec = train.KINDS[info["kind"]]
    params = {k: _literal(info["params"][k]) for k in spec.space if k in info["params"]}
    pipeline = make_pipeline(spec.make()).set_params(
        **{f"model__{k}": v for k, v in {**params, **spec.final_params}.items()})
    data = ws.datasets.load(info["datasets"]["train"]["name"] + f":{info['datasets']['train']['version']}")
    pipeline.fit(data[info["features"]].to_numpy(dtype=np.float32), data["label"].to_numpy())
    return info, pipeline, load_model(ws, f"{info['name']}:{info['version']}").onnx


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def per_call(fn, min_s: float, min_calls: int = 3) -> float:
    """Fastest seconds per call of ``fn`` (after one warm-up call). The minimum, as ``timeit`` advises: on a
    shared machine the slower calls measure the other processes, not the code."""
    fn()
    times, started = [], time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - started < min_s:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_in_process(ws, names: list[str], quick: bool) -> list[dict]:
    import warnings

    from mlpipe.steps.package import INPUT, OUTPUTS, make_session

    warnings.filterwarnings("ignore", category=FutureWarning)
    rows = []
    for name in names:
        info, pipeline, onnx = refit_registered(ws, name)
        test = ws.datasets.load(f"{info['datasets']['test']['name']}:{info['datasets']['test']['version']}")
        pool = test[info["features"]].to_numpy(dtype=np.float32)
        X_all = pool[np.random.default_rng(0).integers(0, len(pool), max(BATCHES))]
        sessions = {t: make_session(onnx, t) for t in (1, 2)}
        agreement = float(np.mean(pipeline.predict(X_all) == sessions[2].run(OUTPUTS, {INPUT: X_all})[0]))
        for n in BATCHES:
            X = X_all[:n]
            budget = 0.3 if quick else (1.5 if n < 100_000 else 3.0)
            sk = per_call(lambda: pipeline.predict(X), budget)
            sk_both = per_call(lambda: (pipeline.predict(X), pipeline.predict_proba(X)), budget)
            onnx_s = {t: per_call(lambda s=s: s.run(OUTPUTS, {INPUT: X}), budget) for t, s in sessions.items()}
            best = min(onnx_s.values())
            rows.append({"model": f"{info['name']}:{info['version']}", "kind": info["kind"], "batch": n,
                         "sklearn_predict_rows_s": n / sk, "sklearn_predict_and_proba_rows_s": n / sk_both,
                         "onnx_1_thread_rows_s": n / onnx_s[1], "onnx_2_threads_rows_s": n / onnx_s[2],
                         "speedup_vs_predict": sk / best, "speedup_vs_predict_and_proba": sk_both / best,
                         "label_agreement_100k": agreement})
            print(f"in-process {info['kind']:>13} batch {n:>6}: sklearn {n / sk:12,.0f} rows/s, "
                  f"onnx {n / best:12,.0f} rows/s ({sk / best:.1f}x)", file=sys.stderr)
    return rows


# -- over HTTP ------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``mlpipe serve`` (or uvicorn with other loop/http settings) as a subprocess on a free port."""

    def __init__(self, ws: Path, ref: str, workers: int = 1, threads: int = 1, access_log: bool = False,
                 loop: str = "auto", http: str = "auto"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        if loop == "auto" and http == "auto":
            cmd = [sys.executable, "-m", "mlpipe", "serve", "--model", ref, "--port", str(self.port),
                   "--workspace", str(ws), "--workers", str(workers), "--threads", str(threads),
                   "--access-log" if access_log else "--no-access-log"]
        else:  # the same app and settings, with uvicorn's other event loop / HTTP parser
            env["MLPIPE_SERVE_SETTINGS"] = json.dumps({"workspace": str(ws), "ref": ref, "threads": threads})
            cmd = [sys.executable, "-c", "import uvicorn; uvicorn.run('mlpipe.serving.server:worker_app', "
                   f"factory=True, port={self.port}, workers={workers}, loop={loop!r}, http={http!r}, "
                   f"access_log={access_log}, log_level='warning')"]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait()

    def _wait(self) -> None:
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    time.sleep(1.0)  # let every worker finish loading
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def body_file(tmp: Path, records: list[dict], name: str) -> Path:
    path = tmp / name
    path.write_text(json.dumps(records[0] if len(records) == 1 else records))
    return path


def wrk(url: str, body: Path, connections: int, seconds: int) -> dict:
    script = body.with_suffix(".lua")
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'local f = io.open("{body}", "rb")\nwrk.body = f:read("*all")\nf:close()\n')
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          f"{url}/predict"], capture_output=True, text=True, check=True).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"requests_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]),
            "p50_ms": _ms(re.search(r"50%\s+([\d.]+\w+)", out)[1]),
            "p99_ms": _ms(re.search(r"99%\s+([\d.]+\w+)", out)[1]),
            "non_2xx": int(non2xx[1]) if non2xx else 0, "socket_errors": errors[1] if errors else None}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def hey_fixed_rate(url: str, body: Path, rate: int, seconds: int, clients: int = 4) -> dict:
    """``rate`` requests/s in total from ``clients`` paced clients for ``seconds``."""
    out = subprocess.run(["hey", "-z", f"{seconds}s", "-c", str(clients), "-q", str(rate / clients), "-m", "POST",
                          "-T", "application/json", "-D", str(body), f"{url}/predict"],
                         capture_output=True, text=True, check=True).stdout
    pct = {int(p): float(s) * 1e3 for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", out)}
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    return {"requests_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1]), "p50_ms": pct[50],
            "p90_ms": pct[90], "p99_ms": pct[99], "status_codes": {k: int(v) for k, v in codes.items()}}


def bench_app_cost(ws, ref: str, records: list[dict], quick: bool) -> list[dict]:
    """Microseconds the app itself spends on one request (an ASGI call: no socket, no HTTP parsing, no load
    generator), fastest of many: the server's own cost, which the shared machine's noise hardly touches."""
    import asyncio

    from mlpipe.serving.server import ServeSettings, build_app

    app = build_app(ServeSettings(workspace=str(ws), ref=ref, poll_s=3600))

    async def call(path: str, body: bytes, method: str) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000), "state": {}}
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 200, sent

    async def fastest(path: str, body: bytes, method: str, calls: int) -> float:
        best = float("inf")
        for _ in range(3 if quick else 7):
            started = time.perf_counter()
            for _ in range(calls):
                await call(path, body, method)
            best = min(best, (time.perf_counter() - started) / calls)
        return best * 1e6

    async def run() -> list[dict]:
        rows = [{"request": "GET /health", "rows": 0, "us": await fastest("/health", b"", "GET", 500)}]
        for n, calls in ((1, 500), (100, 50), (1_000, 10)):
            body = json.dumps(records[0] if n == 1 else (records * (n // len(records) + 1))[:n]).encode()
            rows.append({"request": "POST /predict", "rows": n, "us": await fastest("/predict", body, "POST", calls)})
        return rows

    return asyncio.run(run())


CONFIGS = [
    ("1 worker, 1 onnxruntime thread (default)", dict()),
    ("2 workers, 1 thread each", dict(workers=2)),
    ("1 worker, 2 onnxruntime threads", dict(threads=2)),
    ("1 worker, access log on", dict(access_log=True)),
    ("1 worker, asyncio loop + h11 parser", dict(loop="asyncio", http="h11")),
]
BATCH_CONFIGS = 3
"""The batch endpoint is measured on the first three configurations (the others change per-request costs only)."""


def bench_http(ws: Path, ref: str, records: list[dict], quick: bool) -> dict:
    """Every configuration runs at once (an idle server costs nothing) and is measured in turn, round after
    round, so that the other developers' load on the shared machine falls on all of them alike."""
    tmp = Path(tempfile.mkdtemp(prefix="mlpipe-bench-"))
    one = body_file(tmp, records[:1], "one.json")
    batches = {n: body_file(tmp, (records * (n // len(records) + 1))[:n], f"batch{n}.json") for n in (1_000, 10_000)}
    seconds, fixed_s, rounds = (4, 5, 1) if quick else (10, 30, 3)
    servers = []
    try:
        for label, options in CONFIGS:
            servers.append((label, Server(ws, ref, **options)))
        default = servers[0][1]
        fixed = {"config": servers[0][0], "rate": 200, "seconds": fixed_s,
                 **hey_fixed_rate(default.url, one, 200, fixed_s)}
        print(f"http fixed 200 req/s: {fixed}", file=sys.stderr)
        runs: dict = {}
        for _ in range(rounds):
            for i, (label, server) in enumerate(servers):
                runs.setdefault(("throughput", label, 1), []).append(wrk(server.url, one, 32, seconds))
                print(f"http throughput {label}: {runs[('throughput', label, 1)][-1]}", file=sys.stderr)
                for n, path in batches.items() if i < BATCH_CONFIGS else ():
                    runs.setdefault(("batch", label, n), []).append(wrk(server.url, path, 2, seconds))
                    print(f"http batch {n} {label}: {runs[('batch', label, n)][-1]}", file=sys.stderr)
    finally:
        for _, server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    out = {"fixed_rate": fixed, "rounds": rounds, "seconds_per_run": seconds, "throughput": [], "batch": []}
    for (kind, label, n), results in runs.items():
        rates = sorted(r["requests_s"] for r in results)
        best = max(results, key=lambda r: r["requests_s"])
        row = {"config": label, "requests_s_median": statistics.median(rates), "requests_s_best": rates[-1],
               "requests_s_all": rates, "p50_ms_of_best": best["p50_ms"], "p99_ms_of_best": best["p99_ms"],
               "non_2xx": sum(r["non_2xx"] for r in results)}
        if kind == "batch":
            row.update(rows_per_request=n, rows_s_median=row["requests_s_median"] * n, rows_s_best=rates[-1] * n)
        out[kind].append(row)
    return out


# -- mlpipe predict -------------------------------------------------------------------------------------------
def bench_predict(ws: Path, ref: str, rows: int) -> dict:
    """``mlpipe predict`` on a CSV of ``rows`` rows (the Turku file repeated): rows/s and the peak memory of
    the process, against the size of the file."""
    import pandas as pd

    tmp = Path(tempfile.mkdtemp(prefix="mlpipe-bench-"))
    try:
        src = tmp / "big.csv"
        from mlpipe.sources import turku_weather

        base = turku_weather()
        with open(src, "w") as fh:
            base.head(0).to_csv(fh, index=False)
            written = 0
            while written < rows:
                chunk = base.head(rows - written)
                chunk.to_csv(fh, index=False, header=False)
                written += len(chunk)
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _MEASURED_PREDICT, str(ws), ref, str(src), str(tmp / "out.csv")],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        elapsed = time.perf_counter() - started
        peak = json.loads(proc.stdout.strip().splitlines()[-1])
        return {"rows": rows, "input_mb": src.stat().st_size / 1e6, "output_mb": (tmp / "out.csv").stat().st_size / 1e6,
                "seconds_with_startup": elapsed, "scoring_seconds": peak["seconds"], "rows_s": rows / peak["seconds"],
                "peak_rss_mb": peak["max_rss_mb"]}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_MEASURED_PREDICT = """
import json, sys, time
from pathlib import Path
from mlpipe import console
from mlpipe.store.models import get_version
from mlpipe.serving.batch import predict_file
from mlpipe.store.workspace import Workspace
console.set_quiet(True)
ws, ref, src, out = sys.argv[1:]
get_version(Workspace(ws), ref)  # imports MLflow and opens the store: start-up, not scoring
t = time.perf_counter()
predict_file(Workspace(ws), ref, Path(src), Path(out))
seconds = time.perf_counter() - t
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "max_rss_mb": peak_kb / 1024}))
"""


# -- the run --------------------------------------------------------------------------------------------------
def ensure_workspace(path: str | None) -> Path:
    if path:
        return Path(path)
    ws = Path(tempfile.mkdtemp(prefix="mlpipe-bench-ws-"))
    print(f"running the Turku pipeline (builtin:turku-weather) into {ws} …", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "mlpipe", "run", "--config", str(REPO / "configs" / "turku.toml"),
                    "--quiet", "--workspace", str(ws)], check=True, cwd=ws,
                   env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    return ws


def describe_workspace(ws, names: list[str]) -> str:
    from mlpipe.store.models import describe, get_version

    parts = []
    for name in names:
        info = describe(get_version(ws, name))
        train = info["datasets"]["train"]
        rows = ws.datasets.get(f"{train['name']}:{train['version']}").rows
        params = ", ".join(f"{k}={info['params'][k]}" for k in ("kernel", "C", "n_estimators", "max_depth")
                           if k in info["params"])
        parts.append(f"{info['name']}:{info['version']} ({params}; trained on {rows:,} rows)")
    return "the Turku pipeline (`mlpipe run --config configs/turku.toml`, the whole Turku data): " + "; ".join(parts)


def machine() -> dict:
    import fastapi
    import onnxruntime
    import sklearn
    import uvicorn

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cores": os.cpu_count(),
            "cpu": _cpu_name(), "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "scikit_learn": sklearn.__version__, "fastapi": fastapi.__version__, "uvicorn": uvicorn.__version__,
            "load_average_at_start": os.getloadavg()}


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", help="a workspace with the Turku models registered")
    parser.add_argument("--quick", action="store_true", help="short runs, to try the script (results not saved)")
    args = parser.parse_args()
    for tool in ("wrk", "hey"):
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} is not installed (apt-get install wrk hey)")
    sys.path.insert(0, str(REPO / "src"))
    from mlpipe.store.models import describe, get_version
    from mlpipe.store.workspace import Workspace

    ws = Workspace(ensure_workspace(args.workspace))
    results = {"machine": machine(), "command": " ".join(["python", "bench/serve.py", *sys.argv[1:]])}
    results["workspace"] = describe_workspace(ws, ["turku-svm", "turku-random_forest"])
    results["in_process"] = bench_in_process(ws, ["turku-svm", "turku-random_forest"], args.quick)
    champion = describe(get_version(ws, "turku-random_forest"))  # the tree model: the one with a throughput target
    test = ws.datasets.load(f"{champion['datasets']['test']['name']}:{champion['datasets']['test']['version']}")
    sub = test[champion["features"]].astype(object)
    records = sub.where(sub.notna(), None).to_dict(orient="records")
    results["http_model"] = f"{champion['name']}:{champion['version']}"
    results["app_cost"] = bench_app_cost(ws.root, results["http_model"], records, args.quick)
    print(f"app cost: {results['app_cost']}", file=sys.stderr)
    results["http"] = bench_http(ws.root, results["http_model"], records, args.quick)
    sizes = (20_000, 200_000) if args.quick else (200_000, 2_000_000)
    results["predict"] = [bench_predict(ws.root, results["http_model"], n) for n in sizes]
    print(f"mlpipe predict: {results['predict']}", file=sys.stderr)
    results["machine"]["load_average_at_end"] = os.getloadavg()
    if args.quick:
        print(json.dumps(results, indent=2))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "serve.md").write_text(report(results))
    print(f"wrote {RESULTS / 'serve.md'}", file=sys.stderr)


def report(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Serving benchmarks", "",
        f"`{r['command']}` on {m['date']}: {m['cores']} cores ({m['cpu']}), Python {m['python']}, onnxruntime "
        f"{m['onnxruntime']}, scikit-learn {m['scikit_learn']}, FastAPI {m['fastapi']}, uvicorn {m['uvicorn']}.",
        "",
        f"**Shared, noisy machine**: other developers' test runs shared these 2 cores (load average "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_start'])} at the start, "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_at_end'])} at the end), and the load generator runs on "
        "the same 2 cores as the server. Read the figures as lower bounds of what 2 free cores give.", "",
        f"Models: {r['workspace']}.", "",
        "## In process: fused ONNX graph vs the scikit-learn pipeline (same model)", "",
        "The registered model's scikit-learn pipeline, refitted on its registered training set with its registered "
        "hyperparameters, against the registered ONNX graph (imputer, scaler and model fused), on rows drawn from "
        "the registered test set. onnxruntime answers label and probabilities in one call; the speed-up is the best "
        "ONNX figure against `predict`, and against `predict` + `predict_proba` (what the API returns).", "",
        "| model | batch | sklearn predict rows/s | sklearn predict+proba rows/s | ONNX 1 thread rows/s | "
        "ONNX 2 threads rows/s | speed-up vs predict | vs predict+proba |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for x in r["in_process"]:
        lines.append(f"| {x['kind']} ({x['model']}) | {x['batch']:,} | {x['sklearn_predict_rows_s']:,.0f} | "
                     f"{x['sklearn_predict_and_proba_rows_s']:,.0f} | {x['onnx_1_thread_rows_s']:,.0f} | "
                     f"{x['onnx_2_threads_rows_s']:,.0f} | {x['speedup_vs_predict']:.1f}x | "
                     f"{x['speedup_vs_predict_and_proba']:.1f}x |")
    agreement = {x["kind"]: x["label_agreement_100k"] for x in r["in_process"]}
    lines += ["", "Label agreement, scikit-learn vs ONNX on the 100,000 rows: " +
              ", ".join(f"{k} {v:.4%}" for k, v in agreement.items()) + ".", "",
              f"## Over HTTP: `mlpipe serve --model {r['http_model']}` on 127.0.0.1", ""]
    lines += ["The app's own cost per request (an ASGI call in process: no socket, no HTTP parsing, no load "
              "generator; fastest of 7 runs), i.e. what one core can serve at most, before uvicorn's share:", "",
              "| request | rows | µs per request | requests/s per core at most |", "| --- | ---: | ---: | ---: |"]
    for x in r["app_cost"]:
        lines.append(f"| {x['request']} | {x['rows']:,} | {x['us']:,.0f} | {1e6 / x['us']:,.0f} |")
    lines.append("")
    f = r["http"]["fixed_rate"]
    lines += [f"Single records at a fixed {f['rate']} requests/s for {f['seconds']} s (`hey -z {f['seconds']}s -c 4 "
              f"-q {f['rate'] // 4}`), {f['config']}: **p50 {f['p50_ms']:.2f} ms, p90 {f['p90_ms']:.2f} ms, p99 "
              f"{f['p99_ms']:.2f} ms** ({f['requests_s']:.0f} requests/s achieved; status codes "
              f"{f['status_codes']}).", "",
              f"Single records, 32 concurrent connections (`wrk -t1 -c32 -d{r['http']['seconds_per_run']}s`), "
              f"{r['http']['rounds']} rounds with the configurations interleaved (all servers up, measured in turn):",
              "", "| configuration | requests/s, median | best | all rounds | p50 / p99 ms (best round) | non-2xx |",
              "| --- | ---: | ---: | --- | ---: | ---: |"]
    for x in r["http"]["throughput"]:
        lines.append(f"| {x['config']} | {x['requests_s_median']:,.0f} | {x['requests_s_best']:,.0f} | "
                     f"{', '.join(f'{v:,.0f}' for v in x['requests_s_all'])} | {x['p50_ms_of_best']:.1f} / "
                     f"{x['p99_ms_of_best']:.1f} | {x['non_2xx']} |")
    lines += ["", "Batches through `POST /predict` (`wrk -t1 -c2`, a list of records per request):", "",
              "| configuration | rows/request | rows/s, median | best | p50 ms (best round) |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for x in r["http"]["batch"]:
        lines.append(f"| {x['config']} | {x['rows_per_request']:,} | {x['rows_s_median']:,.0f} | "
                     f"{x['rows_s_best']:,.0f} | {x['p50_ms_of_best']:.1f} |")
    lines += ["", f"## `mlpipe predict` (CSV in, CSV out), model {r['http_model']}", "",
              "The Turku file repeated to the size given. Peak memory is the whole process's (Python, MLflow, "
              "onnxruntime and pyarrow included), from `VmHWM`; start-up (imports, opening the store) is not in "
              "the scoring time.", "",
              "| rows | CSV in MB | rows/s (scoring) | seconds (with start-up) | peak RSS MB |",
              "| ---: | ---: | ---: | ---: | ---: |"]
    for p in r["predict"]:
        lines.append(f"| {p['rows']:,} | {p['input_mb']:.0f} | {p['rows_s']:,.0f} | {p['seconds_with_startup']:.1f} | "
                     f"{p['peak_rss_mb']:.0f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
