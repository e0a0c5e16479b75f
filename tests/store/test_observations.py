"""The observation store on both of its backends: SQLite in the workspace folder and the PostgreSQL server on
127.0.0.1:5432 (a database made for the test and dropped after)."""

from __future__ import annotations

import pytest

from mlpipe.store.observations import ObservationStore, canonical
from tests.robust.conftest import drop_pg_database, need_service, new_pg_database, pg_available


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = ObservationStore(f"sqlite:///{tmp_path / 'observations.db'}")
        yield s
        s.close()
        return
    need_service(pg_available(), "PostgreSQL on 127.0.0.1:5432")
    uri = new_pg_database("obs")
    s = ObservationStore(uri)
    try:
        yield s
    finally:
        s.close()
        drop_pg_database(uri)


H = 3_600_000_000_000  # an hour in nanoseconds


def test_writes_are_idempotent_replacements_counted_and_the_log_append_only(store):
    rows = [("A", 10 * H, canonical({"x": 1.0})), ("B", 10 * H, canonical({"x": 2.0})),
            ("A", 11 * H, canonical({"x": None}))]
    w = store.add("s", rows)
    assert (w.stored, w.repeated, w.replaced) == (3, 0, 0)
    w = store.add("s", rows[:2] + [("A", 11 * H, canonical({"x": 5.0}))])
    assert (w.stored, w.repeated, w.replaced) == (0, 2, 1)
    assert store.counts("s") == (3, 4)  # three observations now; four rows ever logged
    assert sorted(store.window("s", 10 * H, 11 * H, "A")) == [("A", 10 * H, '{"x":1.0}'), ("A", 11 * H, '{"x":5.0}')]
    assert store.window("s", 11 * H, 11 * H) == [("A", 11 * H, '{"x":5.0}')]
    assert store.latest("s") == {"A": 11 * H, "B": 10 * H}
    assert store.latest("s", "B") == {"B": 10 * H}
    assert store.latest("other") == {} and store.window("other", 0, 100 * H) == []  # streams are apart


def test_a_batch_that_names_a_key_twice_keeps_its_last_value(store):
    w = store.add("s", [("A", H, canonical({"x": 1.0})), ("A", H, canonical({"x": 2.0}))])
    assert (w.stored, w.repeated, w.replaced) == (1, 1, 0)
    assert store.window("s", H, H) == [("A", H, '{"x":2.0}')]


def test_a_second_handle_sees_everything_stored(store):
    store.add("s", [("A", H, canonical({"x": 1.0}))])
    again = ObservationStore(store.uri)
    try:
        assert again.latest("s") == {"A": H}
    finally:
        again.close()
