"""Targets of several classes and rows without a clock: labels by class name, a split stratified by class (whole
groups to one side when a group is named), stratified CV folds, k-class metrics, and every model kind's graph
with probabilities ``[N, k]`` checked against scikit-learn."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from mlpipe.config import Config
from mlpipe.errors import ConfigError, DataError
from mlpipe.featurize import feature_matrix
from mlpipe.graph import OUTPUTS, feed
from mlpipe.steps import evaluate, ingest, package
from mlpipe.steps.threshold import labels_and_proba
from mlpipe.steps.train import stratified_folds, train_baseline, train_model


def _penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return load_penguins()


def _config(**extra) -> Config:
    raw = {"data": {"source": "builtin:palmerpenguins", "series": False,
                    "features": ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"],
                    "categorical": ["island", "sex"]},
           "target": {"column": "species", "horizon": "0h"}, "split": {"cv_folds": 3}}
    for key, value in extra.items():
        raw[key] = {**raw.get(key, {}), **value}
    return Config.model_validate(raw)


def _ingested(config: Config, df: pd.DataFrame | None = None):
    data = ingest.ingest(_penguins() if df is None else df, config, "penguins")
    return ingest.settled(config, data.report), data


def test_classes_are_the_sorted_values_or_the_given_order():
    config, data = _ingested(_config())
    assert config.target.classes == ["Adelie", "Chinstrap", "Gentoo"]
    assert data.report.class_counts == {"Adelie": 152, "Chinstrap": 68, "Gentoo": 124}
    given, data = _ingested(_config(target={"classes": ["Gentoo", "Adelie", "Chinstrap"]}))
    gentoo = data.processed["species"] == "Gentoo"
    assert (data.processed.loc[gentoo, "label"] == 0).all() and given.target.classes[0] == "Gentoo"
    with pytest.raises(DataError, match=r"penguins: column 'species' holds 'Gentoo', not one of target.classes"):
        _ingested(_config(target={"classes": ["Adelie", "Chinstrap", "Emperor"]}))


def test_the_split_is_stratified_by_class_and_seeded():
    config, data = _ingested(_config())
    for part in (data.train, data.validation, data.test):
        shares = np.bincount(part["label"], minlength=3) / len(part)
        assert np.abs(shares - np.array([152, 68, 124]) / 344).max() < 0.03
    _, again = _ingested(_config())
    assert data.test.equals(again.test)  # same seed, same rows
    _, other = _ingested(_config(split={"seed": 1}))
    assert not data.test.equals(other.test)


def test_a_named_group_lies_on_one_side_only():
    df = _penguins().assign(colony=lambda d: d.index // 8)  # 43 colonies of 8 penguins
    config, data = _ingested(_config(data={"group": "colony"}), df)
    sides = [set(part["colony"]) for part in (data.train, data.validation, data.test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])


def test_folds_without_a_clock_hold_every_class_in_its_share():
    y = np.array([0] * 60 + [1] * 30 + [2] * 15)
    folds = stratified_folds(y, 3, seed=0)
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(len(y)))
    for train, val in folds:
        assert np.bincount(y[val]).tolist() == [20, 10, 5] and not set(train) & set(val)


def test_k_class_metrics():
    y = np.array([0, 0, 1, 1, 2, 2])
    proba = np.array([[.8, .1, .1], [.6, .3, .1], [.2, .7, .1], [.5, .4, .1], [.1, .1, .8], [.1, .2, .7]])
    labels = proba.argmax(axis=1)
    m = evaluate.classification_metrics(y, labels, proba)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["f1_1"] == pytest.approx(2 / 3) and m["recall_0"] == 1.0 and m["precision_0"] == pytest.approx(2 / 3)
    truth = np.eye(3)[y]
    assert m["brier"] == pytest.approx(np.mean(np.sum((proba - truth) ** 2, axis=1)))
    assert m["roc_auc"] == pytest.approx(1.0)
    assert evaluate.confusion(y, labels, 3) == [[2, 0, 0], [1, 1, 0], [0, 0, 2]]


@pytest.mark.parametrize("kind", ["svm", "random_forest", "lightgbm"])
def test_each_kind_gives_k_probabilities_and_the_graph_agrees(kind):
    config, data = _ingested(_config())
    X, y = feature_matrix(data.train, config), data.train["label"].to_numpy()
    trained = train_model(kind, X, y, None, config)
    assert trained.params["decision_threshold"] is None  # the tuned threshold stays binary-only
    onnx = package.to_onnx(trained, config)
    X_test, y_test = feature_matrix(data.test, config), data.test["label"].to_numpy()
    sk_labels, sk_proba = labels_and_proba(trained.model, X_test)
    assert sk_proba.shape == (len(y_test), 3)
    parity = package.check_parity(kind, onnx, X_test, y_test, sk_labels, sk_proba,
                                  evaluate.classification_metrics(y_test, sk_labels, sk_proba))
    assert parity.agreement == 1.0 and parity.max_proba_gap < 1e-4
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    labels, proba = session.run(list(OUTPUTS), feed(session, X_test))
    assert proba.shape == (len(y_test), 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert parity.metrics["f1"] > 0.9


def test_the_class_prior_of_three_classes():
    config, data = _ingested(_config())
    trained = train_baseline(config, data.train["label"].to_numpy())
    onnx = package.to_onnx(trained, config)
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    labels, proba = session.run(list(OUTPUTS), feed(session, feature_matrix(data.test, config)))
    assert (labels == 0).all() and proba.shape == (len(data.test), 3)
    assert np.allclose(proba[0], np.bincount(data.train["label"], minlength=3) / len(data.train))


@pytest.mark.parametrize("extra, message", [
    ({"data": {"series": True, "timestamp": "year"}}, "several classes .* need data.series = false"),
    ({"data": {"series": True}}, "a time series .* needs a 'timestamp' column"),
    ({"target": {"classes": ["a", "b", "a"]}}, "'classes' lists a class twice"),
    ({"target": {"positive": ["Adelie"], "classes": ["a", "b", "c"]}}, "'classes' names the classes of a target"),
])
def test_config_errors(tmp_path, extra, message):
    import tomli_w

    from mlpipe.config import load_config

    raw = _config().model_dump(exclude_none=True)
    for key, value in extra.items():
        raw[key] = {**raw[key], **value}
    path = tmp_path / "c.toml"
    path.write_text(tomli_w.dumps(raw))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_differences_need_no_clock_and_no_binary_rule():
    config, data = _ingested(_config(features={"differences": {"bill_shape": ["bill_length_mm", "bill_depth_mm"]}}))
    rows = data.processed
    assert np.allclose(rows["bill_shape"], rows["bill_length_mm"] - rows["bill_depth_mm"], equal_nan=True)
    assert config.model_features[-1] == "bill_shape"


def test_group_folds_keep_each_group_in_one_fold():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    groups = np.repeat(np.arange(30), 10)
    for train, val in stratified_folds(y, 3, seed=0, groups=groups):
        assert not set(groups[train]) & set(groups[val])


def test_the_class_prior_answers_through_the_server_model_with_both_inputs():
    """The prior's graph reads one input; a server passes what the graph declares, not every input it has."""
    from mlpipe.graph import make_session
    from mlpipe.serving.model import ServedModel

    config, data = _ingested(_config())
    onnx = package.to_onnx(train_baseline(config, data.train["label"].to_numpy()), config)
    info = {"name": "p", "version": 1, "features": config.model_features, "categorical": config.categorical,
            "classes": config.target.classes}
    served = ServedModel(info, make_session(onnx), True)
    frame = feature_matrix(data.test, config)
    labels, proba = served.predict(frame[config.model_features].to_numpy(np.float32),
                                   frame[config.categorical].to_numpy(object))
    assert (labels == 0).all() and proba.shape == (len(frame), 3)


def test_raw_observations_are_refused_for_independent_rows():
    from mlpipe.featurize import Recipe, spec
    from mlpipe.serving.raw import RawScorer

    config, _ = _ingested(_config())
    model = type("M", (), {"name": "p", "version": 1, "features": []})()
    with pytest.raises(DataError, match=r"rows.csv: model p:1 answers independent rows \(data.series = false\)"):
        RawScorer(model, Recipe.from_spec(spec(config)), "rows.csv")


def test_independent_rows_cannot_take_their_own_target_as_input():
    raw = _config().model_dump(exclude_none=True)
    raw["data"]["features"] = [*raw["data"]["features"], "species"]
    with pytest.raises(Exception, match=r"target.column 'species' is also in data.features"):
        Config.model_validate(raw)


def test_a_measured_target_is_not_a_set_of_classes():
    df = _penguins().assign(mass=lambda d: d["body_mass_g"] / 7)
    config = Config.model_validate({**_config().model_dump(exclude_none=True),
                                    "target": {"column": "mass", "horizon": "0h"}})
    with pytest.raises(DataError, match=r"penguins: column 'mass' holds measurements \(first: .*\), not classes"):
        _ingested(config, df)
