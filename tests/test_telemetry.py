"""Local-first: mlpipe turns MLflow's usage telemetry off (it fetches a configuration from MLflow's servers
and sends them records), unless the user has set it themselves."""

import os
import subprocess
import sys

PROBE = "import mlflow.telemetry.utils as t; print(t.is_telemetry_disabled())"


def _telemetry_disabled(code: str, **env: str) -> bool:
    """In a fresh interpreter with none of the variables by which MLflow recognises CI or a test run."""
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **env}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean, check=True)
    return out.stdout.strip().splitlines()[-1] == "True"


def test_importing_mlpipe_turns_mlflow_telemetry_off():
    assert not _telemetry_disabled(PROBE)  # MLflow alone would send it here
    assert _telemetry_disabled(f"import mlpipe; {PROBE}")


def test_the_users_own_setting_wins():
    assert not _telemetry_disabled(f"import mlpipe; {PROBE}", MLFLOW_DISABLE_TELEMETRY="false")
