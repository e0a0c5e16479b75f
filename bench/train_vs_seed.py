"""Benchmark: the seed pipeline's own training procedure vs ``mlpipe run`` end to end, same data, one invocation.

    PYTHONPATH=src python3 bench/train_vs_seed.py            # sizes 1 and 4, writes bench/results/train_vs_seed.*
    PYTHONPATH=src python3 bench/train_vs_seed.py --size 1   # just the Turku CSV as it is

Data: the Turku CSV as it is (size 1), or tiled ``size`` times: copy k shifted by 12*k whole years (a multiple
of 4, so 29 February stays a real date and no timestamp collides), its six continuous features jittered by 1% of
their standard deviation (fixed seed) and clipped to the column's observed range, so no row repeats. The 0/1
condition columns are categories and stay as they are.

The seed's procedure ("Engineering MLOps", chapter 4, with the time split of the pipeline issue): sort by time,
last 20% = test; in the rest a random 80/20 split (random_state=1); StandardScaler; serial
GridSearchCV(SVC(), {kernel: [linear, rbf], C: [1, 10]}) with its default 5-fold CV (and its default refit);
an SVC refitted with the best parameters; RandomForestClassifier(max_depth=10, n_estimators=100, random_state=0).
Label: the CSV's ``Future_weather_condition``, as the seed used it.

mlpipe: ``mlpipe run --config configs/turku_book_label.toml`` in a fresh workspace (ingest, search, test, ONNX,
register), the same label and features, the same SVM grid and a Random Forest search; installed with the
``fast`` extra (``pip install -e '.[fast]'``), so its SVM fits run on oneDAL.

Each round then runs ``mlpipe run`` once more in the same workspace: a re-run, which reuses every fit from the
fit cache (``mlpipe.training.fitcache``) and still ingests, tests, checks each ONNX graph against scikit-learn,
measures, registers and reports. It is reported apart: the headline ratio is the first, cold run's.

Also timed, once per size: the single SVC refit on all training rows, alone (``svc_refit_floor``); and the
work the issue requires of a run and nothing else, in one fresh process (``required_work.py``), whose CPU
seconds over the machine's cores bound how fast any run on this machine could be.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mlpipe.provenance import cpu_model  # PYTHONPATH=src, as the docstring says

REPO = Path(__file__).resolve().parents[1]
CSV = os.environ.get("MLPIPE_TURKU_CSV")  # optional: another copy of the Turku CSV; default: the one mlpipe ships
CONFIG = REPO / "configs" / "turku_book_label.toml"
FEATURES = ["Temperature_C", "Humidity", "Wind_speed_kmph", "Wind_bearing_degrees", "Visibility_km",
            "Pressure_millibars", "Current_weather_condition"]
CONTINUOUS = FEATURES[:6]
LABEL = "Future_weather_condition"
YEARS_PER_COPY = 12


def tiled(size: int, seed: int = 0) -> pd.DataFrame:
    """The Turku CSV as it is (size 1) or ``size`` time-shifted, jittered copies of it."""
    from mlpipe.sources import turku_weather

    df = pd.read_csv(CSV) if CSV else turku_weather()
    if size == 1:
        return df
    rng = np.random.default_rng(seed)
    ts = pd.to_datetime(df["Timestamp"])
    std, lo, hi = df[CONTINUOUS].std(), df[CONTINUOUS].min(), df[CONTINUOUS].max()
    copies = [df]
    for k in range(1, size):
        c = df.copy()
        c["Timestamp"] = (ts + pd.DateOffset(years=YEARS_PER_COPY * k)).dt.strftime("%Y-%m-%d %H:%M:%S")
        noise = rng.normal(size=(len(c), len(CONTINUOUS))) * (0.01 * std.to_numpy())
        c[CONTINUOUS] = (c[CONTINUOUS].to_numpy() + noise).clip(lo.to_numpy(), hi.to_numpy())
        copies.append(c)
    return pd.concat(copies, ignore_index=True)


def seed_procedure(csv: Path, label: str = LABEL) -> dict:
    """The seed's training, timed from reading the CSV to the last test score; ``label``: its label column."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import f1_score
    from sklearn.model_selection import GridSearchCV, train_test_split
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    started, cpu = time.perf_counter(), time.process_time()
    df = pd.read_csv(csv)
    df = df.iloc[np.argsort(pd.to_datetime(df["Timestamp"]).to_numpy(), kind="stable")]
    n_test = int(round(0.2 * len(df)))
    train, test = df.iloc[:-n_test], df.iloc[-n_test:]
    X, y = train[FEATURES].to_numpy(), train[label].to_numpy()
    X_test, y_test = test[FEATURES].to_numpy(), test[label].to_numpy()
    X_train, _X_val, y_train, _y_val = train_test_split(X, y, test_size=0.2, random_state=1)
    scaler = StandardScaler()
    X_train = scaler.fit_transform(X_train)
    X_test = scaler.transform(X_test)
    t0 = time.perf_counter()
    grid = GridSearchCV(SVC(), {"kernel": ("linear", "rbf"), "C": [1, 10]})
    grid.fit(X_train, y_train)
    t_grid = time.perf_counter() - t0
    t0 = time.perf_counter()
    svc = SVC(**grid.best_params_).fit(X_train, y_train)
    t_svc = time.perf_counter() - t0
    t0 = time.perf_counter()
    rf = RandomForestClassifier(max_depth=10, n_estimators=100, random_state=0).fit(X_train, y_train)
    t_rf = time.perf_counter() - t0
    f1 = {"svm": f1_score(y_test, svc.predict(X_test), average="macro"),
          "random_forest": f1_score(y_test, rf.predict(X_test), average="macro")}
    return {"wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu, "train_rows": len(X_train), "test_rows": len(X_test),
            "svm_best_params": grid.best_params_, "f1": f1, "best_f1": max(f1.values()),
            "seconds": {"grid_search": t_grid, "svm_refit": t_svc, "random_forest": t_rf}}


