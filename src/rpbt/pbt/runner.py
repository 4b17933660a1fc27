"""The round loop, backend-agnostic: train -> score -> decide -> transfer -> record.

Rounds are synchronous: every member trains ``pbt.perturbation_interval`` updates, then the scheduler decides on
all ready members at once. The runner never looks inside a learner; the backend moves member states and returns
metrics; the scheduler (pure) decides. After each round the runner commits: member checkpoints and the round's
runner state into a new round folder, then ``checkpoints/runner.json`` (atomically) naming it — the commit point a
resume starts from. Only the last ``run.keep_checkpoints`` committed rounds are kept; an older folder is deleted
only after the commit, so a donor's checkpoint is never deleted while something may still need it (Ray issue
9036). A resume restores the newest kept round whose checkpoints all load and fit, and says which it skipped.

Member faults and observation outliers are handled by :mod:`rpbt.pbt.faults` (``run.on_member_fault``); the
score comes from the run's :class:`~rpbt.pbt.scoring.ScoreSource`, decided once; each member's bookkeeping is one
:class:`~rpbt.pbt.records.MemberRecord`; what a round writes is :mod:`rpbt.pbt.round_log`'s.

Scores after an exploit: the recipient inherits the donor's recent episode returns with its member state, so by
default its next score is partly the donor's. With ``pbt.score_since_exploit`` the runner remembers, at every
exploit, the episode count the recipient inherited (``member_info``'s ``episodes``; its record's ``episode_mark``,
saved in ``runner.json`` as ``episode_marks``) and scores each member on the episodes it finished since then
(episodes that were running at the exploit count: their last steps were played by the new weights). A member with
fewer than ``pbt.score_window`` such episodes is still scored on what it has (None with none), but takes no part in
exploit (neither donor nor recipient, nor in a t-test) until it has the window. Off by default because it changes
decisions after the first exploit. ``pbt.ttest`` is given the same returns the score is computed from (validation
returns when the score source is validation); a pair it refuses is written as an ``exploit_refused`` event.

Callbacks (:mod:`rpbt.callbacks`) are called after each round's commit; one returning ``False`` stops the run there
(a ``stop`` event, no ``end``), so the run directory is that of a run interrupted at the round boundary. The budget
is counted in learner updates played (``runner.json``'s ``updates``), not rounds, so a resume with a larger
``run.total_env_steps`` (:func:`rpbt.pbt.resume.resume_config`) goes on from where the run stopped.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

from rpbt.callbacks import CallbackList, StopAtScore
from rpbt.checkpoint import MemberState
from rpbt.config import Config, ConfigError, PBTConfig, member_hparams
from rpbt.pbt.backends import backend_reason, make_backend, resolve_kind
from rpbt.pbt.backends.base import Backend
from rpbt.pbt.faults import MemberFaultError, MemberFaults, ObsOutlierWarning
from rpbt.pbt.records import MemberRecord, records_from_state, records_to_state
from rpbt.pbt.resume import ResumeWarning, restore_newest, resume_candidates
from rpbt.pbt.round_log import RoundLog, exploit_info, round_info, run_summary, training_start_info
from rpbt.pbt.scheduler import Decision, PBTScheduler
from rpbt.pbt.scoring import RoundScores, ScoreFn, ScoreSource, check_run_inputs
from rpbt.pbt.selection import truncation_group_size
from rpbt.pbt.space import SearchSpace
from rpbt.run.output import say
from rpbt.run.rundir import RunDirectory, RunDirError, round_folder
from rpbt.run.storage import CheckpointStore, is_url

# The errors and warnings a run raises, importable from the module that runs it.
__all__ = ["PopulationRunner", "MemberFaultError", "ObsOutlierWarning", "ResumeWarning", "NoExploitWarning",
           "SingleDonorWarning", "single_donor_warning"]


class NoExploitWarning(UserWarning):
    """The run's budget ends before any member is first ready (``pbt.burn_in`` / ``pbt.perturbation_interval``
    beyond the run's updates): it trains, but PBT never exploits or explores."""


