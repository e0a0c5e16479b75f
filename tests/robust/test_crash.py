"""A run killed by SIGKILL anywhere -- in every step, registration included -- leaves complete registries:
no model version without its ONNX artifact or its tags, no dataset version without its file or with a
wrong digest, no alias on an incomplete version, never two champions; and the next run succeeds."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path


from mlpipe import faults
from tests.robust.conftest import small_config, write_slice

KILLS = [
    "ingest.read", "ingest.done", "run.started", "dataset.file.written#2", "datasets.staged",
    "train.fitted#2", "package.converted#3", "model.logged", "register.locked", "register.dataset#2",
    "register.datasets", "register.inputs", "register.model.created#2", "register.model.version#2",
    "register.models", "champion.intent", "champion.old_removed", "champion.set", "register.done", "run.ending",
]
WEAK_SVM = "kernel = ['linear'], C = [0.000001]"   # predicts one class (at its own threshold): never champion


def without_history(path: Path) -> Path:
    """The config without its time-series features and ranges: a model that beats persistence on the raw
    columns alone, and that the same kind of model with the features beats in turn."""
    text = re.sub(r"\[data\.ranges\].*?\n\n", "", path.read_text(), count=1, flags=re.S)
    path.write_text(re.sub(r"\[features\].*?(?=\n\[models)", "", text, count=1, flags=re.S))
    return path


def weak_svm(path: Path) -> Path:
    """The SVM keeps its own decision rule: a tuned threshold would rescue even this SVM's ranking."""
    path.write_text(path.read_text().replace("[models.svm]\n", '[models.svm]\nthreshold = "default"\n', 1))
    return path


def _checkpoints_in_source() -> set[str]:
    """The points named by ``checkpoint("...")`` calls in src/mlpipe: the ones a run can reach."""
    call = re.compile(r"""\bcheckpoint\(\s*["']([^"']+)["']\s*\)""")
    return {name for path in Path(faults.__file__).parent.rglob("*.py") for name in call.findall(path.read_text())}


def test_kill_points_cover_every_checkpoint():
    named, called = {k.split("#")[0] for k in KILLS}, _checkpoints_in_source()
    assert named <= called, f"kill points with no checkpoint() call in src/mlpipe: {sorted(named - called)}"
    assert sorted(named) == sorted(faults.POINTS) == sorted(called)


MARK = "MLPIPE_TEST_CRASH_MARK"


def _survivors(mark: str, timeout: float = 10.0) -> list[str]:
    """Processes (the run's training worker, say) whose environment carries ``mark``, once ``timeout`` has
    passed without them all exiting."""
    needle = f"{MARK}={mark}".encode()
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and needle in (proc / "environ").read_bytes().split(b"\0"):
                    command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    alive.append(f"{proc.name}: {command[:120]}")
            except OSError:  # gone meanwhile, or not ours to read
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def _check(fork_server, ws) -> dict:
    """``mlpipe check``: every invariant holds; returns what is registered."""
    r = fork_server.run("check", "--workspace", str(ws), "--json")
    report = json.loads(r.stdout) if r.stdout else {"ok": False, "problems": [r.stderr]}
    assert r.code == 0 and report["ok"], "\n".join(report["problems"])
    return {"models": report["models"], "datasets": report["datasets"]}


def _lists(fork_server, ws) -> tuple[str, str]:
    return tuple(fork_server.run(what, "list", "--json", "--workspace", str(ws)).stdout
                 for what in ("models", "datasets"))


def test_sigkill_at_20_points_loses_nothing_and_the_next_run_succeeds(fork_server, turku_frame, tmp_path):
    ws = tmp_path / "ws"
    survived, registered = [], set()
    for i, point in enumerate(KILLS):
        data = write_slice(turku_frame, 1200 + 25 * i, tmp_path / f"slice{i}.csv")  # new data: new dataset versions
        champion_move = point.startswith("champion.")
        prefix = f"c{i}" if champion_move else "k"
        config = small_config(tmp_path / f"run{i}.toml", data, prefix, svm=WEAK_SVM if champion_move else
                              "kernel = ['linear'], C = [1]")
        if champion_move:  # an SVM without the time-series features holds champion; this run's forest, with
            weak_svm(config)  # them, takes it from another model name
            setup = without_history(small_config(tmp_path / f"setup{i}.toml", data, prefix,
                                                 svm="kernel = ['linear'], C = [1]", forest=None))
            r = fork_server.run("run", "--config", str(setup), "--workspace", str(ws), "--quiet")
            assert r.code == 0, r.stderr
        early = faults.POINTS.index(point.split("#")[0]) < faults.POINTS.index("register.locked")
        before = _lists(fork_server, ws) if early else None

        mark = f"{tmp_path.name}-{i}"
        killed = fork_server.run("run", "--config", str(config), "--workspace", str(ws), "--quiet",
                                 env={faults.ENV: point, MARK: mark})
        assert killed.signal == signal.SIGKILL, f"{point}: not reached (exit {killed.code}): {killed.stderr[-2000:]}"
        survivors = _survivors(mark)
        assert not survivors, f"{point}: processes of the killed run still alive 10 s later: {survivors}"
        _check(fork_server, ws)
        if early:
            assert _lists(fork_server, ws) == before, f"{point}: killed before registration, yet registered"

        after = fork_server.run("run", "--config", str(config), "--workspace", str(ws), "--quiet", "--json")
        assert after.code == 0, f"run after a kill at {point} failed: {after.stderr[-2000:]}"
        result = json.loads(after.stdout)
        registered |= {(m["name"], m["version"]) for m in result["models"]}
        if champion_move:  # the interrupted move was finished: the forest holds champion, alone
            listed = _check(fork_server, ws)["models"]
            holders = [m["name"] for m in listed if m["name"].startswith(f"{prefix}-") and "champion" in m["aliases"]]
            assert holders == [f"{prefix}-random_forest"], (point, holders)
            assert result["champion"]["name"] == f"{prefix}-random_forest"
        survived.append(point)
    assert survived == KILLS
    final = _check(fork_server, ws)
    present = {(m["name"], v) for m in final["models"] for v in m["versions"]}
    assert registered <= present  # nothing lost: every successful run's versions are still there
    print(f"kills survived: {len(survived)}")
