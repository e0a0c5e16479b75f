"""Data-parallel LightGBM on a Ray cluster: the one final fit of ``models.lightgbm`` over ``workers`` Ray
Train workers, each training on its own Parquet shard of the training rows (``models.lightgbm.workers``).

Which Ray API, and why: ``ray.train.lightgbm.LightGBMTrainer`` with a ``train_loop_per_worker`` (Ray 2.60's
maintained, Ray Train V2 trainer). Ray Train starts the worker group, and its LightGBM backend hands every
worker LightGBM's own network parameters (``ray.train.lightgbm.get_network_params()``: ``machines``,
``local_listen_port``, ``num_machines``), so the loop is a plain ``lightgbm.train`` with
``tree_learner="data"``: LightGBM's own socket-based data-parallel learner, histograms reduced between the
workers at every split. The separate ``lightgbm_ray`` package (``RayLGBMClassifier``) is deprecated and
unmaintained in favour of this trainer; the trainer's legacy keyword API (``params=``, ``label_column=``)
raises a DeprecationWarning in 2.60 and is not used.

What each worker sees is what the registered pipeline's ``model`` step sees: the numeric preprocessing (the
imputer's medians, the scaler's means; the encoders for categories) is fitted once on the driver from the
training rows (cheap: column statistics), sent to the workers, and applied there to each shard before the
booster trains on it. The booster comes back as LightGBM's own model text (``model.txt`` in the Ray Train
checkpoint, written by rank 0), never a pickle, and is wrapped in a fitted ``LGBMClassifier`` in the same
scikit-learn pipeline a local fit builds, so the ONNX conversion and the parity check run unchanged.

Shards and checkpoints are paths every worker and the driver must reach: on one machine (the tests' local
cluster) a temporary folder; on a real cluster shared storage (e.g. the workspace's artifact location on a
network file system), as for any Ray Train ``storage_path``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlpipe.errors import ConfigError

ENGINE = "ray-data-parallel"
MODEL_FILE = "model.txt"


@dataclass(frozen=True)
class Fitted:
    pipeline: Any
    """The scikit-learn pipeline: the driver-fitted preprocessing, then an ``LGBMClassifier`` around the booster."""
    workers: int
    nodes: list[str]
    """The Ray node id of each worker, by rank."""
    rows: list[int]
    """The training rows of each worker's shard, by rank."""

    @property
    def record(self) -> dict[str, Any]:
        """What the trained model's params record about this fit."""
        return {"engine": ENGINE, "workers": self.workers, "ray_nodes": sorted(set(self.nodes)),
                "shard_rows": self.rows}


def check_workers(kind: str, workers: int | None, backend: str) -> None:
    """``models.<kind>.workers`` is for LightGBM on a Ray cluster only: a ConfigError naming the key otherwise."""
    if workers is None:
        return
    if kind != "lightgbm":
        raise ConfigError(f"key 'models.{kind}.workers': data-parallel training on Ray is for lightgbm only")
    if backend != "ray":
        raise ConfigError(f"key 'models.{kind}.workers': needs compute.backend = \"ray\" "
                          f"(or mlpipe run --ray-address HOST:PORT)")


