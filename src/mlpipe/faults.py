"""Named points in a run where a crash test can kill the process, to prove that a run killed anywhere
leaves the registries complete.

``MLPIPE_KILL_AT=<point>`` makes the process send itself SIGKILL when it reaches that point (no cleanup,
no ``finally``, exactly like the OOM killer or a pulled plug). Unset -- always, outside tests -- a checkpoint
costs one dictionary look-up.
"""

from __future__ import annotations

import os
import signal

ENV = "MLPIPE_KILL_AT"

POINTS = (
    "ingest.read",                  # raw data read, nothing validated
    "ingest.done",                  # cleaned, labelled and split
    "run.started",                  # the MLflow parent run exists
    "dataset.file.written",         # a dataset's temporary Parquet file is written, not yet renamed
    "datasets.staged",              # the three dataset files are in place, no catalog row yet
    "train.fitted",                 # a model is fitted
    "package.converted",            # its ONNX graph exists in memory
    "model.logged",                 # its ONNX file is a run artifact, not registered
    "register.locked",              # inside the registration lock, nothing registered yet
    "register.dataset",             # after one dataset version is committed
    "register.datasets",            # all dataset versions committed, no model version yet
    "register.inputs",              # dataset inputs logged to the runs
    "register.model.created",       # a registered model exists (maybe still without versions)
    "register.model.version",       # after one model version is created
    "register.models",              # every model version created, champion not decided
    "champion.intent",              # the champion move is recorded, no alias moved
    "champion.old_removed",         # the old champion's alias is removed, the new one not yet set
    "champion.set",                 # the new alias is set, its intent not yet cleared
    "register.done",                # registration finished, lock still held
    "run.ending",                   # everything registered, the MLflow run not yet ended
)


def checkpoint(point: str) -> None:
    """Die here by SIGKILL when ``$MLPIPE_KILL_AT`` names this point (``POINT`` or ``POINT#N``: its N-th pass)."""
    target = os.environ.get(ENV)
    if not target:
        return
    name, _, nth = target.partition("#")
    if name != point:
        return
    passes = _passes[point] = _passes.get(point, 0) + 1
    if passes >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


_passes: dict[str, int] = {}
