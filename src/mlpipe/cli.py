"""The ``mlpipe`` command: a thin Typer layer over the library. Errors in the input exit 2 with one
``error:`` line; anything unexpected exits 1 with its traceback."""

from __future__ import annotations

import gc
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Annotated, Optional

import typer

from mlpipe.errors import MlpipeError

app = typer.Typer(help="Local-first ML pipelines: ingest, train, test, package to ONNX, register in MLflow.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  rich_markup_mode=None)  # help texts hold [brackets] ("[default: …]", "[compute]"): print them
datasets_app = typer.Typer(help="The dataset registry.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")

WorkspaceOpt = Annotated[Optional[Path], typer.Option(
    "--workspace", "-w", help="Workspace folder [default: $MLPIPE_WORKSPACE, else ./mlpipe-workspace].",
    show_default=False)]
HOST = "127.0.0.1"
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]

# -- backends: where tracking, the model registry, the dataset catalog and artifacts live -------------------
TrackingOpt = Annotated[Optional[str], typer.Option(
    "--tracking-uri", help="postgresql://user@host:5432/db or http://host:port (an MLflow server) "
    "[default: $MLPIPE_TRACKING_URI, else the workspace's SQLite].", show_default=False)]
DatasetsUriOpt = Annotated[Optional[str], typer.Option(
    "--datasets-uri", help="Dataset catalog database [default: $MLPIPE_DATASETS_URI, else the tracking "
    "database when PostgreSQL, else the workspace's SQLite].", show_default=False)]
ArtifactsOpt = Annotated[Optional[str], typer.Option(
    "--artifact-location", help="Folder or MLflow artifact URI for model and dataset files "
    "[default: $MLPIPE_ARTIFACT_LOCATION, else the workspace folder or the tracking server's store].",
    show_default=False)]


@app.callback()
def _backends(tracking_uri: TrackingOpt = None, datasets_uri: DatasetsUriOpt = None,
              artifact_location: ArtifactsOpt = None) -> None:
    """Global options, for every command: they set $MLPIPE_TRACKING_URI, $MLPIPE_DATASETS_URI and
    $MLPIPE_ARTIFACT_LOCATION for this process, which every Workspace honours."""
    import os

    from mlpipe.store.workspace import ENV_ARTIFACTS, ENV_DATASETS, ENV_TRACKING

    for var, value in ((ENV_TRACKING, tracking_uri), (ENV_DATASETS, datasets_uri), (ENV_ARTIFACTS, artifact_location)):
        if value:
            os.environ[var] = value


def _workspace(path: Optional[Path]):
    from mlpipe.store.workspace import Workspace

    return Workspace(path)


def _emit(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@app.command()
def run(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Pipeline config (TOML).")] = None,
    source: Annotated[Optional[str], typer.Option(help="Data file to use instead of the config's data.source.")] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    tracking_uri: TrackingOpt = None,
    datasets_uri: DatasetsUriOpt = None,
    artifact_location: ArtifactsOpt = None,
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", help="Run search trials on the Ray cluster at HOST:PORT (overrides [compute]).")] = None,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Search and fit every model anew, even where an identical fit is cached.")] = False,
) -> None:
    """Run the whole pipeline: ingest, features, train, test, package, register."""
    from mlpipe import console
    from mlpipe.config import load_config, on_ray, without_cache
    from mlpipe.pipeline import run as run_pipeline
    from mlpipe.store.workspace import run_workspace
    from mlpipe.training.distributed import check_workers
    from mlpipe.training.search import check_compute

    console.set_quiet(quiet)
    cfg = load_config(config, source=source)
    if ray_address is not None:
        cfg = on_ray(cfg, ray_address)
    if no_cache:
        cfg = without_cache(cfg)
    check_compute(cfg.compute)  # before any work: a Ray head that is not there is bad input
    for kind, settings in cfg.models.items():  # and a data-parallel fit without a Ray cluster to run on
        check_workers(kind, settings.workers if settings.enabled else None, cfg.compute.backend)
    ws = run_workspace(workspace, cfg, tracking_uri=tracking_uri, datasets_uri=datasets_uri,
                       artifact_location=artifact_location)
    with redirect_stdout(sys.stderr):  # libraries that print must not corrupt the JSON document
        result = run_pipeline(cfg, ws)
    if as_json:
        _emit(result.to_dict())
    else:
        _print_run(result)


