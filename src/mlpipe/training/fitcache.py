"""Identical fits are reused across runs: a model searched and fitted on the very same training rows, with the
same settings, mlpipe code, library versions and CPU, is not searched and fitted again (``[compute] cache``,
on by default; ``mlpipe run --no-cache`` ignores it).

An entry is stored only once its model has passed its parity check, in ``<workspace>/cache/fits/<key>/``:

- ``model.skops``: the fitted scikit-learn model in skops' format, loaded with the fixed list of types below
  and scikit-learn's own: no pickle, and loading runs no code. A file that names any other type is refused;
- ``model.onnx``: its ONNX graph, whose SHA-256 ``entry.json`` records and a load checks;
- ``trials.json``: the search's trials table; ``entry.json``: parameters, fit seconds, the run that fitted it.

A reused model is tested, checked against its ONNX graph, measured for the report and registered exactly as a
new one; its child run is tagged ``mlpipe.fit_cache = hit`` and ``mlpipe.fitted_in_run``. An entry that
cannot be read is reported on stderr and removed, and the model fitted again. The newest ``MAX_ENTRIES``
entries are kept. Deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from mlpipe import provenance
from mlpipe.config import Config

MAX_ENTRIES = 32
TRUSTED = ["numpy.dtype", "collections.OrderedDict", "sklearn.tree._tree.Tree",
           "skl2onnx.sklapi.cast_transformer.CastTransformer",
           "lightgbm.basic.Booster", "lightgbm.sklearn.LGBMClassifier"]
"""Types a model file may hold beyond those skops trusts by default (scikit-learn's estimators and numpy)."""
FIT_PACKAGES = ("scikit-learn", "scikit-learn-intelex", "lightgbm", "optuna", "numpy", "scipy", "pandas",
                "skl2onnx", "onnx", "onnxmltools", "skops")
"""Libraries whose version can change a fit, its search or its ONNX graph."""


@dataclass(frozen=True)
class Hit:
    trained: object
    """``steps.train.Trained``"""
    onnx: bytes
    fitted_in_run: str
    path: Path


def folder(root: Path) -> Path:
    return Path(root) / "cache" / "fits"


def key(kind: str, X: np.ndarray, y: np.ndarray, ts: pd.Series, config: Config) -> str:
    """What a fit depends on: the training rows, their timestamps (the CV folds), the settings that reach the
    search, the fit or the ONNX graph -- not the registry's names, the data's path or where trials run --
    and the code, library versions and CPU."""
    settings = config.model_dump(mode="json", include={"data", "target", "split", "features"})
    settings["data"].pop("source")
    settings.update(kind=kind, model=config.model(kind).model_dump(mode="json"), backend=config.compute.backend,
                    model_features=config.model_features, code=_code_digest(),
                    versions=provenance.versions(FIT_PACKAGES), cpu=provenance.cpu_model())
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    times = pd.util.hash_pandas_object(ts, index=False).to_numpy() if ts is not None else np.zeros(0, np.uint64)
    if isinstance(X, pd.DataFrame):  # numeric columns and categories (steps.features.feature_matrix)
        h.update(json.dumps([[str(c), str(t)] for c, t in X.dtypes.items()]).encode())
        X = pd.util.hash_pandas_object(X, index=False).to_numpy()
    for array in (X, y, times):
        array = np.ascontiguousarray(array)
        h.update(f"{array.dtype.str}{array.shape}".encode())
        h.update(memoryview(array).cast("B"))
    return h.hexdigest()[:32]


def load(root: Path, fit_key: str) -> Hit | None:
    """The entry stored under ``fit_key``, or None (absent, or unreadable: then a warning on stderr)."""
    path = folder(root) / fit_key
    if not path.is_dir():
        return None
    try:
        hit = _read(path)
    except Exception as e:  # noqa: BLE001 -- a cache entry is never worth a failed run: reported, then refitted
        print(f"warning: fit cache entry {path} not used ({type(e).__name__}: {e}); removed, fitting again",
              file=sys.stderr)
        shutil.rmtree(path, ignore_errors=True)
        return None
    os.utime(path)  # recently used: kept longest
    return hit


def _read(path: Path) -> Hit:
    import skops.io as sio

    from mlpipe.steps.train import Trained

    entry = json.loads((path / "entry.json").read_text())
    onnx = (path / "model.onnx").read_bytes()
    if hashlib.sha256(onnx).hexdigest() != entry["onnx_sha256"]:
        raise ValueError("model.onnx does not match the SHA-256 in entry.json")
    model = sio.load(path / "model.skops", trusted=TRUSTED)
    trials = pd.read_json(io.StringIO((path / "trials.json").read_text()), orient="table")
    trained = Trained(entry["kind"], model, entry["params"], trials, entry["fit_seconds"])
    return Hit(trained, onnx, entry["run_id"], path)


def store(root: Path, fit_key: str, trained, onnx: bytes, run_id: str) -> None:
    """Keep a checked model under ``fit_key`` (written aside, then renamed into place). A model that cannot be
    stored is reported on stderr; the run goes on."""
    import skops.io as sio

    base = folder(root)
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{fit_key}-", dir=base))
        try:
            sio.dump(trained.model, tmp / "model.skops")
            (tmp / "model.onnx").write_bytes(onnx)
            (tmp / "trials.json").write_text(trained.cv_results.to_json(orient="table", index=False))
            (tmp / "entry.json").write_text(json.dumps(
                {"kind": trained.kind, "params": trained.params, "fit_seconds": trained.fit_seconds,
                 "run_id": run_id, "onnx_sha256": hashlib.sha256(onnx).hexdigest(), "stored": time.time()}))
            os.rename(tmp, base / fit_key)
        except OSError:
            if (base / fit_key / "entry.json").exists():  # a concurrent run stored the same fit first
                return
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _prune(base)
    except Exception as e:  # noqa: BLE001 -- the run's models are checked and registered; only reuse is lost
        print(f"warning: fit not cached in {base} ({type(e).__name__}: {e})", file=sys.stderr)


def _prune(base: Path) -> None:
    entries = sorted((p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[MAX_ENTRIES:]:
        shutil.rmtree(old, ignore_errors=True)


@cache
def _code_digest() -> str:
    """mlpipe's own source (its .py files), so a changed search, fit or graph is never served from the cache."""
    h = hashlib.sha256()
    package = Path(__file__).parent
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()
