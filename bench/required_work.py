"""The work the fast-search issue requires of a run, and nothing else, timed piece by piece in one fresh process.

    PYTHONPATH=src python3 bench/required_work.py CSV [CONFIG]    # prints one JSON object

mlpipe's own functions, in order, on ``CONFIG`` (by default the benchmark's, ``configs/turku_book_label.toml``)
with ``CSV`` as its data: the imports, reading and ingesting, the baseline and its ONNX graph checked, then per
searched model its search and one refit on all training rows (``steps.train.train_model``), its ONNX graph,
scikit-learn's answers on the test split and the graph checked against them (``steps.package.check_parity``);
then, in a fresh workspace, the three datasets registered, per model a run with its parameters, test metrics and
ONNX graph, its registered version, and the champion alias (``steps.register``). Left out: the run's tags,
lineage and evaluation files, the fit cache, the plots, the permutation importance and the report.

``train_vs_seed.py`` runs it beside the seed's procedure: its CPU seconds over the machine's cores are the least
wall time in which any run doing this work could finish on this machine.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

_T0, _CPU0 = time.perf_counter(), sum(os.times()[:2])
_pieces: list[dict] = []


def _mark(piece: str) -> None:
    wall, cpu = time.perf_counter() - _T0, sum(os.times()[:2]) - _CPU0
    done = _pieces[-1] if _pieces else {"until_wall_s": 0.0, "until_cpu_s": 0.0}
    _pieces.append({"piece": piece, "wall_s": wall - done["until_wall_s"], "cpu_s": cpu - done["until_cpu_s"],
                    "until_wall_s": wall, "until_cpu_s": cpu})


BENCH_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "turku_book_label.toml"


def main(csv: str, config_path: str | Path = BENCH_CONFIG) -> dict:
    import warnings

    from mlpipe import console
    from mlpipe.config import load_config
    from mlpipe.sources import read_source
    from mlpipe.steps import ingest, package, train
    from mlpipe.steps.features import feature_matrix
    from mlpipe.store.workspace import Workspace
    from mlpipe.training.worker import WARMUP, quiet_warnings

    console.set_quiet(True)
    quiet_warnings()
    warnings.filterwarnings("ignore", category=UserWarning, module="daal4py")
    for module in WARMUP + ("sklearnex.svm", "sklearnex.ensemble", "onnxruntime", "skl2onnx", "mlflow"):
        __import__(module)
    _mark("imports")
    config = load_config(config_path)
    config = config.model_copy(update={"data": config.data.model_copy(update={"source": csv})})
    data = ingest.ingest(read_source(csv), config, csv)
    X, y = feature_matrix(data.train, config), data.train[ingest.LABEL].to_numpy()
    X_test, y_test = feature_matrix(data.test, config), data.test[ingest.LABEL].to_numpy()
    _mark("read and ingest")
    baseline = train.train_baseline(config)
    onnx = package.to_onnx(baseline, config)
    models = {"baseline": (baseline, onnx, _check(baseline, onnx, data.test, X_test, y_test))}
    _mark("baseline, its ONNX graph and parity")
    for kind in ("svm", "random_forest"):
        trained = train.train_model(kind, X, y, data.train[config.data.timestamp], config)
        _mark(f"{kind}: search and refit")
        onnx = package.to_onnx(trained, config)
        _mark(f"{kind}: ONNX graph")
        models[kind] = (trained, onnx, _check(trained, onnx, X_test, X_test, y_test))
        _mark(f"{kind}: scikit-learn's test answers and parity")
    with tempfile.TemporaryDirectory() as tmp:
        _register(Workspace(tmp), config, data, models)
    _mark("register: datasets, runs, models, champion")
    f1 = {kind: metrics["f1"] for kind, (_, _, metrics) in models.items()}
    return {"pieces": _pieces, "wall_s": _pieces[-1]["until_wall_s"], "cpu_s": _pieces[-1]["until_cpu_s"], "f1": f1}


def _check(trained, onnx: bytes, test_input, X_test, y_test) -> dict[str, float]:
    from mlpipe.steps import evaluate, package
    from mlpipe.steps.threshold import labels_and_proba

    labels, proba = labels_and_proba(trained.model, test_input)
    parity = package.check_parity(trained.kind, onnx, X_test, y_test, labels, proba,
                                  evaluate.classification_metrics(y_test, labels, proba))
    return parity.metrics


def _register(ws, config, data, models: dict) -> None:
    """The datasets, and per model a run with its parameters, test metrics and ONNX graph, registered; then the
    champion alias to the best searched model (by its test F1 here: the work of the gate is the same)."""
    from mlflow.entities import Metric, Param

    from mlpipe.flow.model_work import log_model_files  # the run's own way to log and address the graph
    from mlpipe.steps import register
    from mlpipe.steps.register import model_source
    from mlpipe.store.models import sha256

    prefix = config.registry.model_prefix
    staged = register.stage_datasets(ws, prefix, data)
    datasets = register.register_datasets(ws, staged, f"{prefix} datasets")
    client, experiment_id = ws.client, ws.experiment_id()
    candidates = []
    for kind, (trained, onnx, metrics) in models.items():
        run_id = client.create_run(experiment_id, run_name=kind).info.run_id
        now = int(time.time() * 1000)
        client.log_batch(run_id, params=[Param(k, str(v)[:5000]) for k, v in trained.params.items()],
                         metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        name, digest = f"{prefix}-{kind}", sha256(onnx)
        log_model_files(client, run_id, onnx, {"name": name, "kind": kind, "onnx_sha256": digest})
        client.set_terminated(run_id, "FINISHED")
        version = register.register_model(client, name, run_id, model_source(client, run_id),
                                          {"mlpipe.onnx_sha256": digest}, kind)
        candidates.append(register.Candidate(name, version, kind, metrics["f1"]))
    judged = register.judge_champion(ws, prefix, data.validation, datasets["validation"].digest, "f1")
    register.move_champion(ws, config, candidates, judged)


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:3])))
