"""The run report: written by every run, in the workspace and on the MLflow parent run, with the data checks,
every model, every plot and the lineage; found again by ``mlpipe report``."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from tests.conftest import TURKU_CONFIG, mlpipe

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """The parts of a report page the tests look at: images by plot, model rows, text."""

    def __init__(self, html: str):
        super().__init__()
        self.images: dict[str, str] = {}
        self.model_rows: dict[str, str] = {}
        self.text: list[str] = []
        self._row: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images[a["data-plot"]] = a["src"]
        if tag == "tr" and "data-model" in a:
            self._row = a["data-model"]
            self.model_rows[self._row] = a.get("class") or ""

    def handle_data(self, data):
        self.text.append(data)

    @property
    def plain(self) -> str:
        return " ".join(" ".join(self.text).split())


@pytest.fixture(scope="module")
def report(run_workspace):
    ws, result = run_workspace
    path = ws / "reports" / f"{result['run_id']}.html"
    assert path.is_file(), f"the run wrote no report at {path}"
    html = path.read_text(encoding="utf-8")
    return html, _Page(html), result


def _png(src: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    return base64.b64decode(src[len(prefix):])


def test_the_run_logs_the_same_report_on_its_mlflow_parent_run(run_workspace, report, tmp_path):
    from mlflow.tracking import MlflowClient

    ws, result = run_workspace
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    local = client.download_artifacts(result["run_id"], "report.html", str(tmp_path))
    assert open(local, encoding="utf-8").read() == report[0]
    assert "mlflow.parentRunId" not in client.get_run(result["run_id"]).data.tags


def test_every_run_is_in_the_mlpipe_experiment_with_its_artifacts_in_the_workspace(run_workspace):
    """The UI lists the models' child runs under their pipeline run, and nothing lands outside the workspace."""
    from mlflow.tracking import MlflowClient

    ws, result = run_workspace
    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    parent = client.get_run(result["run_id"])
    assert client.get_experiment(parent.info.experiment_id).name == "mlpipe"
    for m in result["models"]:
        child = client.get_run(m["run_id"])
        assert child.info.experiment_id == parent.info.experiment_id, m["name"]
        assert child.data.tags["mlflow.parentRunId"] == result["run_id"]
        assert child.info.artifact_uri.startswith(ws.resolve().as_uri()), child.info.artifact_uri


def test_report_is_self_contained(report):
    html = report[0]
    assert not re.search(r"""(src|href)=["'](?!data:)""", html), "the page loads something from outside itself"
    assert "<script" not in html


def test_model_table_has_every_model_with_metrics_and_the_champion(report):
    html, page, result = report
    assert list(page.model_rows) == [m["name"] for m in result["models"]]
    champion = result["champion"]["name"]
    assert [name for name, cls in page.model_rows.items() if "is-champion" in cls] == [champion]
    assert f"Champion: {result['champion']['name']}:{result['champion']['version']}" in page.plain
    for m in result["models"]:
        row = html[html.index(f'data-model="{m["name"]}"'):]
        row = row[:row.index("</tr>")]
        for key in ("accuracy", "precision", "recall", "f1", "roc_auc"):
            assert f'data-metric="{key}">{m["metrics"][key]:.4f}' in row, (m["name"], key)
        if m["kind"] != "baseline":  # beside the baseline: the margin over it
            margin = m["metrics"]["f1"] - next(b for b in result["models"] if b["kind"] == "baseline")["metrics"]["f1"]
            assert f"{margin:+.4f}" in row


def test_report_has_a_loaded_png_for_every_expected_plot(report):
    _, page, result = report
    names = [m["name"] for m in result["models"]]
    searched = [m["name"] for m in result["models"] if m["kind"] != "baseline"]
    expected = ({f"confusion:{n}" for n in names} | {"roc", "pr", "reliability"} | {f"importance:{n}" for n in names}
                | {f"trials:{n}" for n in searched})
    assert set(page.images) == expected
    for key, src in page.images.items():
        png = _png(src)
        assert png.startswith(PNG_SIGNATURE) and len(png) > 5000, key


def test_data_section_says_what_validation_found_and_did(report):
    _, page, result = report
    ingest, text = result["ingest"], page.plain
    assert f"rows read {ingest['rows_read']:,}" in text
    assert f"rows labelled {ingest['rows_labelled']:,}" in text
    assert f"unsorted rows {ingest['backward_time_jumps']:,} backward jumps in time rows sorted by time" in text
    for column, n in ingest["impossible_values"].items():
        assert f"{column}: {n:,} outside" in text
    for column, n in ingest["missing_values"].items():
        assert f"{column}: {n:,}" in text
    for split in ("train", "test"):
        start, end = ingest[f"{split}_range"]
        assert f"{start} {end}" in text
    assert f"train {ingest['train_rows']:,}" in text and f"test {ingest['test_rows']:,}" in text


