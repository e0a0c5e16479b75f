"""Run the real ``mlpipe`` command many times, fast: a server process imports mlpipe and its libraries once,
then forks one child per command. Each child is a real process (its own exit code, stderr, and death by
signal), minus the seconds of imports. The server opens no database or file, so children share nothing.

Protocol: one JSON line per request on the server's stdin ``{"args": [...], "env": {...}}``, one JSON line
per answer on its stdout ``{"code": int | null, "signal": int | null, "stdout": str, "stderr": str}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    code: int | None
    signal: int | None
    stdout: str
    stderr: str


class ForkServer:
    def __init__(self, env: dict | None = None):
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, **(env or {})}, start_new_session=True)
        ready = self.proc.stdout.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"fork server did not start: {ready!r}")

    def run(self, *args: str, env: dict | None = None, cwd: str | None = None, user: str | None = None) -> Result:
        """``user``: run as this (unprivileged) user when the server runs as root."""
        self.proc.stdin.write(json.dumps({"args": list(args), "env": env or {}, "cwd": cwd, "user": user}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("fork server died")
        return Result(**json.loads(line))

    def run_many(self, requests: list[dict]) -> list[Result]:
        """Start one child per request (``{"args": [...], "env": {...}}``) at once; wait for all of them."""
        self.proc.stdin.write(json.dumps({"batch": [{"env": {}, **r} for r in requests]}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("fork server died")
        return [Result(**r) for r in json.loads(line)]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _serve() -> None:
    import mlflow.artifacts  # noqa: F401 -- the heavy imports, once
    import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import mlflow.tracking  # noqa: F401
    import onnxruntime  # noqa: F401
    import pandas  # noqa: F401
    import skl2onnx  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import sklearn.svm  # noqa: F401
    import sqlalchemy.orm

    import mlpipe.cli
    import mlpipe.pipeline  # noqa: F401
    import mlpipe.store.integrity  # noqa: F401

    sqlalchemy.orm.configure_mappers()
    _warm_cli(mlpipe.cli.app)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        batch = request["batch"] if "batch" in request else [request]
        files, pids = [], []
        for req in batch:
            so, se = tempfile.TemporaryFile(), tempfile.TemporaryFile()
            pid = os.fork()
            if pid == 0:
                _child(req, so.fileno(), se.fileno(), mlpipe.cli.main)
            files.append((so, se))
            pids.append(pid)
        answers = []
        for pid, (so, se) in zip(pids, files):
            _, status = os.waitpid(pid, 0)
            so.seek(0), se.seek(0)
            answers.append({"code": os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None,
                            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                            "stdout": so.read().decode("utf-8", "replace"),
                            "stderr": se.read().decode("utf-8", "replace")})
            so.close(), se.close()
        out.write(json.dumps(answers if "batch" in request else answers[0]) + "\n")
        out.flush()


def _warm_cli(app) -> None:
    """Import what the CLI loads lazily (a child that drops root may not be able to read site-packages)."""
    import contextlib
    import io

    import rich.live  # noqa: F401
    import rich.spinner  # noqa: F401
    import rich.status  # noqa: F401
    import rich.table  # noqa: F401
    from rich.text import Text
    from typer.testing import CliRunner

    Text.from_markup("[bold]ingest[/] …")  # a step's spinner renders markup: that imports rich._emoji_codes

    import mlpipe.sources  # noqa: F401
    import mlpipe.steps.ingest  # noqa: F401

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        CliRunner().invoke(app, ["run", "--help"])


def _child(request: dict, out_fd: int, err_fd: int, main) -> None:
    code = 1
    try:
        os.setsid()
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        os.environ.update(request["env"])
        if request.get("user") and os.geteuid() == 0:  # drop root, so file permissions apply
            import pwd

            entry = pwd.getpwnam(request["user"])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
        if request.get("cwd"):
            os.chdir(request["cwd"])
        sys.argv = ["mlpipe", *request["args"]]
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:  # what a real process would do: print the traceback, exit 1
            import traceback

            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    _serve()
