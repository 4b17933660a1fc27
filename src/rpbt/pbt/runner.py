"""The round loop, backend-agnostic: train -> score -> decide -> transfer -> record.

Rounds are synchronous: every member trains ``pbt.perturbation_interval`` updates, then the scheduler decides on
all ready members at once. The runner never looks inside a learner; the backend moves member states and returns
metrics; the scheduler (pure) decides. After each round the runner commits: member checkpoints and the round's
runner state into a new round folder, then ``checkpoints/runner.json`` (atomically) naming it — the commit point a
resume starts from. Only the last ``run.keep_checkpoints`` committed rounds are kept; an older folder is deleted
only after the commit, so a donor's checkpoint is never deleted while something may still need it (Ray issue
9036). A resume restores the newest kept round whose checkpoints all load and fit, and says which it skipped.

Member faults: after training, a member whose observations, rewards, loss, gradients or weights turned non-finite
(the learner's ``health/nonfinite`` flag) is handled by ``run.on_member_fault``. ``restore`` puts it back to its
last committed checkpoint (before the first commit: a copy of a healthy member's state, without explore, recorded in
its lineage), on fresh episodes (its carried state came from non-finite data) that differ from the failed attempt's,
with a forked generator (:func:`rpbt.seeding.fault_retry_seed`), so that a retry does not replay the fault; it
records a ``member_fault`` event naming the member, the update and the first non-finite quantity, warns, and goes
on; the faulty member neither scores nor donates in that round, and keeps the env-step count it was restored with
(round events and the summary give each member's own count as ``member_env_steps``). At ``run.max_member_faults``
faults of one member, or at the first fault under ``error``, the run stops with a :class:`MemberFaultError`
naming the environment and every faulty member of the round with its update and quantity (all of them when all
fault at once), before anything of the faulty round is committed.

Observation outliers: a member whose environment emitted finite but absurd raw observations (the learner's
``health/obs_outliers`` count, :func:`rpbt.agent.normalizer.find_obs_outliers`) is warned about once
(:class:`ObsOutlierWarning`, naming the environment, the member, the update and the observation index) with an
``obs_outlier`` event; every round event counts each member's outliers of the round. Training is not changed.

Scores after an exploit: the recipient inherits the donor's recent episode returns with its member state, so by
default its next score is partly the donor's. With ``pbt.score_since_exploit`` the runner remembers, at every
exploit, the episode count the recipient inherited (``member_info``'s ``episodes``; saved in ``runner.json`` as
``episode_marks``) and scores each member on the episodes it finished since then (episodes that were running at
the exploit count: their last steps were played by the new weights). A member with fewer than ``pbt.score_window``
such episodes is still scored on what it has (None with none), but takes no part in exploit (neither donor nor
recipient, nor in a t-test) until it has the window. Off by default because it changes decisions after the first
exploit. ``pbt.ttest`` is given the same returns the score is computed from (validation returns when the score
source is validation); a pair it refuses is written as an ``exploit_refused`` event.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from rpbt.agent.distributional import empirical_cvar
from rpbt.agent.ppo import first_nonfinite
from rpbt.checkpoint import CheckpointError, MemberState, naming_checkpoint
from rpbt.config import Config, PBTConfig, member_hparams
from rpbt.pbt.backends import backend_reason, make_backend
from rpbt.pbt.backends.base import Backend
from rpbt.pbt.scheduler import PBTScheduler
from rpbt.pbt.selection import truncation_group_size
from rpbt.pbt.space import SearchSpace
from rpbt.run.output import say
from rpbt.run.rundir import ROUND_FOLDER, RunDirectory, RunDirError, clean_float, round_folder

if TYPE_CHECKING:
    from rpbt.envs.market_data import MarketData


class NoExploitWarning(UserWarning):
    """The run's budget ends before any member is first ready (``pbt.burn_in`` / ``pbt.perturbation_interval``
    beyond the run's updates): it trains, but PBT never exploits or explores."""


class SingleDonorWarning(UserWarning):
    """Truncation selection's top and bottom groups hold one member each at this ``pbt.population_size`` and
    ``pbt.quantile_fraction``: every exploit copies the single best member (see :func:`single_donor_warning`)."""