class SingleDonorWarning(UserWarning):
    """Truncation selection's top and bottom groups hold one member each at this ``pbt.population_size`` and
    ``pbt.quantile_fraction``: every exploit copies the single best member (see :func:`single_donor_warning`)."""


def no_exploit_warning(pbt: PBTConfig, total_updates: int) -> Optional[str]:
    """What :meth:`PopulationRunner.start` says when no member is ever ready in the run's ``total_updates``, else
    None."""
    first_ready = max(pbt.burn_in, pbt.perturbation_interval)
    if first_ready <= total_updates:
        return None
    return (f"no member is ever ready: the first ready point is update {first_ready} (max of pbt.burn_in "
            f"{pbt.burn_in} and pbt.perturbation_interval {pbt.perturbation_interval}) but the run has "
            f"{total_updates} updates (run.total_env_steps / (env.num_envs x agent.num_steps)): PBT will "
            f"never exploit or explore")


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

log = logging.getLogger(__name__)


def checkpoint_store(cfg: Config, rundir: RunDirectory) -> tuple[CheckpointStore, Optional[str]]:
    """(the store a run's committed member states go to, the ``storage`` recorded in its commit point): the run
    directory's ``checkpoints/`` (recorded as None) or ``run.storage/<run directory's name>`` (a local path made
    absolute, or the URL as given)."""
    if cfg.run.storage is None:
        return rundir.store(), None
    root = cfg.run.storage.rstrip("/")
    root = f"{root}/{rundir.path.name}" if is_url(root) else str(Path(root).resolve() / rundir.path.name)
    return CheckpointStore(root), root


def check_storage_free(cfg: Config, rundir: RunDirectory, overwrite: bool) -> None:
    """Refuse a new run whose ``run.storage/<run directory's name>`` already holds round folders, unless it replaces
    (``overwrite``) the run directory whose commit point names that storage: two run directories of one name (``a/exp``,
    ``b/exp``) share the folder, and the new run's first commit would delete the other's kept rounds.

    Raises :class:`~rpbt.run.rundir.RunDirError` naming the storage, the folders found and the ways out, and
    :class:`~rpbt.config.ConfigError` for ``memory://`` storage on worker processes (each would write its members
    into its own memory, where nothing else can read them)."""
    store, storage = checkpoint_store(cfg, rundir)
    if storage is not None and storage.startswith("memory://") and resolve_kind(cfg) != "local":
        raise ConfigError(f"run.storage: {cfg.run.storage} is one process's memory, but backend "
                          f"{resolve_kind(cfg)} writes the checkpoints from its worker processes, where nothing else "
                          "could read them; use a path or a shared URL, or backend.kind=local")
    found = store.folders() if storage is not None else []
    if not found:
        return
    if overwrite and rundir.runner_state_path.is_file():
        try:
            if json.loads(rundir.runner_state_path.read_text()).get("storage") == storage:
                return
        except (OSError, ValueError, AttributeError):
            pass
    shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
    raise RunDirError(f"run.storage: {storage} already holds checkpoints of another run ({shown}): checkpoints go to "
                      f"run.storage/<run directory's name>, and this run's first commit would delete them; choose "
                      f"another run.dir name or run.storage, or delete {storage} if that run is gone")


