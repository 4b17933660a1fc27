"""Recovery of a sharded backend's dead worker: count the death, restart the shard from its members' last committed
checkpoints and replay its journal.

Each death writes a ``{"type": "failure"}`` event to the run directory; after more than ``backend.max_failures``
deaths of one shard the run stops with :class:`~rpbt.pbt.backends.errors.BackendError` naming the shard, its members
and the cause. The last committed checkpoint folder is the one named in ``checkpoints/runner.json``
(:meth:`Recovery.attach_run`); without a run directory it is the latest folder this backend wrote in full. The
commands journaled since that folder's mark are replayed (:meth:`Journal.replay
<rpbt.pbt.backends.journal.Journal.replay>`).

Environments of a restarted shard start fresh episodes (as on ``rpbt resume``), so the replayed updates are not
bit-identical to the lost ones.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional, Sequence

from rpbt.checkpoint import CheckpointError, MemberState
from rpbt.pbt.backends.commands import Command, Restore
from rpbt.pbt.backends.errors import BackendError, WorkerDied
from rpbt.pbt.backends.journal import Journal, folder_key
from rpbt.pbt.backends.routing import Routing
from rpbt.run.storage import CheckpointFolder

log = logging.getLogger(__name__)

__all__ = ["Recovery"]


class Recovery:
    """Deaths and restarts of the shards of one backend.

    Args:
        kind: the backend's name, for messages (``process``, ``ray``).
        routing: which shard holds which member.
        journals: one :class:`~rpbt.pbt.backends.journal.Journal` per shard.
        max_failures: ``backend.max_failures``, the deaths of one shard tolerated.
    """

    def __init__(self, kind: str, routing: Routing, journals: Sequence[Journal], max_failures: int):
        self.kind = kind
        self.routing = routing
        self.journals = journals
        self.max_failures = max_failures
        self.failures = [0] * len(routing)
        self.rundir: Any = None

    def attach_run(self, rundir: Any) -> None:
        """Use ``rundir`` (a :class:`~rpbt.run.rundir.RunDirectory`) for failure events and committed checkpoints."""
        self.rundir = rundir

    def committed(self) -> tuple[int, Optional[str]]:
        """(last committed round, the location of its checkpoint folder: a path or storage URL) from runner.json;
        (0, None) when nothing is committed."""
        if self.rundir is None or not self.rundir.runner_state_path.is_file():
            return 0, None
        state = self.rundir.read_runner_state()
        return int(state.get("round", 0)), self.rundir.store(state).folder(state["checkpoint_dir"]).location

    def recover(self, k: int, cause: str, restart: Callable[[int], None], kill: Callable[[int], None]) -> None:
        """Record the death of shard ``k``'s worker and ``restart`` it (again while restarts themselves die).

        Raises :class:`BackendError` (after ``kill``) on more than ``max_failures`` deaths of this shard; what
        ``restart`` raises other than :class:`WorkerDied` (a missing checkpoint) goes through.
        """
        while True:
            self.failures[k] += 1
            give_up = self.failures[k] > self.max_failures
            self._record_failure(k, cause, give_up)
            if give_up:
                kill(k)
                raise BackendError(
                    f"{self.kind} backend: {self.routing.describe(k)} failed {self.failures[k]} times, more than "
                    f"backend.max_failures={self.max_failures}; last cause: {cause}")
            log.warning("%s backend: %s died (%s); restarting it from its last committed checkpoints "
                        "(failure %d of at most %d)", self.kind, self.routing.describe(k), cause, self.failures[k],
                        self.max_failures)
            try:
                restart(k)
                return
            except WorkerDied as err:
                cause = err.cause

    def _record_failure(self, k: int, cause: str, give_up: bool) -> None:
        if self.rundir is None:
            return
        committed, _ = self.committed()
        self.rundir.write_event({"type": "failure", "round": committed + 1, "shard": k,
                                 "members": list(self.routing.shards[k]), "cause": cause,
                                 "failures": self.failures[k], "action": "stop" if give_up else "restart"})

    def plan(self, k: int) -> tuple[Optional[str], list[Command]]:
        """The checkpoint folder to restore shard ``k`` from (None: a fresh shard) and the commands to replay.

        Raises :class:`BackendError` when neither is possible (the committed folder is not one this backend wrote
        and the journal was pruned)."""
        journal = self.journals[k]
        _, committed = self.committed()
        folder: Optional[str] = None
        if committed is not None:
            target = folder_key(committed)
            folder = target if target in journal.marks() else None
        elif self.rundir is None:  # no run directory: the latest complete folder this backend wrote
            folder = next((f for f in reversed(journal.marks())
                           if all(CheckpointFolder(f).exists(f"member_{m}.pt") for m in self.routing.shards[k])),
                          None)
        if folder is None and journal.pruned:
            raise BackendError(f"{self.kind} backend: cannot restart {self.routing.describe(k)}: the committed "
                               f"checkpoint folder {committed} is not one this backend wrote")
        return folder, journal.replay(folder)

    def bring_back(self, k: int, handle: Any, folder: Optional[str], replay: Sequence[Command]) -> None:
        """Restore shard ``k``'s members from ``folder`` through its new worker ``handle``, then replay ``replay``.

        Raises :class:`~rpbt.checkpoint.CheckpointError` naming a checkpoint file that is missing or truncated."""
        if folder is not None:
            kept = CheckpointFolder(folder)
            for m in self.routing.shards[k]:
                name = f"member_{m}.pt"
                if not kept.exists(name):
                    raise CheckpointError(f"{kept.url(name)}: checkpoint not found (needed to restart "
                                          f"{self.routing.describe(k)})")
                data = kept.read(name)
                MemberState.from_bytes(data, source=kept.url(name))  # truncated or foreign: CheckpointError naming it
                handle.send(Restore(m, data))
                handle.recv()
        for command in replay:
            handle.send(command)
            handle.recv()
