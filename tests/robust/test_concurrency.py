"""Eight ``mlpipe run`` processes at once on one registry -- a workspace's SQLite, then PostgreSQL: all
succeed, model versions per name are 1..8 (unique, contiguous, none lost), identical data is registered
once, and ``champion`` ends on the best model."""

from __future__ import annotations

import json


from tests.robust.conftest import drop_pg_database, need_service, new_pg_database, pg_available, small_config, \
    write_slice

RUNS = 8


def _run_eight(fork_server, tmp_path, turku_frame, backend: list[str]) -> tuple[list[dict], dict]:
    data = write_slice(turku_frame, 1500, tmp_path / "slice.csv")
    requests = []
    for i in range(RUNS):  # each run searches a different forest, so the runs' best models differ
        config = small_config(tmp_path / f"run{i}.toml", data, "team", forest=f"max_depth = [{2 + i}]")
        requests.append({"args": [*backend, "run", "--config", str(config), "--workspace", str(tmp_path / "ws"),
                                  "--quiet", "--json"]})
    results = fork_server.run_many(requests)
    for r in results:
        assert r.code == 0, r.stderr[-3000:]
    outputs = [json.loads(r.stdout) for r in results]
    check = fork_server.run(*backend, "check", "--json", "--workspace", str(tmp_path / "ws"))
    report = json.loads(check.stdout)
    assert check.code == 0 and report["ok"], report["problems"]
    return outputs, report


def _assert_nothing_lost(outputs: list[dict], report: dict) -> None:
    models = {m["name"]: m for m in report["models"]}
    assert set(models) == {"team-baseline", "team-svm", "team-random_forest"}
    for name, m in models.items():
        assert m["versions"] == list(range(1, RUNS + 1)), (name, m["versions"])
        claimed = sorted(mo["version"] for out in outputs for mo in out["models"] if mo["name"] == name)
        assert claimed == list(range(1, RUNS + 1)), (name, claimed)  # each run got its own version
    datasets = {d["name"]: d for d in report["datasets"]}
    assert {d: v["version"] for d, v in datasets.items()} == {"team-processed": 1, "team-train": 1, "team-test": 1}
    assert all(out["datasets"] == outputs[0]["datasets"] for out in outputs)
    # champion: one holder, and it is the best non-baseline model of all eight runs (same test set for all)
    holders = [(name, m["aliases"]["champion"]) for name, m in models.items() if "champion" in m["aliases"]]
    assert len(holders) == 1
    f1 = {(mo["name"], mo["version"]): mo["metrics"]["f1"] for out in outputs for mo in out["models"]
          if mo["kind"] != "baseline"}
    assert f1[holders[0]] == max(f1.values())
    # the first registered version holding the best score keeps it: a tie does not move the champion
    assert holders[0] == min((k for k, v in f1.items() if v == max(f1.values())), key=lambda k: _order(outputs, k))


def _order(outputs: list[dict], key: tuple[str, int]) -> int:
    """When the run that registered ``key`` took the registration lock, by its version numbers."""
    for out in outputs:
        if any((mo["name"], mo["version"]) == key for mo in out["models"]):
            return next(mo["version"] for mo in out["models"] if mo["name"] == "team-baseline")
    raise KeyError(key)


def test_eight_concurrent_runs_on_sqlite(fork_server, tmp_path, turku_frame):
    outputs, report = _run_eight(fork_server, tmp_path, turku_frame, [])
    _assert_nothing_lost(outputs, report)
    print(f"concurrent runs (SQLite): {RUNS}, all exit 0")


def test_eight_concurrent_runs_on_postgresql(fork_server, tmp_path, turku_frame):
    need_service(pg_available(), "PostgreSQL on 127.0.0.1:5432")
    uri = new_pg_database("concurrency")
    try:
        backend = ["--tracking-uri", uri, "--artifact-location", str(tmp_path / "shared-artifacts")]
        outputs, report = _run_eight(fork_server, tmp_path, turku_frame, backend)
        _assert_nothing_lost(outputs, report)
        # the dataset catalog lives in PostgreSQL too: another workspace folder (another machine) sees it
        other = fork_server.run(*backend, "datasets", "list", "--json", "--workspace", str(tmp_path / "elsewhere"))
        assert json.loads(other.stdout) == report["datasets"]
        assert not (tmp_path / "ws" / "datasets.db").exists() and not (tmp_path / "ws" / "mlflow.db").exists()
    finally:
        drop_pg_database(uri)
    print(f"concurrent runs (PostgreSQL): {RUNS}, all exit 0")
