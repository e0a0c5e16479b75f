"""The bad-input corpus (tests/bad_inputs/cases.toml): every case through the real CLI, against a workspace
that holds a good run. Bad input: exit 2, one ``error:`` line naming the problem, no traceback, registries
unchanged. Handled data-quality problems: the run succeeds and its ingest report counts them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
import tomllib
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[1] / "bad_inputs"
CASES = tomllib.loads((CORPUS / "cases.toml").read_text())["case"]


def test_the_corpus_has_at_least_30_error_cases_each_with_its_file():
    errors = [c for c in CASES if c["exit"] == 2]
    assert len(errors) >= 30 and len({c["id"] for c in CASES}) == len(CASES)
    for case in CASES:
        assert ("error" in case) == (case["exit"] == 2) and ("handled" in case) == (case["exit"] == 0), case["id"]
        for arg in case["args"]:
            if arg.startswith(("files/", "configs/")) and "does_not_exist" not in arg and "nope" not in arg:
                assert (CORPUS / arg).exists(), f"{case['id']}: {arg} missing"


@pytest.fixture(scope="module")
def corpus_workspace(fork_server, tmp_path_factory):
    """A workspace with one good run of the corpus config in it."""
    ws = tmp_path_factory.mktemp("corpus-ws")
    r = fork_server.run("run", "--config", "base.toml", "--workspace", str(ws), "--quiet", cwd=str(CORPUS))
    assert r.code == 0, r.stderr
    return ws


def _state(fork_server, ws) -> tuple[str, str]:
    return (fork_server.run("models", "list", "--json", "--workspace", str(ws)).stdout,
            fork_server.run("datasets", "list", "--json", "--workspace", str(ws)).stdout)


def _make(kind: str, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    if kind == "unreadable":
        os.chmod(where, 0o755)
        path = where / "unreadable.csv"
        shutil.copy(CORPUS / "files" / "good.csv", path)
        os.chmod(path, 0)
        return path
    if kind == "socket":
        path = Path(tempfile.mkdtemp(prefix="mlpipe-sock-")) / "data.csv"  # short path: AF_UNIX limit
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
        return path
    raise ValueError(kind)


def _args(case: dict, ws: Path, tmp: Path, made: Path | None) -> list[str]:
    args = [a.replace("{tmp}", str(tmp)).replace("{made}", str(made)) for a in case["args"]]
    if "run" in args:
        if "--config" not in args:
            args += ["--config", str(CORPUS / "base.toml")]
        args += ["--quiet"] + (["--json"] if case["exit"] == 0 else [])
    return args + ["--workspace", str(ws)]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input(case, fork_server, corpus_workspace, tmp_path):
    ws = corpus_workspace
    made = _make(case["make"], tmp_path / "made") if "make" in case else None
    if made is not None and case["make"] == "unreadable":  # as root, only an unprivileged user is refused
        os.chmod(tmp_path, 0o755)
        os.chmod(tmp_path.parent, os.stat(tmp_path.parent).st_mode | stat.S_IXOTH)
    # the unreadable case runs as `nobody`: it must reach the file, and must not change the registries it could
    user = "nobody" if made is not None and case["make"] == "unreadable" else None
    if user and os.geteuid() == 0:
        _grant_traverse(made)
    run_ws = ws  # the unprivileged user's command runs on a copy of the good workspace that it could change
    if user:
        run_ws = shutil.copytree(ws, made.parent / "ws", ignore=shutil.ignore_patterns(".*.lock"))
    before = _state(fork_server, run_ws) if case["exit"] == 2 else None
    if user and os.geteuid() == 0:  # after `_state` (as root) has run on it: the user may change all of it
        _chown_tree(run_ws, user)
    r = fork_server.run(*_args(case, run_ws, tmp_path, made), cwd=str(CORPUS), user=user)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.code == case["exit"], f"exit {r.code}, expected {case['exit']}: {r.stderr[-1500:]}"
    if case["exit"] == 2:
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
        assert case["error"] in lines[0], lines[0]
        assert r.stdout == ""
        assert _state(fork_server, run_ws) == before, "a failed command changed the registries"
    else:
        report = json.loads(r.stdout)["ingest"]
        for key, expected in case["report"].items():
            value = report
            for part in key.split("."):
                value = value[part]
            assert value == expected, (key, value, expected)


def _grant_traverse(path: Path) -> None:
    """Let an unprivileged user reach ``path``'s folder (pytest makes its temporary folders 0700)."""
    for parent in path.parents:
        mode = os.stat(parent).st_mode
        if not mode & stat.S_IXOTH:
            os.chmod(parent, mode | stat.S_IXOTH)
        if parent == Path(tempfile.gettempdir()) or parent == Path("/"):
            break


def _chown_tree(root: Path, user: str) -> None:
    """Give ``root`` and everything in it to ``user``, so that nothing but the code keeps it from writing."""
    import pwd

    entry = pwd.getpwnam(user)
    for path in [root, *root.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
