"""Step 2, features: the time-series features (computed by the feature engine, ``mlpipe.featurize``, which
batch scoring and serving share), the model's input matrix, and the preprocessing fitted inside every model
pipeline."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlpipe.config import Config
from mlpipe.featurize import add_time_features, feature_matrix, spec

__all__ = ["add_time_features", "feature_matrix", "feature_spec", "make_pipeline", "numeric_pipeline"]


def feature_spec(config: Config) -> dict:
    """The recipe registered with every model version (``featurize.spec``)."""
    return spec(config)


def make_pipeline(estimator, X=None, onehot_max: int = 25):
    """The model pipeline of ``estimator``: ``numeric_pipeline`` alone for a float32 matrix ``X``; for a
    frame with categories (``feature_matrix``) a ``ColumnTransformer``: the numeric columns through the same
    steps, categories one-hot encoded where the training rows hold at most ``onehot_max`` distinct values,
    ordinal codes above that (unknown and missing: code -1), then the estimator. Encoders are fitted on
    training rows only, like the imputer and the scaler, and skl2onnx converts them into the graph."""
    if not isinstance(X, pd.DataFrame):
        return numeric_pipeline(estimator)
    from skl2onnx.sklapi import CastTransformer
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    columns = list(X.columns)
    numeric = [i for i, c in enumerate(columns) if X[c].dtype.kind == "f"]
    categorical = [i for i, c in enumerate(columns) if X[c].dtype.kind != "f"]
    few = [i for i in categorical if X.iloc[:, i].nunique() <= onehot_max]
    many = [i for i in categorical if i not in few]
    parts = [("numeric", Pipeline(_numeric_steps()), numeric)]
    if few:
        parts.append(("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32), few))
    if many:
        parts.append(("ordinal", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                                                dtype=np.float32), many))
    return Pipeline([
        ("encode", ColumnTransformer([p for p in parts if p[2]], sparse_threshold=0.0)),
        ("to_float32", CastTransformer(dtype=np.float32)),
        ("model", estimator),
    ])


def numeric_pipeline(estimator):
    """Median imputation and standard scaling before ``estimator``, all fitted on training rows only.

    They live inside the model, so the registered ONNX graph carries them and serving cannot refit them.
    Scaling runs in float64 between two casts in scikit-learn and in ONNX alike, so the float32 values
    reaching the estimator are bit-identical in both and tree splits cannot flip between them.
    """
    from sklearn.pipeline import Pipeline

    return Pipeline([*_numeric_steps(), ("model", estimator)])


def _numeric_steps() -> list:
    from skl2onnx.sklapi import CastTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    return [
        ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
        ("to_float64", CastTransformer(dtype=np.float64)),
        ("scale", StandardScaler()),
        ("to_float32", CastTransformer(dtype=np.float32)),
    ]


def known_categories(model) -> dict[str, list[str]]:
    """Each categorical column's categories as its encoder learned them on the training rows, by column (in
    the order of ``categorical``); empty for a model without categories. Registered with the version, so a
    server can list them (``serving.schemas``) without opening the graph."""
    from mlpipe.steps.threshold import inner

    encode = getattr(inner(model), "named_steps", {}).get("encode")
    if encode is None:
        return {}
    names = list(encode.feature_names_in_)
    out = {}
    for _, transformer, columns in encode.transformers_:
        for j, categories in zip(columns, getattr(transformer, "categories_", [])):
            out[str(names[j])] = [str(c) for c in categories]
    return out
