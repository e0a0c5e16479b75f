"""Where things live: one folder holds the MLflow store, artifacts, datasets and reports."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Iterator

from mlpipe.store.datasets import DatasetRegistry

DEFAULT_WORKSPACE = "mlpipe-workspace"
EXPERIMENT = "mlpipe"
ENV_TRACKING, ENV_DATASETS, ENV_ARTIFACTS = "MLPIPE_TRACKING_URI", "MLPIPE_DATASETS_URI", "MLPIPE_ARTIFACT_LOCATION"


def default_root() -> Path:
    return Path(os.environ.get("MLPIPE_WORKSPACE") or DEFAULT_WORKSPACE)


class Workspace:
    """A workspace folder: ``mlflow.db`` (tracking and model registry), ``artifacts/``, ``datasets/``
    (Parquet files) with their catalog ``datasets.db``, and ``reports/``.

    A team shares registries instead: ``tracking_uri`` (``$MLPIPE_TRACKING_URI``) is ``postgresql://…``
    (MLflow's SQL store) or ``http://…`` (an MLflow tracking server); ``datasets_uri``
    (``$MLPIPE_DATASETS_URI``) is the dataset catalog -- by default the tracking database when that is
    PostgreSQL, else ``datasets.db`` in the folder; ``artifact_location`` (``$MLPIPE_ARTIFACT_LOCATION``) is
    where run artifacts (``<location>/<experiment>``) and dataset files (``<location>/datasets``) go -- a
    folder or an MLflow artifact URI; by default the folder, or the tracking server's artifact store.
    The folder still holds the lock files of a local workspace and is where ``run`` reports go.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, tracking_uri: str | None = None,
                 datasets_uri: str | None = None, artifact_location: str | None = None):
        from mlpipe.store import backends

        self.root = Path(root) if root is not None else default_root()
        self.root = self.root.expanduser().resolve()
        tracking = tracking_uri or backends.env(ENV_TRACKING)
        datasets = datasets_uri or backends.env(ENV_DATASETS)
        self._tracking = self._checked(tracking, "tracking uri", ("sqlite", "postgresql", "http"))
        self._datasets = self._checked(datasets, "datasets uri", ("sqlite", "postgresql"))
        location = artifact_location or backends.env(ENV_ARTIFACTS)
        if location and not _is_uri(location):
            location = str(Path(location).expanduser().resolve())
        self._artifacts = location

    @staticmethod
    def _checked(uri: str | None, what: str, allowed: tuple[str, ...]) -> str | None:
        from mlpipe.store import backends

        if not uri:
            return None
        backends.kind(uri, what, allowed)
        uri = backends.normalize(uri)
        if uri.startswith("sqlite:///") and "?" not in uri:
            uri += f"?timeout={backends.SQLITE_TIMEOUT_S}"
        return uri

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # -- where things live -----------------------------------------------------------------------------
    @property
    def tracking_uri(self) -> str:
        from mlpipe.store import backends

        return self._tracking or backends.sqlite_uri(self.root / "mlflow.db")

    @property
    def backend(self) -> str:
        """``sqlite``, ``postgresql`` or ``http``: where tracking and the model registry live."""
        from mlpipe.store import backends

        return backends.kind(self.tracking_uri)

    @property
    def datasets_uri(self) -> str:
        if self._datasets:
            return self._datasets
        if self.backend == "postgresql":
            return self.tracking_uri
        return f"sqlite:///{self.root / 'datasets.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.root / "artifacts"

    def run_artifact_location(self, experiment: str = EXPERIMENT) -> str | None:
        """Where a new experiment keeps its runs' artifacts (None: the tracking server's default)."""
        if self._artifacts:
            joined = _join(self._artifacts, experiment)
            return joined if _is_uri(joined) else Path(joined).as_uri()
        return None if self.backend == "http" else (self.artifact_root / experiment).as_uri()

    @property
    def dataset_storage(self) -> str:
        if self._artifacts:
            return _join(self._artifacts, "datasets")
        return "mlflow-artifacts:/mlpipe-datasets" if self.backend == "http" else str(self.root / "datasets")

    def exists(self) -> bool:
        """Whether the registry exists (a shared backend always does; a folder once something was stored)."""
        from mlpipe.store import backends

        if self.backend != "sqlite":
            return True
        return backends.sqlite_path(self.tracking_uri).exists()

    # -- handles ---------------------------------------------------------------------------------------
    @cached_property
    def datasets(self) -> DatasetRegistry:
        from mlpipe.store import backends

        if backends.kind(self.datasets_uri, "datasets uri") == "postgresql":
            backends.check_reachable(self.datasets_uri, "datasets uri")
        if _is_uri(self.dataset_storage):
            self._activate()  # artifact URIs resolve against MLflow's tracking URI
        return DatasetRegistry(self.datasets_uri, self.dataset_storage)

    @cached_property
    def client(self):
        """An MLflow client on this workspace's store (created on first use, one process at a time)."""
        from mlpipe.store import backends

        quiet_mlflow()
        uri = self.tracking_uri
        if self.backend == "sqlite":
            with backends.file_lock(self.root, "init"):
                backends.prepare_sqlite(backends.sqlite_path(uri))
                return backends.RetryingClient(self._open_client())
        backends.check_reachable(uri)
        if self.backend == "postgresql":
            with backends.pg_lock(uri, "init", "tracking uri"):  # MLflow creates its tables on first use
                return backends.RetryingClient(self._open_client())
        return backends.RetryingClient(self._open_client())

    def _activate(self) -> None:
        import mlflow

        quiet_mlflow()

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)

    def _open_client(self):
        from mlflow.tracking import MlflowClient

        self._activate()
        client = MlflowClient(self.tracking_uri, self.tracking_uri)
        client._get_registry_client()  # open the registry store now too, under the caller's lock
        return client

    def experiment_id(self, name: str = EXPERIMENT) -> str:
        from mlpipe.store.backends import retry_locked

        experiment = retry_locked(self.client.get_experiment_by_name, name)
        if experiment is not None:
            return experiment.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, artifact_location=self.run_artifact_location(name))
        except MlflowException:  # created meanwhile by a concurrent run
            return retry_locked(self.client.get_experiment_by_name, name).experiment_id

    @contextmanager
    def lock(self, name: str = "registry") -> Iterator[None]:
        """One process at a time, across every process sharing these registries: a PostgreSQL advisory lock
        when the dataset catalog or tracking store is PostgreSQL, else a file lock in the workspace folder."""
        from mlpipe.store import backends

        for uri, what in ((self.datasets_uri, "datasets uri"), (self.tracking_uri, "tracking uri")):
            if backends.kind(uri, what) == "postgresql":
                with backends.pg_lock(uri, name, what):
                    yield
                return
        with backends.file_lock(self.root, name):
            yield


