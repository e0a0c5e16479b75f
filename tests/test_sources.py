"""The built-in sources: shipped with mlpipe or installed with it, so the shipped configs run from any folder."""

from __future__ import annotations

import gzip
import hashlib
import os
from importlib.resources import files

import pytest

from mlpipe.config import load_config
from mlpipe.errors import DataError
from mlpipe.sources import BUILTINS, read_source
from tests.conftest import REPO


def test_the_turku_data_ships_byte_for_byte_as_its_readme_states():
    data = files("mlpipe").joinpath("data")
    raw = gzip.decompress(data.joinpath("turku_weather_processed.csv.gz").read_bytes())
    stated = data.joinpath("README.md").read_text()
    assert hashlib.sha256(raw).hexdigest() in stated
    assert "MIT License" in stated and "Packt" in stated
    frame = read_source("builtin:turku-weather")
    assert len(frame) == 19_289 and list(frame.columns)[:2] == ["Timestamp", "Location"]
    assert (frame["Pressure_millibars"] == 0).any()  # as distributed, failed sensor included


@pytest.mark.parametrize("config", ["turku.toml", "turku_book_label.toml"])
def test_the_shipped_configs_read_their_data_from_any_folder(config, tmp_path):
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        cfg = load_config(REPO / "configs" / config)
    finally:
        os.chdir(here)
    assert cfg.data.source == "builtin:turku-weather"
    assert set(cfg.data.features) <= set(read_source(cfg.data.source).columns)


def test_an_unknown_builtin_names_the_ones_there_are():
    with pytest.raises(DataError, match="builtin:nope.*" + ".*".join(BUILTINS)):
        read_source("builtin:nope")
