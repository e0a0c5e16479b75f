"""The interface page (docs/interface.md) is kept in step with the code: every command, option and config key
the code accepts is documented there, and the README sends its reader nowhere outside the repository."""

from __future__ import annotations

import re

import click
import typer.main

from mlpipe.cli import app
from mlpipe.config import Config
from tests.conftest import REPO

DOC = (REPO / "docs" / "interface.md").read_text()


def _commands(group: click.Group, prefix: str = ""):
    for name, command in group.commands.items():
        if command.hidden:
            continue
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_command_and_option_is_documented():
    cli = typer.main.get_command(app)
    undocumented = []
    for name, command in _commands(cli):
        if f"mlpipe {name}" not in DOC:
            undocumented.append(f"mlpipe {name}")
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt not in ("--help",) and opt not in DOC:
                    undocumented.append(f"mlpipe {name} {opt}")
    assert not undocumented, undocumented


def _keys(model, prefix: str):
    """(dotted path, is a table) of every key a config may hold."""
    from mlpipe.config import ModelConfig

    for name, field in model.model_fields.items():
        sub = field.annotation
        if name == "models":
            yield f"{prefix}models.<kind>", True
            yield from _keys(ModelConfig, f"{prefix}models.<kind>.")
        elif isinstance(sub, type) and hasattr(sub, "model_fields"):
            yield f"{prefix}{name}", True
            yield from _keys(sub, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", name == "ranges"


def test_every_config_key_is_documented():
    rows = [line for line in DOC.splitlines() if line.startswith("| ") and line.count("|") >= 5]
    missing = []
    for path, is_table in _keys(Config, ""):
        if is_table:
            documented = f"`[{path}]`" in DOC
        else:
            key = path.rsplit(".", 1)[-1]
            documented = any(f"`{key}`" in row.split("|")[2] for row in rows)
        if not documented:
            missing.append(path)
    assert not missing, missing


def test_the_readme_and_docs_point_nowhere_outside_the_repository():
    for path in (REPO / "README.md", REPO / "docs" / "interface.md"):
        text = path.read_text()
        outside = ("..", "shared")  # the developers' folder beside the checkout, which users do not have
        assert "/".join(outside) not in text and "shared/data" not in text, path
        for link in re.findall(r"\]\(([^)#]+)\)", text):
            if not link.startswith(("http://", "https://")):
                assert (path.parent / link).exists(), f"{path.name}: link to {link} goes nowhere"


def test_help_prints_every_bracket_of_the_help_texts():
    """Rich markup ate "[default: …]" and "[compute]" from --help (they look like style tags)."""
    from typer.testing import CliRunner

    out = " ".join(CliRunner().invoke(app, ["run", "--help"]).output.split())  # as one line, unwrapped
    assert "[default: $MLPIPE_WORKSPACE, else ./mlpipe-workspace]" in out, out
    assert "(overrides [compute])" in out, out
