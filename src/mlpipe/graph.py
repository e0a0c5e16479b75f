"""The registered ONNX graph as every side sees it: what its input and outputs are called, and how an
onnxruntime session is made and asked. Training (``steps.package``), serving, batch scoring, the report and the
registry check all import this; it imports only numpy and onnxruntime (and onnx, to read a graph's nodes)."""

from __future__ import annotations

import numpy as np

INPUT = "input"
"""The numeric input: float32 ``[N, len(features)]``, columns in the order of the model's ``features``."""
CATEGORIES = "categories"
"""A model with categorical columns has this second input: string ``[N, len(categorical)]``, columns in the
order of the model's ``categorical``, a missing value as ``""``. (A model without numeric columns has only
this one.)"""
CHECKED_INPUT = "input_possible"
"""The input once impossible values are made missing (``steps.package``): what the graph's steps read."""
IMPUTES_TAG = "mlpipe.imputes_missing"
"""A version's tag: "true" when its graph replaces NaN in its input itself (``imputes_missing``), so a server
knows without importing the onnx package (a second of start-up)."""
OUTPUTS = ("label", "probabilities")
"""int64 ``[N]``, then float32 ``[N, 2]`` (column 1 = the positive class), ``[N, k]`` for k classes. No ZipMap."""


def make_session(onnx: bytes, threads: int = 1):
    """An onnxruntime session with ``threads`` intra-op threads (0: onnxruntime's default, one per core).
    Threads do not spin while idle, so an idle server -- or a run's checks beside its training worker --
    leaves the cores to others."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])


def feed(session, X) -> dict:
    """The inputs ``session`` declares, from ``X``: a float32 matrix, a (numeric, categories) pair, or the
    training side's frame (``steps.features.feature_matrix``: float32 columns, then object columns of text)."""
    if isinstance(X, tuple):
        numeric, categories = X
    elif hasattr(X, "columns"):
        text = [c for c in X.columns if X[c].dtype.kind != "f"]
        numeric = X[[c for c in X.columns if c not in text]].to_numpy(dtype=np.float32)
        categories = X[text].to_numpy(dtype=object)
    else:
        numeric, categories = X, None
    names = {i.name for i in session.get_inputs()}
    out = {}
    if INPUT in names:
        out[INPUT] = np.asarray(numeric, dtype=np.float32)
    if CATEGORIES in names:
        if categories is None:
            raise ValueError(f"the model needs its {CATEGORIES!r} input (string columns)")
        out[CATEGORIES] = np.asarray(categories, dtype=object)
    return out


CHUNK_ROWS = 65_536
"""``predict_onnx`` asks the graph this many rows at a time: onnxruntime's SVM classifier holds a kernel
matrix of rows x support vectors (200,000 test rows x 7,025 support vectors: 5.6 GB in one call)."""


def predict_onnx(onnx_bytes: bytes, X) -> tuple[np.ndarray, np.ndarray]:
    """Labels and positive-class probabilities from onnxruntime, on all cores (``X`` as ``feed`` takes it)."""
    labels, proba = run(make_session(onnx_bytes, threads=0), X)
    return labels, np.clip(positive(proba), 0.0, 1.0)  # float32 sigmoids can overshoot 1 by an ulp


def run(session, X) -> tuple[np.ndarray, np.ndarray]:
    """The graph's two outputs for ``X`` (as ``feed`` takes it), asked ``CHUNK_ROWS`` rows at a time."""
    inputs = feed(session, X)
    n = len(next(iter(inputs.values())))
    if n <= CHUNK_ROWS:
        return tuple(session.run(list(OUTPUTS), inputs))
    parts = [session.run(list(OUTPUTS), {k: v[i:i + CHUNK_ROWS] for k, v in inputs.items()})
             for i in range(0, n, CHUNK_ROWS)]
    return tuple(np.concatenate(p) for p in zip(*parts))


def positive(proba: np.ndarray) -> np.ndarray:
    """What mlpipe calls a model's probabilities: the positive class's column of a binary model's ``[N, 2]``,
    the whole ``[N, k]`` matrix of a model of k > 2 classes."""
    return proba[:, 1] if proba.shape[1] == 2 else proba


def imputes_missing(onnx: bytes) -> bool:
    """Whether the graph's first step replaces NaN in its input, as the ``Imputer`` of every trained
    pipeline does; the persistence baseline has none, so it gets no nulls."""
    import onnx as onnx_lib

    graph = onnx_lib.load_from_string(onnx).graph
    return any(node.op_type == "Imputer" and {INPUT, CHECKED_INPUT} & set(node.input) for node in graph.node)
