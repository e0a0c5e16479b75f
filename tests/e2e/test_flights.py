"""The flight-delay problem end to end from its shipped config (``configs/flights.toml``): 336,776 real flights
with text categories (carrier, origin, dest: the one-hot and the ordinal path), independent rows split by time,
the class-prior baseline, each kind trained by its size plan (the SVM off in this config); then the champion served over HTTP with string
fields and scored in batch, both reproducing the registered test metrics."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest

from mlpipe.steps.evaluate import classification_metrics
from mlpipe.store.workspace import Workspace
from tests.conftest import REPO, mlpipe
from tests.servers import records, serve

pytestmark = pytest.mark.e2e

CONFIG = REPO / "configs" / "flights.toml"
LABEL_METRICS = ("accuracy", "precision", "recall", "f1", "f1_0", "f1_1")


@pytest.fixture(scope="module")
def flights(tmp_path_factory):
    ws = tmp_path_factory.mktemp("flights") / "ws"
    proc = mlpipe("run", "--config", str(CONFIG), "--json", workspace=ws, check=True, timeout=1200)
    result = json.loads(proc.stdout)
    info = json.loads(mlpipe("models", "show", "flights-lightgbm@champion", "--json", workspace=ws,
                             check=True).stdout)
    test = Workspace(ws).datasets.load(f"{info['datasets']['test']['name']}:{info['datasets']['test']['version']}")
    return ws, result, info, proc.stderr, test


def test_the_run_trains_every_kind_by_its_size_plan(flights):
    ws, result, info, stderr, test = flights
    # 223,405 training rows: above the halving size and the search's sample size; LightGBM's final fit on all
    assert ("lightgbm: halving search on samples of 100,000 rows per fold fit; final fit on all 223,405 rows"
            in stderr)
    assert info["tags"]["param.plan"].startswith("halving search on samples of 100,000 rows")
    kinds = {m["kind"]: m for m in result["models"]}
    assert set(kinds) == {"baseline", "random_forest", "lightgbm"}
    baseline = kinds["baseline"]["metrics"]
    assert baseline["f1"] == pytest.approx(0.5 * 2 * (1 - test["label"].mean()) / (2 - test["label"].mean()))
    for kind in ("random_forest", "lightgbm"):  # every model beside the class prior
        assert kinds[kind]["metrics"]["f1"] > baseline["f1"], kind
    assert info["categorical"] == ["carrier", "origin", "dest"]
    assert len(info["categories"]["origin"]) == 3 and len(info["categories"]["dest"]) > 25  # ordinal path
    assert len(test) == 65_322


def test_served_with_string_fields_it_reproduces_the_registered_test_metrics(flights, tmp_path):
    ws, _, info, _, test = flights
    fields = info["features"] + info["categorical"]
    body = records(test, fields)
    with serve(ws, "flights-lightgbm@champion", "--no-log-forecasts", log_dir=tmp_path) as server:
        labels, proba = [], []
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for i in range(0, len(body), 2000):
                r = client.post("/predict", json=body[i:i + 2000])
                assert r.status_code == 200, r.text
                labels += [p["label"] for p in r.json()["predictions"]]
                proba += [p["probability"] for p in r.json()["predictions"]]
            unseen = dict(body[0], carrier="ZZ", dest="Atlantis", origin=None)  # never seen, and missing
            r = client.post("/predict", json=unseen)
            assert r.status_code == 200 and 0 <= r.json()["predictions"][0]["probability"] <= 1, r.text
            schema = client.get("/openapi.json").json()["components"]["schemas"]["Record"]["properties"]
            assert schema["origin"]["examples"] == ["EWR", "JFK", "LGA"]
            r = client.post("/predict", json=dict(body[0], carrier=True))
            assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "record", "carrier"]
    metrics = classification_metrics(test["label"].to_numpy(), np.array(labels), np.array(proba))
    for key in LABEL_METRICS:
        assert metrics[key] == pytest.approx(info["metrics"][key], abs=1e-12), key
    assert metrics["roc_auc"] == pytest.approx(info["metrics"]["roc_auc"], abs=1e-6)


def test_batch_scoring_reproduces_the_registered_test_metrics(flights, tmp_path):
    ws, _, info, _, test = flights
    path = tmp_path / "test.csv"
    test[info["features"] + info["categorical"] + ["label"]].to_csv(path, index=False)
    mlpipe("predict", "--model", "flights-lightgbm@champion", "--input", str(path), "--output",
           str(tmp_path / "scored.csv"), workspace=ws, check=True)
    scored = pd.read_csv(tmp_path / "scored.csv", keep_default_na=False)
    assert (scored["dest"] == test["dest"].to_numpy()).all()
    metrics = classification_metrics(scored["input_label"].to_numpy(), scored["label"].to_numpy(),
                                     scored["probability"].to_numpy())
    for key in LABEL_METRICS:
        assert metrics[key] == pytest.approx(info["metrics"][key], abs=1e-12), key


def test_the_report_names_the_categories_and_the_class_prior(flights):
    ws, result, _, _, _ = flights
    html = (ws / "reports" / f"{result['run_id']}.html").read_text()
    assert "categorical features" in html and "carrier, origin, dest" in html
    assert "class-prior baseline" in html and "later = now" not in html
