"""Progress and messages on stderr (Rich); stdout stays free for ``--json`` documents."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console

console = Console(stderr=True, highlight=False, soft_wrap=True)


def set_quiet(quiet: bool) -> None:
    console.quiet = quiet


def info(message: str) -> None:
    console.print(message)


@contextmanager
def step(name: str) -> Iterator[None]:
    """Show a spinner while a step runs, then its duration."""
    started = time.perf_counter()
    with console.status(f"[bold]{name}[/] …"):
        yield
    console.print(f"[green]✓[/] {name} [dim]({time.perf_counter() - started:.1f} s)[/]")
