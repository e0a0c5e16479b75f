"""How each model kind trains at a given size: one plan per kind, from the training rows and its settings.

A run's cost must stay bounded as the data grows, whatever the config says; so every searched kind gets a plan
before it trains, printed by the run and kept with the registered version (``param.plan``):

- **search rows**: each fold fit of the search trains on at most ``SEARCH_ROWS`` rows of its fold (the SVM:
  ``SVM_SEARCH_ROWS``, or its ``max_rows`` if lower), and is scored on at most as many rows of its validation
  block: a time-stratified sample (``time_stratified``). Candidates are ranked on equal samples; only the
  winner's final fit sees more.
- **strategy**: a tree model whose ``strategy`` the config does not name is searched by successive halving on
  row fractions above ``HALVING_ABOVE`` training rows (grid below it): the whole grid on a ninth of the rows,
  the best third on a third, then the winner refitted. Not the SVM: on a ninth of the Turku book-scale rows
  halving ranked the linear kernel first, and the SVM it chose answered like persistence (test macro F1
  0.7902 against the grid's 0.8215); its search is bounded by its sample size instead.
- **final fit**: LightGBM (histograms, linear in the rows) on every row; the forest on every row, each tree on
  a bootstrap of at most ``FOREST_TREE_ROWS`` rows (``max_samples``); the kernel SVM, whose exact fit grows
  with the square of the rows and whose answers cost a kernel sum per support vector, exact on every row up
  to its ``max_rows`` (``SVM_MAX_ROWS`` by default), above it through a kernel approximation that is still an
  SVC (``training.approx``: Nystroem landmarks, a linear SVM on a time-stratified sample); with several
  classes, or ``models.svm.approximate = false``, on a time-stratified sample of ``max_rows`` rows instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlpipe.config import ModelConfig

SEARCH_ROWS = 100_000
"""Rows each fold fit of a search trains on (and is scored on), at most."""
HALVING_ABOVE = 30_000
"""Above this many training rows, a kind whose strategy is not configured is searched by successive halving."""
SVM_SEARCH_ROWS = 15_000
"""Rows each fold fit of the SVM's search trains on (and is scored on), at most. On the book-scale Turku rows
(45,364 for training) 15,000 chose what 20,000 chose (rbf, C = 10; test macro F1 0.8504 against 0.8510), the
SVM's step in 20.0 s instead of 23.5 s."""
SVM_MAX_ROWS = 50_000
"""The kernel SVM's default row budget (``models.svm.max_rows``): exact up to it, a sample of it above. Its
exact fit grows with the square of the rows or worse (221,818 Turku rows: not done after 25 minutes), and every
answer costs one kernel term per support vector (50,000 Turku rows: 7,025 of them)."""
ALL_CORES_ABOVE = 1_000_000
"""LightGBM's final fit runs on every core above this many rows (one core below: on the 47,155 book-scale
training rows all cores made it 32 s instead of 5 s, its threads waiting on the run's checks beside it; on
2,000,000 rows alone, two threads took 18.3 s against one's 35.0 s)."""
FOREST_TREE_ROWS = 200_000
"""The forest's default bootstrap size per tree (``max_samples``) above this many rows."""


@dataclass(frozen=True)
class Plan:
    kind: str
    rows: int
    """Training rows."""
    strategy: str
    search_rows: int | None
    """Rows per fold fit of the search (and scored per validation block), at most; None: all."""
    fit_rows: int | None
    """Rows of the final fit, a time-stratified sample; None: all."""
    tree_rows: int | None = None
    """The forest: bootstrap rows per tree (``max_samples``); None: as configured."""
    approximate: bool = False
    """The SVM: fitted through a kernel approximation (``training.approx``) on ``fit_rows`` rows."""
    all_cores: bool = False
    """LightGBM: the final fit on every core."""

    def describe(self) -> str:
        search = (f"{self.strategy} search on samples of {self.search_rows:,} rows per fold fit"
                  if self.search_rows else f"{self.strategy} search on every row")
        if self.approximate:
            from mlpipe.training import approx

            fit = (f"final fit through a kernel approximation ({approx.LANDMARKS} landmarks) on a time-stratified "
                   f"sample of {self.fit_rows:,} of {self.rows:,} rows")
        elif self.fit_rows:
            fit = f"final fit on a time-stratified sample of {self.fit_rows:,} of {self.rows:,} rows"
        else:
            fit = f"final fit on all {self.rows:,} rows"
        if self.tree_rows:
            fit += f", {self.tree_rows:,} per tree"
        if self.all_cores:
            fit += ", on every core"
        return f"{search}; {fit}"


def plan(kind: str, rows: int, settings: ModelConfig, classes: int = 2) -> Plan:
    """The plan of ``kind`` on ``rows`` training rows of ``classes`` classes under ``settings``
    (``models.<kind>``)."""
    explicit = "strategy" in settings.model_fields_set
    strategy = settings.strategy if explicit or rows <= HALVING_ABOVE or kind == "svm" else "halving"
    budget = settings.max_rows if settings.max_rows is not None else SVM_MAX_ROWS if kind == "svm" else None
    search_cap = SVM_SEARCH_ROWS if kind == "svm" else SEARCH_ROWS
    search_cap = min(search_cap, budget) if budget is not None else search_cap
    fit_rows = budget if budget is not None and rows > budget else None
    tree_rows = None
    if kind == "random_forest" and "max_samples" not in settings.params and rows > FOREST_TREE_ROWS:
        tree_rows = FOREST_TREE_ROWS
    approximate = kind == "svm" and fit_rows is not None and classes == 2 and settings.approximate
    if approximate:
        from mlpipe.training import approx

        fit_rows = min(rows, approx.ROWS)
    all_cores = kind == "lightgbm" and rows > ALL_CORES_ABOVE and "n_jobs" not in settings.params
    return Plan(kind, rows, strategy, search_cap if rows > search_cap else None, fit_rows, tree_rows, approximate,
                all_cores)


def time_stratified(idx: np.ndarray, n: int | None, seed: int = 0) -> np.ndarray:
    """At most ``n`` of the rows ``idx`` (in time order): one seeded draw from each of ``n`` equal consecutive
    strata, so every stretch of time keeps its share. All of ``idx`` when ``n`` is None or not smaller."""
    if n is None or len(idx) <= n:
        return idx
    rng = np.random.default_rng([seed, len(idx), n])
    picks = ((np.arange(n) + rng.random(n)) * (len(idx) / n)).astype(np.int64)
    return idx[np.minimum(picks, len(idx) - 1)]


def cap_folds(folds: list[tuple[np.ndarray, np.ndarray]], n: int | None, seed: int = 0):
    """Each fold's training rows and validation rows, time-stratified to at most ``n`` each."""
    return [(time_stratified(tr, n, seed), time_stratified(va, n, seed + 1)) for tr, va in folds]
