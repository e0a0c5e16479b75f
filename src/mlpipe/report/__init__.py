"""The run report: one self-contained HTML page per run, saved as ``reports/<run_id>.html`` in the workspace
and logged as ``report.html`` on the run's MLflow parent run.

``evidence`` measures what the plots need from what the run registered, ``plots`` draws PNGs, ``render``
lays out the page. Heavy libraries (matplotlib, Jinja2, onnxruntime) are imported only when a report is written.
May import config, errors, provenance, graph, store, ``steps.evaluate`` (the metrics) and ``steps.ingest`` (the
label column's name); never training or serving.
"""

from __future__ import annotations

from pathlib import Path

from mlpipe.errors import NotFoundError

REPORTS = "reports"
ARTIFACT = "report.html"


def report_path(workspace, run_id: str) -> Path:
    return workspace.root / REPORTS / f"{run_id}.html"


def write_report(result, config, workspace) -> Path:
    """Write the report of a finished, registered run; return its path in the workspace."""
    from mlpipe.report.evidence import gather
    from mlpipe.report.render import render
    from mlpipe.store.models import write_atomic

    html = render(result, config, gather(result, config, workspace))
    path = report_path(workspace, result.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, html.encode("utf-8"))
    workspace.client.log_text(result.run_id, html, ARTIFACT)
    return path


def find_report(workspace, run_id: str | None = None) -> Path:
    """The report of ``run_id``, or of the newest run that wrote one."""
    folder = workspace.root / REPORTS
    if run_id is not None:
        path = report_path(workspace, run_id.strip())
        if not run_id.strip().isalnum() or not path.is_file():
            raise NotFoundError(f"run {run_id!r} has no report in workspace {workspace.root}")
        return path
    reports = sorted(folder.glob("*.html"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if not reports:
        raise NotFoundError(f"workspace {workspace.root} has no run report yet; `mlpipe run` writes one")
    return reports[-1]
