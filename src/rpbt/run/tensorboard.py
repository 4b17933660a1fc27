"""A run's TensorBoard event files: one run per member (``RUN_DIR/members/<i>/tb``) and one for the population
(``RUN_DIR/population/tb``), written with ``torch.utils.tensorboard`` (its writers made on first use, so a run
without TensorBoard never imports it). Tags are Stable-Baselines3's where they exist (the metrics.csv columns,
``time/total_timesteps``); the step is always env steps per member."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Union

__all__ = ["TensorBoardLog"]

#: metrics.csv columns that are not metrics (never written as scalars)
NOT_SCALARS = ("round", "update", "env_steps", "time")


class TensorBoardLog:
    """The TensorBoard writers of one run directory; every method does nothing when ``enabled`` is False.

    Args:
        path: the run directory.
        enabled: ``run.tensorboard``.
    """

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._writers: dict[Union[int, str], Any] = {}  # member -> its writer; "population" -> the population's
        self._purge_steps: dict[Union[int, str], int] = {}  # run -> the purge_step its writer starts with

    def writer(self, run: Union[int, str]) -> Any:
        """The ``SummaryWriter`` of member ``run`` (an int) or of ``"population"``, made on first use."""
        if run not in self._writers:
            from torch.utils.tensorboard import SummaryWriter

            folder = self.path / "population" / "tb" if run == "population" else self.path / "members" / str(run) / "tb"
            self._writers[run] = SummaryWriter(log_dir=str(folder), purge_step=self._purge_steps.get(run))
        return self._writers[run]

    def resume_after(self, kept_steps: dict[Union[int, str], int]) -> None:
        """A resume dropped the rounds after the one it restored: each run's writer (member ids and
        ``"population"``), made from now on, starts with ``purge_step`` = its last kept step + 1, so TensorBoard
        hides what the dropped rounds wrote to earlier event files (they are played again)."""
        self._purge_steps = {run: int(step) + 1 for run, step in kept_steps.items()}

    def rows(self, member: int, rows: list[dict[str, Any]]) -> None:
        """A member's metric rows: every finite number at step = the row's ``env_steps``, and Stable-Baselines3's
        ``time/total_timesteps`` (the env steps themselves)."""
        if not self.enabled:
            return
        writer = self.writer(member)
        for row in rows:
            step = int(row["env_steps"])
            writer.add_scalar("time/total_timesteps", float(step), step)
            for key, value in row.items():
                if key not in NOT_SCALARS and _finite(value):
                    writer.add_scalar(key, float(value), step)
        writer.flush()

    def scalars(self, run: Union[int, str], step: int, values: dict[str, Any]) -> None:
        """Scalars of member ``run`` or of ``"population"`` at env step ``step``; None, NaN, non-numbers skipped."""
        if not self.enabled:
            return
        writer = self.writer(run)
        for key, value in values.items():
            if _finite(value):
                writer.add_scalar(key, float(value), step)
        writer.flush()

    def hparams(self, member: int, hparams: dict[str, Any], metric_tags: list[str],
                discrete: dict[str, list] | None = None) -> None:
        """The member's entry of TensorBoard's HParams dashboard, in its own run (``members/<i>/tb``): the
        hyperparameter values (numbers, strings, booleans; others left out) and the scalar tags of that run that
        the dashboard shows beside them (their last value, e.g. ``pbt/score``). ``discrete``: name -> the values a
        categorical hyperparameter can take. The summaries of ``SummaryWriter.add_hparams``, without its extra
        sub-run (so the metrics are the member's own scalars)."""
        if not self.enabled:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        values = {k: v for k, v in hparams.items() if isinstance(v, (bool, int, float, str))}
        domains = {k: list(v) for k, v in (discrete or {}).items() if k in values}
        exp, ssi, sei = hparams_summary(values, {tag: 0.0 for tag in metric_tags}, domains or None)
        writer = self.writer(member)
        for summary in (exp, ssi, sei):
            writer._get_file_writer().add_summary(summary)
        writer.flush()

    def close(self) -> None:
        """Close every writer (they are made again on the next write)."""
        for w in self._writers.values():
            w.close()
        self._writers.clear()


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(float(value))