class PopulationRunner:
    """Plays PBT rounds for one run directory.

    Args:
        cfg: the resolved run config.
        run_dir: the run directory (created by :meth:`start`, reopened by :meth:`resume`).
        backend: optional prebuilt backend (tests); built from ``backend.kind`` otherwise.
        callbacks: :class:`rpbt.callbacks.Callback` instances, called in this (the driver) process; with
            ``run.stop_at_score`` a :class:`~rpbt.callbacks.StopAtScore` is added after them.
        score_fn: a custom score function (:mod:`rpbt.pbt.scoring`), called in this process.
    """

    def __init__(self, cfg: Config, run_dir: Path, backend: Optional[Backend] = None, callbacks: Sequence[Any] = (),
                 score_fn: Optional[ScoreFn] = None):
        self.cfg = cfg
        self.P = cfg.pbt.population_size
        self.rundir = RunDirectory(Path(run_dir), self.P, tensorboard=cfg.run.tensorboard)
        self.space = SearchSpace(cfg.pbt.search_space)
        self.scheduler = PBTScheduler.from_config(cfg.pbt, seed=cfg.run.seed)
        self.score_source = ScoreSource.from_config(cfg, score_fn)
        stop = [] if cfg.run.stop_at_score is None else [StopAtScore(cfg.run.stop_at_score, cfg.pbt.mode)]
        self.callbacks = CallbackList([*callbacks, *stop])
        self.faults = MemberFaults(cfg, self.rundir)
        self.log = RoundLog(cfg, self.rundir, self.space.names)
        self.steps_per_update = cfg.env.num_envs * cfg.agent.num_steps
        self.total_updates = math.ceil(cfg.run.total_env_steps / self.steps_per_update)
        self.updates_done = 0  # the schedule's learner updates per member so far (committed rounds)
        self.stopped: Optional[str] = None  # why a callback stopped the run (None: it goes on / ran to the end)
        self.evaluation_cost = {"episodes": 0, "env_steps": 0, "seconds": 0.0}  # score_source evaluation, so far
        self.round = 0
        self.members = [MemberRecord() for _ in range(self.P)]
        self.history: list[str] = []  # kept committed round folders, newest first
        self.skipped: list[dict[str, Any]] = []  # rounds a resume could not restore: {"round", "reason"}
        self._backend = backend
        self.backend: Optional[Backend] = None

    @property
    def total_rounds(self) -> int:
        """Rounds of the whole run: those played, then ``pbt.perturbation_interval`` updates each (the last one
        cut by the budget) until ``run.total_env_steps``."""
        left = max(self.total_updates - self.updates_done, 0)
        return self.round + math.ceil(left / self.cfg.pbt.perturbation_interval)

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self, overwrite: bool = False, init_from: Optional[Any] = None) -> None:
        """Sample initial hyperparameters, build the backend, then create (and lock) the run directory.

        The trading data is checked and the backend built first, so bad data or a bad environment or backend
        setting fails before anything is written. ``overwrite`` replaces an existing *rpbt run directory* at the
        path (never any other folder, never one that another rpbt process holds); raises
        :class:`~rpbt.run.rundir.RunDirError` otherwise. ``init_from``: a loaded
        :class:`~rpbt.pbt.warm_start.WarmStart` every member starts from (checked against the learner before
        anything is written).
        """
        data = check_run_inputs(self.cfg)
        no_exploit = no_exploit_warning(self.cfg.pbt, self.total_updates)
        if no_exploit is not None:
            warnings.warn(NoExploitWarning(no_exploit), stacklevel=2)
        hparams = self.scheduler.initial_hparams(member_hparams(self.cfg))
        if overwrite and self.rundir.path.exists():
            self.rundir.check_replaceable()
        check_storage_free(self.cfg, self.rundir, overwrite)
        self.backend = self._backend or make_backend(self.cfg, hparams)
        if init_from is not None:
            try:
                init_from.apply(self.backend, self.cfg)
            except BaseException:
                self.close()
                raise
        single_donor = single_donor_warning(self.cfg.pbt) if no_exploit is None else None
        if single_donor is not None:  # once the backend is built: a run that cannot start says only its error
            warnings.warn(SingleDonorWarning(single_donor), stacklevel=2)
        if overwrite and self.rundir.path.exists():
            shutil.rmtree(self.rundir.path)
        self.rundir.create(self.cfg)
        self.rundir.lock()
        self.rundir.set_elapsed(0.0)
        self.backend.attach_run(self.rundir)  # sharded backends: failure events, committed checkpoints
        self.rundir.write_event(_start_event(self, hparams, data, init_from))

    def resume(self, changes: Optional[dict[str, list[Any]]] = None) -> None:
        """Reopen the run directory at its newest restorable committed round and restore every member from it.

        Candidates are the kept rounds of ``checkpoints/runner.json`` (``history``, newest first). A round whose
        runner state or any member checkpoint does not load, or does not fit this run's learner, is skipped (and
        recorded in :attr:`skipped`, the ``resume`` event and a :class:`ResumeWarning`); the first that restores
        wins. Nothing in the run directory changes until one has been restored; then the events and metrics of
        later rounds are dropped, temporary files of cut-short writes are removed and, after a skip, runner.json is
        rewritten to name the resumed round. ``changes``: the budget keys a resume changed (``{key: [old, new]}``,
        :func:`rpbt.pbt.resume.resume_config`; this runner's config holds the new values): ``config.yaml`` is
        rewritten with them once the round is restored, and the ``resume`` event names them. Raises
        :class:`~rpbt.checkpoint.CheckpointError` (naming the files) when no kept round restores,
        :class:`~rpbt.run.rundir.RunDirError` for a missing or bad runner.json, :class:`~rpbt.config.ConfigError`
        for a ``run.total_env_steps`` below the env steps already played.
        """
        self.rundir.lock()
        try:
            latest = self.rundir.read_runner_state()
            _check_resumable(self, latest)
            self.skipped = []
            state = restore_newest(self.rundir, latest, self.scheduler, self._backend_for, self.skipped)
            _check_budget(self, state)
        except BaseException:
            if self.backend is not None:
                self.backend.close()
                self.backend = None
            self.rundir.unlock()
            raise
        _reopen(self, latest, state, changes)

    def _backend_for(self, states: list[MemberState]) -> Backend:
        """The backend a resume restores into, built (once) with the hyperparameters of the round it restores."""
        if self.backend is None:
            self.backend = self._backend or make_backend(self.cfg, [s.hparams() for s in states])
            self.backend.attach_run(self.rundir)  # sharded backends: failure events, committed checkpoints
        return self.backend

    def run(self, progress: Optional[bool] = None) -> dict[str, Any]:
        """Play rounds until every member has ``run.total_env_steps`` or a callback stops the run; returns the final
        summary (with ``stopped``, the reason, after a stop: then no ``end`` event is written, as after an
        interruption at a round boundary, and ``rpbt resume`` continues the run)."""
        try:
            if self.callbacks and not self.callbacks.call("on_training_start", training_start_info(self)):
                _stop(self)
            if self.stopped is None:
                _play_all(self, self.cfg.run.progress if progress is None else progress)
            summary = self.summary()
            if self.stopped is None:
                self.log.hparams()
                self.rundir.write_event({"type": "end", "round": self.round, "env_steps": self.env_steps()})
            self.callbacks.call("on_training_end", {"round": self.round, "summary": summary,
                                                    "stopped": self.stopped})
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
        started = time.perf_counter()
        n_updates = self._updates_in(r)
        per_member = self.backend.train(n_updates)
        train_s = time.perf_counter() - started
        outliers = self.faults.count_obs_outliers(r, per_member, self.members)  # first: a spike may be the fault
        faulty = self.faults.handle(r, per_member, self.members, self.backend)
        info = self.backend.member_info()
        scored = self.score_round(info, faulty, r)
        self.log.metrics(r, per_member, info, scored, self.members)
        self.log.round(r, info, scored, outliers, train_s)
        if scored.cost is not None:
            self.evaluation_cost = {k: round(v + scored.cost[k], 4) for k, v in self.evaluation_cost.items()}
        decision = self.scheduler.step(scored.scores, [info[m]["hparams"] for m in range(self.P)],
                                       [info[m]["updates"] for m in range(self.P)],
                                       returns=scored.returns if self.cfg.pbt.ttest else None, eligible=scored.eligible)
        env_steps = info[0]["env_steps"]
        self.log.refused(r, env_steps, decision.refused)
        measurements, transfer_s = self.transfer(decision.exploits)
        events = [self.log.exploit(r, env_steps, d, m, transfer_s) for d, m in zip(decision.exploits, measurements)]
        self.record(r, info, scored, decision.exploits)
        self.round = r
        self.updates_done += n_updates
        self.commit()
        if self.callbacks:
            _round_hooks(self, info, scored, events)
        return events

    def _updates_in(self, r: int) -> int:
        """Learner updates of round ``r``: ``pbt.perturbation_interval``, fewer in a last round cut by the budget
        (counted from the updates played, so a budget extended on resume continues where the run stopped)."""
        return min(self.cfg.pbt.perturbation_interval, self.total_updates - self.updates_done)

    def score_round(self, info: dict[int, dict[str, Any]], faulty: set[int], r: int = 0) -> RoundScores:
        """Every member's score of round ``r`` from the run's score source; a faulty member has none (never a
        donor). The evaluation source evaluates only members ready at this round (:meth:`PBTScheduler.ready`)."""
        marks = [record.episode_mark for record in self.members]
        ready = [self.scheduler.ready(m, info[m]["updates"]) and m not in faulty for m in range(self.P)]
        return self.score_source.score_round(self.backend, range(self.P), info, marks, round_=r,
                                             ready=ready).without(faulty)

    def transfer(self, exploits: list[Decision]) -> tuple[list[dict[str, Any]], float]:
        """Carry out the exploits (one backend call); returns each one's measurements and the seconds it took."""
        started = time.perf_counter()
        measurements = self.backend.exploit_many([(d.recipient, d.donor, d.new_hparams) for d in exploits])
        return measurements, round(time.perf_counter() - started, 4)

    def record(self, r: int, info: dict[int, dict[str, Any]], scored: RoundScores, exploits: list[Decision]) -> None:
        """Update the member records: each recipient's lineage, exploit count and episode mark; every score."""
        for d in exploits:
            recipient = self.members[d.recipient]
            recipient.copied_from(self.members[d.donor], d.donor, r)
            recipient.exploitation_count += 1
            # The episode count the recipient now holds: the donor's, or its own when only weights moved.
            holder = d.recipient if self.cfg.pbt.transfer == "weights_only" else d.donor
            recipient.episode_mark = int(info[holder].get("episodes", 0))
        for record, score in zip(self.members, scored.scores):
            record.score = score

    def commit(self) -> None:
        """Commit the round just played.

        1. Checkpoint every member into a fresh ``round_<r>/`` of the checkpoint store (``checkpoints/``, or
           ``run.storage``: :func:`checkpoint_store`; a leftover folder of that round from an interrupted attempt is
           removed first: nothing committed names it) and write the round's runner state next to them
           (``round_<r>/runner.json``).
        2. Atomically replace ``checkpoints/runner.json`` (the commit point), whose ``history`` lists the kept
           rounds, newest first: this one and up to ``run.keep_checkpoints - 1`` before it.
        3. Delete every other ``round_*`` folder, then rewrite ``summary.json``.
        """
        folder = round_folder(self.round)
        store, storage = checkpoint_store(self.cfg, self.rundir)
        target = store.folder(folder)
        target.make()
        self.backend.save_checkpoints(target.location)
        history = [folder] + [f for f in self.history if f != folder][: max(self.cfg.run.keep_checkpoints, 1) - 1]
        state = {"round": self.round, "checkpoint_dir": folder, "scheduler": self.scheduler.state_dict(),
                 **records_to_state(self.members), "env_steps": self.env_steps(), "updates": self.updates_done,
                 "time_s": self.rundir.elapsed(), "history": history, **({"storage": storage} if storage else {})}
        if self.score_source.kind == "evaluation":
            state["evaluation_cost"] = self.evaluation_cost
        if self.score_source.score_fn is not None:
            state["score_fn"] = _qualname(self.score_source.score_fn)
        self.rundir.write_round_state(folder, state, store)
        self.rundir.write_runner_state(state)
        self.history = history
        store.keep_only(history)
        self.rundir.write_summary(self.summary())

    # ------------------------------------------------------------------------------------------ reporting
    def env_steps(self) -> int:
        """The schedule's env steps per member so far (a member restored after a fault may have fewer)."""
        return self.updates_done * self.steps_per_update

    def best_member(self) -> Optional[int]:
        sign = 1.0 if self.cfg.pbt.mode == "max" else -1.0
        scores = [record.score for record in self.members]
        valid = [(sign * s, -m) for m, s in enumerate(scores) if s is not None and math.isfinite(s)]
        return -max(valid)[1] if valid else None

    def summary(self) -> dict[str, Any]:
        """``summary.json``'s content (:func:`rpbt.pbt.round_log.run_summary`)."""
        return run_summary(self)