def write_shards(X: np.ndarray | pd.DataFrame, y: np.ndarray, columns: list[str], order: np.ndarray | None,
                 shards: int, folder: str | os.PathLike, label: str = "label") -> list[str]:
    """The training rows as ``shards`` Parquet files in ``folder``: feature columns then ``label``, split into
    row ranges of nearly equal size in ``order`` (time order; None: as given)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = X.copy() if isinstance(X, pd.DataFrame) else pd.DataFrame(X, columns=columns)
    frame[label] = np.asarray(y)
    if order is not None:
        frame = frame.iloc[order]
    paths = []
    for i, part in enumerate(np.array_split(np.arange(len(frame)), shards)):
        path = Path(folder, f"train-{i:05d}.parquet")
        pq.write_table(pa.Table.from_pandas(frame.iloc[part], preserve_index=False), path)
        paths.append(str(path))
    return paths


def fit_lightgbm(address: str, pipeline, X, y: np.ndarray, shards: list[str], feature_columns: list[str],
                 label_column: str, workers: int, storage: str | os.PathLike) -> Fitted:
    """Fit ``pipeline`` (its preprocessing steps, then an unfitted ``LGBMClassifier`` with the chosen
    parameters) with the booster trained data-parallel over ``workers`` Ray Train workers on the cluster at
    ``address``, worker ``r`` reading ``shards[r]`` (Parquet: ``feature_columns`` and ``label_column``).
    ``X``, ``y``: the training rows, for the preprocessing's statistics and the class labels. ``storage``:
    Ray Train's storage path (its checkpoint holds the model text)."""
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline
    from sklearn.utils.class_weight import compute_class_weight

    if len(shards) != workers:
        raise ValueError(f"{len(shards)} shards for {workers} workers")
    prep = Pipeline([(name, clone(step)) for name, step in pipeline.steps[:-1]]).fit(X, y)
    estimator = clone(pipeline.steps[-1][1])
    _set_classes(estimator, y)
    params = estimator._process_params(stage="fit")  # the sklearn wrapper's own mapping to lightgbm.train's
    class_weight = None
    if estimator.class_weight is not None:  # per class from all rows, as the wrapper computes it
        codes = estimator._le.transform(y)
        weights = (compute_class_weight("balanced", classes=np.unique(codes), y=codes)
                   if estimator.class_weight == "balanced" else [estimator.class_weight.get(c, 1.0)
                                                                 for c in estimator._classes])
        class_weight = {int(i): float(w) for i, w in enumerate(weights)}
    loop_config = {"shards": list(shards), "features": list(feature_columns), "label": label_column,
                   "frame": isinstance(X, pd.DataFrame), "prep": prep, "params": params,
                   "rounds": int(estimator.n_estimators), "class_map": {_key(k): int(v) for k, v in
                                                                        estimator._class_map.items()},
                   "class_weight": class_weight}
    checkpoint = _train(address, loop_config, workers, storage)
    booster, done = _read(checkpoint, workers)
    _set_booster(estimator, booster, prep.transform(X[:1]).shape[1])
    model = Pipeline([*prep.steps, (pipeline.steps[-1][0], estimator)])
    return Fitted(model, workers, [d["node"] for d in done], [d["rows"] for d in done])


def _key(label) -> Any:
    return label.item() if isinstance(label, np.generic) else label


def _set_classes(estimator, y: np.ndarray) -> None:
    """The class state ``LGBMClassifier.fit`` sets before it trains (lightgbm 4.x: ``sklearn.py``)."""
    from lightgbm.sklearn import _LGBMLabelEncoder

    estimator._le = _LGBMLabelEncoder().fit(y)
    estimator._class_map = dict(zip(estimator._le.classes_, estimator._le.transform(estimator._le.classes_)))
    estimator._classes = estimator._le.classes_
    estimator._n_classes = len(estimator._classes)
    if estimator.objective is None:
        estimator._objective = None


def _set_booster(estimator, booster, n_features: int) -> None:
    """The fitted state ``LGBMClassifier.fit`` sets after ``lightgbm.train``, around ``booster``."""
    estimator._Booster = booster
    estimator._n_features = booster.num_feature()
    estimator._n_features_in = n_features
    estimator._fitted_with_feature_names = False  # the model step gets the float32 matrix of the casts
    estimator._evals_result = {}
    estimator._best_iteration = booster.best_iteration
    estimator._best_score = booster.best_score
    estimator.fitted_ = True
    if booster.num_feature() != n_features:
        raise RuntimeError(f"the distributed booster has {booster.num_feature()} features, the pipeline {n_features}")


