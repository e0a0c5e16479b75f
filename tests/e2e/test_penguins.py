"""Penguins end to end from the shipped config (``configs/penguins.toml``): three species, no timestamp (a split
stratified by class, stratified CV folds), a category with missing values (sex); every model kind beside the
class prior; the champion served over HTTP (classes by name, a probability per class) and scored in batch, both
reproducing the registered test metrics; the report's per-class table and 3 x 3 confusion matrices."""

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

CONFIG = REPO / "configs" / "penguins.toml"
CLASSES = ["Adelie", "Chinstrap", "Gentoo"]


@pytest.fixture(scope="module")
def penguins(tmp_path_factory):
    ws = tmp_path_factory.mktemp("penguins") / "ws"
    result = json.loads(mlpipe("run", "--config", str(CONFIG), "--json", workspace=ws, check=True).stdout)
    champion = result["champion"]
    info = json.loads(mlpipe("models", "show", f"{champion['name']}@champion", "--json", workspace=ws,
                             check=True).stdout)
    datasets = Workspace(ws).datasets
    splits = {role: datasets.load(f"{d['name']}:{d['version']}") for role, d in result["datasets"].items()}
    return ws, result, info, splits


def test_three_classes_split_by_class_and_every_kind_beside_the_class_prior(penguins):
    ws, result, info, splits = penguins
    assert info["classes"] == CLASSES and info["categorical"] == ["island", "sex"]
    assert "" in info["categories"]["sex"]  # the missing sex is a category learned from the training rows
    whole = splits["processed"]["label"].value_counts(normalize=True).sort_index()
    for role in ("train", "validation", "test"):  # stratified: each split holds the classes in their shares
        shares = splits[role]["label"].value_counts(normalize=True).sort_index()
        assert list(shares.index) == [0, 1, 2]
        assert np.abs(shares.to_numpy() - whole.to_numpy()).max() < 0.03, role
    assert len(splits["test"]) == 69 and len(splits["validation"]) == 55
    kinds = {m["kind"]: m for m in result["models"]}
    assert set(kinds) == {"baseline", "svm", "random_forest", "lightgbm"}
    prior = kinds["baseline"]["metrics"]
    assert prior["accuracy"] == pytest.approx((splits["test"]["label"] == 0).mean())  # always the majority
    for kind in ("svm", "random_forest", "lightgbm"):
        m = kinds[kind]["metrics"]
        assert m["f1"] > prior["f1"] + 0.5, kind
        assert {"f1_0", "f1_1", "f1_2", "precision_2", "recall_2", "roc_auc", "brier"} <= set(m), kind
        assert np.asarray(kinds[kind]["confusion_matrix"]).shape == (3, 3)


def test_served_by_name_it_reproduces_the_registered_test_metrics(penguins, tmp_path):
    ws, _, info, splits = penguins
    test = splits["test"]
    body = records(test, info["features"] + info["categorical"])
    with serve(ws, f"{info['name']}@champion", "--no-log-forecasts", log_dir=tmp_path) as server:
        r = httpx.post(f"{server.url}/predict", json=body, timeout=60)
        assert r.status_code == 200, r.text
        answers = r.json()["predictions"]
        odd = dict(body[0], island="Atlantis", sex=None)  # an island never seen, a sex not recorded
        r = httpx.post(f"{server.url}/predict", json=odd, timeout=60)
        assert r.status_code == 200 and r.json()["predictions"][0]["label"] in CLASSES, r.text
    labels = np.array([CLASSES.index(a["label"]) for a in answers])
    proba = np.array([[a["probabilities"][c] for c in CLASSES] for a in answers])
    assert all(a["probability"] == a["probabilities"][a["label"]] for a in answers)
    metrics = classification_metrics(test["label"].to_numpy(), labels, proba)
    for key in ("accuracy", "precision", "recall", "f1", "f1_0", "f1_1", "f1_2"):
        assert metrics[key] == pytest.approx(info["metrics"][key], abs=1e-12), key
    assert metrics["roc_auc"] == pytest.approx(info["metrics"]["roc_auc"], abs=1e-6)


def test_batch_scoring_names_the_classes_and_reproduces_the_registered_metrics(penguins, tmp_path):
    ws, _, info, splits = penguins
    test = splits["test"]
    path = tmp_path / "test.csv"
    test[info["features"] + info["categorical"] + ["label"]].to_csv(path, index=False)
    mlpipe("predict", "--model", f"{info['name']}@champion", "--input", str(path), "--output",
           str(tmp_path / "scored.csv"), workspace=ws, check=True)
    scored = pd.read_csv(tmp_path / "scored.csv", keep_default_na=False)
    assert set(scored["label"]) <= set(CLASSES)
    labels = scored["label"].map(CLASSES.index).to_numpy()
    proba = scored[[f"probability_{c}" for c in CLASSES]].to_numpy()
    metrics = classification_metrics(scored["input_label"].to_numpy(), labels, proba)
    for key in ("accuracy", "f1", "f1_0", "f1_1", "f1_2"):
        assert metrics[key] == pytest.approx(info["metrics"][key], abs=1e-12), key


def test_the_report_shows_each_class(penguins):
    ws, result, _, _ = penguins
    html = (ws / "reports" / f"{result['run_id']}.html").read_text()
    assert 'id="per-class"' in html and html.count("<td>Chinstrap</td>") == 4  # a row per model
    assert "stratified by class" in html and "time-ordered" not in html
    assert 'data-plot="roc"' not in html  # binary curves are not drawn for three classes


def test_mlflow_loads_and_evaluates_the_champion(penguins):
    """MLflow's own tools on mlpipe's champion: ``mlflow.pyfunc.load_model`` answers mlpipe's columns (classes
    by name), and ``mlflow.models.evaluate`` on the registered test rows gives the registered macro F1."""
    import mlflow
    from mlflow.models import make_metric
    from sklearn.metrics import f1_score

    ws, _, info, splits = penguins
    test = splits["test"]
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(f"sqlite:///{ws / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{ws / 'mlflow.db'}")  # MLflow keeps a registry URI once resolved
    try:
        model = mlflow.pyfunc.load_model(f"models:/{info['name']}@champion")
        answers = model.predict(test[info["features"] + info["categorical"]])
        assert list(answers.columns) == ["label", "probability", *(f"probability_{c}" for c in CLASSES)]
        labels = answers["label"].map(CLASSES.index).to_numpy()
        metrics = classification_metrics(test["label"].to_numpy(), labels, answers.iloc[:, 2:].to_numpy())
        for key in ("accuracy", "f1", "f1_0", "f1_1", "f1_2"):
            assert metrics[key] == pytest.approx(info["metrics"][key], abs=1e-12), key

        def macro_f1(predictions, targets, metrics):  # noqa: ARG001 -- MLflow's metric signature
            return f1_score(targets, predictions, average="macro")

        data = test[info["features"] + info["categorical"]].assign(species=[CLASSES[i] for i in test["label"]])
        with mlflow.start_run(run_name="evaluate the champion"):
            result = mlflow.models.evaluate(
                f"models:/{info['name']}@champion", data, targets="species", predictions="label", model_type=None,
                extra_metrics=[make_metric(eval_fn=macro_f1, greater_is_better=True, name="macro_f1")])
        assert result.metrics["macro_f1"] == pytest.approx(info["metrics"]["f1"], abs=1e-12)
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])