def _start_event(runner: PopulationRunner, hparams: list[dict[str, Any]], data: Any, init_from: Any
                 ) -> dict[str, Any]:
    """The ``start`` event: backend, initial hyperparameters, search space; the warm start, score function and
    trading data when there are."""
    backend = runner.backend
    start = {"type": "start", "round": 0, "population_size": runner.P, "backend": backend.kind,
             "num_workers": backend.num_workers, "backend_reason": backend_reason(runner.cfg, backend),
             "hparams": hparams, "search_space": runner.space.to_json()}
    if init_from is not None:
        start["init_from"] = init_from.describe()
    if runner.score_source.score_fn is not None:
        start["score_fn"] = _qualname(runner.score_source.score_fn)
    if data is not None:  # trading: which bars, and how their timestamps were read (merged Date + Time, ...)
        start["data"] = {"path": data.source or data.name, "bars": len(data), "timestamps": data.timestamps_from}
        log.info("trading data %s: %d bars; timestamps: %s", start["data"]["path"], len(data), data.timestamps_from)
    return start


def _round_hooks(runner: PopulationRunner, info: dict[int, dict[str, Any]], scored: RoundScores,
                 events: list[dict[str, Any]]) -> None:
    """After a committed round: ``on_exploit`` for each exploit event, then ``on_round_end``; stop when any hook
    returned ``False``."""
    go_on = [runner.callbacks.call("on_exploit", exploit_info(e)) for e in events]
    go_on.append(runner.callbacks.call("on_round_end", round_info(runner, info, scored, events)))
    if not all(go_on):
        _stop(runner)


