"""``mlpipe monitor`` on forecasts a real server answered: the replayed test period's live metrics are the
registered test metrics, with no alarm; a sensor fault is flagged at its feature and station, exit 3; a
SIGKILL loses no logged forecast and writes none twice; a log that cannot be written fails no request."""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pandas as pd
import pytest

import mlpipe
from mlpipe.monitoring.log import read_log
from tests.conftest import mlpipe as cli
from tests.monitoring.conftest import REF
from tests.servers import serve

HEADLINE = ("f1", "accuracy", "precision", "recall", "roc_auc")


def _monitor(ws, *args):
    proc = cli("monitor", "--json", *args, workspace=ws)
    assert proc.returncode in (0, 3), proc.stderr
    return proc, json.loads(proc.stdout)


def test_no_logged_forecast_is_lost_or_written_twice_across_a_sigkill(clean_replay):
    r = clean_replay
    info = r["model"].info
    logged = read_log(r["ws"], REF)
    rows = logged.rows
    assert rows["id"].is_unique
    assert logged.lost == 0
    answers = r["answers"]
    assert len(rows) == len(answers) == 5213  # every answered forecast once: 1,740 hours of three stations, less gaps
    got = sorted(zip(rows["group"], rows["timestamp"].map(lambda t: t.isoformat().replace("+00:00", "Z")),
                     rows["probability"].round(7)))
    want = sorted(zip(answers["group"], answers["timestamp"], answers["probability"].round(7)))
    assert got == want
    # the logged input is what the model scored: scoring it again gives the logged probabilities
    X = logged.inputs[info["version"]][rows["_x"].to_numpy()]
    _, proba = mlpipe.predict_onnx(r["model"].onnx, X)
    np.testing.assert_allclose(proba, rows["probability"].to_numpy(), rtol=0, atol=1e-6)  # float32, batch of 1 vs all
    assert r["health"]["forecast_log"]["lost"] == 0


def test_the_replayed_test_period_gives_the_registered_test_metrics(clean_replay):
    r = clean_replay
    start = pd.to_datetime(r["test"]["time_hour"], utc=True).min().isoformat()
    proc, doc = _monitor(r["ws"], "--model", REF, "--since", start)
    assert proc.returncode == 0, proc.stderr
    [v] = doc["versions"]
    assert v["matched"] == len(r["test"]) and v["pending"] == 0
    registered = r["model"].info["metrics"]
    for k in HEADLINE:
        assert v["live"][k] == pytest.approx(registered[k], abs=1e-12), k
    assert v["live"]["brier"] == pytest.approx(registered["brier"], abs=1e-6)  # logged float32 probabilities
    # persistence on the same rows is the registered persistence baseline's test result
    baseline = mlpipe.load_model(mlpipe.Workspace(r["ws"]), "weather-baseline").info["metrics"]
    for k in ("f1", "accuracy", "precision", "recall"):
        assert v["persistence"][k] == pytest.approx(baseline[k], abs=1e-12), k
    assert v["groups"] and sum(g["matched"] for g in v["groups"]) == v["matched"]


def test_the_last_week_of_an_ordinary_replay_raises_no_alarm(clean_replay):
    proc, doc = _monitor(clean_replay["ws"])  # the default: the last 7 days
    assert proc.returncode == 0, proc.stderr
    assert doc["healthy"] and doc["alerts"] == []
    [v] = doc["versions"]
    assert v["matched"] > 400 and v["judged"]
    assert not [f for f in v["drift"]["features"] if f["drifted"]]
    measures = {f["measure"] for f in v["drift"]["features"]}
    assert measures == {"level", "departure"}
    assert "day_of_year_sin" in v["drift"]["calendar_skipped"]


def test_a_sensor_fault_is_flagged_at_its_feature_and_station_and_exits_3(fault_replay):
    proc, doc = _monitor(fault_replay["ws"])
    assert proc.returncode == 3
    line = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(line) == 1 and line[0].startswith("unhealthy: ") and "pressure at JFK" in line[0], proc.stderr
    drifted = [f for f in doc["versions"][0]["drift"]["features"] if f["drifted"]]
    assert {(f["feature"], f["group"]) for f in drifted} >= {("pressure", "JFK")}
    assert {f["group"] for f in drifted} == {"JFK"}  # the median of three stations places the fault
    assert all(f["feature"].startswith("pressure") for f in drifted)


def test_the_monitoring_page_shows_what_alerts(fault_replay, browser, tmp_path):
    ws = fault_replay["ws"]
    page_path = tmp_path / "monitor.html"
    proc = cli("monitor", "--html", str(page_path), workspace=ws)
    assert proc.returncode == 3
    page = browser.new_page()
    page.goto(page_path.as_uri())
    page.wait_for_load_state("load")
    status = page.locator("#status")
    assert "Alerting" in status.inner_text() and "pressure at JFK" in status.inner_text()
    flagged = page.locator("table.drift tr.drifted")
    assert flagged.count() >= 1 and "JFK" in flagged.first.inner_text()
    for plot in ("daily", "drift"):
        img = page.locator(f"figure[data-plot={plot}] img")
        assert img.evaluate("i => i.complete && i.naturalWidth > 300"), plot
    page.screenshot(path=str(tmp_path / "monitor.png"), full_page=True)


