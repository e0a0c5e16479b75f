"""The ``mlpipe`` command: a thin Typer layer over the library. Errors in the input exit 2 with one
``error:`` line; anything unexpected exits 1 with its traceback."""

from __future__ import annotations

import json
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Annotated, Optional

import typer

from mlpipe.errors import MlpipeError

app = typer.Typer(help="Local-first ML pipelines: ingest, train, test, package to ONNX, register in MLflow.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
datasets_app = typer.Typer(help="The dataset registry.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")

WorkspaceOpt = Annotated[Optional[Path], typer.Option(
    "--workspace", "-w", help="Workspace folder [default: $MLPIPE_WORKSPACE, else ./mlpipe-workspace].",
    show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON document on stdout.")]


def _workspace(path: Optional[Path]):
    from mlpipe.workspace import Workspace

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
    ray_address: Annotated[Optional[str], typer.Option(
        "--ray-address", help="Run search trials on the Ray cluster at HOST:PORT (overrides [compute]).")] = None,
) -> None:
    """Run the whole pipeline: ingest, features, train, test, package, register."""
    from mlpipe import console
    from mlpipe.config import load_config, on_ray
    from mlpipe.pipeline import run as run_pipeline
    from mlpipe.search import check_compute

    console.set_quiet(quiet)
    cfg = load_config(config, source=source)
    if ray_address is not None:
        cfg = on_ray(cfg, ray_address)
    check_compute(cfg.compute)  # before any work: a Ray head that is not there is bad input
    with redirect_stdout(sys.stderr):  # libraries that print must not corrupt the JSON document
        result = run_pipeline(cfg, _workspace(workspace))
    if as_json:
        _emit(result.to_dict())
    else:
        _print_run(result)


def _print_run(result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {result.run_id} ({result.duration_s:.1f} s)")
    for col in ("model", "version", "accuracy", "precision", "recall", "F1 (macro)", "ROC AUC"):
        table.add_column(col)
    for m in result.models:
        v = m.metrics
        table.add_row(m.name, str(m.version or "-"), *(f"{v.get(k, float('nan')):.4f}" for k in
                                                        ("accuracy", "precision", "recall", "f1", "roc_auc")))
    out = Console()
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
    from mlpipe.models import list_models

    rows = list_models(_workspace(workspace))
    _emit(rows) if as_json else _print_rows(rows, ("name", "versions", "aliases"))


@models_app.command("show")
def models_show(ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS")],
                workspace: WorkspaceOpt = None, as_json: JsonOpt = False) -> None:
    """One model version."""
    from mlpipe.models import describe, get_version

    info = describe(get_version(_workspace(workspace), ref))
    _emit(info) if as_json else _print_mapping({k: v for k, v in info.items() if k != "tags"})


@models_app.command("download")
def models_download(ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS")],
                    dest: Annotated[Path, typer.Option("--dest", help="Folder to write into.")],
                    workspace: WorkspaceOpt = None) -> None:
    """Write DEST/model.onnx (checked against its registered SHA-256) and DEST/model.json."""
    from mlpipe.models import download_model

    info = download_model(_workspace(workspace), ref, dest)
    typer.echo(f"{info['name']}:{info['version']} -> {dest / 'model.onnx'}")


@app.command()
def ui(port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000, workspace: WorkspaceOpt = None) -> None:
    """The MLflow UI on the workspace's store, bound to 127.0.0.1."""
    import subprocess

    ws = _workspace(workspace)
    ws.client  # noqa: B018 -- create the store, so the UI opens on an initialised database
    typer.echo(f"MLflow UI for {ws.root}: http://127.0.0.1:{port}", err=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", ws.tracking_uri,
           "--host", "127.0.0.1", "--port", str(port)]
    raise typer.Exit(subprocess.call(cmd))


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


def main() -> None:
    import click

    try:
        app(standalone_mode=False)
    except MlpipeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except click.exceptions.NoArgsIsHelp as e:
        print(e.format_message(), file=sys.stderr)
        sys.exit(2)
    except click.exceptions.UsageError as e:
        print(f"error: {' '.join(e.format_message().split())}", file=sys.stderr)
        sys.exit(2)
    except click.exceptions.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(1)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