def single_donor_warning(pbt: PBTConfig) -> Optional[str]:
    """What :meth:`PopulationRunner.start` says when truncation selection's groups round to one member, else None.

    The groups hold ``k = max(1, floor(q * n))`` of the ``n`` ready members (:func:`truncation_group_size`, the
    scheduler's own count). With all ``pbt.population_size`` members ready and ``k == 1``, each round at most the
    worst member exploits, and its donor is always the single best. Said only where groups of 2 are possible (a
    population of 4 or more; the groups never overlap, so 2 and 3 members allow one a side) and for ``exploit:
    truncation`` (the binary tournament has no groups); the message gives the smallest ``quantile_fraction`` in
    hundredths (at most 0.5 from a population of 4) and the smallest population that make groups of 2.
    """
    q, P = pbt.quantile_fraction, pbt.population_size
    if pbt.exploit != "truncation" or P < 4 or truncation_group_size(q, P) > 1:
        return None
    q_min = math.ceil(200 / P) / 100
    while truncation_group_size(q_min, P) < 2:  # float rounding: the scheduler's count decides
        q_min = round(q_min + 0.01, 2)
    P_min = P
    while truncation_group_size(q, P_min) < 2:
        P_min += 1
    return (f"pbt.quantile_fraction {q:g} at pbt.population_size {P}: truncation selection's top and bottom groups "
            f"of 1 member (max(1, floor({q:g} x {P})) = 1) mean that each round at most one member, the worst, "
            f"exploits, and its donor is always the single best member; groups of 2 need pbt.quantile_fraction >= "
            f"{q_min:g} or pbt.population_size >= {P_min}")


class ObsOutlierWarning(UserWarning):
    """A member's environment emitted a finite raw observation component more than ``agent.obs_outlier_factor``
    times beyond its typical magnitude (:func:`rpbt.agent.normalizer.find_obs_outliers`); the message names the
    environment, the member, the update and the observation index. Given once per member and run."""


OBS_OUTLIER_KEYS = ("health/obs_outliers", "health/obs_outlier_index", "health/obs_outlier_value",
                    "health/obs_outlier_scale")


def pop_obs_outliers(rows: list[dict[str, Any]]) -> tuple[int, Optional[dict[str, Any]]]:
    """Remove the observation-outlier metrics (:data:`OBS_OUTLIER_KEYS`) from one member's per-update rows.
    Returns the number of outlying values and the worst outlier of the first update that had any, as
    ``{"update", "index", "value", "scale"}`` (None when there was none)."""
    total, first = 0, None
    for row in rows:
        count, index, value, scale = (row.pop(k, 0.0) or 0.0 for k in OBS_OUTLIER_KEYS)
        if count > 0:
            total += int(count)
            if first is None:
                first = {"update": int(row.get("update", 0)), "index": int(index), "value": float(value),
                         "scale": float(scale)}
    return total, first


def obs_outlier_message(cfg: Config, member: int, first: dict[str, Any]) -> str:
    """The one-line warning for a member's first observation outlier (see :class:`ObsOutlierWarning`)."""
    a = cfg.agent
    if not a.normalize_observations:
        effect = "the network sees it unnormalized"
    elif a.raw_obs_clip is not None:
        effect = f"agent.raw_obs_clip ({a.raw_obs_clip:g}) clips it before normalization"
    else:
        effect = ("it ruins the observation normalizer's statistics of that index; fix the environment or set "
                  "agent.raw_obs_clip")
    return (f"env {cfg.env.id!r}: member {member} saw observation index {first['index']} at {first['value']:.3g} "
            f"(update {first['update']}), over agent.obs_outlier_factor ({a.obs_outlier_factor:g}) x its typical "
            f"magnitude {first['scale']:.3g}; {effect} (warned once per member; counted in events.jsonl)")


class ResumeWarning(UserWarning):
    """A resume skipped a kept round whose checkpoints do not load or fit; the message names the file and why."""

log = logging.getLogger(__name__)


class MemberFaultError(RuntimeError):
    """A member's training went non-finite too often (or once, under ``run.on_member_fault: error``, or every
    member at once before the first commit); the message names the environment and every faulty member of the round
    with its update and first non-finite quantity."""


