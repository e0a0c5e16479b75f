"""Where things live: one folder holds the MLflow store, artifacts, datasets and reports."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Iterator

from mlpipe.datasets import DatasetRegistry

DEFAULT_WORKSPACE = "mlpipe-workspace"
EXPERIMENT = "mlpipe"


def default_root() -> Path:
    return Path(os.environ.get("MLPIPE_WORKSPACE") or DEFAULT_WORKSPACE)


class Workspace:
    """A workspace folder: ``mlflow.db`` (tracking and model registry), ``artifacts/``, ``datasets/``
    (Parquet files) with their catalog ``datasets.db``, and ``reports/``."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.root = self.root.expanduser().resolve()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.root / "artifacts"

    def exists(self) -> bool:
        return (self.root / "mlflow.db").exists()

    @cached_property
    def datasets(self) -> DatasetRegistry:
        return DatasetRegistry(f"sqlite:///{self.root / 'datasets.db'}", self.root / "datasets")

    @cached_property
    def client(self):
        """An MLflow client on this workspace's store (created on first use)."""
        import mlflow
        from mlflow.tracking import MlflowClient

        quiet_mlflow()
        self.root.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return MlflowClient(self.tracking_uri, self.tracking_uri)

    def experiment_id(self, name: str = EXPERIMENT) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, artifact_location=(self.artifact_root / name).as_uri())
        except MlflowException:  # created meanwhile by a concurrent run
            return self.client.get_experiment_by_name(name).experiment_id


def quiet_mlflow() -> None:
    """MLflow and its database migrations log at INFO to stderr; keep the user's terminal for mlpipe."""
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def exclusive(root: Path, name: str = "registry") -> Iterator[None]:
    """Serialise a critical section across the processes sharing a workspace folder (released on exit or
    when the holder dies, even by SIGKILL)."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
