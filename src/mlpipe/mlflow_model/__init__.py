"""Registered versions as MLflow Models, so the tools MLflow's users know work on them: ``mlflow.pyfunc.load_model``,
``mlflow models serve``, ``mlflow.models.evaluate``, ``spark_udf``, the signature in the MLflow UI. Each version's
``model`` folder holds, beside mlpipe's own ``model.onnx`` and ``model.json``, an ``MLmodel`` file with two
flavours: ``onnx`` (MLflow's own, the same ``model.onnx`` in onnxruntime) and ``python_function`` (``pyfunc.py``,
logged as code: mlpipe's columns, mlpipe's feature engine), a signature, an input example and the pip
requirements. May import config, errors, graph, featurize and serving; imports MLflow only when it writes one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

CODE = Path(__file__).with_name("pyfunc.py")
EXAMPLE_ROWS = 5


def signature(meta: dict, raw_columns: list[str] | None, timestamp: str | None, group: str | None):
    """Input columns with their types (raw observations for a model whose features read the past), outputs
    ``label`` and ``probability`` (and ``probability_<class>``)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    if raw_columns is not None:
        # time as ISO 8601 text (with its offset), as /observations takes it: MLflow's datetime is zone-naive
        inputs = [ColSpec("string" if c in (timestamp, group) or c in meta["categorical"] else "double", c,
                          required=c in (timestamp, group)) for c in raw_columns]
    else:
        inputs = [ColSpec("double", f, required=False) for f in meta["features"]]
        inputs += [ColSpec("string", c, required=False) for c in meta["categorical"]]
    classes = meta.get("classes")
    outputs = [ColSpec("string" if classes else "long", "label"), ColSpec("double", "probability")]
    outputs += [ColSpec("double", f"probability_{c}") for c in classes or []]
    if raw_columns is not None:
        outputs = [ColSpec("string", timestamp)] + ([ColSpec("string", group)] if group else []) + [
            ColSpec("string", "forecast_for")] + outputs
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def write(folder: Path, onnx: bytes, meta: dict, example: pd.DataFrame) -> None:
    """Write the version's files into ``folder`` (which must not exist yet): ``model.onnx``, ``model.json`` and
    the MLflow Model around them. ``meta``: the ``model.json`` object; ``example``: rows of its input."""
    import mlflow
    import onnx as onnx_lib
    from mlflow.models import Model

    from mlpipe import __version__
    from mlpipe.featurize import Recipe
    from mlpipe.serving.forecast import has_history

    spec = meta.get("feature_spec")
    recipe = Recipe.from_spec(spec) if spec else None
    raw = recipe.raw_columns if has_history(recipe) else None
    staging = folder.parent / f".{folder.name}-files"
    staging.mkdir()
    (staging / "model.json").write_text(json.dumps(meta, indent=2, default=str))
    columns = raw if raw is not None else meta["features"] + meta["categorical"]
    example = example[columns].head(EXAMPLE_ROWS).reset_index(drop=True)
    if raw is not None:
        from mlpipe.serving.batch import _iso_times

        example = _iso_times(example, [recipe.timestamp])
    mlflow.pyfunc.save_model(
        folder, python_model=str(CODE),
        artifacts={"info": str(staging / "model.json")},  # the pyfunc reads the folder's own model.onnx
        signature=signature(meta, raw, recipe and recipe.timestamp, recipe and recipe.group),
        input_example=example, pip_requirements=requirements(__version__))
    (folder / "model.onnx").write_bytes(onnx)
    shutil.move(staging / "model.json", folder / "model.json")
    staging.rmdir()
    model = Model.load(folder / "MLmodel")  # MLflow's onnx flavour on the very same model.onnx
    model.add_flavor("onnx", onnx_version=onnx_lib.__version__, data="model.onnx",
                     providers=["CPUExecutionProvider"], onnx_session_options=None, code=None)
    model.save(folder / "MLmodel")


def requirements(version: str) -> list[str]:
    """What loading the pyfunc needs: mlpipe itself (its scoring code) and what it runs on."""
    from importlib.metadata import version as installed

    return [f"mlpipe=={version}", *(f"{p}=={installed(p)}" for p in ("mlflow", "onnxruntime", "numpy", "pandas"))]
