"""The Backend protocol: what the round loop (:class:`rpbt.pbt.runner.PopulationRunner`) asks of a backend.

A backend trains members, reports what the runner needs to score them, and moves member states; it never decides
anything (that is the scheduler's job) and never knows how a learner works inside beyond the learner API. Members
are named by their global index ``0..population_size-1`` everywhere. Implementations:
:class:`~rpbt.pbt.backends.local.LocalBackend` (one process), :class:`~rpbt.pbt.backends.process.ProcessBackend`
(worker processes) and :class:`~rpbt.pbt.backends.ray.RayBackend` (Ray actors); :func:`rpbt.pbt.backends.make_backend`
builds the one named by ``backend.kind``. The protocol is structural (:class:`typing.Protocol`): an implementation
does not inherit from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence, Union, runtime_checkable

from rpbt.checkpoint import MemberState

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """A population of members the runner can train, score, snapshot, restore and exploit.

    ``kind`` names the backend (``local``, ``process``, ``ray``); ``population_size`` is the number of members;
    ``num_workers`` the number of processes (or Ray actors) that train them (1 for ``local``).
    Errors of a member operation (a bad checkpoint, a bad environment) are raised with their own type; a sharded
    backend raises :class:`rpbt.pbt.backends.errors.BackendError` when a worker keeps dying.
    """

    kind: str
    population_size: int
    num_workers: int

    def train(self, n_updates: int) -> dict[int, list[dict[str, float]]]:
        """Run ``n_updates`` PPO updates on every member.

        Returns ``{member: [row per update]}``, each row the update's metrics (``str -> float``) plus ``env_steps``
        and ``update`` (the member's counters after that update).
        """
        ...

    def member_info(self) -> dict[int, dict[str, Any]]:
        """Per member: ``env_steps``, ``updates``, ``hparams`` (``{name: value}``), ``recent_returns`` (the
        returns of its recent finished training episodes, a list of floats, oldest first) and ``episodes`` (its
        count of finished training episodes, inherited from the donor at an exploit)."""
        ...

    def evaluate_members(self, members: Sequence[int], split: str = "validation") -> dict[int, list[float]]:
        """Deterministic evaluation returns of ``members`` on ``split`` (see
        :func:`rpbt.evaluation.policy.evaluate_members`): ``{member: [return per episode]}``, in the order of
        ``members``. Leaves the members' training state untouched. Raises ``KeyError`` / ``IndexError`` for a member
        that does not exist."""
        ...

    def evaluate_episodes(self, members: Sequence[int], seeds: Sequence[int], split: str = "validation"
                          ) -> dict[int, dict[str, list]]:
        """Deterministic episodes of ``members``, one reset with each of ``seeds`` (the same for every member), on
        ``split`` (trading; ignored otherwise): ``{member: {"returns": [float per episode], "lengths": [env steps
        per episode]}}``, in the order of ``members``. Leaves the members' training state untouched. Used by
        ``pbt.score_source: evaluation`` with held-out seeds."""
        ...

    def snapshot(self, member: int) -> MemberState:
        """The member's whole state (weights, optimizer, normalizers, hyperparameters, counters, RNG) as a
        :class:`~rpbt.checkpoint.MemberState`. Raises ``IndexError`` / ``KeyError`` for a member that does not
        exist."""
        ...

    def restore(self, member: int, state: MemberState, retry: int = 0) -> None:
        """Replace the member's state with ``state`` (resume, worker restart); the member starts fresh episodes.
        ``retry`` > 0: a restore after the member's ``retry``-th fault, on other episodes and a forked generator
        (:meth:`rpbt.pbt.backends.shard.Shard.restore`). Raises :class:`~rpbt.checkpoint.CheckpointError` for a state
        that does not fit the learner."""
        ...

    def exploit(self, recipient: int, donor_state: MemberState, new_hparams: dict[str, float]) -> dict[str, float]:
        """Copy ``donor_state`` into ``recipient`` with the explored hyperparameters ``new_hparams`` and the
        configured hidden-state / optimizer-state strategies (:func:`rpbt.pbt.transfer.exploit`).

        Returns the transfer's measurements (``str -> float``). Raises :class:`~rpbt.checkpoint.CheckpointError`
        for a donor state that does not fit.
        """
        ...

    def exploit_many(self, transfers: Sequence[tuple[int, int, dict[str, float]]]) -> list[dict[str, float]]:
        """Several exploits, each ``(recipient, donor, new_hparams)``: copy the donor's state as it was before any
        of them into the recipient, as :meth:`exploit` does (recipients are distinct). The result is that of
        snapshotting every donor first and then calling :meth:`exploit` on each in order; a sharded backend fetches
        only the donor states that must travel and runs the exploits of different shards at the same time.

        Returns the measurements of each transfer, in the order given. Raises as :meth:`exploit`.
        """
        ...

    def save_checkpoints(self, directory: Union[str, Path]) -> None:
        """Write ``member_<i>.pt`` (the checkpoint format) for every member, atomically, into the existing folder
        ``directory`` (a local path or an fsspec URL: :class:`~rpbt.run.storage.CheckpointFolder`). Raises
        ``OSError`` when a file cannot be written."""
        ...

    def attach_run(self, rundir: Any) -> None:
        """Use ``rundir`` (a :class:`~rpbt.run.rundir.RunDirectory`) for failure events and to find the last
        committed checkpoints after a worker dies. Called once, after the run directory exists; a backend without
        workers to restart does nothing. Returns None."""
        ...

    def close(self) -> None:
        """Release learners, workers and environments. Idempotent; the backend is unusable afterwards."""
        ...
