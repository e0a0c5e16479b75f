"""Forecasts from raw observations over HTTP (``POST /observations``, ``GET /forecast``) against a real server:
replayed late, out of order and partly twice, killed with SIGKILL halfway and restarted, the server's answers
are the batch path's; bad observations get 422 naming the field and store nothing; beyond loopback it needs
a token."""

from __future__ import annotations

import json
import signal
import sqlite3

import httpx
import numpy as np
import pandas as pd
import pytest

import mlpipe
from mlpipe.sources import read_source
from tests.conftest import mlpipe as cli
from tests.servers import serve


def _spec(ws, ref):
    model = mlpipe.load_model(mlpipe.Workspace(ws), ref)
    return model, json.loads(model.info["tags"]["mlpipe.feature_spec"])


def _replay_rows(source: str, spec: dict, test: pd.DataFrame) -> pd.DataFrame:
    """The raw rows of the test period and the look-back before it, in time order, without exact repeats
    and without the (group, timestamp) pairs the source gives two different values (batch scoring drops
    both, as training did; a server keeps the later one, by design)."""
    ts, group = spec["timestamp"], spec["group"]
    raw = read_source(source)
    raw["_t"] = pd.to_datetime(raw[ts], utc=True, format="ISO8601")
    start = pd.to_datetime(test[ts], utc=True).min() - pd.Timedelta(seconds=spec["lookback_s"])
    raw = raw[raw["_t"] >= start].drop_duplicates()
    raw = raw[~raw.duplicated([ts, group], keep=False)]
    return raw.sort_values(["_t", group], kind="stable").reset_index(drop=True)


def _records(frame: pd.DataFrame, columns: list[str], ts: str) -> list[dict]:
    out = frame[columns].astype(object).where(frame[columns].notna(), None)
    out[ts] = frame["_t"].map(lambda t: t.isoformat())
    return out.to_dict("records")


def _sends(raw: pd.DataFrame, per_post: int, seed: int = 0) -> list[pd.DataFrame]:
    """Posts of about an hour's rows each, shuffled within every 6-hour window, 5% of rows sent twice."""
    rng = np.random.default_rng(seed)
    again = raw.sample(frac=0.05, random_state=seed)
    rows = pd.concat([raw, again])
    window = rows["_t"].dt.floor("6h")
    rows = rows.assign(_w=window, _r=rng.random(len(rows))).sort_values(["_w", "_r"])
    return [rows.iloc[i:i + per_post] for i in range(0, len(rows), per_post)], len(again)


@pytest.mark.parametrize("which", ["nyc_workspace", "turku_workspace"])
def test_replayed_observations_give_the_batch_answers_across_a_sigkill(which, request, tmp_path):
    import shutil

    shared, prefix, source = request.getfixturevalue(which)
    ws = tmp_path / "ws"  # a copy with a store of its own: other tests' observations stay out of it
    shutil.copytree(shared, ws, ignore=shutil.ignore_patterns("observations.db*"))
    ref = f"{prefix}-lightgbm"
    model, spec = _spec(ws, ref)
    ts, group = spec["timestamp"], spec["group"]
    test = mlpipe.Workspace(ws).datasets.load(f"{prefix}-test")
    raw = _replay_rows(source, spec, test)
    columns = [c for c in [ts, group, *spec["features"], spec["target"]["column"]] if c in raw.columns]
    columns = list(dict.fromkeys(columns))

    # the batch path's answers on the same rows
    raw[columns].assign(**{ts: raw["_t"]}).to_csv(tmp_path / "raw.csv", index=False)
    proc = cli("predict", "--model", ref, "--input", str(tmp_path / "raw.csv"), "--output", str(tmp_path / "b.csv"),
               "--quiet", workspace=ws)
    assert proc.returncode == 0, proc.stderr
    batch = pd.read_csv(tmp_path / "b.csv").assign(**{ts: lambda d: pd.to_datetime(d[ts], utc=True)})
    test_times = set(pd.to_datetime(test[ts], utc=True))
    batch = batch[batch[ts].isin(test_times)].set_index([group, ts]).sort_index()
    assert len(batch) >= len(test) > 400  # test rows, and rows at test times whose truth 4 h later is unknown

    groups = raw[group].nunique()
    posts, twice = _sends(raw, per_post=groups)
    counts = {"stored": 0, "repeated": 0, "replaced": 0}
    http = httpx.Client(timeout=30)  # one client: a new one per request costs more than the request
    with serve(ws, ref, log_dir=tmp_path) as server:
        first = server

        def post(frame):
            resp = http.post(f"{server.url}/observations", json=_records(frame, columns, ts))
            assert resp.status_code == 200, resp.text
            for k, v in resp.json().items():
                counts[k] += v

        half = len(posts) // 2
        for frame in posts[:half]:
            post(frame)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        assert first.proc.returncode == -signal.SIGKILL
    with serve(ws, ref, log_dir=tmp_path) as server:
        for frame in posts[half:]:
            post(frame)
        assert counts == {"stored": len(raw), "repeated": twice, "replaced": 0}

        answers = []
        for t in sorted(test_times):
            resp = http.get(f"{server.url}/forecast", params={"at": t.isoformat()})
            assert resp.status_code == 200, resp.text
            answers += resp.json()["forecasts"]
        latest = http.get(f"{server.url}/forecast").json()
    served = pd.DataFrame(answers).assign(timestamp=lambda d: pd.to_datetime(d["timestamp"], utc=True))
    served = served.rename(columns={"group": group, "timestamp": ts}).set_index([group, ts]).sort_index()
    assert served.index.equals(batch.index)
    np.testing.assert_array_equal(served["label"].to_numpy(), batch["label"].to_numpy())
    np.testing.assert_allclose(served["probability"].to_numpy(), batch["probability"].to_numpy(), rtol=0, atol=1e-6)  # float32
    assert (pd.to_datetime(served["forecast_for"], utc=True) == pd.to_datetime(batch["forecast_for"], utc=True)).all()
    # with no time given: each group's latest observation
    assert {f["group"] for f in latest["forecasts"]} == set(raw[group])
    assert {pd.Timestamp(f["timestamp"]) for f in latest["forecasts"]} <= {raw["_t"].max(), *raw["_t"].nlargest(50)}
    assert latest["model"] == {"name": ref, "version": model.info["version"]}


