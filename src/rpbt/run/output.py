"""A run's progress lines on standard output.

Printed as ``print`` prints, except that a reader that goes away (``rpbt train | head -1``) does not stop the run:
on the first ``BrokenPipeError`` standard output is sent to the null device (the remedy Python's documentation gives
for SIGPIPE) and training goes on; its results are in the run directory.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _stdout_to_null() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def say(text: str) -> None:
    """Print ``text`` and a newline to standard output and flush; after the reader has gone, print nothing."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        _stdout_to_null()


def console() -> Any:
    """A ``rich.console.Console`` on standard output that, after the reader has gone, prints nothing (rich's own
    default ends the process with status 1)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            _stdout_to_null()

    return _Console()


__all__ = ["say", "console"]
