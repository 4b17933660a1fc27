"""Routing for the sharded backends: which shard holds which member, how exploits cross shards, which snapshots
are still current.

The P members are split into contiguous shards (:func:`split_shards`). An exploit whose donor lives in the
recipient's shard is an index copy inside the worker; across shards (or when the donor is itself overwritten in the
same call) the donor's state travels as member-state bytes (:meth:`Routing.travels`). Per-shard work runs in waves
of at most one command per shard, each shard's in the order given (:meth:`Routing.waves`).

:class:`SnapshotCache` remembers the member states the driver handed out, keyed by member, with the member's
version at that time, so that an exploit from an unchanged snapshot of a member of the recipient's shard is done
inside the shard.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

from rpbt.checkpoint import MemberState

__all__ = ["Routing", "SnapshotCache", "split_shards"]


def split_shards(population_size: int, num_shards: int) -> list[list[int]]:
    """Contiguous member ranges, sizes differing by at most one, larger ones first.

    ``split_shards(8, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]``; ``split_shards(5, 2) == [[0, 1, 2], [3, 4]]``.
    Raises ``ValueError`` when ``num_shards`` is not in 1..population_size.
    """
    if not 1 <= num_shards <= population_size:
        raise ValueError(f"backend.num_workers must be between 1 and pbt.population_size ({population_size}), "
                         f"got {num_shards}")
    base, extra = divmod(population_size, num_shards)
    shards, start = [], 0
    for k in range(num_shards):
        size = base + (1 if k < extra else 0)
        shards.append(list(range(start, start + size)))
        start += size
    return shards


class Routing:
    """Members ``0..population_size-1`` in ``num_shards`` contiguous shards (:func:`split_shards`)."""

    def __init__(self, population_size: int, num_shards: int):
        self.population_size = population_size
        self.shards = split_shards(population_size, num_shards)
        self.shard_of = {m: k for k, ms in enumerate(self.shards) for m in ms}

    def __len__(self) -> int:
        return len(self.shards)

    def describe(self, k: int) -> str:
        """``shard 1 (members [2, 3])``, or ``shard 0 (members 0..3)`` for more than two members."""
        ms = self.shards[k]
        return f"shard {k} (members {ms[0]}..{ms[-1]})" if len(ms) > 2 else f"shard {k} (members {ms})"

    def check(self, member: int) -> None:
        """Raises ``IndexError`` for a member that does not exist."""
        if member not in self.shard_of:
            raise IndexError(f"member {member} out of range 0..{self.population_size - 1}")

    def by_shard(self, members: Sequence[int]) -> dict[int, list[int]]:
        """``members`` grouped by shard, each shard's in the order of its shard (shards without any left out)."""
        wanted = {int(m) for m in members}
        return {k: [m for m in ms if m in wanted] for k, ms in enumerate(self.shards) if wanted.intersection(ms)}

    def waves(self, members: Sequence[int]) -> Iterator[dict[int, int]]:
        """Positions 0..len(members)-1 in waves of at most one per shard ``{shard: position}``, each shard's
        positions in the order given."""
        queues: dict[int, list[int]] = {}
        for i, m in enumerate(members):
            queues.setdefault(self.shard_of[m], []).append(i)
        while queues:
            yield {k: q.pop(0) for k, q in queues.items()}
            queues = {k: q for k, q in queues.items() if q}

    def travels(self, transfers: Sequence[tuple[int, int, dict]]) -> list[bool]:
        """Per transfer ``(recipient, donor, new_hparams)``: whether the donor's state must travel as bytes (its
        shard is not the recipient's, or the donor is itself a recipient here and must be read before)."""
        recipients = {int(r) for r, _, _ in transfers}
        return [self.shard_of[d] != self.shard_of[r] or d in recipients for r, d, _ in transfers]


class SnapshotCache:
    """The member states handed out by :meth:`ShardedBackend.snapshot`, keyed by member, each with its bytes and the
    member's version when it was taken; a member's version moves on each time its state changes."""

    def __init__(self, population_size: int):
        self.version = [0] * population_size
        self._held: dict[int, list[tuple[MemberState, int, bytes]]] = {}

    def remember(self, member: int, state: MemberState, data: bytes) -> None:
        self._held.setdefault(member, []).append((state, self.version[member], data))

    def changed(self, member: int) -> None:
        """``member``'s state changed: snapshots taken before are stale."""
        self.version[member] += 1

    def changed_all(self) -> None:
        """Every member changed (a training round): forget every snapshot."""
        self._held.clear()
        for m in range(len(self.version)):
            self.version[m] += 1

    def clear(self) -> None:
        self._held.clear()

    def find(self, state: MemberState) -> Optional[tuple[int, bool, bytes]]:
        """``(member, current, bytes)`` when ``state`` is a snapshot handed out here (``current``: the member has
        not changed since), else None."""
        for member, entries in self._held.items():
            for held, version, data in entries:
                if held is state:
                    return member, self.version[member] == version, data
        return None
