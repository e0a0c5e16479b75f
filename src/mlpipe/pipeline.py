"""A run, top to bottom: ingest, features, train each kind, test, package, register, report, under one MLflow
parent run (a child run per model).

The work overlaps -- each model trains in a worker process while the one before it is tested, checked and
tracked on threads (``flow.lanes``) -- but the order is the one read here."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from mlpipe import console, faults
from mlpipe.config import Config, load_config
from mlpipe.flow.lanes import Lanes
from mlpipe.flow.model_work import CachedFit, Split, check_model, draw_ranking, track_model
from mlpipe.flow.results import ModelOutcome, RunResult
from mlpipe.report.plots import palette
from mlpipe.sources import read_source
from mlpipe.steps import ingest, package, register, train
from mlpipe.steps.features import add_time_features, feature_matrix
from mlpipe.store.workspace import Workspace
from mlpipe.training import fitcache
from mlpipe.training.plan import plan
from mlpipe.training.worker import quiet_warnings

__all__ = ["ModelOutcome", "RunResult", "run"]


def run(config: Config | str | Path | None = None, workspace: Workspace | str | Path | None = None) -> RunResult:
    """Run the whole pipeline; ``config`` is a Config, a TOML path, or None for the built-in weather pipeline."""
    config = config if isinstance(config, Config) else load_config(config)
    workspace = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
    started = time.perf_counter()
    with warnings.catch_warnings():
        quiet_warnings()
        return _run(config, workspace, started)


def _run(config: Config, ws: Workspace, started: float) -> RunResult:
    prefix, source = config.registry.model_prefix, config.data.source
    with Lanes(ws, console.console.quiet) as lanes:
        # 1. ingest: read, validate, clean. The training worker starts once the data could be read, and imports
        # while the data is checked.
        with console.step("ingest"):
            raw = read_source(source)
            faults.checkpoint("ingest.read")
            lanes.start_worker()
            clean, report = ingest.prepare(raw, config, source)
            del raw  # the rows as read and as cleaned are not kept beside what follows (10 M rows: GBs)
            # 2. features, from each group's own past; then labels by timestamp and the split by time
            data = ingest.label_and_split(add_time_features(clean, config), config, report, source)
            del clean
            config = ingest.settled(config, report)  # a target's classes, as found in the data
            faults.checkpoint("ingest.done")
        console.info(f"read {report.rows_read} rows from {source}")
        for line in report.lines(config.target.horizon, config.data.series):
            console.info(f"  [dim]·[/] {line}")
        lanes.open_run(config, report)  # MLflow's store and the parent run, from here on beside the training
        staged = lanes.beside(register.stage_datasets, ws, prefix, data)
        X, y = feature_matrix(data.train, config), data.train[ingest.LABEL].to_numpy()
        # the CV folds' key: timestamps; without a clock, the groups a fold keeps together (None: none)
        ts = data.train[config.data.timestamp or config.data.group] if config.data.timestamp or config.data.group \
            else None
        test, validation = (Split(df, feature_matrix(df, config), df[ingest.LABEL].to_numpy())
                            for df in (data.test, data.validation))

        # 3-5. train each kind (the worker searches, fits and packages it as ONNX, or reuses an identical fit);
        # test it and check its graph against scikit-learn (checks threads), track it (tracking thread)
        kinds = [train.BASELINE, *(k for k in train.KINDS if config.model(k).enabled)]
        for kind in kinds[1:]:  # how each kind trains at this size (the worker makes the same plan)
            console.info(f"  [dim]·[/] {kind}: {plan(kind, len(y), config.model(kind)).describe()}")
        names = {kind: f"{prefix}-{kind}" for kind in kinds}
        colours = palette(list(names.values()))
        tracked, checks = [], {}
        for kind in kinds:
            lanes.raise_failed()
            with console.step(f"train {kind}", spinner=kind == train.BASELINE):  # the worker shows its search
                if kind == train.BASELINE:
                    trained, fit = train.train_baseline(config, y), None
                    onnx = package.to_onnx(trained, config)
                else:
                    fit_key = fitcache.key(kind, X, y, ts, config) if config.compute.cache else None
                    trained, onnx, hit = lanes.train(kind, X, y, ts, config, fit_key)
                    fit = CachedFit(fit_key, hit, lanes)
                    if hit is not None:
                        console.info(f"  [dim]·[/] {kind}: the fit of run {hit.fitted_in_run} reused (same "
                                     f"training rows, settings and code; {hit.path})")
                faults.checkpoint("train.fitted")
            name, baseline = names[kind], tracked[0] if tracked else None
            checks[name] = checked = lanes.beside(check_model, trained, onnx, name, config, test, validation,
                                                  colours[name], 0 if kind == kinds[-1] else 1)
            tracked.append(lanes.record(track_model, trained, onnx, name, checked, config, staged, test.y,
                                        baseline, fit))
        ranking = lanes.beside(draw_ranking, checks, test.y, colours)  # the report's plots of all models
        with console.step("test + package + track"):
            outcomes = [t.result() for t in tracked]
        select_by = config.registry.select_by
        for o in outcomes:
            m = o.metrics
            console.info(f"  [dim]·[/] {o.kind}: validation {register.METRIC_NAMES[select_by]} "
                         f"{o.validation.get(select_by, float('nan')):.4f}; test F1 {m['f1']:.4f}  "
                         f"accuracy {m['accuracy']:.4f}  ROC AUC {m.get('roc_auc', float('nan')):.4f}")
            if o.validation_one_class is not None and o.kind != train.BASELINE:
                console.warn(f"{o.name} answers {o.validation_one_class} for every validation row: it cannot "
                             f"become champion")
        lanes.release_worker()  # its last task (storing fits) is queued: it exits while the run registers

        # 6. register: datasets, model versions, the champion alias; one run at a time
        with console.step("register"):
            datasets, champion, reason = register.register_run(ws, config, data, staged.result(), outcomes,
                                                               lanes.parent_id)
        console.info(f"champion: {reason}")
        client, parent_id = ws.client, lanes.parent_id
        if champion:
            client.set_tag(parent_id, "mlpipe.champion", f"{champion.name}:{champion.version}")
        duration = time.perf_counter() - started
        client.log_metric(parent_id, "duration_s", duration)
        faults.checkpoint("run.ending")
        result = RunResult(parent_id, duration, datasets, outcomes, champion, reason, report, ranking.result())

        # 7. report
        _write_report(result, config, ws)
    return result


def _write_report(result: RunResult, config: Config, ws: Workspace) -> None:
    """The run's HTML report (``mlpipe.report``). Models are registered by now, so a report that cannot be
    written is a warning, not a failed run."""
    import sys

    from mlpipe.report import write_report

    try:
        with console.step("report"):
            path = write_report(result, config, ws)
    except Exception as e:  # noqa: BLE001 -- the run and its registrations stand without the report
        print(f"warning: run report not written: {type(e).__name__}: {e}", file=sys.stderr)
        return
    console.info(f"report: {path}")
