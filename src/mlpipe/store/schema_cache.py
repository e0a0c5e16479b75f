"""A new workspace's MLflow database starts as a copy of MLflow's empty schema, made once per MLflow version.

MLflow creates the tables of a new SQLite store by running its Alembic migrations one after another: about a
second of CPU (0.8 s measured), paid by every new workspace -- a first run, every test, every benchmark round.
The schema depends on the MLflow version only, so it is made once, by MLflow's own table set-up
(``mlflow.store.db.utils._initialize_tables``, what its SQL store runs on an empty database), in
``$XDG_CACHE_HOME/mlpipe`` (``~/.cache/mlpipe``), and copied (0.03 s). The copy holds tables and the Alembic
version only, no rows: MLflow verifies the schema on opening and creates its default experiment as it would in
a new database. Where the cache cannot be written, or this MLflow has no such function, MLflow creates the
tables itself as before.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlpipe"


def copy_empty_schema(path: Path) -> None:
    """Create the SQLite file ``path`` (which must not exist) as MLflow's empty schema; if no template can be
    had, leave ``path`` absent for MLflow to create."""
    template = _template()
    if template is None:
        return
    partial = path.with_name(f".{path.name}.partial")
    shutil.copyfile(template, partial)
    os.replace(partial, path)  # never a half-copied database under the real name


def _template() -> Path | None:
    import mlflow
    from mlflow.store.db import utils

    if not hasattr(utils, "_initialize_tables"):
        return None
    path = cache_dir() / f"mlflow-{mlflow.__version__}-schema.db"
    if path.exists():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=path.parent, prefix=".schema-", suffix=".db")
    except OSError:  # no writable cache (a read-only home): MLflow creates the tables itself
        return None
    os.close(fd)
    try:
        _make(Path(partial))
        os.replace(partial, path)  # atomic: a concurrent maker's template is just as good
    finally:
        Path(partial).unlink(missing_ok=True)
    return path


def _make(path: Path) -> None:
    import sqlalchemy
    from mlflow.store.db import utils

    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        utils._initialize_tables(engine)
    finally:
        engine.dispose()
