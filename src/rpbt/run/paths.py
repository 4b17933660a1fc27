"""What names and finds a run directory, without torch or the config schema: :class:`RunDirError`, the round
folder names, :func:`require_run_dir` (so that commands that only read a run, such as ``rpbt report``, load
neither). :mod:`rpbt.run.rundir` re-exports them."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["RunDirError", "ROUND_FOLDER", "round_folder", "require_run_dir"]


class RunDirError(ValueError):
    """A run directory is missing, incomplete or inconsistent; the message names the file."""


ROUND_FOLDER = re.compile(r"round_(\d{6,})")


def round_folder(r: int) -> str:
    """The checkpoint folder name of round ``r`` (``round_000012``)."""
    return f"round_{int(r):06d}"


def require_run_dir(path: Path) -> Path:
    """``path`` if it is an rpbt run directory (a folder with ``config.yaml``), else :class:`RunDirError`
    saying "no rpbt run directory at PATH" and why."""
    path = Path(path)
    if not path.exists():
        why = "nothing is there"
    elif not path.is_dir():
        why = "it is a file, not a folder"
    elif not (path / "config.yaml").is_file():
        why = "the folder has no config.yaml"
    else:
        return path
    raise RunDirError(f"no rpbt run directory at {path} ({why}); pass the run.dir of a run that `rpbt train` "
                      "started")
