"""Where things live: the workspace, the dataset and model registries, their backends (SQLite, PostgreSQL, an
MLflow server), locks, artifact storage and the registry check. May import config, errors, faults and graph;
never steps, training, serving or report."""