def test_monitor_retrains_when_unhealthy_and_the_gate_decides(fault_replay, tmp_path):
    from mlpipe.config import BUILTIN_CONFIG

    ws = tmp_path / "ws"
    shutil.copytree(fault_replay["ws"], ws)
    config = tmp_path / "nyc.toml"
    config.write_text(BUILTIN_CONFIG.read_text() + "\n[models.svm]\nenabled = false\n"
                      "[models.random_forest]\nenabled = false\n")
    proc = cli("monitor", "--json", "--retrain", str(config), workspace=ws)
    assert proc.returncode == 3, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["retrain"]["run_id"] and doc["retrain"]["reason"]
    runs = mlpipe.Workspace(ws).client.search_runs([mlpipe.Workspace(ws).experiment_id()], max_results=1000)
    assert doc["retrain"]["run_id"] in {run.info.run_id for run in runs}


def test_batch_forecasts_are_logged_and_judged_against_a_file(nyc_workspace, clean_replay, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(nyc_workspace[0], ws, ignore=shutil.ignore_patterns("observations.db*", "forecast_log"))
    raw, columns, test = clean_replay["raw"], clean_replay["columns"], clean_replay["test"]
    raw[columns].assign(time_hour=raw["_t"]).to_csv(tmp_path / "raw.csv", index=False)
    assert cli("predict", "--model", REF, "--input", str(tmp_path / "raw.csv"), "--output", str(tmp_path / "o.csv"),
               "--quiet", workspace=ws).returncode == 0
    assert len(list((ws / "forecast_log" / REF).glob("*-batch-*.parquet"))) == 1
    start = pd.to_datetime(test["time_hour"], utc=True).min().isoformat()
    proc, doc = _monitor(ws, "--since", start, "--observations", str(tmp_path / "raw.csv"))
    [v] = doc["versions"]
    assert v["matched"] == len(test)
    for k in HEADLINE:
        assert v["live"][k] == pytest.approx(clean_replay["model"].info["metrics"][k], abs=1e-12), k
    # --no-log leaves the log as it was
    assert cli("predict", "--model", REF, "--input", str(tmp_path / "raw.csv"), "--output", str(tmp_path / "p.csv"),
               "--quiet", "--no-log", workspace=ws).returncode == 0
    assert len(list((ws / "forecast_log" / REF).glob("*-batch-*.parquet"))) == 1


def test_a_log_that_cannot_be_written_fails_no_request_and_the_loss_is_counted(nyc_workspace, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(nyc_workspace[0], ws, ignore=shutil.ignore_patterns("observations.db*", "forecast_log"))
    (ws / "forecast_log").mkdir()
    (ws / "forecast_log" / REF).write_text("a file where the model's log folder should be")
    obs = {"time_hour": "2013-06-01T12:00:00Z", "origin": "JFK", "temp": 70.0, "pressure": 1012.0, "precip": 0.0}
    http = httpx.Client(timeout=30)
    with serve(ws, REF, log_dir=tmp_path) as server:
        assert http.post(f"{server.url}/observations", json=obs).status_code == 200
        for _ in range(3):
            assert http.get(f"{server.url}/forecast", params={"group": "JFK"}).status_code == 200
        health = http.get(f"{server.url}/health").json()["forecast_log"]
        assert health["lost"] == 3 and health["logged"] == 0 and REF in health["last_error"]
        (ws / "forecast_log" / REF).unlink()  # the disk is fixed: the next answer is logged, the loss noted
        assert http.get(f"{server.url}/forecast", params={"group": "JFK"}).status_code == 200
        assert http.get(f"{server.url}/health").json()["forecast_log"]["logged"] == 1
        info = mlpipe.load_model(mlpipe.Workspace(ws), REF).info
        features = info["features"]
        test = mlpipe.Workspace(ws).datasets.load("weather-test")
        X = test[features].to_numpy("float32")[:2]
        body = [{f: float(x) if np.isfinite(x) else None for f, x in zip(features, row)} for row in X]
        predicted = http.post(f"{server.url}/predict", json=body).json()["predictions"]
    assert "forecast log" in server.log_text()
    logged = read_log(ws, REF)
    assert logged.lost == 3 and len(logged.rows) == 3
    rows = logged.rows
    assert list(rows["source"]) == ["forecast", "predict", "predict"]
    assert rows["timestamp"].isna().tolist() == [False, True, True]  # /predict records carry no time
    np.testing.assert_array_equal(logged.inputs[info["version"]][rows["_x"].to_numpy()[1:]], X)
    assert rows["probability"].tolist()[1:] == pytest.approx([p["probability"] for p in predicted], abs=1e-7)


@pytest.mark.parametrize("args, named", [
    (["--since", "soon"], "--since"), (["--window", "0s"], "--window"), (["--window", "a week"], "--window"),
    (["--observations", "/nonexistent.csv"], "--observations"), (["--model", "nope"], "nope")])
def test_bad_monitor_arguments_exit_2_naming_them(nyc_workspace, args, named):
    proc = cli("monitor", *args, workspace=nyc_workspace[0])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], proc.stderr


def test_nothing_logged_is_bad_input(tmp_path, nyc_workspace):
    ws = tmp_path / "ws"
    shutil.copytree(nyc_workspace[0], ws, ignore=shutil.ignore_patterns("forecast_log"))
    proc = cli("monitor", workspace=ws)
    assert proc.returncode == 2 and "no logged forecasts" in proc.stderr