def test_lineage_names_every_dataset_digest_model_version_and_the_code(report):
    html, page, result = report
    for role, d in result["datasets"].items():
        assert d["digest"] in html and f"{d['name']}:{d['version']}" in page.plain
    for m in result["models"]:
        assert m["onnx_sha256"] in html and f"{m['name']}:{m['version']}" in page.plain and m["run_id"] in html
    assert re.search(r"git commit ([0-9a-f]{40}|unknown)", page.plain)
    assert re.search(r"scikit-learn \d+\.\d+", page.plain)


def test_report_command_prints_the_latest_report_or_a_named_one(run_workspace):
    ws, result = run_workspace
    expected = str(ws / "reports" / f"{result['run_id']}.html")
    named = mlpipe("report", result["run_id"], workspace=ws, check=True)
    assert named.stdout.strip() == expected
    latest = mlpipe("report", workspace=ws, check=True).stdout.strip()
    assert latest.startswith(str(ws / "reports")) and latest.endswith(".html")
    assert open(latest, encoding="utf-8").read().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize("run_id", ["0123456789abcdef0123456789abcdef", "../mlflow"], ids=["unknown", "path"])
def test_report_command_exits_2_naming_an_unknown_run(run_workspace, run_id):
    proc = mlpipe("report", run_id, workspace=run_workspace[0])
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and repr(run_id) in lines[0], proc.stderr


def test_report_command_in_a_workspace_without_runs_exits_2(tmp_path):
    proc = mlpipe("report", workspace=tmp_path / "empty")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "no run report" in proc.stderr


def test_ui_refuses_a_port_in_use_with_one_error_line(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = mlpipe("ui", "--port", str(port), workspace=tmp_path / "ws", timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"error: port {port} on 127.0.0.1 is in use; choose another with --port"


# -- the parts, without a run --------------------------------------------------------------------------------

def test_trials_plot_handles_categorical_and_missing_values():
    from mlpipe.report import plots

    cv = pd.DataFrame({"max_depth": [None, 5, 10, None, 5, 10], "criterion": ["gini"] * 3 + ["entropy"] * 3,
                       "n_estimators": [100] * 6, "cv_f1_macro_mean": [0.7, 0.8, 0.75, 0.71, 0.82, 0.7],
                       "cv_f1_macro_std": [0.01] * 6, "fit_seconds_mean": [1.0] * 6})
    assert plots.searched_params(cv) == ["max_depth", "criterion"]  # n_estimators never varied
    assert plots.trials(cv, "forest").startswith(PNG_SIGNATURE)


def test_trials_plot_is_skipped_without_a_search():
    from mlpipe.report import plots

    one = pd.DataFrame({"C": [1.0], "cv_f1_macro_mean": [0.8], "cv_f1_macro_std": [0.0]})
    assert plots.trials(one, "one candidate") is None
    assert plots.trials(pd.DataFrame(), "baseline") is None


def test_confusion_plot_is_a_png():
    from mlpipe.report import plots

    assert plots.confusion([[50, 3], [7, 40]], "m").startswith(PNG_SIGNATURE)


def test_permutation_importance_ranks_the_feature_the_model_uses_first():
    from mlpipe.report.evidence import permutation_importance

    class UsesSecond:
        def fit(self, X, y):
            return self

        def predict(self, X):
            return (X[:, 1] > 0).astype(int)

    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 3)).astype(np.float32)
    table = permutation_importance(UsesSecond(), X, (X[:, 1] > 0).astype(int), ["a", "b", "c"])
    assert table["feature"].iloc[0] == "b" and table["mean"].iloc[0] > 0.3
    assert np.allclose(table.set_index("feature").loc[["a", "c"], "mean"], 0.0)


def test_render_escapes_text_from_the_data():
    """A source path or a reason with markup in it is shown as text, never run as part of the page."""
    from mlpipe import pipeline
    from mlpipe.config import load_config
    from mlpipe.report.evidence import Evidence
    from mlpipe.report.render import render
    from mlpipe.steps.ingest import IngestReport

    config = load_config(TURKU_CONFIG, source="/data/<script>alert(1)</script>.csv")
    model = pipeline.ModelOutcome("svm", "x-svm", "r1", {"C": 1}, {"f1": 0.5, "accuracy": 0.5},
                                  [[1, 2], [3, 4]], None, pd.DataFrame(), None)
    result = pipeline.RunResult("abc", 1.0, {}, [model], None, "no <b>candidate</b>", IngestReport())
    html = render(result, config, Evidence([], {}, 0))
    assert "<script>" not in html and "&lt;script&gt;" in html and "no &lt;b&gt;candidate&lt;/b&gt;" in html
    assert 'data-plot="confusion:x-svm"' in html and 'data-plot="roc"' not in html  # nothing registered to plot


