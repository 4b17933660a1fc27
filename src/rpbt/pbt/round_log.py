"""What one PBT round writes into the run directory: metric rows, the ``round`` event, ``exploit_refused`` and
``exploit`` events (formats: ``RUNDIR_FORMAT.md``).

Metric rows are the learner's rows of the round, one per update and member, decorated with the round, the run's
clock, the hyperparameters in force (``pbt/hp/<name>``) and, on the round's last row, ``pbt/score``,
``pbt/exploitation_count`` and, for the validation score source, ``eval/validation_return``. The round event's
``env_steps`` / ``updates`` are member 0's (the schedule's); ``member_env_steps`` gives each member's own count,
lower for a member restored after a fault (it lost the steps since the commit it was restored from). With
``pbt.score_source: evaluation`` the round event also carries ``evaluation`` (the round's cost: ``members``
evaluated, ``episodes``, ``env_steps``, ``seconds``) and the last metric row ``eval/mean_return`` (None for a member
not evaluated). :func:`round_info` and :func:`exploit_info` are what the callbacks (:mod:`rpbt.callbacks`) receive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from rpbt.config import Config
from rpbt.pbt.records import MemberRecord
from rpbt.pbt.scheduler import Decision
from rpbt.pbt.scoring import RoundScores
from rpbt.run.rundir import clean_float

if TYPE_CHECKING:
    from rpbt.run.rundir import RunDirectory

__all__ = ["RoundLog", "population_scalars", "round_info", "exploit_info", "training_start_info", "run_summary"]

Info = dict[int, dict[str, Any]]


def population_scalars(scores: Sequence[Any], mode: str, env_steps: int) -> dict[str, float]:
    """The population run's scalars of one round: ``pbt/best_score`` (by ``mode``, "max" or "min"),
    ``pbt/mean_score``, ``pbt/median_score``, ``pbt/min_score``, ``pbt/max_score`` over the members with a finite
    score, and ``time/total_timesteps`` (the schedule's env steps per member). Without any score only the last."""
    values = np.array([float(s) for s in scores if s is not None and np.isfinite(float(s))], dtype=float)
    out: dict[str, float] = {"time/total_timesteps": float(env_steps)}
    if values.size:
        out.update({"pbt/best_score": float(values.max() if mode == "max" else values.min()),
                    "pbt/mean_score": float(values.mean()), "pbt/median_score": float(np.median(values)),
                    "pbt/min_score": float(values.min()), "pbt/max_score": float(values.max())})
    return out


class RoundLog:
    """Writes a round's records for one run directory.

    Args:
        cfg: the run config (``pbt.score_since_exploit``, ``pbt.hidden_state``, ``agent.obs_outlier_factor``).
        rundir: the run directory written to.
        hparam_names: the searched hyperparameters, logged as ``pbt/hp/<name>`` on every row.
    """

    def __init__(self, cfg: Config, rundir: "RunDirectory", hparam_names: Sequence[str]):
        self.cfg = cfg
        self.rundir = rundir
        self.hparam_names = tuple(hparam_names)
        self._last: dict[str, Any] | None = None  # the last round written: hyperparameters it trained with, scores

    def metrics(self, r: int, per_member: dict[int, list[dict[str, Any]]], info: Info, scored: RoundScores,
                members: list[MemberRecord]) -> None:
        """Decorate and write every member's metric rows of round ``r``."""
        now = self.rundir.elapsed()
        for m, record in enumerate(members):
            rows = per_member[m]
            for row in rows:
                row["round"] = r
                row["time"] = now
                for name in self.hparam_names:
                    row[f"pbt/hp/{name}"] = info[m]["hparams"][name]
            rows[-1]["pbt/score"] = scored.scores[m]
            if scored.validation is not None:
                val = scored.validation[m]
                rows[-1]["eval/validation_return"] = float(np.mean(val)) if val else None
            if scored.evaluation is not None:
                ev = scored.evaluation[m]
                rows[-1]["eval/mean_return"] = float(np.mean(ev)) if ev else None
            rows[-1]["pbt/exploitation_count"] = record.exploitation_count
            self.rundir.write_metrics(m, rows)

    def round(self, r: int, info: Info, scored: RoundScores, outliers: list[int], train_s: float) -> None:
        """The ``round`` event: scores, hyperparameters, env steps (see the module docstring), training time."""
        P = len(scored.scores)
        event = {"type": "round", "round": r, "env_steps": info[0]["env_steps"], "updates": info[0]["updates"],
                 "member_env_steps": [int(info[m]["env_steps"]) for m in range(P)],
                 "scores": [clean_float(s) for s in scored.scores], "hparams": [info[m]["hparams"] for m in range(P)],
                 "train_s": round(train_s, 4)}
        if self.cfg.pbt.score_since_exploit:
            event["episodes_since_exploit"] = [len(x) for x in scored.own]
        if self.cfg.agent.obs_outlier_factor is not None:
            event["obs_outliers"] = outliers
        if scored.cost is not None:
            event["evaluation"] = scored.cost
        self.rundir.write_event(event)
        self.rundir.write_population(int(info[0]["env_steps"]), population_scalars(
            scored.scores, self.cfg.pbt.mode, int(info[0]["env_steps"])))
        self._last = {"hparams": [info[m]["hparams"] for m in range(P)], "scores": event["scores"]}

    def hparams(self) -> None:
        """Each member's HParams entry in TensorBoard (written once, when the run ends): the searched
        hyperparameters it trained with in the last round and, beside them, ``pbt/score`` (the last value of that
        tag in the member's run: the last round's score). Nothing before a round has been written."""
        if self._last is None:
            return
        discrete = {name: list(dim.values) for name, dim in self.cfg.pbt.search_space.items()
                    if name in self.hparam_names and getattr(dim, "type", None) == "categorical" and dim.values}
        for m, hp in enumerate(self._last["hparams"]):
            self.rundir.write_hparams(m, {n: hp[n] for n in self.hparam_names if n in hp}, ["pbt/score"], discrete)

    def refused(self, r: int, env_steps: int, refused: list[dict[str, Any]]) -> None:
        """An ``exploit_refused`` event per pair the t-test refused."""
        for pair in refused:
            self.rundir.write_event({"type": "exploit_refused", "round": r, "env_steps": env_steps, **pair})

    def exploit(self, r: int, env_steps: int, d: Decision, measurements: dict[str, Any], transfer_s: float
                ) -> dict[str, Any]:
        """The ``exploit`` event of decision ``d`` with its transfer measurements (also written as the recipient's
        scalars); returns the event."""
        event = {"type": "exploit", "round": r, "env_steps": env_steps, **d.to_dict(),
                 "hidden_state": self.cfg.pbt.hidden_state, "transfer": self.cfg.pbt.transfer,
                 "transfer_s": transfer_s,
                 "measurements": {k: clean_float(v) for k, v in measurements.items()}}
        self.rundir.write_event(event)
        self.rundir.write_scalars(d.recipient, env_steps, measurements)
        return event


def round_info(runner: Any, info: Info, scored: RoundScores, exploits: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``on_round_end`` receives after the runner committed a round (see :mod:`rpbt.callbacks`); ``runner``
    is the :class:`~rpbt.pbt.runner.PopulationRunner`, read only."""
    P = len(scored.scores)
    best = runner.best_member()
    return {"round": runner.round, "rounds_total": runner.total_rounds, "env_steps": runner.env_steps(),
            "member_env_steps": [int(info[m]["env_steps"]) for m in range(P)],
            "scores": [clean_float(s) for s in scored.scores], "hparams": [dict(info[m]["hparams"]) for m in range(P)],
            "best_member": best, "best_score": None if best is None else clean_float(runner.members[best].score),
            "exploits": list(exploits), "score_source": runner.score_source.kind,
            "evaluation": None if scored.cost is None else dict(scored.cost), "run_dir": str(runner.rundir.path)}


def exploit_info(event: dict[str, Any]) -> dict[str, Any]:
    """What ``on_exploit`` receives: the ``exploit`` event's round, env steps, donor and recipient (and their
    scores), the recipient's hyperparameters before and after (``new_hparams``) and the measurements."""
    return {"round": event["round"], "env_steps": event["env_steps"], "recipient": event["recipient"],
            "donor": event["donor"], "recipient_score": event.get("recipient_score"),
            "donor_score": event.get("donor_score"), "hparams_before": dict(event["old_hparams"]),
            "hparams_after": dict(event.get("new_hparams") or {}), "measurements": dict(event["measurements"])}


def training_start_info(runner: Any) -> dict[str, Any]:
    """What ``on_training_start`` receives (see :mod:`rpbt.callbacks`)."""
    return {"run_dir": str(runner.rundir.path), "round": runner.round, "rounds_total": runner.total_rounds,
            "population_size": runner.P, "score_source": runner.score_source.kind}


def run_summary(runner: Any) -> dict[str, Any]:
    """``summary.json`` of a :class:`~rpbt.pbt.runner.PopulationRunner` (read only): the round, env steps (the
    schedule's, and each member's own), best member, its score, hyperparameters and lineage, every member's score and
    exploitation count, the wall time; with ``pbt.score_source: evaluation`` the evaluation's total cost
    (``evaluation``), and after a callback's stop its reason (``stopped``)."""
    best = runner.best_member()
    info = runner.backend.member_info() if runner.backend is not None else {}
    members = runner.members
    summary = {
        "round": runner.round,
        "rounds_total": runner.total_rounds,
        "env_steps": runner.env_steps(),  # the schedule's; member_env_steps: each member's own
        "member_env_steps": [int(info[m]["env_steps"]) for m in range(runner.P)] if info else None,
        "best_member": best,
        "best_score": clean_float(members[best].score) if best is not None else None,
        "hparams": info.get(best, {}).get("hparams") if best is not None else None,
        "scores": [clean_float(record.score) for record in members],
        "lineage": members[best].lineage if best is not None else [],
        "exploitation_count": [record.exploitation_count for record in members],
        "wall_time_s": round(runner.rundir.elapsed(), 2),
    }
    if runner.score_source.kind == "evaluation":
        summary["evaluation"] = dict(runner.evaluation_cost)
    if runner.stopped is not None:
        summary["stopped"] = runner.stopped
    return summary
