"""How a model gets trained: search strategies and where trials run (local cores, Ray), the worker process a
run trains in, the fit cache, the oneDAL engines, LightGBM's data-parallel final fit on a Ray cluster
(``distributed``). Used by ``steps.train``; may import config, errors, console, provenance and steps; never
store, serving or report."""
