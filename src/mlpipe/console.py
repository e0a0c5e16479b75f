"""Progress and messages on stderr (Rich); stdout stays free for ``--json`` documents."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console

console = Console(stderr=True, highlight=False, soft_wrap=True)
_status = None  # the spinner of the running step, paused while a progress bar shows


def set_quiet(quiet: bool) -> None:
    console.quiet = quiet


def info(message: str) -> None:
    console.print(message)


def warn(message: str) -> None:
    """One ``warning:`` line on stderr, shown also with ``--quiet``: something the user must know of."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)


@contextmanager
def step(name: str, spinner: bool = True) -> Iterator[None]:
    """Show a spinner while a step runs (unless another process draws on the terminal meanwhile), then
    its duration."""
    global _status
    started = time.perf_counter()
    if not spinner:
        yield
    else:
        with console.status(f"[bold]{name}[/] …") as status:
            _status = status
            try:
                yield
            finally:
                _status = None
    console.print(f"[green]✓[/] {name} [dim]({time.perf_counter() - started:.1f} s)[/]")


@contextmanager
def progress_bar(columns: list) -> Iterator[object | None]:
    """A Rich progress display with ``columns`` (None when quiet), in place of the step's spinner meanwhile."""
    if console.quiet:
        yield None
        return
    from rich.progress import Progress

    status = _status
    if status is not None:
        status.stop()
    try:
        with Progress(*columns, console=console) as bar:
            yield bar
    finally:
        if status is not None:
            status.start()