def run_workspace(root, config, *, tracking_uri: str | None = None, datasets_uri: str | None = None,
                  artifact_location: str | None = None) -> Workspace:
    """The workspace a ``run`` uses: each setting from the command line, else the environment, else the
    config's ``[tracking]`` / ``[datasets]``, else the workspace folder's defaults."""
    from mlpipe.store.backends import env

    return Workspace(
        root,
        tracking_uri=tracking_uri or env(ENV_TRACKING) or config.tracking.uri,
        datasets_uri=datasets_uri or env(ENV_DATASETS) or config.datasets.uri,
        artifact_location=artifact_location or env(ENV_ARTIFACTS) or config.tracking.artifact_location)


def _is_uri(location: str) -> bool:
    return "://" in location or location.startswith("mlflow-artifacts:")


def _join(location: str, child: str) -> str:
    return f"{location.rstrip('/')}/{child}" if _is_uri(location) else str(Path(location) / child)


def quiet_mlflow() -> None:
    """MLflow and its database migrations log at INFO to stderr; keep the user's terminal for mlpipe."""
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # "View run at …" lines
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def exclusive(root: Path, name: str = "registry") -> Iterator[None]:
    """A file lock in a workspace folder (see ``Workspace.lock`` for the one that also spans machines)."""
    from mlpipe.store.backends import file_lock

    with file_lock(root, name):
        yield