@pytest.fixture(scope="module")
def fresh_nyc(nyc_workspace, tmp_path_factory):
    """A server on the NYC champion with an empty observation store of its own (a copy of the workspace)."""
    import shutil

    ws, prefix, _ = nyc_workspace
    tmp = tmp_path_factory.mktemp("fresh")
    shutil.copytree(ws, tmp / "ws", ignore=shutil.ignore_patterns("observations.db*"))
    with serve(tmp / "ws", f"{prefix}-lightgbm", log_dir=tmp) as server:
        yield server, tmp / "ws"


OBS = {"time_hour": "2013-06-01T12:00:00Z", "origin": "JFK", "temp": 70.0, "dewp": 60.0, "humid": 70.0,
       "wind_dir": 180.0, "wind_speed": 8.0, "pressure": 1012.0, "visib": 10.0, "precip": 0.0}
BAD = {"no-timestamp": {"time_hour": None}, "no-group": {"origin": None}, "absent-timestamp": {"drop": "time_hour"},
       "not-numeric": {"temp": "warm"}, "unknown-field": {"humidity": 3.0}, "unreadable-time": {"time_hour": "soon"},
       "ancient": {"time_hour": "1200-01-01T00:00Z"}, "beyond-clock-skew": {"time_hour": "2999-01-01T00:00Z"},
       "just-beyond-it": {"time_hour": "in 11 minutes"},  # the allowed skew is 10
       "control-character-group": {"origin": "JFK\n"}, "lone-surrogate-group": {"origin": "\ud800"}}


def test_a_bad_observation_gets_422_naming_the_field_and_nothing_is_stored(fresh_nyc):
    server, ws = fresh_nyc
    for case, change in BAD.items():
        good = {**OBS, "origin": "ZZZ"}
        bad = {**good, "time_hour": "2013-06-01T13:00:00Z"}
        if "drop" in change:
            del bad[change["drop"]]
        else:
            bad.update(change)
        if bad.get("time_hour") == "in 11 minutes":
            bad["time_hour"] = (pd.Timestamp.now("UTC") + pd.Timedelta("11min")).isoformat()
        resp = httpx.post(f"{server.url}/observations", content=json.dumps([good, bad]),  # \ud800 escaped
                          headers={"Content-Type": "application/json"}, timeout=30)
        assert resp.status_code == 422, (case, resp.text)
        field = next(iter(k for k in change if k != "drop"), None) or change["drop"]
        assert resp.json()["detail"][0]["loc"] == ["body", "records", 1, field], case
    # the good record of each batch was not stored either
    assert httpx.get(f"{server.url}/forecast", params={"group": "ZZZ"}, timeout=30).status_code == 404
    with sqlite3.connect(ws / "observations.db") as con:
        assert con.execute("SELECT COUNT(*) FROM mlpipe_observation_log WHERE grp = 'ZZZ'").fetchone()[0] == 0


