"""The champion earns its alias: chosen on the validation rows, never on test, and only when a learned model
beats persistence ("later = now") and the current champion there by ``[registry] min_improvement``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlpipe.config import Config
from mlpipe.steps import register
from tests.conftest import mlpipe

HOURS = 1500


def _series(seed: int = 0) -> pd.DataFrame:
    """Hourly rows of one station: ``x`` and ``noise`` random each hour, and ``wet`` = x four hours earlier >
    0.3. So "wet in 4 h" is ``x > 0.3`` now -- a model learns it, persistence (wet now) cannot."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=HOURS)
    wet = np.r_[np.zeros(4), (x[:-4] > 0.3)].astype(int)
    return pd.DataFrame({"time": pd.date_range("2024-01-01", periods=HOURS, freq="h", tz="UTC"),
                         "x": x, "noise": rng.normal(size=HOURS), "wet": wet})


def _config(tmp_path: Path, csv: Path, horizon: str = "4h", extra: str = "") -> Path:
    path = tmp_path / "gate.toml"
    path.write_text(f"""
[data]
source = "{csv}"
timestamp = "time"
features = ["x", "noise", "wet"]
[target]
column = "wet"
positive = [1]
horizon = "{horizon}"
[registry]
model_prefix = "gate"
[models.svm]
space = {{ kernel = ["linear"], C = [1] }}
[models.random_forest]
space = {{ max_depth = [4] }}
params = {{ n_estimators = 20 }}
[models.lightgbm]
enabled = false
{extra}""")
    return path


def _run(tmp_path: Path, df: pd.DataFrame, ws: Path, **kw) -> dict:
    csv = tmp_path / f"data-{ws.name}.csv"
    df.to_csv(csv, index=False)
    proc = mlpipe("run", "--config", str(_config(tmp_path, csv, **kw)), "--json", "--quiet", "--no-cache",
                  workspace=ws)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.e2e
def test_no_learned_model_becomes_champion_when_persistence_cannot_be_beaten(tmp_path):
    """The label is the condition now (horizon 0h): persistence is right on every row, so no learned model
    beats it by 0.005 of macro F1, a tie never promotes, and the run says so -- exit 0, a finding."""
    result = _run(tmp_path, _series(), tmp_path / "ws", horizon="0h")
    baseline = next(m for m in result["models"] if m["kind"] == "baseline")
    assert baseline["validation"]["f1"] == 1.0
    assert result["champion"] is None
    assert result["champion_reason"].startswith("no learned model beats persistence on the validation rows")
    assert "persistence 1.0000" in result["champion_reason"] and "no alias moved" in result["champion_reason"]
    models = json.loads(mlpipe("models", "list", "--json", workspace=tmp_path / "ws", check=True).stdout)
    assert models and all(m["aliases"] == {} for m in models)  # registered, but nobody holds champion


@pytest.mark.e2e
def test_a_model_that_clearly_beats_persistence_becomes_champion(tmp_path):
    result = _run(tmp_path, _series(), tmp_path / "ws")
    by_kind = {m["kind"]: m for m in result["models"]}
    assert by_kind["baseline"]["validation"]["f1"] < 0.7  # "wet now" says little of "wet in 4 h" here
    best = max((m for m in result["models"] if m["kind"] != "baseline"), key=lambda m: m["validation"]["f1"])
    assert best["validation"]["f1"] > 0.9
    assert result["champion"] == {"name": best["name"], "version": best["version"]}
    assert "beats persistence by +" in result["champion_reason"]
    again = _run(tmp_path, _series(), tmp_path / "ws")  # the same models again: a tie, which never promotes
    assert again["champion"] == result["champion"] and "does not beat champion" in again["champion_reason"]


@pytest.mark.e2e
def test_selection_reads_no_test_label(tmp_path):
    """Shuffle the target over the test period (every label of the test split changes, nothing before it):
    the chosen hyperparameters, the validation scores and the champion are the same; the test metrics are not."""
    df = _series()
    shuffled = df.copy()
    times = np.sort(df["time"].unique())
    test_start = times[-int(np.ceil(0.2 * len(times)))]
    in_test = (shuffled["time"] >= test_start).to_numpy()
    shuffled.loc[in_test, "wet"] = np.random.default_rng(7).permutation(shuffled.loc[in_test, "wet"].to_numpy())
    one, two = _run(tmp_path, df, tmp_path / "one"), _run(tmp_path, shuffled, tmp_path / "two")
    for a, b in zip(one["models"], two["models"]):
        assert a["name"] == b["name"] and a["validation"] == b["validation"]
    assert one["champion"] == two["champion"] and one["champion"] is not None
    assert one["champion_reason"] == two["champion_reason"]
    chosen = [json.loads(mlpipe("models", "show", m["name"], "--json", workspace=ws, check=True).stdout)["params"]
              for ws, run in ((tmp_path / "one", one), (tmp_path / "two", two)) for m in run["models"]]
    assert chosen[:len(one["models"])] == chosen[len(one["models"]):]
    assert [m["metrics"]["f1"] for m in one["models"]] != [m["metrics"]["f1"] for m in two["models"]]


def _gate_config(**registry) -> Config:
    return Config.model_validate({"data": {"timestamp": "t", "features": ["a"]}, "target": {"column": "a",
                                                                                           "above": 0.0},
                                  "registry": {"model_prefix": "g", **registry}})


def test_a_model_answering_one_class_is_never_promoted():
    candidates = [register.Candidate("g-baseline", 1, "baseline", 0.60),
                  register.Candidate("g-svm", 1, "svm", 0.48, one_class=0)]
    promote, holder, reason = register.decide_champion(_gate_config(), candidates, register.Judged(None, None))
    assert promote is None and holder is None
    assert reason == "no learned model can be champion: g-svm:1 answers 0 for every validation row; no champion " \
                     "(no alias moved)"


@pytest.mark.parametrize("metric,model,persistence,promotes", [
    ("f1", 0.7549, 0.7500, False),    # +0.0049: under the default 0.005
    ("f1", 0.7550, 0.7500, True),
    ("brier", 0.0900, 0.0950, True),  # lower is better
    ("brier", 0.0950, 0.0900, False),
    ("roc_auc", 0.80, 0.80, False),   # a tie never promotes
])
def test_the_gate_needs_min_improvement_over_persistence(metric, model, persistence, promotes):
    candidates = [register.Candidate("g-baseline", 1, "baseline", persistence),
                  register.Candidate("g-lightgbm", 1, "lightgbm", model)]
    promote, _, reason = register.decide_champion(_gate_config(select_by=metric), candidates,
                                                  register.Judged(None, None))
    assert (promote is not None) == promotes, reason
    if not promotes:
        assert reason.startswith("no learned model beats persistence"), reason


def test_the_gate_needs_min_improvement_over_the_current_champion():
    class Held:
        name, version = "g-svm", 3

    candidates = [register.Candidate("g-baseline", 1, "baseline", 0.50),
                  register.Candidate("g-lightgbm", 1, "lightgbm", 0.80)]
    promote, holder, reason = register.decide_champion(_gate_config(), candidates, register.Judged(Held(), 0.797))
    assert promote is None and (holder.name, holder.version) == ("g-svm", 3)
    assert "does not beat champion g-svm:3" in reason and "margin +0.0030" in reason
    promote, _, reason = register.decide_champion(_gate_config(), candidates, register.Judged(Held(), 0.79))
    assert promote.name == "g-lightgbm" and reason.endswith("beats g-svm:3 by +0.0100")
