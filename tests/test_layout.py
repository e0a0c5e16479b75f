"""The tree shows the design: each package imports only what its ``__init__`` docstring says it may, and
serving loads no training code (checked on the imports as written, and on what a server process loads)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mlpipe

SRC = Path(mlpipe.__file__).parent
TOP = {"config", "errors", "console", "faults", "provenance", "graph", "sources", "featurize"}
"""Small modules of mlpipe's own that every package may use."""
MAY_IMPORT = {
    "store": TOP,
    "training": TOP | {"steps", "training"},
    "steps": TOP | {"steps", "training", "store"},
    "serving": TOP | {"serving", "store", "monitoring.log"},
    "monitoring": TOP | {"monitoring", "store", "steps.evaluate", "report", "serving.model", "serving.forecast",
                         "pipeline"},
    "report": TOP | {"report", "store", "steps.evaluate", "steps.ingest"},
    "graph": set(),
    "featurize": {"config", "errors"},
    "flow": TOP | {"steps", "training", "store", "report", "mlflow_model"},
    "mlflow_model": TOP | {"mlflow_model", "serving"},
    "pipeline": TOP | {"flow", "steps", "training", "store", "report"},
}


def _mlpipe_imports(path: Path) -> set[str]:
    """The ``mlpipe.*`` modules a file imports (at any depth: lazy imports count), without the prefix."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mlpipe":
            base = node.module.removeprefix("mlpipe").lstrip(".")
            found |= {f"{base}.{a.name}".lstrip(".") if not base or base in ("steps", "training", "store")
                      else base for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("mlpipe.") for a in node.names if a.name.startswith("mlpipe.")}
    return found


def _allowed(module: str, rules: set[str]) -> bool:
    return module == "__version__" or any(module == r or module.startswith(f"{r}.") for r in rules)


def test_each_package_imports_only_what_it_may():
    wrong = []
    for package, rules in MAY_IMPORT.items():
        files = [SRC / f"{package}.py"] if (SRC / f"{package}.py").exists() else sorted((SRC / package).rglob("*.py"))
        assert files, package
        for path in files:
            wrong += [f"{path.relative_to(SRC)} imports mlpipe.{m}" for m in sorted(_mlpipe_imports(path))
                      if not _allowed(m, rules | {package})]
    assert not wrong, wrong


def test_every_package_says_what_lives_there_and_what_it_may_import():
    for init in SRC.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 60, f"{init.relative_to(SRC)}: no docstring saying what lives there"
        if init.parent.name in MAY_IMPORT:
            assert "import" in doc, f"{init.relative_to(SRC)}: says nothing of what it may import"


def test_a_server_loads_no_training_code_nor_scikit_learn():
    code = ("import sys; import mlpipe.serving.server, mlpipe.serving.app, mlpipe.serving.batch, "
            "mlpipe.serving.follow; print(sorted(m for m in sys.modules if m.startswith(('mlpipe.steps', "
            "'mlpipe.training', 'mlpipe.pipeline', 'sklearn', 'skl2onnx', 'lightgbm'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", loaded


def test_opening_a_served_model_reads_its_registered_tag_not_the_onnx_package(run_workspace):
    """Whether a graph imputes missing inputs is registered with the version, so a server or ``mlpipe predict``
    need not import the onnx package (a second of start-up) to know whether nulls are allowed."""
    ws, result = run_workspace
    learned = next(m for m in result["models"] if m["kind"] != "baseline")
    baseline = next(m for m in result["models"] if m["kind"] == "baseline")
    code = ("import sys; from mlpipe.store.workspace import Workspace; from mlpipe.serving.model import open_model; "
            f"ws = Workspace({str(ws)!r}); a = open_model(ws, {learned['name']!r}); b = open_model(ws, {baseline['name']!r}); "
            "print(a.nullable, b.nullable, 'onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False", "False"], out
