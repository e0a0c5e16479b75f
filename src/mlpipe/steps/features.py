"""Step 2, features: the time-series features (computed by the feature engine, ``mlpipe.featurize``, which
batch scoring and serving share), the model's input matrix, and the preprocessing fitted inside every model
pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlpipe.config import Config
from mlpipe.featurize import add_time_features, spec

__all__ = ["add_time_features", "feature_matrix", "feature_spec", "make_pipeline"]


def feature_spec(config: Config) -> dict:
    """The recipe registered with every model version (``featurize.spec``)."""
    return spec(config)


def feature_matrix(df: pd.DataFrame, config: Config) -> np.ndarray:
    """The model's input columns, in order, as float32: the exact input of the ONNX model."""
    return df[config.model_features].to_numpy(dtype=np.float32)


def make_pipeline(estimator):
    """Median imputation and standard scaling before ``estimator``, all fitted on training rows only.

    They live inside the model, so the registered ONNX graph carries them and serving cannot refit them.
    Scaling runs in float64 between two casts in scikit-learn and in ONNX alike, so the float32 values
    reaching the estimator are bit-identical in both and tree splits cannot flip between them.
    """
    from skl2onnx.sklapi import CastTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("to_float64", CastTransformer(dtype=np.float64)),
        ("scale", StandardScaler()),
        ("to_float32", CastTransformer(dtype=np.float32)),
        ("model", estimator),
    ])