def _train(address: str, loop_config: dict, workers: int, storage) -> str:
    """Run the Ray Train job; the path of its final checkpoint."""
    import ray

    from mlpipe.config import ComputeConfig
    from mlpipe.training.search import check_compute

    try:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.lightgbm import LightGBMTrainer
    except ImportError:
        raise ConfigError("key 'models.lightgbm.workers': needs Ray Train: pip install 'mlpipe[ray]'") from None
    host, port = check_compute(ComputeConfig(backend="ray", address=address))
    try:
        ray.init(address=f"{host}:{port}", log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, TimeoutError, ValueError) as e:
        raise ConfigError(f"compute.address {address!r}: cannot connect to a Ray cluster: "
                          f"{' '.join(str(e).split())[:300]}") from None
    try:
        trainer = LightGBMTrainer(
            _train_shard, train_loop_config=loop_config,
            # one worker per node where the cluster allows: data parallelism is for rows past one machine
            scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1},
                                         placement_strategy="SPREAD"),
            run_config=RunConfig(name="lightgbm", storage_path=str(Path(storage).resolve())))
        result = trainer.fit()
        if result.error is not None:
            raise result.error
        return result.checkpoint.path
    finally:
        ray.shutdown()


def _train_shard(config: dict) -> None:
    """One Ray Train worker: its shard, the driver's preprocessing, LightGBM's data-parallel learner."""
    import lightgbm
    import pyarrow.parquet as pq
    import ray
    import ray.train
    from ray.train.lightgbm import get_network_params
    from sklearn.utils.class_weight import compute_sample_weight

    rank = ray.train.get_context().get_world_rank()
    frame = pq.read_table(config["shards"][rank]).to_pandas()
    X = frame[config["features"]]
    X = config["prep"].transform(X if config["frame"] else X.to_numpy(dtype=np.float32))
    y = frame[config["label"]].map(config["class_map"]).to_numpy()
    weight = None if config["class_weight"] is None else compute_sample_weight(config["class_weight"], y)
    params = {**config["params"], **get_network_params(), "tree_learner": "data", "pre_partition": True}
    booster = lightgbm.train(params, lightgbm.Dataset(X, label=y, weight=weight), num_boost_round=config["rounds"])
    with tempfile.TemporaryDirectory() as out:  # every worker's files land in the one checkpoint folder
        where = {"rank": rank, "node": ray.get_runtime_context().get_node_id(), "rows": len(frame)}
        Path(out, f"worker-{rank}.json").write_text(json.dumps(where))
        if rank == 0:  # the trees are the same on every worker: one copy, as LightGBM's model text
            Path(out, MODEL_FILE).write_text(booster.model_to_string())
        ray.train.report({"rank": rank}, checkpoint=ray.train.Checkpoint.from_directory(out))


def _read(checkpoint: str, workers: int):
    import lightgbm

    folder = Path(checkpoint)
    done = [json.loads(folder.joinpath(f"worker-{r}.json").read_text()) for r in range(workers)]
    return lightgbm.Booster(model_str=folder.joinpath(MODEL_FILE).read_text()), done


def fit_on_ray(pipeline, X, y: np.ndarray, ts, config, kind: str) -> Fitted:
    """``train_model``'s final fit with ``models.<kind>.workers``: the training rows written as Parquet shards
    (row ranges in time order, one per worker) to a temporary folder, then ``fit_lightgbm`` on them."""
    settings = config.model(kind)
    check_workers(kind, settings.workers, config.compute.backend)
    columns = list(X.columns) if isinstance(X, pd.DataFrame) else list(config.model_features)
    order = None
    if ts is not None and pd.api.types.is_datetime64_any_dtype(ts):
        t = ts.dt.tz_convert(None) if ts.dt.tz is not None else ts
        order = np.argsort(t.to_numpy(), kind="stable")
    with tempfile.TemporaryDirectory(prefix="mlpipe-shards-") as folder:
        shards = write_shards(X, y, columns, order, settings.workers, folder)
        return fit_lightgbm(config.compute.address, pipeline, X, y, shards, columns, "label", settings.workers,
                            Path(folder, "ray"))
