"""``rpbt report``: a population's history at a glance, from a run directory (see RUNDIR_FORMAT.md).

Public API::

    write_report(run_dir, out_dir=None) -> Path          # writes RUN_DIR/report/, returns that directory
    build_report(run_dir, out_dir=None) -> ReportResult  # same, and returns the files and the warnings
    read_events(path) -> (events, warnings)              # parse events.jsonl (tolerates a cut last line)
    derive_lineage(events) -> Lineage                    # per member: chain of (round, donor), oldest first
    load_run(run_dir) -> RunData
    read_checkpoints(run_dir, population) -> Checkpoints  # members with a checkpoint in the committed round folder
    ReportError (ValueError): the run directory or its events.jsonl is missing or unusable (names the path)
"""

from rpbt.report.lineage import Exploit, Lineage, derive_lineage
from rpbt.report.plots import PNG_NAMES
from rpbt.report.reader import (
    Checkpoints,
    ReportError,
    RunData,
    clean_events,
    load_run,
    read_checkpoints,
    read_events,
    read_metrics,
)
from rpbt.report.render import ReportResult, build_report, write_report

__all__ = [
    "write_report",
    "build_report",
    "ReportResult",
    "read_events",
    "clean_events",
    "read_metrics",
    "load_run",
    "RunData",
    "read_checkpoints",
    "Checkpoints",
    "derive_lineage",
    "Lineage",
    "Exploit",
    "ReportError",
    "PNG_NAMES",
]
