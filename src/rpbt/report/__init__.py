"""``rpbt report``: a population's history at a glance, from a run directory (see RUNDIR_FORMAT.md).

Public API::

    load_run(run_dir) -> RunFrames                       # pandas DataFrames: metrics, hyperparameters, exploits, events
    write_report(run_dir, out_dir=None, x="steps", smooth_rounds=1) -> Path   # writes RUN_DIR/report/, returns it
    build_report(run_dir, out_dir=None, x="steps", smooth_rounds=1) -> ReportResult  # same, with files and warnings
    read_events(path) -> (events, warnings)              # parse events.jsonl (tolerates a cut last line)
    derive_lineage(events) -> Lineage                    # per member: chain of (round, donor), oldest first
    read_run(run_dir) -> RunData                         # what the report draws from, as plain Python values
    read_checkpoints(run_dir, population) -> Checkpoints  # members with a checkpoint in the committed round folder
    ReportError (ValueError): the run directory or its events.jsonl is missing or unusable (names the path)

The figures need matplotlib and the metrics are parsed with pandas: the ``rpbt[report]`` extra. The names are
loaded on first use, so ``from rpbt.report import ReportError`` works without it; a name that needs the extra
raises :class:`rpbt.extras.MissingExtraError` naming ``pip install 'rpbt[report]'``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rpbt.report.reader import ReportError

if TYPE_CHECKING:  # pragma: no cover
    from rpbt.report.frames import RunFrames, load_run
    from rpbt.report.lineage import Exploit, Lineage, derive_lineage
    from rpbt.report.plots import PNG_NAMES
    from rpbt.report.reader import (
        Checkpoints,
        RunData,
        clean_events,
        read_checkpoints,
        read_events,
        read_metrics,
        read_run,
    )
    from rpbt.report.render import ReportResult, build_report, write_report

# where each name lives; the modules of the figures (plots, render) need matplotlib
_HOMES = {
    "load_run": "frames", "RunFrames": "frames",
    "write_report": "render", "build_report": "render", "ReportResult": "render",
    "read_events": "reader", "clean_events": "reader", "read_metrics": "reader", "read_run": "reader",
    "RunData": "reader", "read_checkpoints": "reader", "Checkpoints": "reader",
    "derive_lineage": "lineage", "Lineage": "lineage", "Exploit": "lineage",
    "PNG_NAMES": "plots",
}
__all__ = ["load_run", "RunFrames", "write_report", "build_report", "ReportResult", "read_events", "clean_events",
           "read_metrics", "read_run", "RunData", "read_checkpoints", "Checkpoints", "derive_lineage", "Lineage",
           "Exploit", "PNG_NAMES", "ReportError"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'rpbt.report' has no attribute {name!r}")
    if home in ("plots", "render"):
        from rpbt.extras import require

        require("matplotlib", "report", "rpbt report (its figures)")
    return getattr(importlib.import_module(f"rpbt.report.{home}"), name)
