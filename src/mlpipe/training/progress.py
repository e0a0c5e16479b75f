"""The final fit's progress: how many trees (the forest) or boosting rounds (LightGBM) are done, and an estimate
of the time left, as a Rich bar on stderr beside the search's (``search.Progress``). On 10 M rows these fits
are minutes long; a spinner alone said nothing of how far they were.

The forest is grown ``STEP`` trees at a time with scikit-learn's ``warm_start``, which draws each new tree's
seed as one fit would: the forest is the same as one grown at once (``tests/training/test_plan.py``)."""

from __future__ import annotations

from mlpipe import console

STEP = 10
"""Trees the forest grows between two updates of its bar."""


def columns() -> list:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return [TextColumn("  [bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn()]


def fit(pipeline, X, y, kind: str):
    """``pipeline.fit(X, y)``, showing the progress of its model's trees or rounds where it has them."""
    from lightgbm import LGBMModel
    from sklearn.ensemble import RandomForestClassifier

    model = pipeline.steps[-1][1]
    forest = type(model) is RandomForestClassifier  # scikit-learn's own (oneDAL's grows its trees at once)
    if not (forest or isinstance(model, LGBMModel)) or console.console.quiet:
        return pipeline.fit(X, y)
    with console.progress_bar(columns()) as bar:
        task = bar.add_task(f"fit {kind}", total=model.n_estimators, unit="trees" if forest else "rounds")
        if forest:
            return _forest(pipeline, X, y, lambda n: bar.update(task, completed=n))
        return pipeline.fit(X, y, model__callbacks=[lambda env: bar.update(task, completed=env.iteration + 1)])


def _forest(pipeline, X, y, done):
    """Fit the pipeline's steps before the forest, then grow the forest ``STEP`` trees at a time."""
    model = pipeline.steps[-1][1]
    total, warm = model.n_estimators, model.warm_start
    Xt = pipeline[:-1].fit_transform(X, y) if len(pipeline.steps) > 1 else X
    model.set_params(warm_start=True)
    try:
        for n in range(min(STEP, total), total + STEP, STEP):
            model.set_params(n_estimators=min(n, total)).fit(Xt, y)
            done(min(n, total))
            if n >= total:
                break
    finally:
        model.set_params(warm_start=warm, n_estimators=total)
    return pipeline
