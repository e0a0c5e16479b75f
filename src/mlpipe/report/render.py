"""The report as one self-contained HTML page: the run's numbers laid out by a Jinja2 template (autoescaped),
every plot embedded as a base64 PNG."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources

from mlpipe import provenance
from mlpipe.report import plots
from mlpipe.report.evidence import Evidence
from mlpipe.steps.evaluate import METRIC_KEYS

TEMPLATE = "report.html.j2"
METRIC_LABELS = {"accuracy": "accuracy", "precision": "precision (macro)", "recall": "recall (macro)",
                 "f1": "F1 (macro)", "roc_auc": "ROC AUC"}


@dataclass(frozen=True)
class Plot:
    key: str
    """Stable id, e.g. ``confusion:turku-svm``; the page carries it as ``data-plot``."""
    title: str
    caption: str
    png: bytes

    @property
    def src(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def render(result, config, evidence: Evidence) -> str:
    """The HTML page of one run."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    template = env.from_string(resources.files("mlpipe.report").joinpath(TEMPLATE).read_text(encoding="utf-8"))
    return template.render(**context(result, config, evidence))


def context(result, config, evidence: Evidence) -> dict:
    champion = f"{result.champion.name}:{result.champion.version}" if result.champion else None
    return {
        "run_id": result.run_id, "prefix": config.registry.model_prefix, "source": config.data.source,
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_s": result.duration_s, "champion": champion, "champion_reason": result.champion_reason,
        "data": data_facts(result.ingest_report, config), "checks": validation_rows(result.ingest_report, config),
        "splits": evidence.splits, "metric_labels": METRIC_LABELS,
        "models": model_rows(result.models, champion, config.registry.select_by),
        "select_by": METRIC_LABELS.get(config.registry.select_by, "Brier score"),
        "plots": plot_sections(result, evidence, config.target.classes, config.data.timestamp is not None),
        "lineage": lineage(result), "importance_rows": evidence.importance_rows,
        "classes": config.target.classes, "per_class": per_class_rows(result.models, config.target.classes),
        "baseline_text": 'persistence baseline ("later = now")' if config.data.series else
                         "class-prior baseline (the training rows' class shares; label: the majority class)",
    }


def per_class_rows(models, classes) -> list[dict]:
    """A target of several classes: each model's test precision, recall and F1 per class (empty otherwise)."""
    if not classes:
        return []
    return [{"model": f"{m.name}:{m.version}" if m.version else m.name, "class": c,
             **{k: _num(m.metrics.get(f"{k}_{i}")) for k in ("precision", "recall", "f1")}}
            for m in models for i, c in enumerate(classes)]


def data_facts(r, config) -> list[tuple[str, str]]:
    target = config.target
    balance = (", ".join(f"{c} {n:,}" for c, n in r.class_counts.items()) if target.multiclass
               else f"{r.positive_rate:.1%} positive")
    if target.multiclass:
        rule = None
    elif target.above is not None:
        rule = f"{target.column} > {target.above:g}"
    elif len(target.positive) == 1:
        rule = f"{target.column} = {target.positive[0]}"
    else:
        rule = f"{target.column} is one of {', '.join(map(str, target.positive))}"
    return [
        ("source", config.data.source),
        ("rows read", f"{r.rows_read:,}"),
        ("rows labelled", f"{r.rows_labelled:,} ({balance})"),
        ("label", f"the row's own {target.column}: " + ", ".join(f"{c} ({i})" for i, c in enumerate(target.classes))
         if target.multiclass else
         f"1 when {rule} holds {target.horizon} later (same {config.data.group or 'series'}, "
         f"matched by timestamp)" if config.data.series else
         f"1 when the row's own {rule} (independent rows: data.series = false)"),
        ("features", ", ".join(config.data.features) or "none"),
        *([("categorical features", ", ".join(config.data.categorical) + f" (one-hot up to "
                                    f"{config.data.onehot_max} categories, ordinal codes above; unseen and "
                                    f"missing ones answered)")] if config.data.categorical else []),
        ("derived features", ", ".join(config.features.derived()) or "none"),
        ("split", f"by time: the last {config.split.test_fraction:.0%} of timestamps are the test split, for "
                  f"reporting only; the last {config.split.validation_fraction:.0%} of the timestamps before them "
                  f"the validation split, which no fit saw, where models are compared and the champion chosen; "
                  f"{config.split.cv_folds} time-ordered CV folds in the rest" if config.data.timestamp else
                  f"at random (seed {config.split.seed}), stratified by class"
                  + (f", whole {config.data.group} groups to one side" if config.data.group else "") +
                  f": {config.split.test_fraction:.0%} of the rows are the test split, for reporting only; "
                  f"{config.split.validation_fraction:.0%} of the rest the validation split, which no fit saw, where "
                  f"models are compared and the champion chosen; {config.split.cv_folds} stratified CV folds in "
                  f"the rest"),
    ]


