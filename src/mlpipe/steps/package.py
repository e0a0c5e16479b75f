"""Step 5, package: each model -- imputer, scaler and estimator -- as one ONNX graph, checked against
scikit-learn with onnxruntime before anything is registered."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from mlpipe.config import Config
from mlpipe.errors import ParityError
from mlpipe.graph import CATEGORIES, CHECKED_INPUT, INPUT, OUTPUTS, predict_onnx
from mlpipe.steps.evaluate import classification_metrics
from mlpipe.steps.threshold import inner, threshold_of
from mlpipe.steps.train import Trained

OPSET = 17
MIN_AGREEMENT = 0.999
METRIC_TOLERANCE = 5e-4
PROBA_TOLERANCE = 1e-2
PARITY_METRICS = ("accuracy", "precision", "recall", "f1", "precision_0", "precision_1", "recall_0", "recall_1",
                  "f1_0", "f1_1")
"""Checked to 3 decimals. ROC AUC is not: float32 probabilities tie where float64 ones do not, which moves a
rank statistic, and onnxruntime's SVM sums its kernel terms in float32 (gaps up to ~3e-4 for a linear SVC with
C=10). Probabilities are checked within ``PROBA_TOLERANCE`` instead: far above float32 noise, far below what a
wrong scaler or feature order does (gaps of 0.1 and more)."""


def to_onnx(trained: Trained, config: Config) -> bytes | None:
    """The ONNX graph of a trained model: float32 input ``[N, len(features)]``, outputs label (int64 ``[N]``)
    and probabilities (float32 ``[N, 2]``). None for a baseline whose target is not a numeric feature."""
    if trained.kind == "baseline":
        model = _persistence_graph(config) if config.data.series else _prior_graph(config, trained.model.prior)
    else:
        model = _sklearn_graph(inner(trained.model), len(config.model_features), len(config.categorical))
        threshold = threshold_of(trained.model)
        if threshold is not None:
            _label_from_threshold(model, threshold)
    if model is None:
        return None
    if config.model_features:
        _impossible_to_missing(model, config)
    _describe(model, trained.kind, config)
    return model.SerializeToString()


def _impossible_to_missing(model, config: Config) -> None:
    """Make the graph treat impossible inputs as ingest does: a value outside its ``[data.ranges]`` or not
    finite becomes missing (NaN) before anything else sees it, so the imputer fills it in. The training and
    test data were cleaned this way at ingest; a served or predicted raw value now is too."""
    from onnx import TensorProto, helper

    features, ranges = config.model_features, config.data.ranges
    lo = np.array([_float32_at_least(ranges[f][0]) if f in ranges else -np.inf for f in features], np.float32)
    hi = np.array([_float32_at_most(ranges[f][1]) if f in ranges else np.inf for f in features], np.float32)
    checked = CHECKED_INPUT
    graph = model.graph
    for node in graph.node:
        node.input[:] = [checked if name == INPUT else name for name in node.input]
    const = lambda name, values: helper.make_node("Constant", [], [name], value=helper.make_tensor(  # noqa: E731
        name, TensorProto.FLOAT, list(values.shape), values.ravel().tolist()))
    nodes = [
        const("range_low", lo.reshape(1, -1)), const("range_high", hi.reshape(1, -1)),
        const("missing", np.array(np.nan, dtype=np.float32)),
        helper.make_node("Less", [INPUT, "range_low"], ["below_range"]),
        helper.make_node("Greater", [INPUT, "range_high"], ["above_range"]),
        helper.make_node("IsInf", [INPUT], ["infinite"]),
        helper.make_node("Or", ["below_range", "above_range"], ["out_of_range"]),
        helper.make_node("Or", ["out_of_range", "infinite"], ["impossible"]),
        helper.make_node("Where", ["impossible", "missing", INPUT], [checked]),
    ]
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)


def _float32_at_least(bound: float) -> float:
    """The smallest float32 >= ``bound``: for a float32 x, x < bound exactly when x < it."""
    f = np.float32(bound)
    return float(np.nextafter(f, np.float32(np.inf)) if float(f) < bound else f)


def _float32_at_most(bound: float) -> float:
    """The largest float32 <= ``bound``: for a float32 x, x > bound exactly when x > it."""
    f = np.float32(bound)
    return float(np.nextafter(f, np.float32(-np.inf)) if float(f) > bound else f)


def _sklearn_graph(pipeline, n_features: int, n_categorical: int = 0):
    """skl2onnx's graph of ``pipeline``: input ``INPUT`` float32 ``[N, n_features]``, and with categorical
    columns ``CATEGORIES`` string ``[N, n_categorical]`` (the frame's columns by position, ``make_pipeline``)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    estimator = pipeline.steps[-1][1]
    if type(estimator).__module__.startswith("lightgbm"):
        _register_lightgbm()
    model = convert_sklearn(
        pipeline,
        name=type(estimator).__name__,  # skl2onnx's default is a random UUID
        initial_types=([(INPUT, FloatTensorType([None, n_features]))] if n_features else []) +
                      ([(CATEGORIES, StringTensorType([None, n_categorical]))] if n_categorical else []),
        options={id(estimator): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    # the same fitted model gives the same bytes, so an identical fit has an identical SHA-256: the opset
    # imports come in set order, which varies from one process to another
    imports = sorted(model.opset_import, key=lambda o: o.domain)
    del model.opset_import[:]
    model.opset_import.extend(imports)
    return model


def _label_from_threshold(model, threshold: float) -> None:
    """Make the graph's label output ``probabilities[:, 1] >= threshold``, as scikit-learn's threshold
    classifiers decide; the estimator's own label becomes an unused intermediate."""
    from onnx import TensorProto, helper

    graph = model.graph
    label = next(o for o in graph.output if o.name == OUTPUTS[0])
    for node in graph.node:
        node.output[:] = [f"{OUTPUTS[0]}_estimator" if o == OUTPUTS[0] else o for o in node.output]
    graph.node.extend([
        helper.make_node("Constant", [], ["positive_column"], value=helper.make_tensor(
            "positive_column", TensorProto.INT64, [], [1])),
        helper.make_node("Gather", [OUTPUTS[1], "positive_column"], ["positive_probability"], axis=1),
        helper.make_node("Constant", [], ["decision_threshold"], value=helper.make_tensor(
            "decision_threshold", TensorProto.FLOAT, [], [threshold])),
        helper.make_node("GreaterOrEqual", ["positive_probability", "decision_threshold"], ["above_threshold"]),
        helper.make_node("Cast", ["above_threshold"], [OUTPUTS[0]], to=TensorProto.INT64),
    ])
    label.type.tensor_type.elem_type = TensorProto.INT64
    helper.set_model_props(model, {"mlpipe.decision_threshold": repr(threshold)})


def _register_lightgbm() -> None:
    """LightGBM inside a scikit-learn pipeline: skl2onnx's documented path, with onnxmltools' converter."""
    from lightgbm import LGBMClassifier
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes

    update_registered_converter(LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes,
                                _convert_lightgbm, options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
                                overwrite=True)


def _convert_lightgbm(scope, operator, container):
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

    model = operator.raw_operator
    operator.raw_operator = _Float32Splits(model)
    try:
        convert_lightgbm(scope, operator, container)
    finally:
        operator.raw_operator = model


class _Float32Splits:
    """A fitted LGBMClassifier as onnxmltools sees it, each split threshold ``t`` (a double) replaced by the
    largest float32 <= t. The pipeline feeds the model float32 values, and for those ``x <= t`` exactly when
    ``x <= that float32``; rounded to the nearest float32 instead (as ONNX stores thresholds) a value lying
    just above ``t`` would take the other branch."""

    is_mock = True  # onnxmltools then reads dump_model()

    def __init__(self, model):
        self.model, self.booster_ = model, self
        self.classes_, self.boosting_type = model.classes_, model.boosting_type

    def dump_model(self, *args, **kwargs) -> dict:
        dump = self.model.booster_.dump_model(*args, **kwargs)
        stack = [tree["tree_structure"] for tree in dump["tree_info"]]
        while stack:
            node = stack.pop()
            if "split_index" in node:
                if node.get("decision_type") == "<=":
                    node["threshold"] = _float32_at_most(float(node["threshold"]))
                stack += [node["left_child"], node["right_child"]]
        return dump


def _persistence_graph(config: Config):
    """"Later = now" as a graph: the target feature's own condition, as label and 0/1 probabilities."""
    from onnx import TensorProto, helper

    target, features = config.target, config.model_features
    if target.now_column not in features:
        return None
    values = [target.above] if target.above is not None else target.positive
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    const = lambda name, arr: helper.make_node("Constant", [], [name], value=helper.make_tensor(  # noqa: E731
        name, TensorProto.FLOAT if arr.dtype == np.float32 else TensorProto.INT64, arr.shape, arr.ravel().tolist()))
    nodes = [
        const("col_index", np.array([features.index(target.now_column)], dtype=np.int64)),
        helper.make_node("Gather", [INPUT, "col_index"], ["current"], axis=1),
        const("values", np.array(values, dtype=np.float32)),
        const("one", np.array([1.0], dtype=np.float32)),
        const("flat", np.array([-1], dtype=np.int64)),
    ]
    if target.above is not None:
        nodes.append(helper.make_node("Greater", ["current", "values"], ["hit"]))
    else:  # current == any of the positive values
        nodes += [helper.make_node("Equal", ["current", "values"], ["each"]),
                  helper.make_node("Cast", ["each"], ["each_f"], to=TensorProto.FLOAT),
                  helper.make_node("ReduceMax", ["each_f"], ["any_f"], keepdims=1, axes=[1]),
                  helper.make_node("Cast", ["any_f"], ["hit"], to=TensorProto.BOOL)]
    nodes += [
        helper.make_node("Cast", ["hit"], ["p1"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "p1"], ["p0"]),
        helper.make_node("Concat", ["p0", "p1"], [OUTPUTS[1]], axis=1),
        helper.make_node("Cast", ["hit"], ["label_2d"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["label_2d", "flat"], [OUTPUTS[0]]),
    ]
    graph = helper.make_graph(
        nodes, "persistence",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [None, len(features)])],
        [helper.make_tensor_value_info(OUTPUTS[0], TensorProto.INT64, [None]),
         helper.make_tensor_value_info(OUTPUTS[1], TensorProto.FLOAT, [None, 2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mlpipe")


def _prior_graph(config: Config, prior: tuple[float, ...]):
    """The class prior as a graph: every row gets the training rows' class shares as probabilities and the
    majority class as label; it reads its input only for the number of rows."""
    from onnx import TensorProto, helper

    first = (INPUT, TensorProto.FLOAT, len(config.model_features)) if config.model_features else \
        (CATEGORIES, TensorProto.STRING, len(config.categorical))
    const = lambda name, kind, values: helper.make_node("Constant", [], [name], value=helper.make_tensor(  # noqa: E731
        name, kind, [len(values)], values))
    nodes = [
        helper.make_node("Shape", [first[0]], ["input_shape"]),
        const("row_axis", TensorProto.INT64, [0]),
        helper.make_node("Gather", ["input_shape", "row_axis"], ["rows"], axis=0),
        const("classes", TensorProto.INT64, [len(prior)]),
        helper.make_node("Concat", ["rows", "classes"], ["proba_shape"], axis=0),
        const("prior", TensorProto.FLOAT, [float(p) for p in prior]),
        helper.make_node("Expand", ["prior", "proba_shape"], [OUTPUTS[1]]),
        const("majority", TensorProto.INT64, [int(np.argmax(prior))]),
        helper.make_node("Expand", ["majority", "rows"], [OUTPUTS[0]]),
    ]
    graph = helper.make_graph(
        nodes, "class_prior", [helper.make_tensor_value_info(first[0], first[1], [None, first[2]])],
        [helper.make_tensor_value_info(OUTPUTS[0], TensorProto.INT64, [None]),
         helper.make_tensor_value_info(OUTPUTS[1], TensorProto.FLOAT, [None, len(prior)])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mlpipe")


def _describe(model, kind: str, config: Config) -> None:
    """Saved models describe themselves: the feature order and the model kind travel inside the file."""
    from onnx import helper

    props = {"mlpipe.kind": kind, "mlpipe.features": json.dumps(config.model_features)}
    if config.categorical:
        props["mlpipe.categorical"] = json.dumps(config.categorical)
    helper.set_model_props(model, props)


@dataclass(frozen=True)
class Parity:
    agreement: float
    max_proba_gap: float
    metrics: dict[str, float]
    """The test metrics as computed from the ONNX model's own answers."""
    labels: np.ndarray
    proba: np.ndarray


def check_parity(kind: str, onnx_bytes: bytes, X: np.ndarray, y: np.ndarray, sk_labels: np.ndarray,
                 sk_proba: np.ndarray, sk_metrics: dict[str, float]) -> Parity:
    """Refuse an ONNX model whose labels agree with scikit-learn's on fewer than 99.9% of test rows, whose
    threshold metrics differ beyond rounding at 3 decimals, or whose probabilities differ by more than 1e-4."""
    labels, proba = predict_onnx(onnx_bytes, X)
    agreement = float(np.mean(labels == sk_labels))
    if agreement < MIN_AGREEMENT:
        raise ParityError(f"{kind}: ONNX labels agree with scikit-learn on only {agreement:.4%} of test rows "
                          f"(need {MIN_AGREEMENT:.1%}); nothing was registered")
    gap = float(np.max(np.abs(proba - sk_proba))) if len(proba) else 0.0
    if gap > PROBA_TOLERANCE:
        raise ParityError(f"{kind}: ONNX probabilities differ from scikit-learn's by up to {gap:.2e} "
                          f"(allowed {PROBA_TOLERANCE:.0e}); nothing was registered")
    metrics = classification_metrics(y, labels, proba)
    per_class = [k for k in sk_metrics if k.split("_")[0] in ("precision", "recall", "f1") and "_" in k]
    for key in dict.fromkeys([*PARITY_METRICS[:4], *per_class]):  # every class of a target of several
        value = sk_metrics[key]
        if abs(metrics[key] - value) > METRIC_TOLERANCE:
            raise ParityError(f"{kind}: ONNX test {key} {metrics.get(key)} differs from scikit-learn's {value:.4f}; "
                              f"nothing was registered")
    return Parity(agreement, gap, metrics, labels, proba)