def score_returns(returns: list[float], cfg: Config, window: Optional[int] = None) -> Optional[float]:
    """A member's PBT score from its recent episode returns (last ``window``, default ``pbt.score_window``).

    ``pbt.score: mean`` -> mean return; ``cvar`` -> CVaR at ``pbt.score_cvar_alpha`` (mean of the worst alpha
    fraction, fractional weighting, see :func:`rpbt.agent.distributional.empirical_cvar`). None when no episode
    has finished yet (the scheduler ranks None last).
    """
    recent = list(returns)[-(cfg.pbt.score_window if window is None else window):]
    if not recent:
        return None
    if cfg.pbt.score == "cvar":
        return float(empirical_cvar(recent, cfg.pbt.score_cvar_alpha))
    return float(np.mean(recent))


def score_source(cfg: Config) -> str:
    """``"validation"`` or ``"training"``: ``pbt.score_source`` with ``auto`` resolved (validation for trading)."""
    source = cfg.pbt.score_source
    if source == "auto":
        return "validation" if cfg.env.id == "trading" else "training"
    return source


def validation_returns(backend: Backend, members: list[int], split: str = "validation") -> dict[int, list[float]]:
    """Deterministic evaluation returns per member from a backend: one batched ``evaluate_members`` call."""
    return {int(m): list(r) for m, r in backend.evaluate_members(members, split).items()}


def check_run_inputs(cfg: Config) -> Optional["MarketData"]:
    """Check what a run reads besides its config before anything trains or is written: the trading data and its
    split (:func:`rpbt.envs.trading.check_trading_setup`). Returns the trading run's
    :class:`~rpbt.envs.market_data.MarketData` (None for other environments). Raises a ``ValueError`` subclass
    naming the culprit."""
    if cfg.env.id == "trading":
        from rpbt.envs.trading import check_trading_setup

        return check_trading_setup(cfg.env, validation_episodes=score_source(cfg) == "validation")
    return None