def test_importance_the_run_measured_is_that_of_the_registered_models(run_workspace):
    """The run measures importance on each model's ONNX bytes beside training; measured again on the model
    loaded from the registry (SHA-256 checked), with the registered test split, it is the same."""
    import json
    from pathlib import Path

    from mlpipe.report.evidence import measure
    from mlpipe.steps.ingest import LABEL
    from mlpipe.store.models import load_model
    from mlpipe.store.workspace import Workspace

    ws_path, result = run_workspace
    ws = Workspace(ws_path)
    test = ws.datasets.load(f"{result['datasets']['test']['name']}:{result['datasets']['test']['version']}")
    for m in result["models"]:
        if m["version"] is None:
            continue
        loaded = load_model(ws, f"{m['name']}:{m['version']}")
        features = loaded.features
        X, y = test[features].to_numpy(dtype=np.float32), test[LABEL].to_numpy()
        _, again = measure(loaded.onnx, X, y, features, threads=1)
        logged = json.loads(Path(ws.client.download_artifacts(m["run_id"], "importance.json", str(ws_path)))
                            .read_text())["permutation_importance"]
        pd.testing.assert_frame_equal(pd.DataFrame(logged), again, check_exact=False, atol=1e-12)


def test_the_page_embeds_the_plots_the_run_drew_beside_training():
    """A model's own plots are drawn while the next model trains (``render.model_pngs``, kept in
    ``ModelOutcome.pngs``); the page embeds exactly those, and draws the same plots itself otherwise."""
    import base64

    from mlpipe import pipeline
    from mlpipe.config import load_config
    from mlpipe.report.evidence import Evidence
    from mlpipe.report.render import model_pngs, plot_sections
    from mlpipe.steps.ingest import IngestReport

    config = load_config(TURKU_CONFIG)
    trials = pd.DataFrame({"C": [1, 10], "cv_f1_macro_mean": [0.6, 0.7], "cv_f1_macro_std": [0.01, 0.02]})
    drawn = model_pngs("x-svm", [[5, 1], [2, 3]], None, trials, "#1f77b4")
    assert set(drawn) == {"confusion:x-svm", "trials:x-svm"} and all(png[:4] == b"\x89PNG" for png in drawn.values())
    marked = {key: png + b"drawn-by-the-run" for key, png in drawn.items()}  # recognisable bytes
    model = pipeline.ModelOutcome("svm", "x-svm", "r1", {"C": 10}, {"f1": 0.5, "accuracy": 0.5}, [[5, 1], [2, 3]],
                                  None, trials, None, pngs=marked)
    result = pipeline.RunResult("abc", 1.0, {}, [model], None, "", IngestReport())
    plots = {p.key: p for section in plot_sections(result, Evidence([], {}, 0)) for p in section["plots"]}
    assert {key: plots[key].png for key in marked} == marked
    assert base64.b64encode(marked["trials:x-svm"]).decode() in plots["trials:x-svm"].src
    model.pngs = {}
    again = {p.key: p for section in plot_sections(result, Evidence([], {}, 0)) for p in section["plots"]}
    assert set(again) == set(marked) and all(again[key].png[:4] == b"\x89PNG" for key in marked)


def test_the_page_embeds_the_ranking_plots_the_run_drew_while_registering():
    """ROC, precision-recall and reliability are drawn while the run registers (``RunResult.ranking_pngs``);
    the page embeds exactly those when they show the models it shows, and draws its own otherwise."""
    from mlpipe import pipeline
    from mlpipe.config import load_config
    from mlpipe.report.evidence import Evidence, ModelEvidence
    from mlpipe.report.render import plot_sections
    from mlpipe.steps.ingest import IngestReport

    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(int)
    proba = np.clip(0.5 * y + 0.6 * rng.random(300), 0, 1)
    model = pipeline.ModelOutcome("svm", "x-svm", "r1", {"C": 10}, {"f1": 0.5, "accuracy": 0.5}, [[5, 1], [2, 3]],
                                  None, pd.DataFrame(), None, version=1)
    evidence = Evidence([], {"x-svm": ModelEvidence("x-svm", "svm", y, proba,
                                                    pd.DataFrame({"feature": ["a"], "mean": [0.1], "std": [0.0]}))}, 300)
    marked = {key: b"\x89PNG drawn-by-the-run " + key.encode() for key in ("roc", "pr", "reliability")}
    ranked = lambda result: {p.key: p.png for section in plot_sections(result, evidence)  # noqa: E731
                             for p in section["plots"] if p.key in marked}
    result = pipeline.RunResult("abc", 1.0, {}, [model], None, "", IngestReport(), (("x-svm",), marked))
    assert ranked(result) == marked
    result.ranking_pngs = (("x-svm", "x-forest"), marked)  # drawn for other models: not these
    again = ranked(result)
    assert set(again) == set(marked) and all(png[:4] == b"\x89PNG" and png != marked[k] for k, png in again.items())
    result.ranking_pngs = None
    assert set(ranked(result)) == set(marked)
