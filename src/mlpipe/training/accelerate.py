"""scikit-learn-intelex (Intel's oneDAL) for the SVM's and the forest's fits, when it is installed
(``pip install 'mlpipe[fast]'``) and ``[models.<kind>] engine`` asks for it ("auto", the default, does for the
SVM only: see ``train._onedal``).

Only the fits are oneDAL's. Each fitted model is handed on as the plain scikit-learn model it is equivalent to,
and that copy is what is scored, thresholded, packaged as ONNX, checked and registered:

- an SVC: oneDAL solves the same problem as libsvm (in float32 when given float32, as the pipeline gives its
  model); the copy has the same support vectors, coefficients and intercept, checked to give the same decision
  values. oneDAL's own answers differ only by float32 rounding, so the search scores those (faster).
  Except with the linear kernel, which oneDAL solves far more slowly than libsvm: those fits stay libsvm's
  (``for_fit``).
- a random forest: oneDAL grows its trees its own way (histogram splits on up to ``max_bins`` bins per
  feature); its trees are exported as scikit-learn trees and assembled into a scikit-learn forest. That forest
  answers somewhat differently from oneDAL's own prediction, so the search scores the copy too.
"""

from __future__ import annotations

import importlib.util

import numpy as np

_SVC_FITTED = ("_sparse", "n_features_in_", "class_weight_", "classes_", "_gamma", "support_", "support_vectors_",
               "_n_support", "dual_coef_", "intercept_", "_dual_coef_", "_intercept_", "_probA", "_probB",
               "fit_status_", "shape_fit_", "n_iter_")
"""What scikit-learn's SVC sets in ``fit`` and reads to predict (sklearn/svm/_base.py)."""


def available() -> bool:
    return importlib.util.find_spec("sklearnex") is not None


def svc(**params):
    """oneDAL's SVC (a scikit-learn SVC subclass) with ``params``."""
    from sklearnex.svm import SVC

    return SVC(**params)


def random_forest(**params):
    """oneDAL's random forest (a scikit-learn RandomForestClassifier subclass) with ``params``."""
    from sklearnex.ensemble import RandomForestClassifier

    return RandomForestClassifier(**params)


LIBSVM_KERNELS = ("linear",)
"""Kernels whose SVC fits are libsvm's even where oneDAL is asked for. Measured on the Turku training rows,
standardised (2 cores), libsvm against oneDAL: linear at C=1, 0.25 s against 3.4 s; at C=10, 0.46 s against
40 s; on the 4x rows at C=1, 4.2 s against 30 s. For rbf, poly and sigmoid oneDAL was the faster: rbf at C=1,
0.60 s against 0.45 s; at C=10 on the 4x rows, 13.6 s against 4.2 s."""


def for_fit(pipeline):
    """``pipeline`` with the estimator that fits it fastest: a oneDAL SVC set to a kernel in ``LIBSVM_KERNELS``
    is replaced by scikit-learn's SVC with the same parameters."""
    from sklearn.svm import SVC

    name, model = pipeline.steps[-1]
    if isinstance(model, SVC) and type(model) is not SVC and model.kernel in LIBSVM_KERNELS:
        pipeline.steps[-1] = (name, SVC(**_shared_params(model, SVC)))
    return pipeline


def engine(model) -> str:
    """What fitted ``model``: "onedal" for scikit-learn-intelex's estimators, else "sklearn"."""
    return "onedal" if type(model).__module__.split(".")[0] in ("sklearnex", "daal4py", "onedal") else "sklearn"


def as_scored(pipeline):
    """``pipeline`` as the search scores it: a fitted oneDAL forest replaced by its scikit-learn copy (an SVM
    stays oneDAL's: its answers are the copy's up to float32 rounding)."""
    from sklearn.ensemble import RandomForestClassifier

    model = pipeline.steps[-1][1]
    if isinstance(model, RandomForestClassifier) and type(model) is not RandomForestClassifier:
        pipeline.steps[-1] = (pipeline.steps[-1][0], to_sklearn(model))
    return pipeline


def as_registered(pipeline):
    """``pipeline`` with its fitted model as plain scikit-learn (the model itself if it already is)."""
    pipeline.steps[-1] = (pipeline.steps[-1][0], to_sklearn(pipeline.steps[-1][1]))
    return pipeline


def to_sklearn(model):
    """A fitted oneDAL SVC or random forest as the scikit-learn model it is equivalent to; anything else as it is."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.svm import SVC

    if type(model) in (SVC, RandomForestClassifier):
        return model
    if isinstance(model, SVC):
        return _svc(model)
    if isinstance(model, RandomForestClassifier):
        return _forest(model)
    return model


def _svc(model):
    """Checked: the copy gives the same decision values on the support vectors, to float32 rounding."""
    from sklearn.svm import SVC

    plain = SVC(**_shared_params(model, SVC))
    for name in _SVC_FITTED:
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
    # oneDAL sums float32 terms: its rounding grows with the sum of the terms' sizes, not with the result
    terms = np.abs(plain.dual_coef_) @ np.abs(_kernel(plain, probe)) + np.abs(plain.intercept_)
    gap = np.abs(ours - theirs)
    if not (gap <= 1e-4 * terms.ravel() + 1e-6).all():
        worst = int(np.argmax(gap / (terms.ravel() + 1e-12)))
        raise RuntimeError(f"oneDAL's SVC and its scikit-learn copy disagree: decision value {theirs[worst]:.6g} vs "
                           f"{ours[worst]:.6g} (terms summing to {terms.ravel()[worst]:.3g} in size)")
    return plain


def _kernel(svc, X: np.ndarray) -> np.ndarray:
    """The SVC's kernel between its support vectors and ``X`` (n_support_vectors x len(X))."""
    from sklearn.metrics.pairwise import pairwise_kernels

    return pairwise_kernels(svc.support_vectors_, X, metric=svc.kernel, gamma=svc._gamma, degree=svc.degree,
                            coef0=svc.coef0, filter_params=True)


def _forest(model):
    """oneDAL's trees, exported as scikit-learn trees, in a scikit-learn forest with the same parameters."""
    from sklearn.ensemble import RandomForestClassifier

    plain = RandomForestClassifier(**_shared_params(model, RandomForestClassifier))
    plain.estimators_ = list(model.estimators_)
    plain.estimator_ = plain.estimators_[0]
    for name in ("classes_", "n_classes_", "n_features_in_", "n_outputs_"):
        setattr(plain, name, getattr(model, name))
    return plain


def _shared_params(model, cls) -> dict:
    known = cls().get_params()
    return {k: v for k, v in model.get_params().items() if k in known}
