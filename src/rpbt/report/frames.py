"""A run directory as pandas DataFrames, for analysis in Python (Ray Tune's ``ResultGrid.get_dataframe()`` habit).

:func:`load_run` reads what :func:`rpbt.report.reader.read_run` reads (events with the resume semantics applied,
every member's ``metrics.csv`` deduplicated, a cut last line of either file ignored with a warning) and lays it out
as four long-format tables::

    run = rpbt.report.load_run("runs/default")
    run.metrics          # one row per member and PPO update: member, round, update, env_steps, train/..., rollout/...
    run.hyperparameters  # one row per round and member: round, member, env_steps, score, each hyperparameter
    run.exploits         # one row per exploit: round, recipient, donor, scores, hidden_state, pbt/... measurements
    run.events           # one row per event of events.jsonl (type, round, time, the event's other fields as objects)

Needs pandas, the ``rpbt[report]`` extra.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from rpbt.extras import require
from rpbt.report.reader import RunData, read_run

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["RunFrames", "load_run"]


@dataclass
class RunFrames:
    """A run directory's history as DataFrames (see the module docstring for their rows and columns).

    ``summary`` and ``config`` are ``summary.json`` and ``config.yaml`` as read (None when missing), ``warnings``
    the partial problems met while reading (a cut last line, a member without metrics, ...).
    """

    run_dir: Path
    metrics: pd.DataFrame
    hyperparameters: pd.DataFrame
    exploits: pd.DataFrame
    events: pd.DataFrame
    population_size: int
    summary: Optional[dict]
    config: Optional[dict]
    warnings: list[str] = field(default_factory=list)


def load_run(run_dir: Path | str) -> RunFrames:
    """Read a run directory (finished, interrupted or still being written) into a :class:`RunFrames`.

    Raises :class:`rpbt.report.ReportError` naming the path when the directory or its ``events.jsonl`` is missing
    or unusable, :class:`rpbt.extras.MissingExtraError` (``pip install 'rpbt[report]'``) when pandas is not
    installed. Partial problems are ``RunFrames.warnings``.
    """
    pd = require("pandas", "report", "rpbt.report.load_run (pandas DataFrames)")
    run = read_run(run_dir)
    return RunFrames(run_dir=run.run_dir, metrics=_metrics_frame(pd, run), hyperparameters=_hparams_frame(pd, run),
                     exploits=_exploits_frame(pd, run), events=_events_frame(pd, run),
                     population_size=run.population_size, summary=run.summary, config=run.config,
                     warnings=list(run.warnings))


def _metrics_frame(pd: Any, run: RunData) -> pd.DataFrame:
    """Every member's metrics rows, ``member`` first, in member order (each member's rows in file order)."""
    parts = []
    for member, m in sorted(run.metrics.items()):
        if m is None or len(m) == 0:
            continue
        part = pd.DataFrame(m.columns)
        part.insert(0, "member", member)
        parts.append(part)
    if not parts:
        return pd.DataFrame({"member": pd.Series(dtype="int64")})
    return _whole_numbers(pd.concat(parts, ignore_index=True))


def _whole_numbers(frame: pd.DataFrame) -> pd.DataFrame:
    """``round``, ``update``, ``env_steps`` as int64 where every cell is a whole number (else left as floats)."""
    for name in ("round", "update", "env_steps"):
        if name in frame and len(frame) and frame[name].notna().all() and (frame[name] % 1 == 0).all():
            frame[name] = frame[name].astype("int64")
    return frame


def _hparams_frame(pd: Any, run: RunData) -> pd.DataFrame:
    """One row per round event and member: the hyperparameters the member trained the round with (the searched
    ones first, then the others the event records), its env steps after the round and its score (NaN where
    missing)."""
    names = dict.fromkeys(run.hparam_names)
    for ev in run.rounds:
        for hp in ev.get("hparams") or []:
            names.update(dict.fromkeys(hp if isinstance(hp, dict) else ()))
    rows = []
    for ev in run.rounds:
        scores = ev.get("scores") or []
        hparams = ev.get("hparams") or []
        for member in range(run.population_size):
            score = scores[member] if member < len(scores) else None
            row: dict[str, Any] = {"round": int(ev["round"]), "member": member,
                                   "env_steps": run.round_env_steps(ev, member), "score": _float(score)}
            hp = hparams[member] if member < len(hparams) and isinstance(hparams[member], dict) else {}
            row.update({name: hp.get(name) for name in names})
            rows.append(row)
    return _whole_numbers(pd.DataFrame(rows, columns=["round", "member", "env_steps", "score", *names]))


def _exploits_frame(pd: Any, run: RunData) -> pd.DataFrame:
    """One row per exploit (the valid ones, by round): the event's plain fields, its ``measurements`` as their own
    ``pbt/...`` columns, ``old_hparams`` / ``new_hparams`` as ``old_hparams.<name>`` / ``new_hparams.<name>``."""
    rows = []
    for ev in run.exploits:
        row = {k: v for k, v in ev.items() if k not in ("type", "_line", "measurements", "old_hparams", "new_hparams")}
        row.update(ev.get("measurements") or {})
        for side in ("old_hparams", "new_hparams"):
            row.update({f"{side}.{k}": v for k, v in (ev.get(side) or {}).items()})
        rows.append(row)
    lead = ["round", "env_steps", "recipient", "donor", "recipient_score", "donor_score"]
    frame = pd.DataFrame(rows)
    return frame[[c for c in lead if c in frame] + [c for c in frame if c not in lead]] if rows else \
        pd.DataFrame(columns=lead)


def _events_frame(pd: Any, run: RunData) -> pd.DataFrame:
    """The cleaned events in file order, ``line`` (their line in events.jsonl) beside their fields."""
    rows = [{"type": ev.get("type"), "round": ev.get("round"), "time": ev.get("time"), "line": ev.get("_line"),
             **{k: v for k, v in ev.items() if k not in ("type", "round", "time", "_line")}} for ev in run.events]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["type", "round", "time", "line"])


def _float(value: Any) -> float:
    """A score as a float, NaN for a missing one."""
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")
