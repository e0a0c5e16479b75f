import multiprocessing as mp

import numpy as np
import pandas as pd
import pytest

from mlpipe.errors import IntegrityError, NotFoundError
from mlpipe.store.datasets import DatasetRegistry, content_digest


def registry(root) -> DatasetRegistry:
    return DatasetRegistry(f"sqlite:///{root / 'datasets.db'}", root / "datasets")


def frame(n: int) -> pd.DataFrame:
    return pd.DataFrame({"t": pd.date_range("2020-01-01", periods=n, freq="h", tz="UTC"),
                         "x": [float(i) for i in range(n)], "label": [i % 2 for i in range(n)]})


def test_versions_count_up_and_identical_content_returns_the_existing_version(tmp_path):
    reg = registry(tmp_path)
    v1 = reg.register("d", frame(5), "first")
    v2 = reg.register("d", frame(6), "second")
    again = reg.register("d", frame(5), "same as first")
    assert (v1.version, v2.version, again.version) == (1, 2, 1)
    assert again.digest == v1.digest and again.description == "first"
    assert [d.version for d in reg.list()] == [2]
    pd.testing.assert_frame_equal(reg.load("d:1"), frame(5))


def test_the_registry_survives_a_restart(tmp_path):
    registry(tmp_path).register("d", frame(5))
    again = registry(tmp_path)
    assert again.get("d").rows == 5 and again.get("d").columns[1] == {"name": "x", "dtype": "float64"}


def test_digest_is_of_content_not_of_row_labels():
    assert content_digest(frame(5)) == content_digest(frame(5).set_axis(range(10, 15)))
    assert content_digest(frame(5)) != content_digest(frame(5).assign(x=lambda d: d.x + 1))


def test_a_tampered_file_is_detected(tmp_path):
    reg = registry(tmp_path)
    v = reg.register("d", frame(5))
    frame(5).assign(x=0.0).to_parquet(tmp_path / "datasets" / v.path, index=False)
    with pytest.raises(IntegrityError, match="does not match its digest"):
        reg.load("d")


def test_unknown_references(tmp_path):
    reg = registry(tmp_path)
    assert reg.list() == [] and not (tmp_path / "datasets.db").exists()
    with pytest.raises(NotFoundError, match="'nope:3' does not exist"):
        reg.get("nope:3")


def _register(args):
    root, n = args
    return registry(root).register("shared", frame(n)).version


def test_concurrent_registration_gives_unique_contiguous_versions(tmp_path):
    sizes = [5, 6, 7, 8, 5, 6, 7, 8]  # 4 distinct contents, each registered twice
    with mp.get_context("spawn").Pool(4) as pool:
        versions = pool.map(_register, [(tmp_path, n) for n in sizes])
    by_size = {}
    for n, v in zip(sizes, versions):
        by_size.setdefault(n, set()).add(v)
    assert all(len(v) == 1 for v in by_size.values())  # same content, same version
    assert sorted(v.pop() for v in by_size.values()) == [1, 2, 3, 4]


def test_a_dataset_is_written_and_digested_in_chunks_as_a_whole_file_reads(tmp_path, monkeypatch):
    """Streamed writing and digesting (``CHUNK_ROWS`` at a time) give the digest of the file read whole, over
    every column kind a dataset holds: times with a zone, text (with a missing value), floats with NaN,
    integer labels; and an empty frame."""
    from mlpipe.store import datasets

    monkeypatch.setattr(datasets, "CHUNK_ROWS", 7)
    n = 50
    df = pd.DataFrame({"t": pd.date_range("2021-01-01", periods=n, freq="h", tz="UTC"),
                       "station": [f"s{i % 3}" for i in range(n)], "x": np.where(np.arange(n) % 5, 1.5, np.nan),
                       "code": pd.Series(["a", None] * (n // 2), dtype=object), "label": np.arange(n) % 2})
    for frame_ in (df, df.iloc[:0]):
        path = tmp_path / f"d{len(frame_)}.parquet"
        datasets.write_parquet(frame_, path)
        whole = pd.read_parquet(path)
        assert len(whole) == len(frame_) and list(whole.columns) == list(frame_.columns)
        assert datasets.file_digest(path) == datasets.content_digest(whole)
    reg = registry(tmp_path / "reg")
    version = reg.commit(reg.stage("d", df))
    assert reg.load(f"d:{version.version}").equals(pd.read_parquet(tmp_path / "d50.parquet"))