def _stop(runner: PopulationRunner) -> None:
    """A callback asked to stop (the round is committed): the reason in a ``stop`` event and ``summary.json``,
    and a line saying how to go on."""
    runner.stopped = runner.callbacks.stopped_by or "a callback returned False"
    runner.rundir.write_event({"type": "stop", "round": runner.round, "env_steps": runner.env_steps(),
                               "reason": runner.stopped})
    runner.rundir.write_summary(runner.summary())
    if runner.cfg.run.progress and runner.round == 0:
        say(f"rpbt: stopped before the first round: {runner.stopped}; nothing to resume (train again)")
    elif runner.cfg.run.progress:
        say(f"rpbt: stopped after round {runner.round}: {runner.stopped}; "
            f"`{resume_command(runner.rundir.path, runner.cfg, runner.stopped)}` goes on")


def resume_command(run_dir: Any, cfg: Config, stopped: Optional[str]) -> str:
    """The command that continues a run stopped by ``stopped`` (a :class:`~rpbt.callbacks.Callback` description):
    ``rpbt resume RUN``, plus ``run.stop_at_score=null`` when the config's early stop stopped it (kept, it would
    stop the resumed run again after one round)."""
    lift = cfg.run.stop_at_score is not None and str(stopped or "").startswith("StopAtScore")
    return f"rpbt resume {run_dir}" + (" run.stop_at_score=null" if lift else "")


