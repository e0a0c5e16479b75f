"""Every model load (download, load_model -- which serve and predict use) checks the artifact's SHA-256
against the registry, and every dataset load its digest: a tampered, truncated or missing file is a clear
error (exit 2), never a wrong answer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.robust.conftest import small_config, write_slice


@pytest.fixture(scope="module")
def one_run(fork_server, turku_frame, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("integrity")
    config = small_config(tmp / "run.toml", write_slice(turku_frame, 1500, tmp / "slice.csv"), "tamper")
    r = fork_server.run("run", "--config", str(config), "--workspace", str(tmp / "ws"), "--quiet", "--json")
    assert r.code == 0, r.stderr
    return tmp / "ws", json.loads(r.stdout)


def _artifact(ws: Path, name: str, version: int) -> Path:
    import mlpipe

    source = mlpipe.Workspace(ws).client.get_model_version(name, str(version)).source
    return Path(unquote(urlparse(source).path)) / "model.onnx"


def _one_error(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@pytest.mark.parametrize("damage", ["truncated", "one-byte-changed", "missing"])
def test_a_damaged_model_artifact_is_refused_by_download_load_and_check(fork_server, one_run, tmp_path, damage):
    ws, result = one_run
    champion = result["champion"]
    path = _artifact(ws, champion["name"], champion["version"])
    original = path.read_bytes()
    try:
        if damage == "truncated":
            path.write_bytes(original[: len(original) // 2])
        elif damage == "one-byte-changed":
            path.write_bytes(original[:-7] + bytes([original[-7] ^ 1]) + original[-6:])
        else:
            path.unlink()
        ref = f"{champion['name']}@champion"
        message = _one_error(fork_server.run("models", "download", ref, "--dest", str(tmp_path / "m"),
                                             "--workspace", str(ws)))
        expected = "ONNX artifact is missing" if damage == "missing" else "does not match the registered SHA-256"
        assert f"{champion['name']}:{champion['version']}" in message and expected in message
        assert not (tmp_path / "m" / "model.onnx").exists()  # nothing half-written for the user to pick up

        import mlpipe
        from mlpipe.errors import IntegrityError

        with pytest.raises(IntegrityError, match=expected):
            mlpipe.load_model(mlpipe.Workspace(ws), ref)
        check = fork_server.run("check", "--json", "--workspace", str(ws))
        assert check.code == 2 and any(expected in p for p in json.loads(check.stdout)["problems"])
    finally:
        path.write_bytes(original)
    assert fork_server.run("models", "download", ref, "--dest", str(tmp_path / "ok"), "--workspace", str(ws)).code == 0


@pytest.mark.parametrize("damage", ["truncated", "rewritten", "missing"])
def test_a_damaged_dataset_file_is_refused(fork_server, one_run, tmp_path, damage):
    import pandas as pd

    ws, result = one_run
    test = result["datasets"]["test"]
    path = ws / "datasets" / test["name"] / f"{test['digest']}.parquet"
    backup = tmp_path / "backup.parquet"
    shutil.copy(path, backup)
    try:
        if damage == "truncated":
            path.write_bytes(backup.read_bytes()[:200])
        elif damage == "rewritten":  # a valid Parquet file with one value changed: only the digest tells
            df = pd.read_parquet(backup)
            df.loc[0, "Humidity"] = df.loc[0, "Humidity"] + 0.01
            df.to_parquet(path, index=False)
        else:
            path.unlink()
        message = _one_error(fork_server.run("datasets", "download", test["name"], "--dest", str(tmp_path / "d"),
                                             "--workspace", str(ws)))
        expected = {"truncated": "is unreadable", "rewritten": "does not match its digest",
                    "missing": "is missing"}[damage]
        assert f"{test['name']}:{test['version']}" in message and expected in message
        assert fork_server.run("check", "--workspace", str(ws)).code == 2
    finally:
        shutil.copy(backup, path)
    assert fork_server.run("check", "--workspace", str(ws)).code == 0


def test_a_run_that_cannot_trust_the_champion_registers_nothing(fork_server, one_run, turku_frame, tmp_path):
    """On new test data the champion is measured again, from its verified ONNX file: a damaged one fails the
    run before anything is registered."""
    ws, result = one_run
    champion = result["champion"]
    path = _artifact(ws, champion["name"], champion["version"])
    original = path.read_bytes()
    config = small_config(tmp_path / "run.toml", write_slice(turku_frame, 1400, tmp_path / "other.csv"), "tamper")
    before = _lists(fork_server, ws)
    path.write_bytes(original[:100])
    try:
        r = fork_server.run("run", "--config", str(config), "--workspace", str(ws), "--quiet")
        assert "does not match the registered SHA-256" in _one_error(r)
        assert _lists(fork_server, ws) == before
    finally:
        path.write_bytes(original)


def _lists(fork_server, ws) -> list[str]:
    return [fork_server.run(what, "list", "--json", "--workspace", str(ws)).stdout for what in ("models", "datasets")]