def test_repeats_replacements_late_rows_and_missing_inputs(fresh_nyc):
    server, ws = fresh_nyc
    url = server.url
    hour = lambda h: f"2013-06-01T{h:02d}:00:00Z"  # noqa: E731
    assert httpx.post(f"{url}/observations", json={**OBS, "time_hour": hour(12)}).json() == \
        {"stored": 1, "repeated": 0, "replaced": 0}
    first = httpx.get(f"{url}/forecast", params={"group": "JFK"}).json()["forecasts"]
    assert [f["timestamp"] for f in first] == ["2013-06-01T12:00:00Z"]
    assert first[0]["forecast_for"] == "2013-06-01T16:00:00Z"
    assert "pressure_delta_1h" in first[0]["missing"] and "temp" not in first[0]["missing"]

    # the hour before arrives late: the 12:00 forecast now has its 1-hour deltas
    assert httpx.post(f"{url}/observations", json={**OBS, "time_hour": hour(11), "pressure": 1015.0}).json()["stored"] == 1
    late = httpx.get(f"{url}/forecast", params={"group": "JFK", "at": hour(12)}).json()["forecasts"][0]
    assert "pressure_delta_1h" not in late["missing"]
    assert late["probability"] != first[0]["probability"]

    # the same again: nothing changes; a corrected value replaces the stored one, and is counted
    assert httpx.post(f"{url}/observations", json={**OBS, "time_hour": hour(11), "pressure": 1015.0}).json() == \
        {"stored": 0, "repeated": 1, "replaced": 0}
    assert httpx.post(f"{url}/observations", json={**OBS, "time_hour": hour(11), "pressure": 1015.0,
                                                   "precip": 0.3}).json() == {"stored": 0, "repeated": 0, "replaced": 1}
    corrected = httpx.get(f"{url}/forecast", params={"group": "JFK", "at": hour(12)}).json()["forecasts"][0]
    assert corrected["probability"] != late["probability"]  # target_lag_1h is now 1: the new value is used

    # the log keeps every value received; the current table one per (group, timestamp)
    with sqlite3.connect(ws / "observations.db") as con:
        assert con.execute("SELECT COUNT(*) FROM mlpipe_observation_log").fetchone()[0] == 3
        assert con.execute("SELECT COUNT(*) FROM mlpipe_observations").fetchone()[0] == 2

    assert httpx.get(f"{url}/forecast", params={"group": "LGA"}).status_code == 404
    assert httpx.get(f"{url}/forecast", params={"group": "JFK", "at": hour(3)}).status_code == 404
    bad_at = httpx.get(f"{url}/forecast", params={"at": "soon"})
    assert bad_at.status_code == 422 and bad_at.json()["detail"][0]["loc"] == ["query", "at"]


def test_beyond_loopback_the_server_needs_a_token(nyc_workspace):
    ws, prefix, _ = nyc_workspace
    proc = cli("serve", "--model", f"{prefix}-lightgbm", "--host", "0.0.0.0", "--port", "0", workspace=ws,
               env={"MLPIPE_SERVE_TOKEN": ""})
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "--host 0.0.0.0" in line and "--token" in line


def test_a_model_without_history_features_keeps_predict_alone(turku_small, tmp_path):
    from tests.conftest import TURKU_CONFIG

    config = tmp_path / "plain.toml"
    config.write_text(TURKU_CONFIG.read_text().split("[features]")[0].replace('"turku"', '"plain"')
                      + "[models.svm]\nspace = { kernel = ['linear'], C = [1] }\n[models.lightgbm]\nenabled = false\n"
                      "[models.random_forest]\nenabled = false\n")
    ws = tmp_path / "ws"
    proc = cli("run", "--config", str(config), "--source", str(turku_small), "--quiet", workspace=ws)
    assert proc.returncode == 0, proc.stderr
    with serve(ws, "plain-svm", log_dir=tmp_path) as server:
        paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert "/predict" in paths and "/observations" not in paths and "/forecast" not in paths
    assert (ws / "mlflow.db").exists() and not (ws / "observations.db").exists()
