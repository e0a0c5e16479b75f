"""scikit-learn-intelex (Intel's oneDAL) for the SVM's fits, when it is installed (``pip install 'mlpipe[fast]'``)
and ``[compute] accelerate`` is on (the default).

oneDAL solves the same SVC problem as libsvm, on all cores, and in float32 when given float32 (the pipeline hands
its model float32): bench/train_vs_seed.py shows the gain. Only the fits are oneDAL's. The final model is handed
on as a plain scikit-learn SVC with the same support vectors, coefficients and intercept, so its probabilities,
decision threshold, ONNX graph and every check downstream are exactly those of a scikit-learn model.
"""

from __future__ import annotations

import importlib.util

import numpy as np

_FITTED = ("_sparse", "n_features_in_", "class_weight_", "classes_", "_gamma", "support_", "support_vectors_",
           "_n_support", "dual_coef_", "intercept_", "_dual_coef_", "_intercept_", "_probA", "_probB",
           "fit_status_", "shape_fit_", "n_iter_")
"""What scikit-learn's SVC sets in ``fit`` and reads to predict (sklearn/svm/_base.py)."""


def available() -> bool:
    return importlib.util.find_spec("sklearnex") is not None


def svc(**params):
    """oneDAL's SVC (a scikit-learn SVC subclass) with ``params``."""
    from sklearnex.svm import SVC

    return SVC(**params)


def to_sklearn(model):
    """A fitted oneDAL SVC as the scikit-learn SVC it is equivalent to (the model itself if it is one).
    Checked: both must give the same decision values on the support vectors."""
    from sklearn.svm import SVC

    if type(model) is SVC:
        return model
    params = SVC().get_params()
    plain = SVC(**{k: v for k, v in model.get_params().items() if k in params})
    for name in _FITTED:
        value = getattr(model, name)
        if isinstance(value, np.ndarray) and value.dtype == np.float32:
            value = value.astype(np.float64)  # libsvm computes in float64
        elif name in ("support_", "_n_support"):
            value = np.asarray(value, dtype=np.int32)  # libsvm's index type
        setattr(plain, name, value)
    plain._num_iter = np.atleast_1d(np.asarray(model.n_iter_, dtype=np.int32))
    plain._effective_probability = False  # probabilities: Platt scaling (train.platt_scale)
    probe = plain.support_vectors_[:256]
    ours = plain.decision_function(probe)
    theirs = model.decision_function(probe.astype(np.float32))
    if not np.allclose(ours, theirs, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(theirs).max(initial=0.0)))):
        raise RuntimeError(f"oneDAL's SVC and its scikit-learn copy disagree: decision values differ by up to "
                           f"{float(np.abs(ours - theirs).max()):.3g}")
    return plain
