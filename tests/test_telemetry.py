"""Local-first: mlpipe turns MLflow's usage telemetry off (it fetches a configuration from MLflow's servers
and sends them records), unless the user has set it themselves. Neither test lets MLflow's telemetry start."""

import os
import subprocess
import sys


def _run(code: str, **env: str) -> str:
    """Standard output of ``code`` in a fresh interpreter with none of the variables by which MLflow recognises
    CI or a test run (with which it turns its telemetry off by itself)."""
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_importing_mlpipe_turns_mlflow_telemetry_off():
    probe = ("import os, mlpipe, mlflow.telemetry as t, mlflow.telemetry.utils as u; "
             "print(os.environ.get('MLFLOW_DISABLE_TELEMETRY'), u.is_telemetry_disabled(), t.get_telemetry_client())")
    assert _run(probe) == "true True None"


def test_the_users_own_setting_wins():
    assert _run("import os, mlpipe; print(os.environ['MLFLOW_DISABLE_TELEMETRY'])",
                MLFLOW_DISABLE_TELEMETRY="false") == "false"
