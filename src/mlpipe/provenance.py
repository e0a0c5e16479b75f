"""Where a result came from: the code's git commit and the versions of the libraries that made it."""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from importlib import metadata
from pathlib import Path

PACKAGES = ("mlpipe", "scikit-learn", "skl2onnx", "onnxruntime", "onnx", "mlflow", "pandas", "numpy")


@cache
def git_commit() -> str:
    """The commit of the mlpipe source tree ("unknown" when installed outside a git checkout)."""
    try:
        out = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


@cache
def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@cache
def cpu_model() -> str:
    """The processor's name: oneDAL picks its code paths by CPU, and fits gain differently from one to another."""
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or "unknown CPU"
