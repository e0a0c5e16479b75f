"""Writes the corpus's data files (committed; run again after changing a case): one small synthetic
weather table in the Turku schema that the pipeline accepts (``files/good.csv``), and copies of it with
exactly one defect each. Synthetic, so the corpus needs no real data; ``python3 tests/bad_inputs/make_files.py``."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

FILES = Path(__file__).parent / "files"


def good(rows: int = 240) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    hours = np.arange(rows)
    rain = ((np.sin(hours / 9.0) + rng.normal(0, 0.4, rows)) > 0.6).astype(int)
    return pd.DataFrame({
        "Timestamp": pd.date_range("2015-08-01 00:00", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
        "Location": "Port of Turku, Finland",
        "Temperature_C": np.round(15 + 6 * np.sin(hours / 24 * 2 * np.pi) + rng.normal(0, 1, rows), 2),
        "Humidity": np.round(np.clip(0.6 + 0.3 * rain + rng.normal(0, 0.05, rows), 0, 1), 2),
        "Wind_speed_kmph": np.round(np.abs(rng.normal(12, 5, rows)), 1),
        "Wind_bearing_degrees": rng.integers(0, 360, rows),
        "Visibility_km": np.round(np.clip(10 - 6 * rain + rng.normal(0, 1, rows), 0, 16), 1),
        "Pressure_millibars": np.round(1013 - 8 * rain + rng.normal(0, 2, rows), 1),
        "Current_weather_condition": rain,
    })


def write(name: str, df: pd.DataFrame, **kw) -> None:
    df.to_csv(FILES / name, index=False, **kw)


def main() -> None:
    FILES.mkdir(exist_ok=True)
    g = good()
    write("good.csv", g)
    write("missing_column.csv", g.drop(columns="Humidity"))
    write("missing_group_column.csv", g.drop(columns="Location"))
    write("non_numeric_feature.csv", g.assign(Humidity=g["Humidity"].astype(str).where(g.index != 17, "humid!")))
    (FILES / "empty.csv").write_bytes(b"")
    write("header_only.csv", g.head(0))
    write("wrong_delimiter.csv", g, sep=";")
    write("tab_delimited.csv", g, sep="\t")
    latin = g.assign(Location="Åbo hamn")
    (FILES / "non_utf8.csv").write_bytes(latin.to_csv(index=False).encode("latin-1"))
    (FILES / "bom.csv").write_bytes(b"\xef\xbb\xbf" + g.to_csv(index=False).encode())
    text = g.to_csv(index=False).splitlines()
    (FILES / "duplicated_columns.csv").write_text(
        "\n".join([text[0] + ",Humidity"] + [line + ",0.5" for line in text[1:]]) + "\n")
    write("unparseable_timestamps.csv", g.assign(Timestamp=g["Timestamp"].where(g.index != 30, "yesterday at noon")))
    mixed = g["Timestamp"].where(g.index % 2 == 0, g["Timestamp"] + "+03:00")
    write("mixed_time_zones.csv", g.assign(Timestamp=mixed))
    write("all_one_class.csv", g.assign(Current_weather_condition=0))
    write("rare_class.csv", g.assign(Current_weather_condition=np.where(np.isin(g.index, [10, 11]), 1, 0)))
    sky = np.where(g["Current_weather_condition"] == 1, "rain", np.where(g.index % 2 == 0, "clear", "cloud"))
    write("rare_sky_class.csv", g.assign(Sky=np.where(np.isin(g.index, [10, 11]), "snow", sky)))
    write("too_few_rows.csv", g.head(24))
    write("single_row.csv", g.head(1))
    write("all_missing_feature.csv", g.assign(Visibility_km=np.nan))
    write("all_missing_timestamps.csv", g.assign(Timestamp=""))
    write("inf_values.csv", g.assign(Wind_speed_kmph=g["Wind_speed_kmph"].where(g.index % 40 != 5, np.inf)))
    write("huge_values.csv", g.assign(Pressure_millibars=g["Pressure_millibars"].astype(object).where(
        g.index % 50 != 3, "1e308")))
    write("negative_humidity.csv", g.assign(Humidity=g["Humidity"].where(g.index % 30 != 2, -0.4)))
    (FILES / "gzipped.csv").write_bytes(gzip.compress(g.to_csv(index=False).encode(), mtime=0))
    ragged = g.to_csv(index=False).splitlines()
    ragged[50] += ",1,2,3"
    (FILES / "ragged_rows.csv").write_text("\n".join(ragged) + "\n")
    (FILES / "a_directory.csv").mkdir(exist_ok=True)
    (FILES / "a_directory.csv" / ".gitkeep").write_text("")
    g.rename(columns={"Timestamp": "time"}).to_parquet(FILES / "wrong_schema.parquet", index=False)
    g.assign(Temperature_C=g["Temperature_C"].astype(str) + " C").to_parquet(FILES / "wrong_types.parquet",
                                                                             index=False)
    (FILES / "not_parquet.parquet").write_bytes(b"PAR1 this is not a parquet file at all \x00\x01")
    write("data.xlsx", g)
    (FILES / "json_named_csv.csv").write_text(g.head(5).to_json(orient="records"))
    write("text_target.csv", g.assign(Current_weather_condition="rain"))


if __name__ == "__main__":
    main()