def _check_resumable(runner: PopulationRunner, latest: dict[str, Any]) -> None:
    """Refuse a replay run, bad trading data, and a run scored by a ``score_fn`` resumed without one."""
    if latest.get("replay"):
        raise RunDirError(f"{runner.rundir.path}: a replay run (`rpbt replay`) cannot be resumed; run the same `rpbt "
                          "replay` again with --overwrite")
    check_run_inputs(runner.cfg)
    if latest.get("score_fn") and runner.score_source.score_fn is None:
        raise ConfigError(f"{runner.rundir.path} was scored by the custom score function {latest['score_fn']}; "
                          "resume it with rpbt.resume(run_dir, score_fn=...) (the command line cannot pass one)")


def _check_budget(runner: PopulationRunner, state: dict[str, Any]) -> None:
    """Set the updates played from the restored round's state (older runs: the members' largest count) and refuse
    a budget below them."""
    played = state.get("updates", max(i["updates"] for i in runner.backend.member_info().values()))
    runner.updates_done = int(played)
    if runner.updates_done > runner.total_updates:
        raise ConfigError(f"run.total_env_steps {runner.cfg.run.total_env_steps} is below the "
                          f"{runner.updates_done * runner.steps_per_update} env steps per member "
                          f"{runner.rundir.path} has played; give more to extend it")


