"""mlpipe: local-first ML pipelines tracked in MLflow, packaged as ONNX.

    >>> import mlpipe
    >>> ws = mlpipe.Workspace("mlpipe-workspace")
    >>> result = mlpipe.run(workspace=ws)                  # the built-in weather pipeline
    >>> test = ws.datasets.load("weather-test")            # a registered dataset as a DataFrame
    >>> model = mlpipe.load_model(ws, "weather-svm@champion")
"""

from __future__ import annotations

import os as _os

# Local-first: a run talks to its own stores and nothing else. MLflow 3 otherwise starts threads as it is
# imported that fetch a configuration from its servers and send them usage records. A user's own setting wins.
_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"

__all__ = ["Workspace", "load_config", "load_model", "run"]


def __getattr__(name: str):
    # Lazy, so `import mlpipe` (and the CLI's start) does not import MLflow or scikit-learn.
    if name == "Workspace":
        from mlpipe.workspace import Workspace

        return Workspace
    if name == "load_config":
        from mlpipe.config import load_config

        return load_config
    if name == "load_model":
        from mlpipe.models import load_model

        return load_model
    if name == "run":
        from mlpipe.pipeline import run

        return run
    raise AttributeError(name)