class PopulationRunner:
    """Plays PBT rounds for one run directory.

    Args:
        cfg: the resolved run config.
        run_dir: the run directory (created by :meth:`start`, reopened by :meth:`resume`).
        backend: optional prebuilt backend (tests); built from ``backend.kind`` otherwise.
    """

    def __init__(self, cfg: Config, run_dir: Path, backend: Optional[Backend] = None):
        self.cfg = cfg
        self.P = cfg.pbt.population_size
        self.rundir = RunDirectory(Path(run_dir), self.P, tensorboard=cfg.run.tensorboard)
        self.space = SearchSpace(cfg.pbt.search_space)
        self.scheduler = PBTScheduler.from_config(cfg.pbt, seed=cfg.run.seed)
        self.steps_per_update = cfg.env.num_envs * cfg.agent.num_steps
        self.total_updates = math.ceil(cfg.run.total_env_steps / self.steps_per_update)
        self.total_rounds = math.ceil(self.total_updates / cfg.pbt.perturbation_interval)
        self.round = 0
        self.lineage: list[list[dict[str, int]]] = [[] for _ in range(self.P)]
        self.exploitation_count = [0] * self.P
        self.last_scores: list[Optional[float]] = [None] * self.P
        self.member_faults = [0] * self.P
        self.obs_outliers = [0] * self.P  # outlying raw observation values seen per member (warned at the first)
        self.history: list[str] = []  # kept committed round folders, newest first
        self.skipped: list[dict[str, Any]] = []  # rounds a resume could not restore: {"round", "reason"}
        # Per member: its episode count right after its last exploit (what it inherited); 0 before any.
        self.episode_marks = [0] * self.P
        self._backend = backend
        self.backend: Optional[Backend] = None

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self, overwrite: bool = False) -> None:
        """Sample initial hyperparameters, build the backend, then create (and lock) the run directory.

        The trading data is checked and the backend built first, so bad data or a bad environment or backend
        setting fails before anything is written. ``overwrite`` replaces an existing *rpbt run directory* at the
        path (never any other folder, never one that another rpbt process holds); raises
        :class:`~rpbt.run.rundir.RunDirError` otherwise.
        """
        data = check_run_inputs(self.cfg)
        pbt = self.cfg.pbt
        first_ready = max(pbt.burn_in, pbt.perturbation_interval)
        if first_ready > self.total_updates:
            warnings.warn(NoExploitWarning(
                f"no member is ever ready: the first ready point is update {first_ready} (max of pbt.burn_in "
                f"{pbt.burn_in} and pbt.perturbation_interval {pbt.perturbation_interval}) but the run has "
                f"{self.total_updates} updates (run.total_env_steps / (env.num_envs x agent.num_steps)): PBT will "
                f"never exploit or explore"), stacklevel=2)
        hparams = self.scheduler.initial_hparams(member_hparams(self.cfg))
        if overwrite and self.rundir.path.exists():
            self.rundir.check_replaceable()
        self.backend = self._backend or make_backend(self.cfg, hparams)
        single_donor = single_donor_warning(pbt) if first_ready <= self.total_updates else None
        if single_donor is not None:  # once the backend is built: a run that cannot start says only its error
            warnings.warn(SingleDonorWarning(single_donor), stacklevel=2)
        if overwrite and self.rundir.path.exists():
            shutil.rmtree(self.rundir.path)
        self.rundir.create(self.cfg)
        self.rundir.lock()
        self.rundir.set_elapsed(0.0)
        self.backend.attach_run(self.rundir)  # sharded backends: failure events, committed checkpoints
        start = {"type": "start", "round": 0, "population_size": self.P, "backend": self.backend.kind,
                 "num_workers": self.backend.num_workers, "backend_reason": backend_reason(self.cfg, self.backend),
                 "hparams": hparams, "search_space": self.space.to_json()}
        if data is not None:  # trading: which bars, and how their timestamps were read (merged Date + Time, ...)
            start["data"] = {"path": data.source or data.name, "bars": len(data), "timestamps": data.timestamps_from}
            log.info("trading data %s: %d bars; timestamps: %s", start["data"]["path"], len(data),
                     data.timestamps_from)
        self.rundir.write_event(start)

    def resume(self) -> None:
        """Reopen the run directory at its newest restorable committed round and restore every member from it.

        Candidates are the kept rounds of ``checkpoints/runner.json`` (``history``, newest first). A round whose
        runner state or any member checkpoint does not load, or does not fit this run's learner, is skipped (and
        recorded in :attr:`skipped`, the ``resume`` event and a :class:`ResumeWarning`); the first that restores
        wins. Nothing in the run directory changes until one has been restored; then the events and metrics of
        later rounds are dropped, temporary files of cut-short writes are removed and, after a skip, runner.json is
        rewritten to name the resumed round. Raises :class:`~rpbt.checkpoint.CheckpointError` (naming the files) when no
        kept round restores, :class:`~rpbt.run.rundir.RunDirError` for a missing or bad runner.json.
        """
        self.rundir.lock()
        try:
            latest = self.rundir.read_runner_state()
            if latest.get("replay"):
                raise RunDirError(f"{self.rundir.path}: a replay run (`rpbt replay`) cannot be resumed; run the "
                                  "same `rpbt replay` again with --overwrite")
            check_run_inputs(self.cfg)
            top = latest.get("checkpoint_dir") or round_folder(latest["round"])
            candidates = list(latest.get("history") or [top])
            if top not in candidates:
                candidates.insert(0, top)
            state = self._restore_newest(latest, top, candidates)
        except BaseException:
            if self.backend is not None:
                self.backend.close()
                self.backend = None
            self.rundir.unlock()
            raise
        self.round = int(state["round"])
        self.lineage = state["lineage"]
        self.exploitation_count = state["exploitation_count"]
        self.member_faults = list(state.get("member_faults") or [0] * self.P)
        self.obs_outliers = [int(v) for v in state.get("obs_outliers") or [0] * self.P]
        self.last_scores = state.get("scores") or [None] * self.P
        self.episode_marks = [int(v) for v in state.get("episode_marks", [0] * self.P)]
        folder = state.get("checkpoint_dir") or round_folder(self.round)
        self.history = candidates[candidates.index(folder):]
        self.rundir.remove_temp_files()
        kept = self.rundir.truncate_events_after(self.round)
        self.rundir.truncate_metrics_after(self.round)
        # The run's clock goes on from the resumed round's commit, or from a later kept line (an earlier resume).
        times = [float(e["time"]) for e in kept if isinstance(e.get("time"), (int, float))]
        self.rundir.set_elapsed(max([float(state.get("time_s") or 0.0), *times]))
        if self.skipped:
            self.rundir.write_runner_state({**state, "history": self.history})
            self.rundir.write_summary(self.summary())
        event: dict[str, Any] = {"type": "resume", "round": self.round, "backend": self.backend.kind,
                                 "num_workers": self.backend.num_workers,
                                 "backend_reason": backend_reason(self.cfg, self.backend)}
        if self.skipped:
            event["skipped"] = self.skipped
        self.rundir.write_event(event)

    def _load_round(self, folder: str, latest: dict[str, Any], top: str) -> tuple[dict[str, Any], list[MemberState]]:
        """The runner state and member states of a kept round folder; :class:`RunDirError` /
        :class:`CheckpointError` naming the file when one does not load. Loads the scheduler state."""
        path = self.rundir.checkpoint_dir / folder
        state = latest if folder == top else self.rundir.read_runner_state(folder)
        where = self.rundir.runner_state_path if folder == top else path / "runner.json"
        match = ROUND_FOLDER.fullmatch(folder)
        if match is None or int(match.group(1)) != state["round"]:
            raise RunDirError(f"{where}: names round {state['round']}, but lies in (or points at) {folder}")
        for key in ("lineage", "exploitation_count"):
            if not isinstance(state.get(key), list) or len(state[key]) != self.P:
                raise RunDirError(f"{where}: {key!r} is not a list of {self.P} entries (one per member)")
        try:
            self.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise RunDirError(f"{where}: bad \"scheduler\" state ({type(err).__name__}: {err})") from None
        return state, [MemberState.load(path / f"member_{m}.pt") for m in range(self.P)]

    def _restore_newest(self, latest: dict[str, Any], top: str, candidates: list[str]) -> dict[str, Any]:
        """Restore every member from the newest candidate round that loads and fits; returns its runner state."""
        self.skipped = []
        config_path = self.rundir.path / "config.yaml"
        for folder in candidates:
            match = ROUND_FOLDER.fullmatch(folder)
            r = int(match.group(1)) if match else None
            try:
                state, states = self._load_round(folder, latest, top)
            except (CheckpointError, RunDirError) as err:
                self.skipped.append({"round": r, "folder": folder, "reason": str(err)})
                continue
            if self.backend is None:  # errors building it (environment, backend) are not the round's fault
                self.backend = self._backend or make_backend(self.cfg, [s.hparams() for s in states])
                self.backend.attach_run(self.rundir)  # sharded backends: failure events, committed checkpoints
            try:
                for m, s in enumerate(states):
                    with naming_checkpoint(self.rundir.checkpoint_dir / folder / f"member_{m}.pt", config_path):
                        self.backend.restore(m, s)
            except CheckpointError as err:
                self.skipped.append({"round": r, "folder": folder, "reason": str(err)})
                continue
            for skip in self.skipped:
                warnings.warn(ResumeWarning(f"round {skip['round']} skipped, resuming from round {state['round']}: "
                                            f"{skip['reason']}"), stacklevel=3)
            return state
        if len(self.skipped) == 1:
            raise CheckpointError(self.skipped[0]["reason"])
        raise CheckpointError(f"{self.rundir.checkpoint_dir}: none of the kept rounds can be restored: " +
                              "; ".join(f"round {s['round']}: {s['reason']}" for s in self.skipped))

    def run(self, progress: Optional[bool] = None) -> dict[str, Any]:
        """Play rounds until every member has ``run.total_env_steps``; returns the final summary."""
        show = self.cfg.run.progress if progress is None else progress
        try:
            from rich.console import Console

            if show and Console().is_terminal:
                from rich.progress import (
                    BarColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                    TimeRemainingColumn,
                )

                columns = [TextColumn("[bold]{task.description}"), BarColumn(),
                           TextColumn("{task.completed:,.0f}/{task.total:,.0f} env steps per member"),
                           TimeElapsedColumn(), TimeRemainingColumn()]
                with Progress(*columns) as bar:
                    task = bar.add_task(self._describe(), total=self.total_updates * self.steps_per_update,
                                        completed=self._env_steps())
                    while self.round < self.total_rounds:
                        self.play_round()
                        bar.update(task, completed=self._env_steps(), description=self._describe())
            else:  # logs, CI and pipes: one plain line per round, no bar
                while self.round < self.total_rounds:
                    self.play_round()
                    if show:
                        say(f"{self._describe()}  env steps {self._env_steps():,}")
            summary = self.summary()
            self.rundir.write_event({"type": "end", "round": self.round, "env_steps": self._env_steps()})
            return summary
        finally:
            self.close()

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        self.rundir.close()

    # ------------------------------------------------------------------------------------------ one round
    def play_round(self) -> list[dict[str, Any]]:
        """Train one round, score, decide, transfer, record and commit. Returns the exploit events."""
        r = self.round + 1
        done_updates = (r - 1) * self.cfg.pbt.perturbation_interval
        n = min(self.cfg.pbt.perturbation_interval, self.total_updates - done_updates)
        started = time.perf_counter()
        per_member = self.backend.train(n)
        train_s = time.perf_counter() - started
        outliers = self.handle_obs_outliers(r, per_member)  # first: a spike may be what turned a member non-finite
        faulty = self.handle_faults(r, per_member)
        info = self.backend.member_info()
        eligible: Optional[list[bool]] = None
        own = self.own_returns(info)
        if score_source(self.cfg) == "validation":
            # Deterministic validation episodes (same starts for every member), so selection rewards what
            # generalises past the training period; pbt.score (mean / cvar) is taken over all of them.
            val = validation_returns(self.backend, list(range(self.P)))
            scores = [score_returns(val[m], self.cfg, window=len(val[m])) for m in range(self.P)]
            test_returns = [val[m] for m in range(self.P)]
        else:
            val = None
            scores = [score_returns(own[m], self.cfg) for m in range(self.P)]
            test_returns = own
            if self.cfg.pbt.score_since_exploit:
                eligible = [len(own[m]) >= self.cfg.pbt.score_window for m in range(self.P)]
        scores = [None if m in faulty else s for m, s in enumerate(scores)]  # faulty: no score, so never a donor
        hparams = [info[m]["hparams"] for m in range(self.P)]
        updates = [info[m]["updates"] for m in range(self.P)]
        now = self.rundir.elapsed()
        for m in range(self.P):
            rows = per_member[m]
            for row in rows:
                row["round"] = r
                row["time"] = now
                for name in self.space.names:
                    row[f"pbt/hp/{name}"] = hparams[m][name]
            rows[-1]["pbt/score"] = scores[m]
            if val is not None:
                rows[-1]["eval/validation_return"] = float(np.mean(val[m])) if val[m] else None
            rows[-1]["pbt/exploitation_count"] = self.exploitation_count[m]
            self.rundir.write_metrics(m, rows)
        env_steps = info[0]["env_steps"]
        # env_steps / updates: member 0's (the schedule's); member_env_steps: each member's own count, lower for a
        # member restored after a fault (it lost the steps since the commit it was restored from).
        round_event = {"type": "round", "round": r, "env_steps": env_steps, "updates": updates[0],
                       "member_env_steps": [int(info[m]["env_steps"]) for m in range(self.P)],
                       "scores": [clean_float(s) for s in scores], "hparams": hparams, "train_s": round(train_s, 4)}
        if self.cfg.pbt.score_since_exploit:
            round_event["episodes_since_exploit"] = [len(x) for x in own]
        if self.cfg.agent.obs_outlier_factor is not None:
            round_event["obs_outliers"] = outliers
        self.rundir.write_event(round_event)

        decision = self.scheduler.step(scores, hparams, updates,
                                       returns=test_returns if self.cfg.pbt.ttest else None, eligible=eligible)
        decisions = decision.exploits
        for refused in decision.refused:
            self.rundir.write_event({"type": "exploit_refused", "round": r, "env_steps": env_steps, **refused})
        started = time.perf_counter()
        all_measurements = self.backend.exploit_many([(d.recipient, d.donor, d.new_hparams) for d in decisions])
        transfer_s = round(time.perf_counter() - started, 4)
        events = []
        for d, measurements in zip(decisions, all_measurements):
            self.lineage[d.recipient] = self.lineage[d.donor] + [{"round": r, "member": d.donor}]
            self.exploitation_count[d.recipient] += 1
            self.episode_marks[d.recipient] = int(info[d.donor].get("episodes", 0))
            event = {"type": "exploit", "round": r, "env_steps": env_steps, **d.to_dict(),
                     "hidden_state": self.cfg.pbt.hidden_state, "transfer_s": transfer_s,
                     "measurements": {k: clean_float(v) for k, v in measurements.items()}}
            self.rundir.write_event(event)
            self.rundir.write_scalars(d.recipient, env_steps, measurements)
            events.append(event)
        self.last_scores = scores
        self.round = r
        self.commit()
        return events

    def own_returns(self, info: dict[int, dict[str, Any]]) -> list[list[float]]:
        """Per member, the training returns its score is computed from, oldest first.

        Every recent return (``member_info``'s ``recent_returns``) by default; with ``pbt.score_since_exploit``,
        only those of the episodes it finished since its last exploit (its ``episodes`` count minus the count it
        inherited then, :attr:`episode_marks`).
        """
        out = []
        for m in range(self.P):
            returns = list(info[m]["recent_returns"])
            if self.cfg.pbt.score_since_exploit:
                own = int(info[m].get("episodes", len(returns))) - self.episode_marks[m]
                returns = returns[-own:] if own > 0 else []
            out.append(returns)
        return out

    def handle_obs_outliers(self, r: int, per_member: dict[int, list[dict[str, Any]]]) -> list[int]:
        """Count each member's raw observation outliers of round ``r`` (``health/obs_outliers``, removed from the
        metric rows with the rest of :data:`OBS_OUTLIER_KEYS`). At a member's first, warns
        (:class:`ObsOutlierWarning`) and records an ``obs_outlier`` event naming the environment, the member, the
        update and the observation index. Returns the count per member this round; changes nothing in training."""
        counts = [0] * self.P
        for m in range(self.P):
            count, first = pop_obs_outliers(per_member.get(m, []))
            counts[m] = count
            if first is None:
                continue
            if self.obs_outliers[m] == 0:
                self.rundir.write_event({"type": "obs_outlier", "round": r, "member": m, "env": self.cfg.env.id,
                                         **first, "count": count, "factor": self.cfg.agent.obs_outlier_factor})
                warnings.warn(ObsOutlierWarning(obs_outlier_message(self.cfg, m, first)), stacklevel=2)
            self.obs_outliers[m] += count
        return counts

    def handle_faults(self, r: int, per_member: dict[int, list[dict[str, Any]]]) -> set[int]:
        """Find members whose training went non-finite in round ``r`` and apply ``run.on_member_fault`` to them.

        Removes the ``health/nonfinite`` flag from the metric rows. Returns the faulty members (restored by now).
        Raises :class:`MemberFaultError` when the policy is ``error``, when a member reaches
        ``run.max_member_faults`` faults, or when no healthy member is left to copy before the first commit; then no
        member is restored, every faulty member of the round gets a ``member_fault`` event with action ``stop`` (and
        a ``reason`` where its own fault stops the run), and the message names each of them with its update and
        quantity.
        """
        faults: dict[int, tuple[int, str]] = {}
        for m, rows in per_member.items():
            for row in rows:
                quantity = first_nonfinite(row.pop("health/nonfinite", 0) or 0)
                if quantity is not None and m not in faults:
                    faults[m] = (int(row.get("update", 0)), quantity)
        run = self.cfg.run
        healthy = [d for d in range(self.P) if d not in faults]
        stops: dict[int, str] = {}  # member -> why its fault stops the run
        for m in sorted(faults):
            self.member_faults[m] += 1
            if run.on_member_fault == "error":
                stops[m] = "run.on_member_fault is 'error'"
            elif self.member_faults[m] >= run.max_member_faults:
                stops[m] = f"run.max_member_faults ({run.max_member_faults}) reached"
            elif self.round == 0 and not healthy:
                stops[m] = "no healthy member to copy before the first commit"

        def what(m: int) -> str:
            update, quantity = faults[m]
            return (f"member {m} produced a non-finite {quantity} at update {update} "
                    f"(fault {self.member_faults[m]} of this member)")

        def event(m: int) -> dict[str, Any]:
            update, quantity = faults[m]
            return {"type": "member_fault", "round": r, "member": m, "update": update, "quantity": quantity,
                    "faults": self.member_faults[m]}

        if stops:  # nothing is restored: every faulty member of the round is named, with its quantity
            for m in sorted(faults):
                self.rundir.write_event({**event(m), "action": "stop", **({"reason": stops[m]} if m in stops else {})})
            reasons: dict[str, list[int]] = {}
            for m, why in stops.items():
                reasons.setdefault(why, []).append(m)
            if len(faults) == 1:
                why = next(iter(reasons))
            else:
                why = "; ".join(f"{reason} (member{'s' if len(ms) > 1 else ''} {', '.join(map(str, ms))})"
                                for reason, ms in reasons.items())
            kept = (f"its last committed round ({self.round}) is intact (rpbt resume continues from it)"
                    if self.round > 0 else "nothing had been committed yet")
            raise MemberFaultError(f"env {self.cfg.env.id!r}: {'; '.join(what(m) for m in sorted(faults))}; {why}. "
                                   f"The run stops; {kept}.")
        for m in sorted(faults):
            # The retry runs on other episodes with a forked generator (retry = the fault count): restoring the
            # same state onto the same episodes would replay the failed attempt step for step.
            retry = self.member_faults[m]
            if self.round > 0:
                state = self.rundir.read_runner_state()
                self.backend.restore(m, MemberState.load(
                    self.rundir.checkpoint_dir / state["checkpoint_dir"] / f"member_{m}.pt"), retry=retry)
                action = f"restored from round {self.round}"
            else:
                donor = min(healthy)  # its member state, on fresh episodes: the faulty carried state is dropped
                donor_state = self.backend.snapshot(donor)
                self.backend.restore(m, donor_state, retry=retry)
                if "episodes" in donor_state.tensors:  # its returns are the donor's from now on
                    self.episode_marks[m] = int(donor_state.tensors["episodes"])
                self.lineage[m] = self.lineage[donor] + [{"round": r, "member": donor}]  # its weights are the donor's
                action = f"copied member {donor}"
            self.rundir.write_event({**event(m), "action": action})
            log.warning("env %r: %s; %s", self.cfg.env.id, what(m), action)
        return set(faults)

    def commit(self) -> None:
        """Commit the round just played.

        1. Checkpoint every member into a fresh ``checkpoints/round_<r>/`` (a leftover folder of that round from
           an interrupted attempt is removed first: nothing committed names it) and write the round's runner state
           next to them (``round_<r>/runner.json``).
        2. Atomically replace ``checkpoints/runner.json`` (the commit point), whose ``history`` lists the kept
           rounds, newest first: this one and up to ``run.keep_checkpoints - 1`` before it.
        3. Delete every other ``round_*`` folder, then rewrite ``summary.json``.
        """
        folder = round_folder(self.round)
        target = self.rundir.checkpoint_dir / folder
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        self.backend.save_checkpoints(target)
        history = [folder] + [f for f in self.history if f != folder][: max(self.cfg.run.keep_checkpoints, 1) - 1]
        state = {
            "round": self.round, "checkpoint_dir": folder, "scheduler": self.scheduler.state_dict(),
            "lineage": self.lineage, "exploitation_count": self.exploitation_count,
            "member_faults": self.member_faults, "obs_outliers": self.obs_outliers,
            "scores": [clean_float(s) for s in self.last_scores], "env_steps": self._env_steps(),
            "time_s": self.rundir.elapsed(), "history": history, "episode_marks": self.episode_marks,
        }
        self.rundir.write_round_state(folder, state)
        self.rundir.write_runner_state(state)
        self.history = history
        for old in self.rundir.checkpoint_dir.glob("round_*"):
            if old.name not in history and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        self.rundir.write_summary(self.summary())

    # ------------------------------------------------------------------------------------------ reporting
    def _env_steps(self) -> int:
        return min(self.round * self.cfg.pbt.perturbation_interval, self.total_updates) * self.steps_per_update

    def best_member(self) -> Optional[int]:
        sign = 1.0 if self.cfg.pbt.mode == "max" else -1.0
        valid = [(sign * s, -m) for m, s in enumerate(self.last_scores) if s is not None and math.isfinite(s)]
        return -max(valid)[1] if valid else None

    def _describe(self) -> str:
        best = self.best_member()
        score = f"{self.last_scores[best]:.3f}" if best is not None else "n/a"
        return f"round {self.round}/{self.total_rounds}  best score {score}"

    def summary(self) -> dict[str, Any]:
        best = self.best_member()
        info = self.backend.member_info() if self.backend is not None else {}
        return {
            "round": self.round,
            "rounds_total": self.total_rounds,
            "env_steps": self._env_steps(),  # the schedule's; member_env_steps: each member's own
            "member_env_steps": [int(info[m]["env_steps"]) for m in range(self.P)] if info else None,
            "best_member": best,
            "best_score": clean_float(self.last_scores[best]) if best is not None else None,
            "hparams": info.get(best, {}).get("hparams") if best is not None else None,
            "scores": [clean_float(s) for s in self.last_scores],
            "lineage": self.lineage[best] if best is not None else [],
            "exploitation_count": self.exploitation_count,
            "wall_time_s": round(self.rundir.elapsed(), 2),
        }