def _reopen(runner: PopulationRunner, latest: dict[str, Any], state: dict[str, Any],
            changes: Optional[dict[str, list[Any]]]) -> None:
    """After a resume restored ``state``: the runner's records, the run directory cut back to that round, the
    rewritten config (``changes``) and the ``resume`` event (see :meth:`PopulationRunner.resume`)."""
    runner.round = int(state["round"])
    runner.evaluation_cost.update(state.get("evaluation_cost") or {})
    runner.members = records_from_state(state, runner.P)
    folder = state.get("checkpoint_dir") or round_folder(runner.round)
    candidates = resume_candidates(latest)[1]
    runner.history = candidates[candidates.index(folder):]
    rundir = runner.rundir
    rundir.remove_temp_files()
    kept = rundir.truncate_events_after(runner.round)
    rundir.truncate_metrics_after(runner.round, int(state.get("env_steps") or 0))
    # The run's clock goes on from the resumed round's commit, or from a later kept line (an earlier resume).
    times = [float(e["time"]) for e in kept if isinstance(e.get("time"), (int, float))]
    rundir.set_elapsed(max([float(state.get("time_s") or 0.0), *times]))
    if runner.skipped:
        rundir.write_runner_state({**state, "history": runner.history})
        rundir.write_summary(runner.summary())
    backend = runner.backend
    event: dict[str, Any] = {"type": "resume", "round": runner.round, "backend": backend.kind,
                             "num_workers": backend.num_workers, "backend_reason": backend_reason(runner.cfg, backend)}
    if runner.skipped:
        event["skipped"] = runner.skipped
    if changes:
        rundir.write_config(runner.cfg)
        event["changed"] = changes
    rundir.write_event(event)


def _qualname(fn: Any) -> str:
    """``module:qualname`` of a function (what the run records of a custom score function)."""
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def _describe(runner: PopulationRunner) -> str:
    """``round 3/40  best score 0.812``: the progress line's words."""
    best = runner.best_member()
    score = f"{runner.members[best].score:.3f}" if best is not None else "n/a"
    return f"round {runner.round}/{runner.total_rounds}  best score {score}"


def _play_all(runner: PopulationRunner, show: bool) -> None:
    """Play the runner's remaining rounds: under a progress bar on a terminal when ``show``, else one plain line per
    round (logs, CI and pipes) when ``show``, else silently."""
    from rich.console import Console

    if show and Console().is_terminal:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = [TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.completed:,.0f}/{task.total:,.0f} env steps per member"),
                   TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns) as bar:
            task = bar.add_task(_describe(runner), total=runner.total_updates * runner.steps_per_update,
                                completed=runner.env_steps())
            while runner.round < runner.total_rounds and runner.stopped is None:
                runner.play_round()
                bar.update(task, completed=runner.env_steps(), description=_describe(runner))
        return
    while runner.round < runner.total_rounds and runner.stopped is None:
        runner.play_round()
        if show:
            say(f"{_describe(runner)}  env steps {runner.env_steps():,}")
