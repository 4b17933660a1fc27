"""Replay: train from scratch along the hyperparameter schedule a PBT run discovered for one member.

A PBT member ends with weights that were trained, round after round, by a chain of ancestors (its lineage: the
donors its weights were copied from), each with its own hyperparameters. The schedule of that lineage is what PBT
found; replaying it on fresh weights tells whether the schedule alone reproduces the result (Ray Tune's
``PopulationBasedTrainingReplay``; Jaderberg et al. 2017 discuss the schedules PBT discovers).

Schedule. From the source run's committed state (``checkpoints/runner.json``: its round R and every member's
lineage, the chain ``[(r_1, d_1), ..., (r_k, d_k)]`` of exploits, oldest first) and its ``round`` events (the
hyperparameters of every member in force during each round), the *owner* of round r is the member that trained
the lineage's weights in that round: ``d_1`` up to round ``r_1``, ``d_{j+1}`` in rounds ``r_j + 1 .. r_{j+1}``,
and the member itself after ``r_k``. The schedule is ``hparams[r] = round_event[r].hparams[owner(r)]`` for
``r = 1..R``: every per-member hyperparameter (searched or not), exactly as the source recorded it.

Run. A replay is its own mode, not a PBT run: no scheduler, no exploit, so it does not go through PBT's
validation (a population of one would be refused there). It trains ``seeds`` independent members (default 1) in
one batched learner (:class:`~rpbt.pbt.backends.shard.Shard`, the local backend's unit) with the source's config:
same environment, same per-member budget (``run.total_env_steps``), same round length
(``pbt.perturbation_interval`` updates), and the schedule's round-r hyperparameters set on every member before
round r. Replay member j has the seed stream of member ``origin + j * P`` of the source run (origin: ``d_1``, the
member whose initial weights the lineage started from; P: the source's population), so member 0 starts from
exactly the origin's initial weights and environment seeds, and the others from fresh ones. Rounds, scores and
metrics are written as in a PBT run (``pbt/score`` by the source's ``pbt.score`` rule, ``pbt/hp/<name>``,
``train/learning_rate``, ...), so the output is a normal run directory: ``config.yaml`` is the source's config with
``run.dir`` changed, the ``start`` event carries ``"replay"`` (source, member, origin, member ids, the schedule and
the original lineage's score per round, which ``rpbt report`` draws beside the replay's), and checkpoints are
committed every round (``rpbt evaluate`` reads them). A replay is not resumable: run it again.

Errors: :class:`ReplayError` (a ``ValueError``) naming the path or the member when the source has no committed
round, the member does not exist, or a round event the schedule needs is missing.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from rpbt.agent.ppo import first_nonfinite
from rpbt.config import Config
from rpbt.pbt.backends.shard import Shard
from rpbt.pbt.faults import pop_obs_outliers
from rpbt.pbt.scoring import ScoreSource
from rpbt.pbt.space import SearchSpace
from rpbt.run.rundir import RunDirectory, RunDirError, clean_float, load_run_config, require_run_dir

log = logging.getLogger(__name__)

__all__ = ["ReplayError", "ReplaySchedule", "lineage_schedule", "ReplayRunner", "replay_run"]


class ReplayError(ValueError):
    """The source run cannot be replayed (no committed round, unknown member, missing round events)."""


@dataclass
class ReplaySchedule:
    """The hyperparameter schedule of one member's lineage in a source run.

    ``hparams[r - 1]``: every per-member hyperparameter in force in round r (``r = 1..rounds``); ``owners[r - 1]``:
    the member that trained the lineage's weights in round r; ``scores[r - 1]``: that member's score after round
    r (None when missing); ``env_steps[r - 1]``: env steps per member after round r; ``lineage``: the chain
    ``[{"round": r, "member": d}, ...]`` (oldest first); ``origin``: the member the lineage started from.
    """

    source: Path
    member: int
    population_size: int
    rounds: int
    lineage: list[dict[str, int]]
    origin: int
    owners: list[int]
    hparams: list[dict[str, float]]
    scores: list[Optional[float]]
    env_steps: list[Optional[int]]

    def to_json(self) -> dict[str, Any]:
        return {"source": str(self.source), "member": self.member, "population_size": self.population_size,
                "rounds": self.rounds, "lineage": self.lineage, "origin": self.origin, "owners": self.owners,
                "hparams": self.hparams, "scores": self.scores, "env_steps": self.env_steps}


def lineage_schedule(run_dir: Path, member: Optional[int] = None) -> ReplaySchedule:
    """The hyperparameter schedule of ``member``'s lineage in the run directory ``run_dir`` (see the module
    docstring); ``member`` defaults to ``summary.json``'s best member.

    Raises :class:`ReplayError` when ``run_dir`` has no committed round, no best member to default to, no such
    member, or lacks a round event of the lineage.
    """
    run_dir = Path(run_dir)
    state_path = run_dir / "checkpoints" / "runner.json"
    if not state_path.is_file():
        raise ReplayError(f"{state_path}: not found; {run_dir} has no committed round to replay")
    try:
        state = json.loads(state_path.read_text())
        committed = int(state["round"])
        lineages = state["lineage"]
    except (ValueError, KeyError, TypeError) as err:
        raise ReplayError(f"{state_path}: not a runner state ({err!r})") from None
    population = len(lineages)
    if member is None:
        try:
            member = json.loads((run_dir / "summary.json").read_text())["best_member"]
        except (OSError, ValueError, KeyError, TypeError):
            member = None
        if member is None:
            raise ReplayError(f"{run_dir}: summary.json names no best member; choose one with --member")
    if isinstance(member, bool) or not isinstance(member, int) or not 0 <= member < population:
        raise ReplayError(f"member {member!r} is not in {run_dir} (members 0..{population - 1})")
    chain = [{"round": int(link["round"]), "member": int(link["member"])} for link in lineages[member]]

    rounds: dict[int, dict[str, Any]] = {}
    for event in RunDirectory(run_dir, population, tensorboard=False).read_events():
        if event.get("type") == "round" and isinstance(event.get("round"), int) and event["round"] <= committed:
            rounds[event["round"]] = event  # a round played again after a resume: the last attempt counts
    owners = []
    for r in range(1, committed + 1):
        owner = member
        for link in reversed(chain):  # the first link whose exploit comes at or after round r
            if r <= link["round"]:
                owner = link["member"]
        owners.append(owner)
    hparams, scores, steps = [], [], []
    for r, owner in zip(range(1, committed + 1), owners):
        event = rounds.get(r)
        if event is None or not isinstance(event.get("hparams"), list) or len(event["hparams"]) != population:
            raise ReplayError(f"{run_dir / 'events.jsonl'}: no round event with every member's hyperparameters "
                              f"for round {r}; the schedule of member {member} cannot be rebuilt")
        hparams.append({k: float(v) for k, v in event["hparams"][owner].items()})
        score = (event.get("scores") or [None] * population)[owner]
        scores.append(None if score is None else float(score))
        env_steps = event.get("env_steps")
        steps.append(int(env_steps) if isinstance(env_steps, (int, float)) else None)
    origin = chain[0]["member"] if chain else member
    return ReplaySchedule(source=run_dir, member=member, population_size=population, rounds=committed,
                          lineage=chain, origin=origin, owners=owners, hparams=hparams, scores=scores,
                          env_steps=steps)


class ReplayRunner:
    """Trains ``seeds`` fresh members along a :class:`ReplaySchedule`, writing a run directory at ``out_dir``.

    Args:
        source: the PBT run directory to replay.
        out_dir: the replay's run directory (created by :meth:`start`).
        member: the member whose lineage to follow (default: the source's best member).
        seeds: independent replay members trained side by side (>= 1).
        overrides: dotted config overrides applied to the source's config (e.g. ``run.progress=false``); the
            environment, agent and budget should stay the source's for a faithful replay.

    Raises :class:`ReplayError` (see :func:`lineage_schedule`), ``ConfigError`` for a bad source config or
    override, :class:`~rpbt.run.rundir.RunDirError` when ``out_dir`` is in use.
    """

    def __init__(self, source: Path, out_dir: Path, member: Optional[int] = None, seeds: int = 1,
                 overrides: Optional[list[str]] = None):
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ReplayError(f"seeds must be an integer >= 1, got {seeds!r}")
        self.source = Path(source)
        if any(o.partition("=")[0].strip() == "pbt.population_size" for o in overrides or []):
            raise ReplayError("pbt.population_size cannot be overridden in a replay: it trains --seeds members along "
                              "one lineage of the source run (whose population size its schedule was found with)")
        self.schedule = lineage_schedule(self.source, member)
        cfg = load_run_config(self.source)
        if overrides:
            from rpbt.config import apply_overrides, config_from_dict

            data = apply_overrides(cfg.to_dict(), overrides)
            cfg = config_from_dict(data, source=str(self.source / "config.yaml"), overrides=overrides)
        cfg.run.dir = str(out_dir)
        self.cfg: Config = cfg
        self.seeds = seeds
        self.out_dir = Path(out_dir)
        self.space = SearchSpace(cfg.pbt.search_space)
        P = self.schedule.population_size
        self.member_ids = [self.schedule.origin + j * P for j in range(seeds)]
        self.steps_per_update = cfg.env.num_envs * cfg.agent.num_steps
        self.total_updates = math.ceil(cfg.run.total_env_steps / self.steps_per_update)
        self.rounds = min(self.schedule.rounds, math.ceil(self.total_updates / cfg.pbt.perturbation_interval))
        if self.schedule.rounds < math.ceil(self.total_updates / cfg.pbt.perturbation_interval):
            log.warning("the source run committed %d of its rounds: the replay follows those %d rounds",
                        self.schedule.rounds, self.schedule.rounds)
        self.rundir = RunDirectory(self.out_dir, seeds, tensorboard=cfg.run.tensorboard)
        self.shard: Optional[Shard] = None
        self.round = 0
        self.scores: list[Optional[float]] = [None] * seeds
        self.t_start = time.time()
        self.outliers_logged: set[int] = set()  # replay members whose observation outliers were logged

    def start(self, overwrite: bool = False) -> None:
        """Build the learner (a bad environment fails before anything is written), then create the directory."""
        if overwrite and self.rundir.path.exists():
            self.rundir.check_replaceable()
        self.shard = Shard(self.cfg, self.member_ids, [self.schedule.hparams[0]] * self.seeds)
        if overwrite and self.rundir.path.exists():
            shutil.rmtree(self.rundir.path)
        self.rundir.create(self.cfg)
        self.rundir.lock()
        replay = {**self.schedule.to_json(), "member_ids": self.member_ids, "seeds": self.seeds}
        self.rundir.write_event({"type": "start", "round": 0, "population_size": self.seeds,
                                 "hparams": [self.schedule.hparams[0]] * self.seeds,
                                 "search_space": self.space.to_json(), "replay": replay})

    def run(self) -> dict[str, Any]:
        """Play every round of the schedule; returns the summary (also written to ``summary.json``)."""
        try:
            while self.round < self.rounds:
                self.play_round()
            summary = self.summary()
            self.rundir.write_event({"type": "end", "round": self.round,
                                     "env_steps": self._env_steps()})
            return summary
        finally:
            self.close()

    def play_round(self) -> None:
        """Set round r's hyperparameters on every replay member, train the round, score, record, commit."""
        assert self.shard is not None, "call start() first"
        r = self.round + 1
        hp = self.schedule.hparams[r - 1]
        for i in range(self.seeds):
            self.shard.policy.set_hparams(i, hp)
        n = min(self.cfg.pbt.perturbation_interval, self.total_updates - (r - 1) * self.cfg.pbt.perturbation_interval)
        per_member = self.shard.train(n)
        info = self.shard.member_info()
        scored = ScoreSource.from_config(self.cfg).score_round(self.shard, self.member_ids, info, round_=r)
        scores = scored.scores
        now = time.time()
        for j, m in enumerate(self.member_ids):
            rows = per_member[m]
            _, outlier = pop_obs_outliers(rows)  # logged once per member; kept out of the metrics
            if outlier is not None and j not in self.outliers_logged:
                self.outliers_logged.add(j)
                log.warning("replay member %d: observation index %d at %.3g (over agent.obs_outlier_factor times its "
                            "typical magnitude %.3g) at update %d", j, outlier["index"], outlier["value"],
                            outlier["scale"], outlier["update"])
            for row in rows:
                quantity = first_nonfinite(row.pop("health/nonfinite", 0) or 0)
                if quantity is not None:
                    log.warning("replay member %d: non-finite %s at update %s (a replay does not restore; the "
                                "schedule goes on)", j, quantity, row.get("update"))
                row["round"] = r
                row["time"] = round(now - self.t_start, 3)
                for name in self.space.names:
                    row[f"pbt/hp/{name}"] = info[m]["hparams"][name]
            rows[-1]["pbt/score"] = scores[j]
            if scored.validation is not None:
                val = scored.validation[j]
                rows[-1]["eval/validation_return"] = float(np.mean(val)) if val else None
            rows[-1]["pbt/exploitation_count"] = 0
            self.rundir.write_metrics(j, rows)
        self.rundir.write_event({"type": "round", "round": r, "env_steps": info[self.member_ids[0]]["env_steps"],
                                 "updates": info[self.member_ids[0]]["updates"],
                                 "scores": [clean_float(s) for s in scores],
                                 "hparams": [info[m]["hparams"] for m in self.member_ids],
                                 "original_score": clean_float(self.schedule.scores[r - 1]),
                                 "original_member": self.schedule.owners[r - 1]})
        self.scores = scores
        self.round = r
        self.commit()

    def commit(self) -> None:
        """Checkpoint every replay member (``member_<j>.pt``) into a fresh round folder, then point runner.json
        at it and delete the older folder (the PBT runner's commit order)."""
        assert self.shard is not None
        folder = f"round_{self.round:06d}"
        target = self.rundir.checkpoint_dir / folder
        target.mkdir(parents=True, exist_ok=True)
        for j, m in enumerate(self.member_ids):
            self.shard.snapshot(m).save(target / f"member_{j}.pt")
        self.rundir.write_runner_state({"round": self.round, "checkpoint_dir": folder, "replay": True,
                                        "lineage": [[] for _ in range(self.seeds)],
                                        "exploitation_count": [0] * self.seeds,
                                        "scores": [clean_float(s) for s in self.scores],
                                        "env_steps": self._env_steps()})
        for old in self.rundir.checkpoint_dir.glob("round_*"):
            if old.name != folder and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        self.rundir.write_summary(self.summary())

    def _env_steps(self) -> int:
        return min(self.round * self.cfg.pbt.perturbation_interval, self.total_updates) * self.steps_per_update

    def summary(self) -> dict[str, Any]:
        valid = [(s, -j) for j, s in enumerate(self.scores) if s is not None and math.isfinite(s)]
        sign = 1.0 if self.cfg.pbt.mode == "max" else -1.0
        best = -max((sign * s, j) for s, j in valid)[1] if valid else None
        finite = [s for s in self.scores if s is not None and math.isfinite(s)]
        return {
            "round": self.round,
            "rounds_total": self.rounds,
            "env_steps": self._env_steps(),
            "best_member": best,
            "best_score": clean_float(self.scores[best]) if best is not None else None,
            "hparams": self.schedule.hparams[self.round - 1] if self.round else None,
            "scores": [clean_float(s) for s in self.scores],
            "lineage": [],
            "exploitation_count": [0] * self.seeds,
            "wall_time_s": round(time.time() - self.t_start, 2),
            "replay": {"source": str(self.source), "member": self.schedule.member,
                       "mean_score": float(np.mean(finite)) if finite else None,
                       "original_score": clean_float(self.schedule.scores[self.round - 1]) if self.round else None},
        }

    def close(self) -> None:
        if self.shard is not None:
            self.shard.close()
            self.shard = None
        self.rundir.close()


def replay_run(source: Path, out_dir: Optional[Path] = None, member: Optional[int] = None, seeds: int = 1,
               overrides: Optional[list[str]] = None, overwrite: bool = False) -> tuple[Path, dict[str, Any]]:
    """Replay ``member``'s schedule of ``source`` into ``out_dir`` (default: ``<source>_replay_m<member>``,
    numbered when taken); returns the replay's directory and summary. Errors: see :class:`ReplayRunner`."""
    source = require_run_dir(Path(source))
    if out_dir is None:
        chosen = lineage_schedule(source, member).member
        out_dir = RunDirectory.fresh_path(source.with_name(f"{source.name}_replay_m{chosen}"))
    elif not overwrite and Path(out_dir).exists() and any(Path(out_dir).iterdir()):
        raise RunDirError(f"{out_dir}: exists and is not empty; choose another --out or pass --overwrite")
    runner = ReplayRunner(source, Path(out_dir), member=member, seeds=seeds, overrides=overrides)
    try:
        runner.start(overwrite=overwrite)
    except BaseException:
        runner.close()
        raise
    return Path(out_dir), runner.run()
