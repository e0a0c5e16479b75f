"""The pipeline's steps, in order: ingest -> features -> train -> evaluate (test) -> package -> register.

Each module does one step with plain functions of DataFrames and configs; ``mlpipe.pipeline`` runs them in that
order. May import config, errors, console, faults, graph, training (the machinery behind ``train``) and store
(what ``register`` writes to); never serving or report.
"""
