"""scikit-learn-intelex (Intel's oneDAL) for the SVM's and the forest's fits, when it is installed
(``pip install 'mlpipe[fast]'``) and ``[models.<kind>] engine`` asks for it ("auto", the default, does for the
SVM only: see ``train._onedal``).

Only the fits are oneDAL's. Each fitted model is handed on as the plain scikit-learn model it is equivalent to,
and that copy is what is scored, thresholded, packaged as ONNX, checked and registered:

- an SVC: oneDAL solves the same problem as libsvm (in float32 when given float32, as the pipeline gives its
  model); the copy has the same support vectors, coefficients and intercept, checked to give the same decision
  values. oneDAL's own answers differ only by float32 rounding, so the search scores those (faster).
  Except with the linear kernel, which oneDAL and libsvm solve slowly: those fits are liblinear's
  (``for_fit``).
- a random forest: oneDAL grows its trees its own way (histogram splits on up to ``max_bins`` bins per
  feature); its trees are exported as scikit-learn trees and assembled into a scikit-learn forest. That forest
  answers somewhat differently from oneDAL's own prediction, so the search scores the copy too.
"""

from __future__ import annotations

import importlib.util
import threading

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


def for_fit(pipeline):
    """``pipeline`` with the estimator that fits it fastest: an SVC (scikit-learn's or oneDAL's) with the linear
    kernel is fitted by liblinear (``LiblinearSVC``)."""
    from sklearn.svm import SVC

    name, model = pipeline.steps[-1]
    liblinear = __getattr__("LiblinearSVC")
    if isinstance(model, SVC) and not isinstance(model, liblinear) and model.kernel == "linear":
        pipeline.steps[-1] = (name, liblinear(**_shared_params(model, SVC)))
    return pipeline


def _liblinear_svc():
    from sklearn.svm import SVC

    class LiblinearSVC(SVC):
        """A binary linear-kernel SVC fitted by liblinear (``LinearSVC``, hinge loss: libsvm's problem, with
        the intercept regularized too), its weights the one support vector of the SVC it then is. libsvm and
        oneDAL solve the linear kernel slowly: on the Turku book-scale rows (20,000 per fold fit) libsvm took
        over 30 s at C=10, oneDAL 40 s at C=10 on the Turku rows; liblinear solves it in a fraction of a second,
        and its SVC answers with one kernel term instead of one per support vector. Several classes stay
        libsvm's (liblinear would fit one against the rest, not SVC's one against one)."""

        def fit(self, X, y, sample_weight=None):
            from sklearn.svm import LinearSVC

            if len(np.unique(y)) != 2 or sample_weight is not None:
                return super().fit(X, y, sample_weight)
            X = np.asarray(X, dtype=np.float64)
            linear = liblinear_fit(LinearSVC(C=self.C, class_weight=self.class_weight, loss="hinge", dual=True,
                                             max_iter=LIBLINEAR_MAX_ITER, random_state=self.random_state), X, y)
            # liblinear's passes stopped at its cap: recorded as libsvm's cap, so "converged" reads false
            n_iter = self.max_iter if linear.n_iter_ >= LIBLINEAR_MAX_ITER else linear.n_iter_
            return fitted_svc(self, linear.coef_, np.ones(1), float(linear.intercept_[0]), 1.0 / X.shape[1],
                              linear.classes_, n_iter, X.shape)

    LiblinearSVC.__module__, LiblinearSVC.__qualname__ = __name__, "LiblinearSVC"  # pickled by name
    return LiblinearSVC


LIBLINEAR_MAX_ITER = 10_000
"""liblinear's passes over the rows, at most."""

_LIBLINEAR = threading.Lock()


def liblinear_fit(model, X, y):
    """``model.fit(X, y)`` for a liblinear model, one at a time in this process: liblinear draws from the C
    library's one random generator, seeded at each fit, so two fits in threads at once took each other's
    draws (the same search chose the same linear SVM with validation macro F1 0.5894 in one run, 0.5751 in
    the next)."""
    with _LIBLINEAR:
        return model.fit(X, y)


def __getattr__(name):  # LiblinearSVC is defined on first use: scikit-learn is imported lazily
    if name == "LiblinearSVC":
        if name not in globals():
            globals()[name] = _liblinear_svc()
        return globals()[name]
    raise AttributeError(name)


def engine(model) -> str:
    """What fitted ``model``: "onedal" for scikit-learn-intelex's estimators, "liblinear" for the linear
    SVM's, else "sklearn"."""
    if type(model).__name__ == "LiblinearSVC":
        return "liblinear"
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
    if type(model).__name__ == "LiblinearSVC":  # scikit-learn's own state (or libsvm's, several classes)
        plain = SVC()
        plain.__dict__.update(model.__dict__)
        return plain
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


def fitted_svc(svc, vectors: np.ndarray, alpha: np.ndarray, b: float, gamma: float, classes: np.ndarray, n_iter,
               shape):
    """``svc`` (an unfitted SVC) given what scikit-learn's fit sets: these support vectors, coefficients and
    intercept (binary: decision ``sum(alpha_i k(v_i, x)) + b``, positive for classes[1]; libsvm keeps the
    opposite signs internally)."""
    m = len(vectors)
    svc._sparse = False
    svc.n_features_in_ = shape[1]
    svc.classes_ = classes
    svc.class_weight_ = np.ones(len(classes))
    svc._gamma = gamma
    svc.support_ = np.arange(m, dtype=np.int32)
    svc.support_vectors_ = np.ascontiguousarray(vectors, dtype=np.float64)
    svc._n_support = np.array([m - m // 2, m // 2], dtype=np.int32)
    svc.dual_coef_ = np.asarray(alpha, dtype=np.float64)[None, :]
    svc.intercept_ = np.array([b])
    svc._dual_coef_ = -svc.dual_coef_
    svc._intercept_ = -svc.intercept_
    svc._probA, svc._probB = np.empty(0), np.empty(0)
    svc.fit_status_ = 0
    svc.shape_fit_ = shape
    svc.n_iter_ = np.atleast_1d(np.asarray(n_iter, dtype=np.int32))
    svc._num_iter = svc.n_iter_
    svc._effective_probability = False
    return svc