def _print_run(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {result.run_id} ({result.duration_s:.1f} s)",
                  caption="val: the validation rows, where the champion is chosen; test: reported only. "
                          "Precision, recall and F1 are macro averages.")
    table.add_column("model", no_wrap=True)
    for col in ("version", "val F1", "val AUC", "test acc", "test prec", "test rec", "test F1", "test AUC"):
        table.add_column(col, justify="right")
    for m in result.models:
        v, val = m.metrics, m.validation
        table.add_row(m.name, str(m.version or "-"), *(f"{val.get(k, float('nan')):.4f}" for k in ("f1", "roc_auc")),
                      *(f"{v.get(k, float('nan')):.4f}" for k in ("accuracy", "precision", "recall", "f1", "roc_auc")))
    out = Console(width=None if sys.stdout.isatty() else 120)
    out.print(table)
    out.print(f"champion: {result.champion_reason}")


@datasets_app.command("list")
def datasets_list(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Registered datasets, newest version of each."""
    rows = [d.summary() for d in _workspace(workspace).datasets.list()]
    _emit(rows) if as_json else _print_rows(rows, ("name", "version", "rows", "digest"))


@datasets_app.command("show")
def datasets_show(ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")],
                  workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """One dataset version."""
    d = _workspace(workspace).datasets.get(ref).to_dict()
    _emit(d) if as_json else _print_mapping(d)


@datasets_app.command("download")
def datasets_download(ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")],
                      dest: Annotated[Path, typer.Option("--dest", help="Folder to write into.")],
                      workspace: WorkspaceOpt = None) -> None:
    """Write DEST/data.parquet and DEST/dataset.json."""
    d = _workspace(workspace).datasets.download(ref, dest)
    typer.echo(f"{d.name}:{d.version} -> {dest / 'data.parquet'}")


@models_app.command("list")
def models_list(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Registered models with their versions and aliases."""
    from mlpipe.store.models import list_models

    rows = list_models(_workspace(workspace))
    _emit(rows) if as_json else _print_rows(rows, ("name", "versions", "aliases"))


@models_app.command("show")
def models_show(ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS")],
                workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """One model version."""
    from mlpipe.store.models import describe, get_version

    info = describe(get_version(_workspace(workspace), ref))
    _emit(info) if as_json else _print_mapping({k: v for k, v in info.items() if k != "tags"})


@models_app.command("download")
def models_download(ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS")],
                    dest: Annotated[Path, typer.Option("--dest", help="Folder to write into.")],
                    workspace: WorkspaceOpt = None) -> None:
    """Write DEST/model.onnx (checked against its registered SHA-256) and DEST/model.json."""
    from mlpipe.store.models import download_model

    info = download_model(_workspace(workspace), ref, dest)
    typer.echo(f"{info['name']}:{info['version']} -> {dest / 'model.onnx'}")


@app.command()
def check(workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """Verify the registries: every model and dataset version complete and matching its digest."""
    from mlpipe.errors import IntegrityError
    from mlpipe.store.integrity import check as check_registries

    problems = check_registries(_workspace(workspace))
    if as_json:
        from mlpipe.store.models import list_models

        ws = _workspace(workspace)
        _emit({"ok": not problems, "problems": problems, "models": list_models(ws),
               "datasets": [d.summary() for d in ws.datasets.list()]})
    else:
        for p in problems:
            typer.echo(p)
    if problems:
        raise IntegrityError(f"{len(problems)} problems in the registries (first: {problems[0]})")
    if not as_json:
        typer.echo("ok: every registered model and dataset version is complete and matches its digest")


@app.command()
def report(run_id: Annotated[Optional[str], typer.Argument(help="Run id [default: the latest run].",
                                                            show_default=False)] = None,
           workspace: WorkspaceOpt = None) -> None:
    """Print the path of a run's HTML report (plots, data checks, lineage)."""
    from mlpipe.report import find_report

    typer.echo(str(find_report(_workspace(workspace), run_id)))


@app.command()
def ui(port: Annotated[int, typer.Option(help="Port on 127.0.0.1.", min=1, max=65535)] = 5000,
       workspace: WorkspaceOpt = None) -> None:
    """The MLflow UI on the workspace's store, bound to 127.0.0.1; prints its URL."""
    from mlpipe.ui import check_port_free, latest_run_url, run_server, server_command, server_env

    ws = _workspace(workspace)
    if ws.backend == "http":
        from mlpipe.errors import ConfigError

        raise ConfigError(f"tracking uri {ws.tracking_uri} is an MLflow server: open it in a browser")
    check_port_free(HOST, port)
    url = f"http://{HOST}:{port}"
    typer.echo(f"MLflow UI for {ws.root}: {url}")
    run_url = latest_run_url(ws, url)
    if run_url:
        typer.echo(f"latest run: {run_url}")
    sys.stdout.flush()
    raise typer.Exit(run_server(server_command(ws, HOST, port), server_env()))


ModelOpt = Annotated[str, typer.Option("--model", "-m", help="NAME, NAME:VERSION or NAME@ALIAS.")]


@app.command()
def serve(
    model: ModelOpt,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    token: Annotated[Optional[str], typer.Option(
        envvar="MLPIPE_SERVE_TOKEN", show_envvar=True,
        help="Require 'Authorization: Bearer TOKEN' on every route but /health (needed beyond loopback).")] = None,
    poll_seconds: Annotated[float, typer.Option(
        min=0.1, help="How often NAME@ALIAS (or bare NAME) is looked up again; a moved alias is swapped in.")] = 5.0,
    workers: Annotated[int, typer.Option(min=1, max=64, help="uvicorn worker processes, each with its own model.")] = 1,
    threads: Annotated[int, typer.Option(min=0, max=64, help="onnxruntime threads per worker (0: one per core).")] = 1,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Larger request bodies get 413.")] = 16.0,
    access_log: Annotated[bool, typer.Option(help="Log every request (costs throughput).")] = False,
    max_clock_skew: Annotated[str, typer.Option(
        help="POST /observations refuses timestamps further than this in the future.")] = "10min",
    log_forecasts: Annotated[bool, typer.Option(
        help="Keep every answer in the workspace's forecast log, for mlpipe monitor.")] = True,
    workspace: WorkspaceOpt = None,
) -> None:
    """REST API for a registered model: POST /predict, GET /health, GET /metadata (docs at /docs); for a
    model with time-series features also POST /observations and GET /forecast, which forecast from raw
    observations kept in the workspace (or the team's database). Beyond loopback it needs --token."""
    from mlpipe.config import parse_duration
    from mlpipe.errors import ConfigError
    from mlpipe.serving.server import ServeSettings
    from mlpipe.serving.server import serve as run_server

    try:
        skew_s = parse_duration(max_clock_skew)
    except ValueError:
        raise ConfigError(f"--max-clock-skew {max_clock_skew!r}: not a duration; use e.g. '10min', '1h' or '0s'") from None
    run_server(ServeSettings(workspace=str(_workspace(workspace).root), ref=model, host=host, port=port,
                             token=token or None, poll_s=poll_seconds, workers=workers, threads=threads,
                             max_body_bytes=int(max_body_mb * 1024 * 1024), access_log=access_log,
                             max_clock_skew_s=skew_s, log_forecasts=log_forecasts))


@app.command()
def predict(
    model: ModelOpt,
    input: Annotated[Path, typer.Option("--input", "-i", help="CSV or Parquet file to score.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write: .csv or .parquet.")],
    chunk_rows: Annotated[int, typer.Option(
        min=1, help="Rows per chunk (CSV: at most 1 MiB of text per chunk).")] = 65536,
    workspace: WorkspaceOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar on stderr.")] = False,
    input_kind: Annotated[str, typer.Option(
        "--input-kind", help="features (the model's input columns), raw (observations in the training source's "
        "schema: features computed as in training) or auto (told by the columns).")] = "auto",
    log: Annotated[bool, typer.Option(help="Keep the forecasts in the workspace's forecast log, for mlpipe monitor.")] = True,
) -> None:
    """Score a CSV or Parquet file in chunks. Feature vectors: the input's columns plus label and probability.
    Raw observations (in time order): timestamp, group, forecast_for, label, probability."""
    from mlpipe import console
    from mlpipe.serving.batch import predict_file

    console.set_quiet(quiet)
    summary = predict_file(_workspace(workspace), model, input, output, chunk_rows=chunk_rows, kind=input_kind,
                           log=log)
    typer.echo(f"{summary.rows} rows scored with {summary.model} -> {output}", err=True)


@app.command()
def monitor(
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="NAME, NAME:VERSION or NAME@ALIAS [default: every model with logged forecasts].",
        show_default=False)] = None,
    since: Annotated[Optional[str], typer.Option(
        help="Judge forecasts from this time on (ISO 8601) instead of the last --window.", show_default=False)] = None,
    window: Annotated[str, typer.Option(help="How far back from the latest forecast to judge.")] = "7d",
    observations: Annotated[Optional[Path], typer.Option(
        help="The truth from this CSV or Parquet file (the training source's schema) instead of the observation "
             "store.", show_default=False)] = None,
    tolerance: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Alert when live macro F1 is more than this below the registered test F1.")] = 0.1,
    html: Annotated[Optional[Path], typer.Option(
        help="Where to write the monitoring page [default: <workspace>/monitoring/index.html].",
        show_default=False)] = None,
    retrain: Annotated[Optional[Path], typer.Option(
        help="When unhealthy, run this pipeline config; the champion gate decides whether the alias moves "
             "(a running mlpipe serve on NAME@champion picks the new version up).", show_default=False)] = None,
    workspace: WorkspaceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Live performance of served forecasts once their truth has arrived, beside persistence and the
    registered test metrics; input and prediction drift. Exit 0 healthy, 3 alerting (one line says why)."""
    import pandas as pd

    from mlpipe.config import parse_duration
    from mlpipe.errors import ConfigError, DataError
    from mlpipe.monitoring.monitor import Settings
    from mlpipe.monitoring.monitor import monitor as run_monitor

    try:
        span = pd.Timedelta(seconds=parse_duration(window))
    except ValueError:
        raise ConfigError(f"--window {window!r}: not a duration; use e.g. '7d', '36h'") from None
    if span <= pd.Timedelta(0):
        raise ConfigError(f"--window {window!r}: must be longer than 0")
    start = None
    if since is not None:
        try:
            start = pd.Timestamp(since)
        except ValueError:
            raise ConfigError(f"--since {since!r}: not a timestamp; use ISO 8601, e.g. 2013-12-01T00:00Z") from None
        start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    if observations is not None and not observations.is_file():
        raise DataError(f"--observations {observations}: no such file")
    ws = _workspace(workspace)
    doc = run_monitor(ws, Settings(model=model, since=start, window=span, tolerance=tolerance,
                                   observations=str(observations) if observations else None))
    from mlpipe.monitoring.page import render

    page = html or ws.root / "monitoring" / "index.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(render(doc), encoding="utf-8")
    doc["page"] = str(page)
    if retrain is not None and not doc["healthy"]:
        from mlpipe import console
        from mlpipe.config import load_config
        from mlpipe.pipeline import run as run_pipeline

        console.set_quiet(as_json)
        with redirect_stdout(sys.stderr):
            result = run_pipeline(load_config(retrain), ws)
        champion = f"{result.champion.name}:{result.champion.version}" if result.champion else None
        doc["retrain"] = {"run_id": result.run_id, "champion": champion, "reason": result.champion_reason}
    if as_json:
        _emit(doc)
    else:
        _print_monitor(doc)
    if not doc["healthy"]:
        typer.echo(f"unhealthy: {'; '.join(doc['alerts'])}", err=True)
        raise typer.Exit(3)


def _print_monitor(doc: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console(width=None if sys.stdout.isatty() else 120)
    for v in doc["versions"]:
        table = Table(title=f"{v['model']}:{v['version']}")
        for col in ("", "F1", "ROC AUC", "Brier", "accuracy"):
            table.add_column(col, justify="right" if col else "left")
        for label, m in (("live", v.get("live", {})), ("persistence", v.get("persistence", {})),
                         ("registered test", v.get("registered", {}))):
            table.add_row(label, *(f"{m[k]:.4f}" if m.get(k) is not None else "-"
                                   for k in ("f1", "roc_auc", "brier", "accuracy")))
        out.print(table)
        out.print(f"forecasts {v['window']['start']} to {v['window']['end']}: {v['forecasts']} "
                  f"({v['matched']} matched, {v['pending']} pending, {v['no_truth']} without truth)")
        drifted = [f for f in v["drift"]["features"] if f["drifted"]]
        out.print(f"drift: {len(drifted)} of {len(v['drift']['features'])} feature checks drifted")
    if "retrain" in doc:
        out.print(f"retrained: run {doc['retrain']['run_id']}; champion {doc['retrain']['champion']}: "
                  f"{doc['retrain']['reason']}")
    out.print(f"page: {doc['page']}")
    out.print("healthy" if doc["healthy"] else f"alerting: {len(doc['alerts'])}")


def _print_rows(rows: list[dict], columns: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*(str(r[c]) for c in columns))
    Console().print(table)


def _print_mapping(d: dict) -> None:
    for k, v in d.items():
        typer.echo(f"{k}: {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}")


def _click_exceptions():
    """Click's exception classes as Typer raises them: typer >= 0.20 carries its own copy of click."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def main() -> None:
    try:
        _main()
    finally:
        # Interpreter shutdown garbage-collects every object the libraries made (1.7 s after a book-scale
        # run); frozen, they are left to the operating system, as they would be. Exit handlers still run.
        gc.freeze()


def _main() -> None:
    exc = _click_exceptions()
    no_args = getattr(exc, "NoArgsIsHelpError", None) or getattr(exc, "NoArgsIsHelp", ())
    try:
        code = app(standalone_mode=False)  # returns the code of a typer.Exit raised by a command
    except MlpipeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except no_args as e:
        print(e.format_message(), file=sys.stderr)
        sys.exit(2)
    except exc.UsageError as e:
        print(f"error: {' '.join(e.format_message().split())}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