def validation_rows(r, config) -> list[tuple[str, str, str]]:
    """(check, what it found, what ingest did), one row per check, found or not."""
    ranges = config.data.ranges
    impossible = "; ".join(f"{c}: {n:,} outside [{ranges[c][0]:g}, {ranges[c][1]:g}]" if c in ranges
                           else f"{c}: {n:,} not finite" for c, n in r.impossible_values.items())
    missing = "; ".join(f"{c}: {n:,}" for c, n in r.missing_values.items())
    series = config.data.series
    duplicates = [
        ("exact duplicate rows", f"{r.exact_duplicates_dropped:,}", "dropped (one copy kept)"),
        ("timestamps with conflicting rows", f"{r.conflicting_timestamps:,} ({r.conflicting_rows_dropped:,} rows)",
         "all their rows dropped"),
    ] if series else [("equal rows", "not checked", "kept: independent rows (data.series = false) may be alike")]
    timed = config.data.timestamp is not None
    rows = [
        ("rows without a timestamp", f"{r.missing_timestamps_dropped:,}", "dropped"),
        *duplicates,
        ("unsorted rows", f"{r.backward_time_jumps:,} backward jumps in time", "rows sorted by time"),
        ("impossible values", impossible or "none", "set to missing"),
        ("missing values per feature", missing or "none",
         "imputed inside each model with the training median" + ("; a missing category is a category of its own"
                                                                  if config.data.categorical else "")),
        ("rows without a label", f"{r.unlabelled_dropped:,}",
         f"dropped: no observation {config.target.horizon} later" if series else "dropped: no target value"),
        ("rows labelled inside the test period", f"{r.embargo_dropped:,}", "dropped (embargo)"),
        ("train rows labelled inside the validation period", f"{r.validation_embargo_dropped:,}",
         "dropped (embargo)"),
    ]
    clock = ("rows without a timestamp", "unsorted rows", "rows labelled inside the test period",
             "train rows labelled inside the validation period")
    return rows if timed else [row for row in rows if row[0] not in clock]


def model_rows(models, champion: str | None, select_by: str = "f1") -> list[dict]:
    """One row per model: its validation score (what the champion is chosen by), then each headline test
    metric, each with its margin over the baseline's (red where the model does worse)."""
    baseline = next((m for m in models if m.kind == "baseline"), None)
    rows = []
    for m in models:
        ref = f"{m.name}:{m.version}" if m.version is not None else m.name
        other = baseline if baseline is not None and m is not baseline else None
        validation = _cell("validation", m.validation.get(select_by),
                           other.validation.get(select_by) if other else None, lower_is_better=select_by == "brier")
        cells = [_cell(key, m.metrics.get(key), other.metrics.get(key) if other else None) for key in METRIC_KEYS]
        rows.append({"name": m.name, "ref": ref, "kind": m.kind, "champion": ref == champion,
                     "validation": validation, "cells": cells, "chosen": _chosen(m), "run_id": m.run_id,
                     "one_class": m.validation_one_class if m.kind != "baseline" else None})
    return rows


def _cell(key: str, value: float | None, base: float | None, lower_is_better: bool = False) -> dict:
    delta = value - base if value is not None and base is not None else None
    better = None if delta is None else (-delta if lower_is_better else delta)
    return {"key": key, "value": _num(value), "baseline": _num(base),
            "delta": None if delta is None else f"{delta:+.4f}",
            "direction": None if better is None else ("up" if better > 0 else "down" if better < 0 else "same")}


