"""Where things live: the workspace, the dataset and model registries, their backends (SQLite, PostgreSQL, an
MLflow server), locks, artifact storage, the registry check, and the observation store that ``/observations``
writes (``observations.py``). May import config, errors, faults and graph;
never steps, training, serving or report."""