def svc_refit_floor(csv: Path, params: dict) -> dict:
    """The one fit no pipeline can skip: an SVC with the chosen parameters on all training rows (the last 20%
    of time held out, missing values filled with the mean, standardised), timed with libsvm and, when
    installed, oneDAL in float32 as mlpipe runs it. The seed's wall time over this is the most any
    pipeline that refits an exact SVC could gain on this machine."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    df = pd.read_csv(csv)
    df = df.iloc[np.argsort(pd.to_datetime(df["Timestamp"]).to_numpy(), kind="stable")]
    train = df.iloc[:-int(round(0.2 * len(df)))]
    X = make_pipeline(SimpleImputer(), StandardScaler()).fit_transform(train[FEATURES].to_numpy(dtype=np.float64))
    y = train[LABEL].to_numpy()
    out = {"rows": len(y), "params": params}
    started = time.perf_counter()
    SVC(**params, cache_size=1000).fit(X, y)
    out["libsvm_s"] = time.perf_counter() - started
    try:
        from sklearnex.svm import SVC as OneDalSVC
    except ImportError:
        return out
    started = time.perf_counter()
    OneDalSVC(**params, cache_size=1000).fit(X.astype(np.float32), y)
    out["onedal_s"] = time.perf_counter() - started
    return out


def required_work(csv: Path) -> dict:
    """``required_work.py`` (the issue's required work alone), timed around the whole process like a run."""
    wall, cpu, stdout, _ = _timed([sys.executable, str(REPO / "bench" / "required_work.py"), str(csv)])
    return {**json.loads(stdout), "process_wall_s": wall, "process_cpu_s": cpu}


def _timed(cmd: list[str]) -> tuple[float, float, str, str]:
    """Run ``cmd`` with mlpipe's sources importable: its wall and CPU seconds (children included), stdout, stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    started, children = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[1:3])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, cpu, proc.stdout, proc.stderr


def mlpipe_run(csv: Path, workspace: Path, config: Path = CONFIG) -> dict:
    """``mlpipe run`` end to end in a fresh workspace, timed around the whole command (start-up included)."""
    wall, cpu, stdout, stderr = _timed([sys.executable, "-m", "mlpipe", "run", "--config", str(config), "--source",
                                        str(csv), "--workspace", str(workspace), "--json"])
    result = json.loads(stdout)
    f1 = {m["kind"]: m["metrics"]["f1"] for m in result["models"] if m["kind"] != "baseline"}
    learned = [m for m in result["models"] if m["kind"] != "baseline"]
    # the champion; where the gate promoted none (persistence won on validation), the best learned model there
    champion = next((m for m in learned if result["champion"] and m["name"] == result["champion"]["name"]),
                    max(learned, key=lambda m: m["validation"]["f1"]))
    steps = {m.group(2): float(m.group(3)) for m in re.finditer(r"(✓) (.+?) \((\d+\.\d+) s\)", stderr)}
    return {"wall_s": wall, "cpu_s": cpu, "f1": f1, "champion": champion["kind"],
            "best_f1": champion["metrics"]["f1"], "train_rows": result["ingest"]["train_rows"],
            "test_rows": result["ingest"]["test_rows"], "steps_s": steps, "search": _searches(workspace, result)}


def _searches(workspace: Path, result: dict) -> dict:
    """Per model: fits evaluated in the search, their summed fit time, and the chosen parameters (from MLflow)."""
    sys.path.insert(0, str(REPO / "src"))
    from mlpipe.store.workspace import Workspace

    client, out = Workspace(workspace).client, {}
    for m in result["models"]:
        if m["kind"] == "baseline":
            continue
        doc = json.loads(Path(client.download_artifacts(m["run_id"], "cv_results.json", str(workspace))).read_text())
        table = pd.DataFrame(doc["data"], columns=doc["columns"])
        out[m["kind"]] = {"evaluations": len(table), "fit_s": float(table["fit_seconds"].sum()),
                          "best": table.loc[table["best"].astype(bool), "params"].item(),
                          "fit_cache": client.get_run(m["run_id"]).data.tags.get("mlpipe.fit_cache")}
    return out


def bench(size: int, repeat: int) -> dict:
    """Seed procedure and mlpipe run, alternately ``repeat`` times on the same file; the fastest of each counts
    (the machine is shared: the minimum is the run least disturbed by others)."""
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / f"turku_x{size}.csv"
        tiled(size).to_csv(csv, index=False)
        rows = sum(1 for _ in open(csv)) - 1
        seeds, ours, reruns = [], [], []
        for i in range(repeat):
            print(f"size {size} ({rows} rows), round {i + 1}/{repeat}: seed procedure ...", file=sys.stderr, flush=True)
            seeds.append(seed_procedure(csv))
            print(f"  seed {seeds[-1]['wall_s']:.1f} s, F1 {seeds[-1]['f1']}; mlpipe run ...", file=sys.stderr, flush=True)
            ours.append(mlpipe_run(csv, Path(tmp) / f"ws{i}"))
            print(f"  mlpipe {ours[-1]['wall_s']:.1f} s, F1 {ours[-1]['f1']}; again ...", file=sys.stderr, flush=True)
            reruns.append(mlpipe_run(csv, Path(tmp) / f"ws{i}"))
            print(f"  mlpipe re-run {reruns[-1]['wall_s']:.1f} s, F1 {reruns[-1]['f1']}", file=sys.stderr, flush=True)
            _check_rerun(ours[-1], reruns[-1])
        floor = svc_refit_floor(csv, min(seeds, key=lambda r: r["wall_s"])["svm_best_params"])
        required = required_work(csv)
    seed, mine = min(seeds, key=lambda r: r["wall_s"]), min(ours, key=lambda r: r["wall_s"])
    rerun = min(reruns, key=lambda r: r["wall_s"])
    return {"size": size, "rows": rows, "seed": seed, "mlpipe": mine, "speedup": seed["wall_s"] / mine["wall_s"],
            "cpu_ratio": seed["cpu_s"] / mine["cpu_s"], "f1_margin": mine["best_f1"] - seed["best_f1"],
            "rerun": rerun, "rerun_speedup": seed["wall_s"] / rerun["wall_s"],
            "rerun_cpu_ratio": seed["cpu_s"] / rerun["cpu_s"], "svc_refit_floor": floor,
            "required_work": required,
            "all_walls": {"seed": [r["wall_s"] for r in seeds], "mlpipe": [r["wall_s"] for r in ours],
                          "mlpipe_rerun": [r["wall_s"] for r in reruns]}}


def _check_rerun(first: dict, again: dict) -> None:
    """The first run fitted every model; the re-run reused each fit, and measured the same test scores."""
    if any(v["fit_cache"] != "miss" for v in first["search"].values()) or \
            any(v["fit_cache"] != "hit" for v in again["search"].values()) or first["f1"] != again["f1"]:
        raise SystemExit(f"unexpected re-run: first {first['search']} F1 {first['f1']}, "
                         f"again {again['search']} F1 {again['f1']}")


def report(results: list[dict], command: str) -> str:
    lines = [f"# mlpipe run vs the seed's training procedure", "",
             f"- date: {dt.datetime.now().isoformat(timespec='seconds')}",
             f"- machine: {os.cpu_count()} cores (nproc), {cpu_model()}, {platform.machine()}, "
             f"Python {platform.python_version()}",
             f"- command: `{command}`", f"- mlpipe config: `{CONFIG.relative_to(REPO)}`", "",
             "| size | rows | seed wall s (CPU s) | mlpipe first run: wall s (CPU s) | speed-up: wall (CPU) | seed test macro F1 (svm / rf / best) | "
             "mlpipe test macro F1 (per model; champion) | F1 margin |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        s, m = r["seed"], r["mlpipe"]
        ours = ", ".join(f"{k} {v:.4f}" for k, v in m["f1"].items())
        lines.append(f"| {r['size']}x | {r['rows']} | {s['wall_s']:.1f} ({s['cpu_s']:.0f}) | {m['wall_s']:.1f} "
                     f"({m['cpu_s']:.0f}) | {r['speedup']:.2f}x ({r['cpu_ratio']:.2f}x) | "
                     f"{s['f1']['svm']:.4f} / {s['f1']['random_forest']:.4f} / {s['best_f1']:.4f} | "
                     f"{ours}; {m['champion']} {m['best_f1']:.4f} | {r['f1_margin']:+.4f} |")
    lines += ["", "Re-run in the same workspace: every fit reused from the fit cache; still ingested, tested, "
              "checked against ONNX, measured, registered and reported.", "",
              "| size | seed wall s (CPU s) | mlpipe re-run wall s (CPU s) | speed-up: wall (CPU) "
              "| mlpipe test macro F1 (champion) |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        s, m = r["seed"], r["rerun"]
        lines.append(f"| {r['size']}x | {s['wall_s']:.1f} ({s['cpu_s']:.0f}) | {m['wall_s']:.1f} ({m['cpu_s']:.0f}) | "
                     f"{r['rerun_speedup']:.2f}x ({r['rerun_cpu_ratio']:.2f}x) | {m['champion']} {m['best_f1']:.4f} |")
    lines += ["", "Wall seconds of every round (seed; mlpipe; mlpipe re-run): " + "; ".join(
        f"{r['size']}x {[round(w, 1) for w in r['all_walls']['seed']]} vs {[round(w, 1) for w in r['all_walls']['mlpipe']]}"
        f" vs {[round(w, 1) for w in r['all_walls']['mlpipe_rerun']]}"
        for r in results), "", "Where the time goes (the fastest round):", ""]
    for r in results:
        s, m = r["seed"], r["mlpipe"]
        lines.append(f"- {r['size']}x seed: " + ", ".join(f"{k} {v:.1f} s" for k, v in s["seconds"].items())
                     + f" (grid search on {s['train_rows']} rows; best {s['svm_best_params']})")
        lines.append(f"- {r['size']}x mlpipe: " + ", ".join(f"{k} {v:.1f} s" for k, v in m["steps_s"].items())
                     + f" ({m['train_rows']} training rows); searches: "
                     + "; ".join(f"{k} {v['evaluations']} trial evaluations, fits {v['fit_s']:.1f} s summed, "
                                 f"chose {v['best']}" for k, v in m["search"].items()))
        lines.append(f"- {r['size']}x mlpipe re-run: " + ", ".join(f"{k} {v:.1f} s" for k, v in r["rerun"]["steps_s"].items()))
    lines += ["", "The one SVC refit no pipeline can skip (the seed's chosen parameters, all training rows), alone:", ""]
    for r in results:
        f, s = r["svc_refit_floor"], r["seed"]
        engines = [("libsvm", f["libsvm_s"])] + ([("oneDAL, float32", f["onedal_s"])] if "onedal_s" in f else [])
        lines.append(f"- {r['size']}x ({f['rows']} rows, {f['params']}): " + "; ".join(
            f"{name} {t:.1f} s, so at most {s['wall_s'] / t:.1f}x for a pipeline doing nothing else"
            for name, t in engines))
    cores = os.cpu_count() or 1
    lines += ["", "The work the issue requires of a run and nothing else (`bench/required_work.py`: imports, ingest, "
              "the baseline, both searches with their refits, ONNX graphs, scikit-learn's test answers and the "
              "parity checks, then the datasets, one run per model and its version registered in MLflow and the "
              "champion alias; no lineage tags, evaluation files, plots, importance or report), in one fresh "
              f"process. No arrangement on {cores} cores can take less wall time than its CPU seconds over {cores}:",
              ""]
    for r in results:
        w, s = r["required_work"], r["seed"]
        bound = w["process_cpu_s"] / cores
        lines.append(f"- {r['size']}x: {w['process_wall_s']:.1f} s wall ({s['wall_s'] / w['process_wall_s']:.2f}x the "
                     f"seed), {w['process_cpu_s']:.1f} CPU s, so at least {bound:.1f} s on {cores} cores: at most "
                     f"{s['wall_s'] / bound:.2f}x the seed's {s['wall_s']:.1f} s; 10x would need at most "
                     f"{s['wall_s'] / 10 * cores:.1f} CPU s. Pieces (wall / CPU s): " + "; ".join(
                         f"{p['piece']} {p['wall_s']:.2f} / {p['cpu_s']:.2f}" for p in w["pieces"]))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, action="append", help="1 = the CSV as it is, 4 = book scale (default: both)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per size; the fastest of each side counts")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "train_vs_seed")
    args = parser.parse_args()
    results = [bench(size, args.repeat) for size in (args.size or [1, 4])]
    command = ("PYTHONPATH=src python3 bench/train_vs_seed.py" + "".join(f" --size {s}" for s in (args.size or []))
               + (f" --repeat {args.repeat}" if args.repeat != 1 else ""))
    text = report(results, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    meta = {"nproc": os.cpu_count(), "cpu": cpu_model(), "command": command}
    args.out.with_suffix(".json").write_text(json.dumps({**meta, "results": results}, indent=2, default=str))
    print(text)


if __name__ == "__main__":
    main()