def _chosen(m) -> str:
    if m.cv_results is None or m.cv_results.empty:
        return ", ".join(f"{k}: {v}" for k, v in m.params.items())
    searched = plots.searched_params(m.cv_results)
    cv = m.cv_results[m.cv_results["best"].astype(bool)] if "best" in m.cv_results else m.cv_results
    best = cv[plots.SCORE].max() if plots.SCORE in cv else None  # the chosen trial's, not a small rung's
    chosen = ", ".join(f"{p}={m.params.get(p)}" for p in searched) or "one candidate"
    return chosen + (f" (CV F1 {best:.4f})" if best is not None else "")


def _num(value: float | None) -> str | None:
    return None if value is None else f"{value:.4f}"


def model_pngs(name: str, confusion, importance, cv_results, colour: str, classes=None) -> dict[str, bytes]:
    """One model's own plots by plot key: the run draws them as soon as the model is tracked, beside the next
    model's training, rather than all at the end (``ModelOutcome.pngs``)."""
    out = {f"confusion:{name}": plots.confusion(confusion, f"{name} (test split)", classes)}
    if importance is not None:
        out[f"importance:{name}"] = plots.importance(importance, f"{name}: permutation importance", colour)
    trials = plots.trials(cv_results, f"{name}: search trials") if cv_results is not None else None
    if trials is not None:
        out[f"trials:{name}"] = trials
    return out


def ranking_pngs(curves, colours) -> dict[str, bytes]:
    """The plots that rank all models on one axis, from ``curves``: model name -> (true labels, probabilities)."""
    return {"roc": plots.roc(curves, colours), "pr": plots.precision_recall(curves, colours),
            "reliability": plots.reliability(curves, colours)}


def plot_sections(result, evidence: Evidence, classes=None, timed: bool = True) -> list[dict]:
    """The plots in the order the page shows them, grouped under headings; a model's own plots as the run
    drew them, if it did. ``classes``: the class names of a target of several classes."""
    colours = plots.palette([m.name for m in result.models])
    drawn: dict[str, bytes] = {}
    for m in result.models:
        e = evidence.models.get(m.name)
        drawn.update(m.pngs or model_pngs(m.name, m.confusion, e and e.importance, m.cv_results, colours[m.name],
                                          classes))
    confusion = [Plot(f"confusion:{m.name}", m.name, "rows: true label, columns: predicted; count and share of "
                      "the true label's rows", drawn[f"confusion:{m.name}"]) for m in result.models]
    curves = {name: (e.y_true, e.proba) for name, e in evidence.models.items() if e.proba.ndim == 1}  # binary
    ranking = []
    if curves:
        pre = result.ranking_pngs  # drawn by the run for these same models, or to draw now
        ranked = pre[1] if pre is not None and pre[0] == tuple(curves) else ranking_pngs(curves, colours)
        ranking = [Plot("roc", "ROC", "positive class = label 1; probabilities from the registered ONNX models",
                        ranked["roc"]),
                   Plot("pr", "Precision-recall", "positive class = label 1; AP = average precision", ranked["pr"]),
                   Plot("reliability", "Reliability", "calibration of the probabilities: points on the diagonal "
                        "mean a predicted 30% rains 30% of the time", ranked["reliability"])]
    importance = [Plot(f"importance:{name}", name,
                       f"permutation importance on {evidence.importance_rows:,} test rows, "
                       f"{len(e.importance)} features, 5 shuffles each",
                       drawn[f"importance:{name}"])
                  for name, e in evidence.models.items()]
    trials = []
    for m in result.models:
        png = drawn.get(f"trials:{m.name}")
        if png is not None:
            folds = "time-ordered" if timed else "stratified"
            trials.append(Plot(f"trials:{m.name}", m.name, f"{len(m.cv_results)} candidates, scored by {folds} "
                               "cross-validation on the training split", png))
    sections = [("Confusion matrices", confusion), ("ROC, precision-recall and reliability", ranking),
                ("Feature importance", importance), ("Search trials", trials)]
    return [{"title": title, "plots": items} for title, items in sections if items]


def lineage(result) -> dict:
    return {
        "datasets": [{"role": role, "name": d.name, "version": d.version, "rows": d.rows, "digest": d.digest}
                     for role, d in result.datasets.items()],
        "models": [{"ref": f"{m.name}:{m.version}" if m.version is not None else f"{m.name} (not registered)",
                    "kind": m.kind, "run_id": m.run_id, "onnx_sha256": m.onnx_sha256 or "-"}
                   for m in result.models],
        "git_commit": provenance.git_commit(),
        "versions": provenance.versions(),
    }
