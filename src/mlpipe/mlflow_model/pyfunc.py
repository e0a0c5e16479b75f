"""A registered version as an MLflow ``python_function`` model, by MLflow's "models from code": MLflow logs this
file with every version and runs it when it loads one (nothing is unpickled). It answers a pandas DataFrame with
mlpipe's own columns, as ``mlpipe predict`` does: ``label`` and ``probability`` (a model of several classes:
the class by name, its probability, and ``probability_<class>`` for each class). A model whose input needs the
past takes raw observations and computes its features with mlpipe's feature engine (``serving.raw``), exactly
as training did; any other takes its feature columns. The ONNX bytes are checked against their registered
SHA-256 on every load."""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class MlpipeModel(PythonModel):
    def load_context(self, context) -> None:
        import hashlib
        import json
        from pathlib import Path

        from mlpipe.errors import IntegrityError
        from mlpipe.featurize import Recipe
        from mlpipe.graph import make_session
        from mlpipe.serving.model import ServedModel

        info_path = Path(context.artifacts["info"])  # <model folder>/artifacts/model.json
        info = json.loads(info_path.read_text())
        onnx_path = info_path.parent.parent / "model.onnx"  # the flavours share the folder's one model.onnx
        onnx = onnx_path.read_bytes()
        if hashlib.sha256(onnx).hexdigest() != info["onnx_sha256"]:
            raise IntegrityError(f"model {info['name']}: {onnx_path} does not match its registered SHA-256 "
                                 f"(tampered or truncated)")
        spec = info.get("feature_spec")
        self.model = ServedModel(info, make_session(onnx, 0), True, Recipe.from_spec(spec) if spec else None)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:  # noqa: ARG002
        from mlpipe.mlflow_model.answer import answer

        return answer(self.model, model_input)


mlflow.models.set_model(MlpipeModel())
