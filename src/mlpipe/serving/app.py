"""The FastAPI application: ``POST /predict``, ``GET /health``, ``GET /metadata``; and, for a model whose
input needs the past (``serving.forecast``), ``POST /observations`` and ``GET /forecast``."""

import gc
import operator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Optional

import numpy as np
from fastapi import Body, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic_core import to_json

from mlpipe import __version__
from mlpipe.serving.follow import AliasFollower
from mlpipe.serving.middleware import BearerAuth
from mlpipe.serving.model import ModelSlot
from mlpipe.serving.schemas import (ClassPredictResponse, ForecastResponse, Health, Metadata, ObservationsResponse,
                                    PredictResponse, predict_body, record_model)

if TYPE_CHECKING:
    from mlpipe.monitoring.log import ForecastLog
    from mlpipe.serving.forecast import Forecaster

INLINE_ROWS = 256
"""Batches up to this size are scored on the event loop (tens of microseconds); larger ones in a worker
thread, so one big batch does not hold up the single-record requests behind it."""
MAX_ERRORS = 20


def create_app(slot: ModelSlot, *, max_body_bytes: int, ref: Optional[str] = None, token: Optional[str] = None,
               follower: Optional[AliasFollower] = None, forecaster: Optional["Forecaster"] = None,
               log: Optional["ForecastLog"] = None) -> FastAPI:
    """The API for the model in ``slot``; its request schema is built from that model's features.
    ``follower`` (if any) runs while the app does; ``token`` protects every route but ``/health``;
    ``forecaster`` (if any) adds ``/observations`` and ``/forecast``; ``log`` (if any) keeps every answer
    (``mlpipe.monitoring.log``), written before the answer goes out."""
    model = slot.current
    n_features, n_categorical = len(model.features), len(model.categorical)
    record = record_model(model.features, model.nullable, model.categorical, model.categories)
    values = operator.attrgetter(*(f"f{i}" for i in range(n_features))) if n_features else (lambda r: ())
    texts = operator.attrgetter(*(f"c{i}" for i in range(n_categorical))) if n_categorical else None

    @asynccontextmanager
    async def lifespan(_app):
        # ~280,000 long-lived objects (MLflow, scikit-learn, pandas) that a full collection would walk: 0.4 s
        # stalls of every request in flight on the 2-core test machine. Frozen, a full collection takes ~0 ms.
        gc.freeze()
        if follower is not None:
            follower.start()
        yield
        if follower is not None:
            follower.stop()
        if log is not None:
            log.close()

    app = FastAPI(title=f"mlpipe: {ref or f'{model.name}:{model.version}'}", version=__version__,
                  description=f"Predictions of the registered model {ref or model.name}; features: "
                              f"{', '.join(model.features)}.", lifespan=lifespan, max_body_size=max_body_bytes)

    classes = model.classes

    @app.post("/predict", response_model=ClassPredictResponse if classes else PredictResponse, responses={
        400: {"description": "The body is not text (undecodable bytes)"},
        413: {"description": "Request body too large"},
        422: {"description": "Not JSON, or a record is not valid: the error's loc names the field"}})
    async def predict(body: Annotated[predict_body(record), Body()]):
        """Label and positive-class probability (for several classes: the class by name, its probability and
        every class's) for one record or a list of records, in order."""
        records = body if isinstance(body, list) else [body]
        current = slot.current  # this request keeps this model even if the alias moves meanwhile
        X = np.array([values(r) for r in records], dtype=np.float32).reshape(len(records), n_features)
        C = _categories([texts(r) for r in records], model.categorical) if texts is not None else None
        if len(records) <= INLINE_ROWS:
            labels, proba = current.predict(X, C)
        else:
            labels, proba = await run_in_threadpool(current.predict, X, C)
        finite = np.isfinite(proba)
        bad = np.flatnonzero(~(finite.all(axis=1) if proba.ndim == 2 else finite))
        if bad.size:
            loc = ["body", "records", int(bad[0])] if isinstance(body, list) else ["body", "record"]
            raise RequestValidationError([{"type": "value_error", "loc": loc,
                                           "msg": "The model gives no finite probability for these values"}])
        if log is not None:  # before the answer goes out
            log.write(current.name, current.version, "predict", labels, proba, X, categories=C)
        # Built in the shape PredictResponse documents and serialised without validating it again, which
        # saves about a sixth of a 1,000-record request; schemathesis checks the shape in the tests.
        if classes:  # several classes: by name, with every class's probability
            predictions = [{"label": classes[lab], "probability": p[lab], "probabilities": dict(zip(classes, p))}
                           for lab, p in zip(labels.tolist(), proba.tolist())]
        else:
            predictions = [{"label": lab, "probability": p} for lab, p in zip(labels.tolist(), proba.tolist())]
        return Response(to_json({"model": {"name": current.name, "version": current.version},
                                 "predictions": predictions}), media_type="application/json")

    @app.get("/health", response_model=Health)
    async def health():
        """200 while a model is loaded (always, once the server has started)."""
        current = slot.current
        out = {"status": "ok", "model": {"name": current.name, "version": current.version}}
        if log is not None:
            c = log.counts
            out["forecast_log"] = {"logged": c.logged, "lost": c.lost, "last_error": c.last_error}
        return out

    @app.get("/metadata", response_model=Metadata)
    async def metadata():
        """The ``mlpipe models show`` object of the version being served."""
        return slot.current.info

    if forecaster is not None:
        _forecast_routes(app, slot, forecaster, log)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        """422 with where and what, without echoing the input back; at most ``MAX_ERRORS`` entries."""
        errors = exc.errors()
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in errors[:MAX_ERRORS]]
        return JSONResponse({"detail": detail, "errors": len(errors)}, status_code=422)

    if token:
        app.add_middleware(BearerAuth, token=token)  # added last, so it runs first
    return app


