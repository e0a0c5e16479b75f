"""The kernel SVM above its row budget: a kernel approximation that is still an SVC.

An exact kernel SVM costs the square of its rows to fit, and one kernel term per support vector for every
answer: fitted on a 50,000-row sample of the Turku stations it kept 7,025 support vectors, and its ONNX graph
answered 100,000 rows in 10.9 s (libsvm: 19.3 s), so the 3.5 million test and validation rows of the 10 M-row
benchmark would take its checks alone over ten minutes. Above ``models.svm.max_rows`` the SVM is therefore
fitted through scikit-learn's ``Nystroem`` approximation of its kernel: ``LANDMARKS`` landmark rows (a
time-stratified sample), the features ``k(x) N^T`` (``k(x)``: the kernel between x and the landmarks, ``N``:
``normalization_``), and a linear SVM (liblinear, hinge loss, the searched ``C`` and class weights) fitted on
those features of ``ROWS`` time-stratified rows. Its decision value ``k(x) N^T w + b`` is a kernel expansion
over the landmarks with coefficients ``N^T w``: exactly an SVC whose support vectors are the landmarks. That SVC
is what is scored, Platt-scaled, packaged (skl2onnx's SVC converter, unchanged), checked and registered; every
answer costs ``LANDMARKS`` kernel terms. A linear kernel needs no landmarks: the linear SVM's weights are
the one support vector of a linear SVC.
"""

from __future__ import annotations

import numpy as np

from mlpipe.training import accelerate
from mlpipe.training.plan import time_stratified

LANDMARKS = 500
"""Landmark rows of the Nystroem approximation: the registered SVC's support vectors."""
ROWS = 100_000
"""Rows the linear SVM on the approximate features is fitted on (a time-stratified sample), at most."""


def fit(pipeline, X, y: np.ndarray, seed: int = 0):
    """Fit ``pipeline`` (its last step an unfitted SVC with the chosen parameters) on ``X``, ``y`` (the plan's
    time-stratified ``ROWS``) through the approximation: its other steps (imputer, scaler, encoders) as usual,
    its SVC replaced by the equivalent fitted SVC. Returns the pipeline and a line that says what was fitted."""
    from sklearn.kernel_approximation import Nystroem
    from sklearn.svm import SVC, LinearSVC

    name, svc = pipeline.steps[-1]
    svc = SVC(**{k: v for k, v in svc.get_params().items() if k in SVC().get_params()})
    if svc.kernel == "linear":  # no landmarks needed: liblinear's weights are the one support vector
        pipeline.steps[-1] = (name, accelerate.LiblinearSVC(**svc.get_params()))
        fitted = accelerate.as_registered(pipeline.fit(X, y)).steps[-1][1]
        converged = int(fitted.n_iter_[0]) < svc.max_iter
        return pipeline, f"a linear SVM (liblinear) on {len(y):,} rows{'' if converged else ' (not converged)'}"
    Z = np.asarray(pipeline[:-1].fit_transform(X, y), dtype=np.float64)
    gamma = _gamma(svc, Z)
    nystroem = Nystroem(kernel=svc.kernel, gamma=gamma, degree=svc.degree, coef0=svc.coef0,
                        n_components=min(LANDMARKS, len(Z)), random_state=seed)
    nystroem.fit(Z[time_stratified(np.arange(len(Z)), LANDMARKS, seed + 1)])
    features = nystroem.transform(Z)
    linear = accelerate.liblinear_fit(LinearSVC(C=svc.C, class_weight=svc.class_weight, loss="hinge", dual=True,
                                                max_iter=accelerate.LIBLINEAR_MAX_ITER, random_state=seed),
                                      features, y)
    # k(x) N^T w + b: an SVC over the landmarks with coefficients N^T w
    alpha = nystroem.normalization_.T @ linear.coef_.ravel()
    fitted = accelerate.fitted_svc(SVC(**svc.get_params()), nystroem.components_, alpha,
                                   float(linear.intercept_[0]), gamma, linear.classes_, linear.n_iter_, Z.shape)
    probe = Z[: min(256, len(Z))]
    expected = linear.decision_function(features[: len(probe)])
    got = fitted.decision_function(probe)
    if not np.allclose(got, expected, rtol=1e-6, atol=1e-6 * (1 + np.abs(expected).max())):
        raise RuntimeError(f"the approximate SVM and its SVC disagree: decision value {got[0]:.6g} vs {expected[0]:.6g}")
    pipeline.steps[-1] = (name, fitted)
    converged = int(np.max(linear.n_iter_)) < accelerate.LIBLINEAR_MAX_ITER
    return pipeline, (f"Nystroem's {svc.kernel} approximation with {len(alpha)} landmarks, a linear SVM (liblinear) "
                      f"on {len(y):,} rows{'' if converged else ' (not converged)'}")


def _gamma(svc, Z: np.ndarray) -> float:
    """The SVC's gamma on these rows, as its own fit would set it."""
    if svc.gamma == "scale":
        var = Z.var()
        return 1.0 / (Z.shape[1] * var) if var != 0 else 1.0
    if svc.gamma == "auto":
        return 1.0 / Z.shape[1]
    return float(svc.gamma)
