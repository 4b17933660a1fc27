"""The in-process backend: the whole population is one batched learner (one shard).

A backend trains members, reports what the runner needs to score them, and moves member states; it never decides
anything (that is the scheduler's job) and never knows how a learner works inside beyond the learner API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, Union

import torch

from rpbt.checkpoint import MemberState
from rpbt.config import Config
from rpbt.pbt.backends.shard import Shard
from rpbt.run.storage import CheckpointFolder

__all__ = ["LocalBackend"]


class LocalBackend:
    """All members in this process, as one shard: an exploit is an index copy inside the batched learner."""

    kind = "local"
    num_workers = 1

    def __init__(self, cfg: Config, hparams: Sequence[dict]):
        self.cfg = cfg
        self.population_size = cfg.pbt.population_size
        if cfg.run.torch_threads:
            torch.set_num_threads(cfg.run.torch_threads)
        self.shard = Shard(cfg, list(range(self.population_size)), hparams)

    def train(self, n_updates: int) -> dict[int, list[dict[str, float]]]:
        return self.shard.train(n_updates)

    def member_info(self) -> dict[int, dict[str, Any]]:
        return self.shard.member_info()

    def evaluate_members(self, members: Sequence[int], split: str = "validation") -> dict[int, list[float]]:
        """Deterministic evaluation returns per member (see :meth:`Shard.evaluate_members`)."""
        return self.shard.evaluate_members(members, split)

    def evaluate_episodes(self, members: Sequence[int], seeds: Sequence[int], split: str = "validation"
                          ) -> dict[int, dict[str, list]]:
        """Deterministic episodes reset with ``seeds``: returns and lengths (see :meth:`Shard.evaluate_episodes`)."""
        return self.shard.evaluate_episodes(members, seeds, split)

    def evaluate(self, member: int, split: str = "validation") -> list[float]:
        """Deterministic evaluation returns of one member (see :meth:`Shard.evaluate`)."""
        return self.shard.evaluate(member, split)

    def snapshot(self, member: int) -> MemberState:
        return self.shard.snapshot(member)

    def restore(self, member: int, state: MemberState, retry: int = 0) -> None:
        self.shard.restore(member, state, retry)

    def exploit(self, recipient: int, donor_state: MemberState, new_hparams: dict[str, float]) -> dict[str, float]:
        return self.shard.exploit(recipient, donor_state, new_hparams)

    def exploit_many(self, transfers: Sequence[tuple[int, int, dict[str, float]]]) -> list[dict[str, float]]:
        """Every donor's snapshot first, then each transfer in order through :meth:`exploit` (one process:
        nothing to overlap)."""
        states = {d: self.snapshot(d) for _, d, _ in transfers}
        return [self.exploit(r, states[d], hp) for r, d, hp in transfers]

    def save_checkpoints(self, directory: Union[str, Path]) -> None:
        folder = CheckpointFolder(directory)
        for m in range(self.population_size):
            folder.save_member(m, self.snapshot(m))

    def attach_run(self, rundir: Any) -> None:
        """Nothing to do: one process, no worker to restart, so no failure events or committed checkpoints."""

    def close(self) -> None:
        self.shard.close()
