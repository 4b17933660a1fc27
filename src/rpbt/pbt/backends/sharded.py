"""The driver half of the sharded backends (process and Ray): the population in shards, each held by one worker.

:class:`ShardedBackend` implements the :class:`~rpbt.pbt.backends.base.Backend` protocol by sending typed commands
(:mod:`rpbt.pbt.backends.commands`) to the shards' workers, all shards at once (each command is sent to every
worker concerned, then the answers are collected). Its parts, each testable on its own:

- :class:`~rpbt.pbt.backends.routing.Routing`: which shard holds which member; exploits across shards move member
  states as bytes, exploits inside a shard are index copies; a round's exploits run in waves of one per shard;
- :class:`~rpbt.pbt.backends.journal.Journal`: per shard, the mutating commands since the last checkpoints;
- :class:`~rpbt.pbt.backends.recovery.Recovery`: a dead worker is started again, its members restored from the
  last committed checkpoints and the journal replayed, at most ``backend.max_failures`` times per shard.

A subclass says how a worker is started (:meth:`ShardedBackend._new_handle`): a process
(:mod:`rpbt.pbt.backends.process`) or a Ray actor (:mod:`rpbt.pbt.backends.ray`).

Members are seeded by their global index (:func:`rpbt.seeding.member_seed`), and every per-member operation of the
batched learner is independent of the other members, so a shard trains its members bit for bit like the
whole-population shard *at the same torch thread count*. Errors raised *inside* a worker (a bad checkpoint, a bad
environment id) are not failures: they are raised in the driver with their own type.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from rpbt.checkpoint import MemberState
from rpbt.config import Config
from rpbt.pbt.backends.commands import (
    Command,
    EvaluateEpisodes,
    EvaluateMembers,
    Exploit,
    MemberInfo,
    Restore,
    SaveMembers,
    Snapshot,
    SnapshotMany,
    Train,
)
from rpbt.pbt.backends.errors import BackendError, WorkerDied
from rpbt.pbt.backends.journal import Journal
from rpbt.pbt.backends.recovery import Recovery
from rpbt.pbt.backends.routing import Routing, SnapshotCache
from rpbt.run.storage import CheckpointFolder

__all__ = ["ShardedBackend", "usable_cpus"]


def usable_cpus() -> int:
    """CPUs this process may run on (``sched_getaffinity`` where available, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class ShardedBackend:
    """Driver half shared by the process and Ray backends: commands to every shard at once, plus routing, journal
    and recovery (see the module docstring).

    Subclasses implement :meth:`_new_handle` (start a shard's worker; the handle has ``send(command)``,
    ``recv() -> result`` raising :class:`WorkerDied`, ``wait_ready()``, ``kill()`` and ``close()``) and call
    :meth:`_start_all` at the end of their constructor.
    """

    kind = "sharded"

    def __init__(self, cfg: Config, hparams: Sequence[dict], num_shards: int):
        P = cfg.pbt.population_size
        if len(hparams) != P:
            raise ValueError(f"expected {P} initial hyperparameter dicts, got {len(hparams)}")
        self.cfg = cfg
        self.population_size = P
        self.routing = Routing(P, num_shards)
        self.shards = self.routing.shards
        self.shard_of = self.routing.shard_of
        self.num_workers = len(self.shards)
        self.hparams = [dict(h) for h in hparams]
        self.max_failures = cfg.backend.max_failures
        self.journals = [Journal() for _ in self.shards]
        self.recovery = Recovery(self.kind, self.routing, self.journals, self.max_failures)
        self.snapshots = SnapshotCache(P)
        self._handles: list[Any] = [None] * len(self.shards)
        self._closed = False

    @property
    def failures(self) -> list[int]:
        """Deaths of each shard's worker so far."""
        return self.recovery.failures

    def _new_handle(self, k: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _start_all(self) -> None:
        """Start every shard's worker concurrently, then wait until each has built its learner."""
        try:
            for k in range(len(self.shards)):
                self._handles[k] = self._new_handle(k)
            for k in range(len(self.shards)):
                try:
                    self._handles[k].wait_ready()
                except WorkerDied as err:
                    self._recover(k, err.cause)
        except BaseException:
            self.close()
            raise

    def attach_run(self, rundir: Any) -> None:
        """Use ``rundir`` (a :class:`~rpbt.run.rundir.RunDirectory`) for failure events and to find the last
        committed checkpoints (``checkpoints/runner.json`` -> ``checkpoints/<folder>/member_<i>.pt``)."""
        self.recovery.attach_run(rundir)

    # --------------------------------------------------------------------------------------- commands
    def _run_all(self, commands: dict[int, Command]) -> dict[int, Any]:
        """Send each shard its command, then collect the answers; restart dead shards and resend theirs."""
        if self._closed:
            raise BackendError(f"{self.kind} backend is closed")
        results: dict[int, Any] = {}
        pending = dict(commands)
        while pending:
            dead: dict[int, str] = {}
            sent = []
            for k, command in pending.items():
                try:
                    self._handles[k].send(command)
                    sent.append(k)
                except WorkerDied as err:
                    dead[k] = err.cause
            error: Optional[BaseException] = None
            for k in sent:  # every answer is read, even after an error, so no pipe is left out of step
                try:
                    results[k] = self._handles[k].recv()
                except WorkerDied as err:
                    dead[k] = err.cause
                except Exception as err:  # noqa: BLE001 - raised by the shard itself: re-raised below
                    error = error or err
            if error is not None:  # what the other shards did still happened: journal it for a restart's replay
                for k in results:
                    self.journals[k].record(commands[k])
                raise error
            for k, cause in dead.items():
                self._recover(k, cause)
            pending = {k: commands[k] for k in dead}
        for k, command in commands.items():
            self.journals[k].record(command)
        return results

    def _call(self, k: int, command: Command) -> Any:
        return self._run_all({k: command})[k]

    def _recover(self, k: int, cause: str) -> None:
        self.recovery.recover(k, cause, self._restart, self._kill)

    def _restart(self, k: int) -> None:
        """Start shard ``k``'s worker again, restore its members from the last commit and replay its journal."""
        self._kill(k)
        self.snapshots.clear()
        folder, replay = self.recovery.plan(k)
        self._handles[k] = self._new_handle(k)
        self._handles[k].wait_ready()
        self.recovery.bring_back(k, self._handles[k], folder, replay)

    def _kill(self, k: int) -> None:
        h = self._handles[k]
        if h is not None:
            try:
                h.kill()
            except Exception:  # pragma: no cover - already gone
                pass

    def _gather(self, results: dict[int, dict], members: Sequence[int]) -> dict:
        out: dict = {}
        for k in sorted(results):
            out.update(results[k])
        return {int(m): out[int(m)] for m in members}

    # --------------------------------------------------------------------------------------- backend interface
    def train(self, n_updates: int) -> dict[int, list[dict[str, float]]]:
        """``n_updates`` PPO updates on every shard at once; per member, its list of per-update metric rows."""
        results = self._run_all({k: Train(int(n_updates)) for k in range(len(self.shards))})
        self.snapshots.changed_all()
        return self._gather(results, range(self.population_size))

    def member_info(self) -> dict[int, dict[str, Any]]:
        results = self._run_all({k: MemberInfo() for k in range(len(self.shards))})
        return self._gather(results, range(self.population_size))

    def evaluate_members(self, members: Sequence[int], split: str = "validation") -> dict[int, list[float]]:
        """Deterministic evaluation returns per member, each shard evaluating its own members in parallel."""
        commands = {k: EvaluateMembers(ms, split) for k, ms in self.routing.by_shard(members).items()}
        return self._gather(self._run_all(commands), members)

    def evaluate_episodes(self, members: Sequence[int], seeds: Sequence[int], split: str = "validation"
                          ) -> dict[int, dict[str, list]]:
        """Deterministic episodes reset with ``seeds``, returns and lengths per member, each shard evaluating its own
        members in parallel (see :meth:`rpbt.pbt.backends.shard.Shard.evaluate_episodes`)."""
        commands = {k: EvaluateEpisodes(ms, list(seeds), split) for k, ms in self.routing.by_shard(members).items()}
        return self._gather(self._run_all(commands), members)

    def snapshot(self, member: int) -> MemberState:
        """Member's whole state, fetched from its shard as bytes (remembered for a following :meth:`exploit`)."""
        self.routing.check(member)
        k = self.shard_of[member]
        data = self._call(k, Snapshot(member))
        state = MemberState.from_bytes(data, source=f"{self.routing.describe(k)} member {member}")
        self.snapshots.remember(member, state, data)
        return state

    def restore(self, member: int, state: MemberState, retry: int = 0) -> None:
        self.routing.check(member)
        self._call(self.shard_of[member], Restore(member, state.to_bytes(), int(retry)))
        self.snapshots.changed(member)

    def exploit(self, recipient: int, donor_state: MemberState, new_hparams: dict[str, float]) -> dict[str, float]:
        """Copy ``donor_state`` into ``recipient`` (see :func:`rpbt.pbt.transfer.exploit`); returns measurements.

        When ``donor_state`` is an unchanged snapshot of a member of the recipient's shard, the copy is an index
        copy inside the worker; otherwise the state travels as bytes of the checkpoint format.
        """
        self.routing.check(recipient)
        found = self.snapshots.find(donor_state)
        if found is None:
            command: Command = Exploit(recipient, donor_state.to_bytes(), dict(new_hparams))
        else:
            donor, current, data = found
            local = current and self.shard_of[donor] == self.shard_of[recipient]
            command = Exploit(recipient, donor if local else data, dict(new_hparams))
        return self._exploit_waves([(recipient, command)])[0]

    def exploit_many(self, transfers: Sequence[tuple[int, int, dict[str, float]]]) -> list[dict[str, float]]:
        """Several exploits ``(recipient, donor, new_hparams)`` (see :meth:`Backend.exploit_many`), the shards
        working at the same time.

        A donor in its recipient's shard is copied inside the worker (an index copy) and never leaves it; the other
        donors' states (and any donor that is also a recipient here) are fetched first, as bytes of the checkpoint
        format, each shard sending its own at the same time. The exploits then run in waves of at most one per
        shard, each shard's in the order given, so the result is that of the exploits one after another (an
        exploit touches only its recipient, and its random stream depends on neither the backend nor the order:
        :func:`rpbt.seeding.exploit_seed`). Returns the measurements in the order given.
        """
        for r, d, _ in transfers:
            self.routing.check(r)
            self.routing.check(d)
        travels = self.routing.travels(transfers)
        data = self._snapshot_bytes(sorted({int(d) for (_, d, _), t in zip(transfers, travels) if t}))
        return self._exploit_waves([
            (r, Exploit(r, data[d] if t else d, dict(hp)))
            for (r, d, hp), t in zip(transfers, travels)])

    def _snapshot_bytes(self, members: Sequence[int]) -> dict[int, bytes]:
        """Members' states as bytes of the checkpoint format, fetched in waves of one member per shard."""
        out: dict[int, bytes] = {}
        for wave in self.routing.waves(members):
            results = self._run_all({k: Snapshot(members[i]) for k, i in wave.items()})
            out.update({int(members[i]): results[k] for k, i in wave.items()})
        return out

    def _exploit_waves(self, commands: Sequence[tuple[int, Command]]) -> list[dict[str, float]]:
        """Run exploit commands ``(recipient, command)`` in waves of at most one per shard (each shard's in the
        order given); returns their answers in the order given."""
        out: list[dict[str, float]] = [{} for _ in commands]
        for wave in self.routing.waves([recipient for recipient, _ in commands]):
            for i in wave.values():  # before sending: an earlier snapshot of a recipient is stale even if this fails
                self.snapshots.changed(commands[i][0])
            results = self._run_all({k: commands[i][1] for k, i in wave.items()})
            for k, i in wave.items():
                out[i] = results[k]
        return out

    def save_checkpoints(self, directory: Union[str, Path]) -> None:
        """Write ``member_<i>.pt`` for every member into the folder ``directory`` (a path or fsspec URL), atomically,
        and mark the folder in every shard's journal. With ``run.storage`` set each shard writes its own members
        there (:class:`~rpbt.pbt.backends.commands.SaveMembers`: the states never pass through the driver);
        otherwise the driver fetches the states and writes them (the run directory may exist on its disk only)."""
        if self.cfg.run.storage is not None:
            self._run_all({k: SaveMembers(str(directory)) for k in range(len(self.shards))})
        else:
            folder = CheckpointFolder(directory)
            results = self._run_all({k: SnapshotMany(list(ms)) for k, ms in enumerate(self.shards)})
            for k in range(len(self.shards)):
                for m, data in results[k].items():
                    folder.save_member(m, data)
        for journal in self.journals:
            journal.mark(directory)

    def close(self) -> None:
        """Stop every worker (politely, then by force). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for k, h in enumerate(self._handles):
            if h is None:
                continue
            try:
                h.close()
            except Exception:  # noqa: BLE001 - a dead worker needs no goodbye
                self._kill(k)
        self._handles = [None] * len(self.shards)
