"""The registered ONNX graph as every side sees it: what its input and outputs are called, and how an
onnxruntime session is made and asked. Training (``steps.package``), serving, batch scoring, the report and the
registry check all import this; it imports only numpy and onnxruntime (and onnx, to read a graph's nodes)."""

from __future__ import annotations

import numpy as np

INPUT = "input"
"""The one input: float32 ``[N, len(features)]``, columns in the order of the model's ``features``."""
CHECKED_INPUT = "input_possible"
"""The input once impossible values are made missing (``steps.package``): what the graph's steps read."""
IMPUTES_TAG = "mlpipe.imputes_missing"
"""A version's tag: "true" when its graph replaces NaN in its input itself (``imputes_missing``), so a server
knows without importing the onnx package (a second of start-up)."""
OUTPUTS = ("label", "probabilities")
"""int64 ``[N]``, then float32 ``[N, 2]`` (column 1 = the positive class). No ZipMap."""


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


def predict_onnx(onnx_bytes: bytes, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and positive-class probabilities from onnxruntime, on all cores."""
    session = make_session(onnx_bytes, threads=0)
    labels, proba = session.run(list(OUTPUTS), {INPUT: X.astype(np.float32, copy=False)})
    return labels, np.clip(proba[:, 1], 0.0, 1.0)  # float32 sigmoids can overshoot 1 by an ulp


def imputes_missing(onnx: bytes) -> bool:
    """Whether the graph's first step replaces NaN in its input, as the ``Imputer`` of every trained
    pipeline does; the persistence baseline has none, so it gets no nulls."""
    import onnx as onnx_lib

    graph = onnx_lib.load_from_string(onnx).graph
    return any(node.op_type == "Imputer" and {INPUT, CHECKED_INPUT} & set(node.input) for node in graph.node)
