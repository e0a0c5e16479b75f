"""The lanes a run's work runs on, side by side:

- the training worker, a process of its own (``training.worker``): searches, fits and packages each model;
- two checks threads: a model's test answers, ONNX parity and measures, beside the next model's training;
- the tracking thread: MLflow's store (created on first use), the parent run, each model's child run, in the
  order they were asked for.

``pipeline`` asks for work in the order of the steps; this module decides where it runs. Leaving the block ends
the parent run (FINISHED, FAILED, or KILLED on Ctrl-C) and the worker.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack

from mlpipe import faults, provenance
from mlpipe.config import Config
from mlpipe.steps.ingest import IngestReport
from mlpipe.store.workspace import Workspace


class Lanes:
    def __init__(self, ws: Workspace, quiet: bool):
        self.ws = ws
        self._quiet = quiet
        self._stack = ExitStack()
        self._trainer = None
        self._tracking = ThreadPoolExecutor(1, thread_name_prefix="mlpipe-tracking")
        self._checks = ThreadPoolExecutor(2, thread_name_prefix="mlpipe-checks")
        self._parent: Future | None = None
        self._pending: list[Future] = []

    # -- the training worker --------------------------------------------------------------------------------
    def start_worker(self) -> None:
        """Start the training worker now: it imports scikit-learn (and oneDAL) while the run does other work."""
        from mlpipe.training.worker import Trainer

        self._trainer = self._stack.enter_context(Trainer(self._quiet))

    def train(self, kind: str, X, y, ts, config: Config, fit_key: str | None):
        """``(trained, onnx, hit)`` from the worker: ``kind`` searched, fitted and packaged, or the fit stored
        under ``fit_key`` reused (``hit``)."""
        return self._trainer.train(kind, X, y, ts, config, self.ws.root, fit_key)

    def store_fit(self, fit_key: str, run_id: str) -> None:
        """Keep the model the worker trained under ``fit_key`` in the fit cache (after what is queued there)."""
        self._trainer.store(self.ws.root, fit_key, run_id)

    def release_worker(self) -> None:
        """No more training: the worker finishes what is queued (storing fits) and exits while the run goes on."""
        self._trainer.release()

    # -- the tracking thread ---------------------------------------------------------------------------------
    def open_run(self, config: Config, report: IngestReport) -> None:
        """Create the store (on a first run) and the run's MLflow parent run, on the tracking thread."""
        self._parent = self._tracking.submit(self._open, config, report)

    def _open(self, config: Config, report: IngestReport) -> tuple[str, str]:
        from mlflow.entities import Metric
        from mlflow.tracking.context.registry import resolve_tags

        client = self.ws.client  # creates the store on first use
        experiment_id = self.ws.experiment_id()
        prefix = config.registry.model_prefix
        run = client.create_run(experiment_id, run_name=f"{prefix} pipeline", tags=resolve_tags(
            {"mlflow.source.git.commit": provenance.git_commit(), "mlpipe.prefix": prefix}))
        run_id = run.info.run_id
        faults.checkpoint("run.started")
        client.log_dict(run_id, config.model_dump(), "config.json")
        client.log_dict(run_id, report.to_dict(), "ingest_report.json")
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in report.to_dict().items()
                                          if isinstance(v, (int, float))])
        return experiment_id, run_id

    @property
    def parent_id(self) -> str:
        return self._parent.result()[1]

    def record(self, fn, *args) -> Future:
        """Run ``fn(client, experiment_id, parent_run_id, *args)`` on the tracking thread, after what came before."""
        future = self._tracking.submit(lambda: fn(self.ws.client, *self._parent.result(), *args))
        self._pending.append(future)
        return future

    # -- the checks threads ----------------------------------------------------------------------------------
    def beside(self, fn, *args) -> Future:
        """Run ``fn(*args)`` -- work that needs no MLflow, such as a model's checks -- on one of two threads of
        its own, so it need not wait for the store to open nor for the models before it to be logged."""
        future = self._checks.submit(fn, *args)
        self._pending.append(future)
        return future

    def raise_failed(self) -> None:
        """Raise now the error of any work on the threads that has already failed."""
        for future in [f for f in [self._parent, *self._pending] if f is not None]:
            if future.done() and future.exception() is not None:
                raise future.exception()

    def __enter__(self) -> "Lanes":
        return self

    def __exit__(self, kind, error, tb) -> None:
        try:
            for future in self._pending:
                future.cancel()
            self._checks.shutdown(wait=True)
            self._tracking.shutdown(wait=True)
            if self._parent is not None and self._parent.done() and self._parent.exception() is None:
                status = "FINISHED" if kind is None else "KILLED" if kind is KeyboardInterrupt else "FAILED"
                self.ws.client.set_terminated(self.parent_id, status)
        finally:
            self._stack.__exit__(kind, error, tb)
