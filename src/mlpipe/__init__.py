"""mlpipe: local-first ML pipelines tracked in MLflow, packaged as ONNX.

    >>> import mlpipe
    >>> ws = mlpipe.Workspace("mlpipe-workspace")
    >>> result = mlpipe.run(workspace=ws)                  # the built-in weather pipeline
    >>> test = ws.datasets.load("weather-test")            # a registered dataset as a DataFrame
    >>> model = mlpipe.load_model(ws, "weather-svm@champion")
    >>> labels, probability = mlpipe.predict_onnx(model.onnx, test[model.features].to_numpy("float32"))
"""

from __future__ import annotations

import os as _os

# Local-first: a run talks to its own stores and nothing else. MLflow 3 otherwise starts threads as it is
# imported that fetch a configuration from its servers and send them usage records. A user's own setting wins.
_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"

__all__ = ["Workspace", "load_config", "load_model", "predict_onnx", "run"]

_HOMES = {"Workspace": "mlpipe.store.workspace", "load_config": "mlpipe.config", "load_model": "mlpipe.store.models",
          "predict_onnx": "mlpipe.graph", "run": "mlpipe.pipeline"}


def __getattr__(name: str):
    # Lazy, so `import mlpipe` (and the CLI's start) does not import MLflow or scikit-learn.
    if name not in _HOMES:
        raise AttributeError(f"module 'mlpipe' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(_HOMES[name]), name)
