"""Request and response schemas of the REST API. The record schema is generated from the served model's
feature list, so validation and ``/docs`` show the model's real fields."""

from __future__ import annotations

from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictFloat, StrictInt, StrictStr, Tag, create_model

FLOAT32_MAX = 3.4028234663852886e38
"""Larger numbers do not fit the model's float32 input; they are refused rather than turned into infinity."""
LISTED_CATEGORIES = 50
"""A categorical field's schema lists the categories seen in training when there are at most this many."""


def record_model(features: list[str], nullable: bool, categorical: list[str] = (),
                 categories: dict[str, list[str]] | None = None) -> type[BaseModel]:
    """One record: every feature, by its name, as a number; ``null`` too when the model imputes missing values;
    every categorical column as text (or an integer code), ``null`` when unknown: a category never seen in
    training is answered too (the graph encodes it as unseen). Unknown fields, strings for numbers and
    booleans are refused. Fields are ``f0, f1, …`` and ``c0, c1, …`` with the column names as aliases, so any
    name works (spaces, dots, keywords)."""
    number = Optional[StrictFloat] if nullable else StrictFloat
    missing = " or null when unknown (the model imputes it)" if nullable else ""
    fields: dict[str, Any] = {
        f"f{i}": (number, Field(alias=name, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX,
                                description=f"feature {name!r}: a number{missing}"))
        for i, name in enumerate(features)
    }
    for i, name in enumerate(categorical):
        known = (categories or {}).get(name, [])
        listed = [k for k in known if k != ""]
        shown = (f"; seen in training: {', '.join(listed)}" if len(listed) <= LISTED_CATEGORIES
                 else f"; {len(listed)} categories seen in training")
        fields[f"c{i}"] = (Optional[Union[StrictStr, StrictInt]], Field(
            alias=name, description=f"category {name!r}: text or an integer code, or null when unknown{shown}; "
                                    f"any other value is answered as a category not seen in training",
            examples=listed[:LISTED_CATEGORIES] or None))
    return create_model("Record", __config__=ConfigDict(extra="forbid", populate_by_name=False), **fields)


def predict_body(record: type[BaseModel]) -> Any:
    """One record or a list of records. The JSON type picks the branch, so an error names only the
    fields of the branch that applies (``record.Humidity``, ``records.3.Humidity``)."""
    return Annotated[
        Union[Annotated[record, Tag("record")], Annotated[list[record], Tag("records")]],
        Discriminator(lambda v: "records" if isinstance(v, list) else "record"),
    ]


class Prediction(BaseModel):
    label: int = Field(ge=0, le=1, description="1 = the positive class")
    probability: float = Field(ge=0.0, le=1.0, description="probability of the positive class")


class ClassPrediction(BaseModel):
    label: str = Field(description="the model's class, by name (the most probable one; an SVM's: libsvm's vote)")
    probability: float = Field(ge=0.0, le=1.0, description="its probability")
    probabilities: dict[str, float] = Field(description="every class's probability, by name")


class ModelRef(BaseModel):
    name: str
    version: int = Field(ge=1)


class PredictResponse(BaseModel):
    model: ModelRef
    predictions: list[Prediction] = Field(description="one per record, in the order of the request")


class ClassPredictResponse(BaseModel):
    """The answer of a model of several classes."""

    model: ModelRef
    predictions: list[ClassPrediction] = Field(description="one per record, in the order of the request")


class LogHealth(BaseModel):
    logged: int = Field(ge=0, description="forecasts written to the forecast log since the server started")
    lost: int = Field(ge=0, description="forecasts answered but not logged (the log could not be written)")
    last_error: Optional[str] = Field(description="why the last one was not logged")


class Health(BaseModel):
    status: str = Field(examples=["ok"])
    model: ModelRef
    forecast_log: Optional[LogHealth] = None


class DatasetRef(BaseModel):
    name: Optional[str] = None
    version: Optional[int] = None
    digest: Optional[str] = None


class Metadata(BaseModel):
    """The ``mlpipe models show`` object of the served version."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str
    version: int
    aliases: list[str]
    kind: Optional[str] = None
    features: list[str]
    metrics: dict[str, float]
    params: dict[str, str] = {}
    datasets: dict[str, DatasetRef]
    run_id: Optional[str] = None
    git_commit: Optional[str] = None
    onnx_sha256: Optional[str] = None
    description: Optional[str] = None
    created_at: Optional[int] = None
    tags: dict[str, str] = {}


class ObservationsResponse(BaseModel):
    stored: int = Field(ge=0, description="new (group, timestamp) observations")
    repeated: int = Field(ge=0, description="equal to what was stored already: nothing changed")
    replaced: int = Field(ge=0, description="a different value for a (group, timestamp) stored before: "
                                            "logged, and now its value")


class Forecast(BaseModel):
    group: Optional[str] = Field(description="the group (station); null for a model without groups")
    timestamp: str = Field(description="the observation the forecast is made from (UTC, ISO 8601)")
    forecast_for: str = Field(description="timestamp + the model's horizon: the time the forecast is about")
    label: int = Field(ge=0, le=1, description="1 = the positive class")
    probability: Optional[float] = Field(ge=0.0, le=1.0, description="probability of the positive class")
    missing: list[str] = Field(description="model inputs that were missing (no observation that far back, "
                                           "or not measured): the model imputed them")


class ForecastResponse(BaseModel):
    model: ModelRef
    forecasts: list[Forecast] = Field(description="one per group, ordered by group")
