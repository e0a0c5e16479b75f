"""The Turku rows as a network of stations: the data of ``bench/scale.py`` (issue "Scale").

    PYTHONPATH=src python3 bench/stations.py 520 /tmp/scale/stations-520.parquet

Station 0 is the Turku CSV as mlpipe ships it; station k is a copy with its six continuous features jittered by
1% of their standard deviation (seed k, clipped to the column's observed range) and ``Location`` = "station-k".
Same timestamps for every station, so every station is a series of its own (labels and features per group).
520 stations make 10,030,280 rows, about the hourly data of a national weather network over two years.
Written as Parquet (pyarrow), one row group per station; 0/1 condition columns as they are.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CONTINUOUS = ["Temperature_C", "Humidity", "Wind_speed_kmph", "Wind_bearing_degrees", "Visibility_km",
              "Pressure_millibars"]


def write_stations(n: int, path: Path) -> int:
    """Write ``n`` stations to ``path`` (Parquet); returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlpipe.sources import turku_weather

    base = turku_weather()
    base[CONTINUOUS] = base[CONTINUOUS].astype(np.float64)  # one schema for every station (bearing is int)
    std, lo, hi = (base[CONTINUOUS].std().to_numpy(), base[CONTINUOUS].min().to_numpy(),
                   base[CONTINUOUS].max().to_numpy())
    values = base[CONTINUOUS].to_numpy(dtype=np.float64)
    rows, writer = 0, None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        for k in range(n):
            station = base.copy()
            station["Location"] = "Port of Turku, Finland" if k == 0 else f"station-{k}"
            if k:
                noise = np.random.default_rng(k).normal(size=values.shape) * (0.01 * std)
                # a missing value stays missing; the jitter never leaves the observed range
                station[CONTINUOUS] = np.where(np.isnan(values), np.nan, np.clip(values + noise, lo, hi))
            table = pa.Table.from_pandas(station, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            rows += len(station)
    finally:
        if writer is not None:
            writer.close()
    return rows


if __name__ == "__main__":
    n, out = int(sys.argv[1]), Path(sys.argv[2])
    print(f"{write_stations(n, out):,} rows -> {out}")
