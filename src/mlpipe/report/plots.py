"""The report's plots, each a PNG as bytes. Figures are built with matplotlib's object API (no pyplot, so no
global state and no display backend); matplotlib is imported only when a plot is drawn."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

DPI = 100
SCORE, SCORE_STD = "cv_f1_macro_mean", "cv_f1_macro_std"
MAX_PANELS = 4
MAX_SERIES = 6
_NOT_PARAMS = ("cv_", "fit_", "mean_", "std_", "rank_", "score_")
_TRIAL_COLUMNS = {"trial", "rung", "fraction", "params", "node", "worker", "status", "best"}  # search.py's table


def palette(names: Sequence[str]) -> dict[str, str]:
    """One colour per model, the same in every plot."""
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    return {name: colours[i % len(colours)] for i, name in enumerate(names)}


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def confusion(matrix: Sequence[Sequence[int]], title: str, classes: Sequence[str] | None = None) -> bytes:
    """A confusion matrix (2x2 ``[[tn, fp], [fn, tp]]``, or k x k) with counts and row shares in each cell;
    ``classes`` names the rows and columns (default 0, 1, …)."""
    m = np.asarray(matrix, dtype=float)
    k = len(m)
    names = list(classes) if classes else [str(i) for i in range(k)]
    shares = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig = _figure(3.6 + 0.9 * max(0, k - 2), 3.2 + 0.8 * max(0, k - 2))
    ax = fig.subplots()
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(m):
        ax.text(j, i, f"{int(count)}\n{shares[i, j]:.1%}", ha="center", va="center",
                color="white" if shares[i, j] > 0.6 else "black", fontsize=11)
    ax.set_xticks(range(k), names, rotation=30 if k > 2 else 0, ha="right" if k > 2 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], colours: Mapping[str, str]) -> bytes:
    """ROC curves of all models on one axis; ``curves`` maps model name to (true labels, probabilities)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = _figure(5.2, 4.4)
    ax = fig.subplots()
    for name, (y, p) in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, color=colours[name], lw=1.8, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate",
           title="ROC curves on the test split")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def precision_recall(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], colours: Mapping[str, str]) -> bytes:
    """Precision-recall curves (positive class) of all models on one axis, with the positive rate as chance."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig = _figure(5.2, 4.4)
    ax = fig.subplots()
    rate = None
    for name, (y, p) in curves.items():
        precision, recall, _ = precision_recall_curve(y, p)
        ax.step(recall, precision, where="post", color=colours[name], lw=1.8,
                label=f"{name} (AP {average_precision_score(y, p):.3f})")
        rate = float(np.mean(y))
    if rate is not None:
        ax.axhline(rate, color="grey", lw=1, ls="--", label=f"chance (positive rate {rate:.1%})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall", ylabel="precision",
           title="Precision-recall curves on the test split")
    ax.legend(loc="lower left", fontsize=8)
    return _png(fig)


def importance(table: pd.DataFrame, title: str, colour: str) -> bytes:
    """Horizontal bars of permutation importance (mean drop in macro F1, with its std), largest on top."""
    t = table.iloc[::-1]
    fig = _figure(5.2, 0.8 + 0.32 * len(t))
    ax = fig.subplots()
    ax.barh(t["feature"], t["mean"], xerr=t["std"], color=colour, alpha=0.85, error_kw={"lw": 1})
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("drop in test macro F1 when shuffled")
    ax.set_title(title, fontsize=10)
    return _png(fig)


def searched_params(cv: pd.DataFrame) -> list[str]:
    """The hyperparameters a search varied (more than one value tried), in table order, at most MAX_PANELS."""
    params = [c for c in cv.columns if not str(c).startswith(_NOT_PARAMS) and c not in _TRIAL_COLUMNS]
    return [c for c in params if cv[c].map(str).nunique() > 1][:MAX_PANELS]


def trials(cv: pd.DataFrame, title: str) -> bytes | None:
    """CV macro F1 of every search candidate against each searched hyperparameter (one panel each); lines
    join candidates that share the other hyperparameters; the star is the chosen candidate. None when the
    search tried one candidate only."""
    varied = searched_params(cv) if SCORE in cv.columns else []
    if not varied:
        return None
    fig = _figure(4.2 * len(varied), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(varied), sharey=True))
    best = int(np.flatnonzero(cv["best"].astype(bool))[0]) if "best" in cv else int(np.argmax(cv[SCORE].to_numpy()))
    for ax, param in zip(axes, varied):
        _trials_panel(ax, cv, param, [p for p in varied if p != param], best)
    axes[0].set_ylabel("CV macro F1 (mean ± std over folds)")
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def _trials_panel(ax, cv: pd.DataFrame, param: str, others: list[str], best: int) -> None:
    x, ticks = _axis_values(cv[param])
    std = cv[SCORE_STD] if SCORE_STD in cv.columns else pd.Series(0.0, index=cv.index)
    groups = cv[others].map(str).agg(", ".join, axis=1) if others else pd.Series("", index=cv.index)
    if groups.nunique() > MAX_SERIES:
        groups = pd.Series("", index=cv.index)
    labelled = False
    for key, rows in cv.groupby(groups, sort=True).groups.items():
        order = sorted(rows, key=lambda i: x[cv.index.get_loc(i)])
        pos = [cv.index.get_loc(i) for i in order]
        label = ", ".join(f"{o}={_label(cv.iloc[pos[0]][o])}" for o in others) if key else None
        labelled |= label is not None
        ax.errorbar(x[pos], cv[SCORE].iloc[pos], yerr=std.iloc[pos], marker="o", ms=5, capsize=3, lw=1.4,
                    label=label)
    ax.plot([x[best]], [cv[SCORE].iloc[best]], marker="*", ms=16, color="gold", mec="black", ls="none",
            label="chosen", zorder=5)
    if ticks is not None:
        ax.set_xticks(range(len(ticks)), ticks)
    else:
        if _log_scale(x):
            ax.set_xscale("log")
        values = np.unique(x)
        if len(values) <= 8:  # few values tried: label exactly those
            ax.set_xticks(values, [f"{v:g}" for v in values])
            ax.minorticks_off()
    ax.set_xlabel(param)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def _axis_values(col: pd.Series) -> tuple[np.ndarray, list[str] | None]:
    """Numbers as they are; otherwise categories: numbers in numeric order, then the rest (strings, None,
    booleans) in sorted order."""
    numeric = pd.to_numeric(col, errors="coerce")
    if numeric.notna().all() and not pd.api.types.is_bool_dtype(col):
        return numeric.to_numpy(dtype=float), None
    numbers = {f"{n:g}": n for v, n in zip(col, numeric) if pd.notna(n) and not isinstance(v, bool)}
    labels = [f"{n:g}" if f"{n:g}" in numbers and not isinstance(v, bool) else _label(v) for v, n in zip(col, numeric)]
    ticks = sorted(numbers, key=numbers.get) + sorted(set(labels) - set(numbers))
    position = {t: i for i, t in enumerate(ticks)}
    return np.array([position[label] for label in labels], dtype=float), ticks


def _label(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "None"
    return f"{value:g}" if isinstance(value, (int, float, np.number)) and not isinstance(value, bool) else str(value)


def _log_scale(x: np.ndarray) -> bool:
    return bool(np.all(x > 0) and x.max() / x.min() >= 10)


def reliability(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], colours: Mapping[str, str]) -> bytes:
    """Reliability curves: the observed positive rate against the mean predicted probability, per decile."""
    from mlpipe.steps.evaluate import reliability as curve

    fig = _figure(5.2, 4.4)
    ax = fig.subplots()
    for name, (y, p) in curves.items():
        if len(np.unique(p)) < 3:  # a 0/1 rule (the baseline) has no probability scale to check
            continue
        points = curve(y, p)
        ax.plot(points["mean_predicted"], points["fraction_positive"], marker="o", ms=3, color=colours[name],
                lw=1.5, label=name)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfectly calibrated")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="mean predicted probability (decile of the test split)",
           ylabel="observed positive rate", title="Reliability on the test split")
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)