def _categories(rows: list, names: list[str]) -> np.ndarray:
    """The records' categorical fields as the graph's string input: text, integer codes as their text, null
    as the missing category (``featurize.category_text``, as training read them)."""
    from mlpipe.featurize import category_matrix

    raw = np.empty((len(rows), len(names)), dtype=object)
    raw[:] = [r if isinstance(r, tuple) else (r,) for r in rows]
    return category_matrix(lambda name: raw[:, names.index(name)], names, "request")


def _forecast_routes(app: FastAPI, slot: ModelSlot, forecaster: "Forecaster", log: Optional["ForecastLog"]) -> None:
    from mlpipe.serving.forecast import Rejected, observation_model

    observation = observation_model(forecaster.recipe)
    r = forecaster.recipe
    group_doc = f"the {r.group!r} to forecast for (every group when omitted)" if r.group else "not used"

    @app.post("/observations", response_model=ObservationsResponse, responses={
        400: {"description": "The body is not text (undecodable bytes)"},
        413: {"description": "Request body too large"},
        422: {"description": "A record is not valid (a missing timestamp or group, a non-numeric value, a time "
                             "beyond the allowed clock skew): the error's loc names it; nothing is stored"}})
    async def observations(body: Annotated[predict_body(observation), Body()]):
        """Store raw observations (one record or a list), idempotent on (group, timestamp): a repeat changes
        nothing, a different value replaces the stored one (counted). Late and out-of-order ones are welcome."""
        many = isinstance(body, list)
        records = [o.model_dump(by_alias=True) for o in (body if many else [body])]
        where = (lambda i: ["body", "records", i]) if many else (lambda _i: ["body", "record"])
        try:  # a few records inline, as /predict does (a thread hop costs more than the write)
            written = forecaster.observe(records, where) if len(records) <= INLINE_ROWS else \
                await run_in_threadpool(forecaster.observe, records, where)
        except Rejected as e:
            raise RequestValidationError([{"type": "value_error", "loc": e.loc, "msg": e.msg}]) from None
        return {"stored": written.stored, "repeated": written.repeated, "replaced": written.replaced}

    @app.get("/forecast", response_model=ForecastResponse, responses={
        404: {"description": "No observation of that group (at that time)"},
        422: {"description": "``at`` is not a timestamp"}})
    async def forecast(group: Annotated[Optional[str], Query(description=group_doc)] = None,
                       at: Annotated[Optional[str], Query(description=(
                           "the observation time to forecast from (ISO 8601; default: each group's latest)"))] = None):
        """The forecast from the latest observation (or the one at ``at``), its features computed from the
        stored observations exactly as training computed them."""
        current = slot.current
        try:
            found = forecaster.forecast(current, group, at) if group is not None else \
                await run_in_threadpool(forecaster.forecast, current, group, at)
        except Rejected as e:
            raise RequestValidationError([{"type": "value_error", "loc": e.loc, "msg": e.msg}]) from None
        if not found.forecasts:
            what = f"group {group!r}" if group is not None else "any group"
            when = f" at {at}" if at is not None else ""
            return JSONResponse({"detail": f"no observation of {what}{when}"}, status_code=404)
        if log is not None:
            f = found.forecasts
            log.write(current.name, current.version, "forecast", found.labels, found.proba, found.inputs,
                      groups=[x["group"] for x in f], times=[x["timestamp"] for x in f],
                      forecast_for=[x["forecast_for"] for x in f])
        return {"model": {"name": current.name, "version": current.version}, "forecasts": found.forecasts}
