"""Models train in one worker process (``mlpipe.training.worker``), so oneDAL's GIL-holding fits never stall the run's
tracking thread: called from the Python API, in a plain script, errors and all."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlpipe.errors import ConfigError
from tests.conftest import REPO

BASE = REPO / "tests" / "bad_inputs" / "base.toml"


def _config(tmp_path: Path, csv: Path, svm_space: str = "{ kernel = ['linear', 'rbf'], C = [1] }") -> Path:
    text = BASE.read_text().replace('source = "files/good.csv"', f"source = {json.dumps(str(csv))}")
    text = text.replace("space = { kernel = [\"linear\"], C = [1] }", f"space = {svm_space}")
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_a_script_without_a_main_guard_trains_in_one_worker_process(turku_small, tmp_path):
    """The script runs once (the worker does not import the caller's ``__main__`` again, as multiprocessing's
    spawn would), its search's fits ran in a process other than the script's, and no worker outlives the
    run."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, mlpipe
        print("script body ran", flush=True)
        result = mlpipe.run({str(_config(tmp_path, turku_small))!r}, {str(tmp_path / "ws")!r})
        svm = next(m for m in result.models if m.kind == "svm")
        children = [open(f"/proc/{{p}}/cmdline").read() for p in os.listdir("/proc") if p.isdigit() and
                    open(f"/proc/{{p}}/stat").read().rsplit(")", 1)[1].split()[1] == str(os.getpid())]
        print(json.dumps({{"pid": os.getpid(), "workers": sorted(set(svm.cv_results["worker"])),
                          "children": children, "version": svm.version, "models": [m.name for m in result.models],
                          "ranked": list(result.ranking_pngs[0])}}))
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("script body ran") == 1
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["version"] == 1
    assert out["ranked"] == out["models"]  # the ranking plots were drawn while the run registered, of every model
    assert len(out["workers"]) == 1 and out["workers"] != [f"pid-{out['pid']}"], out
    # loky's resource tracker lives as long as the script, as multiprocessing's does; no worker does
    assert [c for c in out["children"] if "resource_tracker" not in c] == []


def test_a_bad_search_space_found_in_the_worker_is_the_same_config_error(turku_small, tmp_path):
    """The worker checks the space against scikit-learn's constraints; its ConfigError reaches the caller
    unchanged (the CLI's exit 2 and one line), and nothing is registered."""
    import mlpipe

    config = _config(tmp_path, turku_small, svm_space="{ kernel = ['linear'], C = [-1.0] }")
    with pytest.raises(ConfigError, match=r"key 'models.svm.space.C'"):
        mlpipe.run(str(config), tmp_path / "ws")
    from mlpipe.store.models import list_models

    assert list_models(mlpipe.Workspace(tmp_path / "ws")) == []



def test_a_worker_whose_task_failed_is_let_go_not_killed(turku_small, tmp_path):
    """An idle worker exits by itself when the run ends on an error: killed instead, it had registered
    semaphores that loky's resource tracker then reported on stderr after the command had exited (1 run in 5
    or 10 with a bad search space), beside the one line a bad input is owed. A worker mid-task is still
    killed."""
    from mlpipe.config import load_config
    from mlpipe.sources import read_source
    from mlpipe.steps import ingest
    from mlpipe.steps.features import feature_matrix
    from mlpipe.training.worker import Trainer

    config = load_config(_config(tmp_path, turku_small, svm_space="{ kernel = ['linear'], C = [-1.0] }"))
    data = ingest.ingest(read_source(config.data.source), config, config.data.source)
    X, y = feature_matrix(data.train, config), data.train[ingest.LABEL].to_numpy()
    with pytest.raises(ConfigError, match=r"models.svm.space.C"):
        with Trainer(quiet=True) as trainer:
            workers = list(trainer._pool._processes.values())
            trainer.train("svm", X, y, data.train[config.data.timestamp], config)
    assert len(workers) == 1 and workers[0].exitcode == 0


def test_the_worker_freezes_what_its_imports_made():
    """The worker's imports outlive every task, so the garbage collector is told to skip them."""
    import gc

    from mlpipe.training.worker import Trainer

    with Trainer(quiet=True) as trainer:
        frozen = trainer._pool.submit(gc.get_freeze_count).result()
    assert frozen > 50_000  # scikit-learn, oneDAL and mlpipe's steps: about 150,000 objects here
