"""Categorical columns: read as text, encoded inside the ONNX graph (one-hot or ordinal by cardinality), unseen
and missing categories answered; independent rows (``data.series = false``) and their class-prior baseline."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from mlpipe.config import Config
from mlpipe.errors import DataError
from mlpipe.featurize import MISSING_CATEGORY, category_text, feature_matrix
from mlpipe.graph import CATEGORIES, INPUT, OUTPUTS
from mlpipe.steps import ingest, package
from mlpipe.steps.features import known_categories
from mlpipe.steps.threshold import labels_and_proba
from mlpipe.steps.train import Prior, train_baseline, train_model

ROWS = 3000


def _config(**models) -> Config:
    return Config.model_validate({
        "data": {"source": "unused.csv", "timestamp": "t", "series": False, "features": ["x", "y"],
                 "categorical": ["colour", "city"], "onehot_max": 5, "ranges": {"x": [-50.0, 50.0]}},
        "target": {"column": "late", "above": 0.5, "horizon": "0h"},
        "split": {"cv_folds": 3},
        "models": {k: {"space": v} for k, v in models.items()},
    })


def _rows(seed: int = 0, n: int = ROWS) -> pd.DataFrame:
    """Flight-like rows: the chance of a late one depends on a few-valued category (colour), on one of many
    (city, 40 values: the ordinal path) and on x; some categories missing."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue", None], n, p=[0.4, 0.3, 0.2, 0.1])
    city = rng.choice([f"c{i:02d}" for i in range(40)], n)
    x = rng.normal(size=n)
    x[rng.random(n) < 0.05] = np.nan
    logit = 1.5 * (colour == "red") - (colour == None) + (np.array([int(c[1:]) for c in city]) % 4 - 1.5) \
        + np.nan_to_num(x)  # noqa: E711
    late = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return pd.DataFrame({"t": pd.date_range("2013-01-01", periods=n, freq="10min", tz="UTC"), "x": x,
                         "y": rng.normal(size=n), "colour": colour, "city": city, "late": late})


def _ingested(config: Config, df: pd.DataFrame):
    clean, report = ingest.prepare(df, config, "rows.csv")
    return ingest.label_and_split(clean, config, report, "rows.csv")


def test_category_text_reads_codes_as_text_and_refuses_measurements():
    assert category_text(pd.Series([3, 4, None]), "f.csv", "code").tolist() == ["3", "4", MISSING_CATEGORY]
    assert category_text(pd.Series([3.0, np.nan]), "f.csv", "code").tolist() == ["3", MISSING_CATEGORY]
    assert category_text(pd.Series(["UA", None, 7], dtype=object), "f.csv", "c").tolist() == ["UA", "", "7"]
    # text of codes (a CSV read as text when scoring) reads as pandas reads the training CSV: 3.0 and 03 as 3
    assert category_text(pd.Series(["3.0", "03", "3", "x3"]), "f.csv", "c").tolist() == ["3", "3", "3", "x3"]
    with pytest.raises(DataError, match=r"f.csv: column 'temp' is declared categorical .* \(first: 39.5\)"):
        category_text(pd.Series([1.0, 39.5]), "f.csv", "temp")


@pytest.mark.parametrize("kind", ["lightgbm", "random_forest", "svm"])
def test_the_graph_encodes_categories_and_answers_unseen_and_missing_ones(kind):
    """Every kind: inputs float32 ``input`` and string ``categories``; the ONNX answers equal scikit-learn's on
    held-out rows, and on rows whose categories were never seen or are missing."""
    spaces = {"lightgbm": {"num_leaves": [7]}, "random_forest": {"max_depth": [6]}, "svm": {"C": [1.0],
                                                                                            "kernel": ["rbf"]}}
    config = _config(**{kind: spaces[kind]})
    data = _ingested(config, _rows())
    X = feature_matrix(data.train, config)
    trained = train_model(kind, X, data.train[ingest.LABEL].to_numpy(), data.train["t"], config)
    onnx = package.to_onnx(trained, config)
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    assert inputs == {INPUT: ("tensor(float)", [None, 2]), CATEGORIES: ("tensor(string)", [None, 2])}

    test = feature_matrix(data.test, config).reset_index(drop=True)
    test.loc[:49, "colour"] = "violet"  # never seen in training
    test.loc[50:99, "city"] = "atlantis"
    test.loc[100:149, ["colour", "city"]] = MISSING_CATEGORY
    test.loc[150:159, "x"] = 1e9  # impossible: missing, as ingest would make it
    y = data.test[ingest.LABEL].to_numpy()
    sk_labels, sk_proba = labels_and_proba(trained.model, test.assign(x=test["x"].where(test["x"] < 50)))
    parity = package.check_parity(kind, onnx, test, y, sk_labels, sk_proba,
                                  package.classification_metrics(y, sk_labels, sk_proba))
    assert parity.agreement == 1.0
    assert parity.max_proba_gap < 1e-5
    labels, proba = session.run(list(OUTPUTS), {INPUT: test[["x", "y"]].to_numpy(np.float32),
                                                CATEGORIES: test[["colour", "city"]].to_numpy(object)})
    assert np.isfinite(proba).all() and set(np.unique(labels)) <= {0, 1}
    assert len(np.unique(proba[:50, 1])) > 1  # unseen categories answered from the other inputs


def test_few_categories_are_one_hot_and_many_ordinal():
    config = _config(lightgbm={"num_leaves": [7]})
    data = _ingested(config, _rows())
    X = feature_matrix(data.train, config)
    trained = train_model("lightgbm", X, data.train[ingest.LABEL].to_numpy(), data.train["t"], config)
    encode = trained.model.named_steps["encode"] if hasattr(trained.model, "named_steps") else \
        trained.model.estimator_.named_steps["encode"]
    parts = {name: list(columns) for name, _, columns in encode.transformers_ if name != "remainder"}
    assert parts == {"numeric": [0, 1], "onehot": [2], "ordinal": [3]}  # colour: 4 values <= 5; city: 40
    known = known_categories(trained.model)
    assert known["colour"] == sorted(["", "blue", "green", "red"])
    assert len(known["city"]) == 40


def test_independent_rows_keep_equal_rows_and_label_their_own_target():
    config = _config()
    df = _rows(n=400)
    df = pd.concat([df, df.iloc[:5]], ignore_index=True)  # five rows exactly alike: five events
    data = _ingested(config, df)
    assert data.report.rows_labelled == len(df) - int(df["late"].isna().sum())
    both = pd.concat([data.train, data.validation, data.test])
    assert (both[ingest.LABEL] == (both["late"] > 0.5)).all()
    assert data.train["t"].max() < data.validation["t"].min() <= data.validation["t"].max() < data.test["t"].min()


def test_the_class_prior_is_the_baseline_of_independent_rows():
    config = _config()
    y = np.array([0] * 7 + [1] * 3)
    trained = train_baseline(config, y)
    assert isinstance(trained.model, Prior) and trained.model.prior == (0.7, 0.3)
    onnx = package.to_onnx(trained, config)
    frame = feature_matrix(_ingested(config, _rows(n=400)).test, config)
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    labels, proba = session.run(list(OUTPUTS), {INPUT: frame[["x", "y"]].to_numpy(np.float32)})
    assert (labels == 0).all() and np.allclose(proba, [[0.7, 0.3]])
    assert labels.shape == (len(frame),)
