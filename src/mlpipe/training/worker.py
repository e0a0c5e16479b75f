"""Models are trained in one worker process, started with the run.

Why a process: oneDAL's fits (``mlpipe[fast]``) hold the GIL from start to end, so in the run's own process
they stall its other threads -- each model's checks, MLflow's store and child runs -- until each fit returns
(measured: a thread spinning beside a oneDAL SVC fit got 0.2% of its free-running count). In a worker the two
proceed side by side, and the worker's imports (scikit-learn, oneDAL) overlap the run's ingest instead of
following it. The worker also packages each model it trained as ONNX: skl2onnx's conversion is Python-bound
(0.7 s for a forest of 100 trees 12 deep), and there it overlaps the run's checks of the model before. It
reads and writes the fit cache (``mlpipe.training.fitcache``) too.

The worker is a loky process (joblib's), which unlike ``multiprocessing``'s spawn does not run the caller's
``__main__`` again, so ``mlpipe.run()`` works from any script. Arguments and trained models travel pickled
through its pipe, in memory; nothing of it is written, registered or served. The worker draws its own
search progress bar on the inherited stderr.
"""

from __future__ import annotations

import gc
import warnings

WARMUP = ("sklearn.pipeline", "sklearn.impute", "sklearn.preprocessing", "sklearn.svm", "sklearn.ensemble",
          "sklearn.metrics", "mlpipe.steps.train", "mlpipe.training.search", "mlpipe.steps.package")


def quiet_warnings() -> None:
    """Warnings a run expects and records otherwise, in whichever process trains."""
    # scikit-learn 1.9 deprecates SVC(probability=True), which skl2onnx needs
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*(probability|probA_|probB_).*")
    # libsvm's iteration cap (see train._svm); the model's "converged" parameter records it instead
    warnings.filterwarnings("ignore", message=r"Solver terminated early")
    warnings.filterwarnings("ignore", message=r"Liblinear failed to converge")  # likewise (accelerate.LiblinearSVC)
    # oneDAL's fits in the search's threads use all cores each, which is what we want
    warnings.filterwarnings("ignore", message=r"'Threading' parallel backend is not supported")
    # requests silences this as it imports urllib3, but a library's catch_warnings() in another of the run's
    # threads can restore the filters from before that, mid-import (warnings' filters are process-wide)
    warnings.filterwarnings("ignore", message=r"SOCKS support in urllib3 requires")


def _start(quiet: bool, run_pid: int) -> None:
    from mlpipe import console
    from mlpipe.training import accelerate

    _exit_with_parent(run_pid)
    console.set_quiet(quiet)
    quiet_warnings()
    for module in WARMUP + (("sklearnex.svm", "sklearnex.ensemble") if accelerate.available() else ()):
        __import__(module)
    # What the imports made lives as long as the worker: frozen, the collector's passes no longer walk it
    # (a book-scale run: the worker's main thread spent a third as long in garbage collection)
    gc.freeze()


def _exit_with_parent(run_pid: int) -> None:
    """End the worker when the run that started it (``run_pid``, its parent) is gone, even if it went before
    the worker got this far. A run killed outright (SIGKILL, the OOM killer) cannot stop its worker, and loky's
    worker does not notice: it idled on, holding its memory (about 170 MB each), until the machine ran out.
    The check waits while a oneDAL fit holds the GIL; that is soon enough."""
    import os
    import threading
    import time

    def watch() -> None:
        import multiprocessing
        import signal

        while os.getppid() == run_pid:
            time.sleep(0.5)
        try:
            for child in multiprocessing.active_children():  # a search's joblib workers would idle on too
                os.kill(child.pid, signal.SIGKILL)  # (loky's processes have no kill())
        finally:
            os._exit(1)  # nothing to hand back to: whatever the worker held belonged to the killed run

    threading.Thread(target=watch, name="mlpipe-parent-watch", daemon=True).start()


def _ready() -> None:
    """The first task: returns once the worker has started and imported what training needs."""


_unstored: dict = {}
"""In the worker: models trained under a fit-cache key, until the run has checked them (``Trainer.store``)."""


def _train_and_package(kind: str, X, y, ts, config, root, fit_key: str | None):
    from mlpipe.steps.package import to_onnx
    from mlpipe.steps.train import train_model
    from mlpipe.training import fitcache

    hit = fitcache.load(root, fit_key) if fit_key is not None else None
    if hit is not None:
        return hit.trained, hit.onnx, hit
    trained = train_model(kind, X, y, ts, config)
    onnx = to_onnx(trained, config)
    if fit_key is not None:
        _unstored[fit_key] = (trained, onnx)
    return trained, onnx, None


def _store(root, fit_key: str, run_id: str) -> None:
    from mlpipe.training import fitcache

    trained, onnx = _unstored.pop(fit_key)
    fitcache.store(root, fit_key, trained, onnx, run_id)


class Trainer:
    """``train(kind, ...)`` runs ``steps.train.train_model`` in the worker and returns its ``Trained`` with
    its ONNX graph (``steps.package.to_onnx``) -- or, given a fit-cache key, the model stored under it
    (``mlpipe.training.fitcache``), which ``store`` stores once the run has checked it. The cache is read and written
    in the worker, which has scikit-learn imported already and is idle when every fit is reused."""

    def __init__(self, quiet: bool):
        import os

        from joblib.externals.loky.process_executor import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(max_workers=1, initializer=_start, initargs=(quiet, os.getpid()))
        self._task = self._pool.submit(_ready)  # start the worker now
        self._release = None

    def train(self, kind: str, X, y, ts, config, root=None, fit_key: str | None = None):
        """``(trained, onnx, hit)``: ``hit`` is the ``fitcache.Hit`` reused, None if the model was trained."""
        self._task = self._pool.submit(_train_and_package, kind, X, y, ts, config, root, fit_key)
        return self._task.result()

    def store(self, root, fit_key: str, run_id: str) -> None:
        """Store the model trained under ``fit_key`` in the fit cache, in the worker, after what is queued there
        (so never before training ends); the run's exit waits for it."""
        self._pool.submit(_store, root, fit_key, run_id)

    def release(self) -> None:
        """No more tasks: the worker finishes those queued (``store``) and exits without the run waiting for it
        here (a worker's exit took 0.4 s after a book-scale run); leaving the block waits for it."""
        import threading

        self._release = threading.Thread(target=self._pool.shutdown, name="mlpipe-trainer-release")
        self._release.start()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, kind, error, tb) -> None:
        # After an error (or Ctrl-C) with the worker mid-task, stop it rather than wait for it. An idle worker
        # -- the error was the task's own, or came after training -- is let go: one killed after it had run a
        # task made loky's resource tracker warn about a semaphore on stderr after the run had exited (1 in 5
        # runs with a bad search space), beside the one line a bad input is owed.
        if self._release is not None:  # every task was done or queued, and is let finish
            self._release.join()
            return
        self._pool.shutdown(wait=True, kill_workers=kind is not None and not self._task.done())
