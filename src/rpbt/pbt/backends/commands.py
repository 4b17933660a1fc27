"""The commands a sharded backend's driver sends to a shard, and the server that runs them on the shard.

Each command is a small frozen dataclass: its fields are its arguments, ``name`` is how logs and tests call it,
``mutating`` says whether it changes the shard's members (a mutating command is kept in the shard's
:class:`~rpbt.pbt.backends.journal.Journal` and replayed after a restart), and :meth:`Command.run` carries it out on
a :class:`~rpbt.pbt.backends.shard.Shard`. A command travels as a pickled object (process backend) or as its type and
fields (Ray backend, :meth:`Command.fields`, so that member-state bytes can go through the object store).

Member states travel as bytes of the checkpoint format (:meth:`~rpbt.checkpoint.MemberState.to_bytes`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from rpbt.checkpoint import MemberState
from rpbt.run.storage import CheckpointFolder

if TYPE_CHECKING:
    from rpbt.config import Config
    from rpbt.pbt.backends.shard import Shard

__all__ = ["Command", "Ping", "Train", "MemberInfo", "EvaluateMembers", "EvaluateEpisodes", "Snapshot", "SnapshotMany",
           "SaveMembers", "Restore", "Exploit", "Close", "ShardServer"]


@dataclass(frozen=True)
class Command:
    """A command for one shard. Subclasses set ``name``, ``mutating`` (default False) and implement :meth:`run`."""

    name: ClassVar[str] = "command"
    mutating: ClassVar[bool] = False

    def run(self, shard: "Shard") -> Any:
        """Carry the command out on ``shard`` and return the answer sent back to the driver."""
        raise NotImplementedError

    def fields(self) -> tuple:
        """The command's arguments in field order (``type(c)(*c.fields()) == c``)."""
        return tuple(getattr(self, f.name) for f in dataclasses.fields(self))


@dataclass(frozen=True)
class Ping(Command):
    """() -> the worker's process id."""

    name = "ping"

    def run(self, shard: "Shard") -> int:
        return os.getpid()


@dataclass(frozen=True)
class Train(Command):
    """``n_updates`` PPO updates -> ``{member: [row per update]}``."""

    n_updates: int
    name = "train"
    mutating = True

    def run(self, shard: "Shard") -> dict[int, list[dict[str, float]]]:
        return shard.train(int(self.n_updates))


@dataclass(frozen=True)
class MemberInfo(Command):
    """() -> ``{member: info}`` (:meth:`Shard.member_info`)."""

    name = "member_info"

    def run(self, shard: "Shard") -> dict[int, dict[str, Any]]:
        return shard.member_info()


@dataclass(frozen=True)
class EvaluateMembers(Command):
    """Deterministic evaluation of ``members`` on ``split`` -> ``{member: [return per episode]}``."""

    members: Sequence[int]
    split: str = "validation"
    name = "evaluate_members"

    def run(self, shard: "Shard") -> dict[int, list[float]]:
        return shard.evaluate_members([int(m) for m in self.members], str(self.split))


@dataclass(frozen=True)
class EvaluateEpisodes(Command):
    """Deterministic episodes of ``members`` reset with ``seeds`` on ``split`` -> ``{member: {"returns",
    "lengths"}}`` (:meth:`Shard.evaluate_episodes`)."""

    members: Sequence[int]
    seeds: Sequence[int]
    split: str = "validation"
    name = "evaluate_episodes"

    def run(self, shard: "Shard") -> dict[int, dict[str, list]]:
        return shard.evaluate_episodes([int(m) for m in self.members], [int(s) for s in self.seeds], str(self.split))


@dataclass(frozen=True)
class Snapshot(Command):
    """``member``'s state -> bytes."""

    member: int
    name = "snapshot"

    def run(self, shard: "Shard") -> bytes:
        return shard.snapshot(int(self.member)).to_bytes()


@dataclass(frozen=True)
class SnapshotMany(Command):
    """Several members' states -> ``{member: bytes}``."""

    members: Sequence[int]
    name = "snapshot_many"

    def run(self, shard: "Shard") -> dict[int, bytes]:
        return {int(m): shard.snapshot(int(m)).to_bytes() for m in self.members}


@dataclass(frozen=True)
class SaveMembers(Command):
    """Write the shard's members' states into the checkpoint folder ``location`` (a path or fsspec URL the worker
    reaches: ``run.storage``) itself, atomically -> the members written."""

    location: str
    name = "save_members"

    def run(self, shard: "Shard") -> list[int]:
        folder = CheckpointFolder(self.location)
        for m in shard.member_ids:
            folder.save_member(int(m), shard.snapshot(int(m)))
        return [int(m) for m in shard.member_ids]


@dataclass(frozen=True)
class Restore(Command):
    """Replace ``member``'s state with ``data`` (``retry``: see :meth:`Shard.restore`) -> None.

    Raises :class:`~rpbt.checkpoint.CheckpointError` for bytes that are not a member state."""

    member: int
    data: bytes
    retry: int = 0
    name = "restore"
    mutating = True

    def run(self, shard: "Shard") -> None:
        m = int(self.member)
        shard.restore(m, MemberState.from_bytes(self.data, source=f"state sent for member {m}"), int(self.retry))


@dataclass(frozen=True)
class Exploit(Command):
    """Copy a donor into ``recipient`` with ``new_hparams`` -> measurements (:meth:`Shard.exploit`).

    ``donor`` is either a member of the same shard (an int: an index copy inside the worker, named
    ``exploit_local``) or a donor state as bytes of the checkpoint format (it travelled from another shard, named
    ``exploit``). Raises :class:`~rpbt.checkpoint.CheckpointError` for bytes that are not a member state."""

    recipient: int
    donor: int | bytes
    new_hparams: dict
    mutating = True

    @property
    def name(self) -> str:  # type: ignore[override]
        return "exploit" if isinstance(self.donor, bytes) else "exploit_local"

    def run(self, shard: "Shard") -> dict[str, float]:
        r = int(self.recipient)
        if isinstance(self.donor, bytes):
            donor = MemberState.from_bytes(self.donor, source=f"donor state sent for member {r}")
        else:
            donor = shard.snapshot(int(self.donor))
        return shard.exploit(r, donor, self.new_hparams)


@dataclass(frozen=True)
class Close(Command):
    """Close the shard's environments; the worker then stops (handled by the worker loop, not by :meth:`run`)."""

    name = "close"

    def run(self, shard: "Shard") -> None:
        shard.close()


class ShardServer:
    """Runs commands on one :class:`~rpbt.pbt.backends.shard.Shard` (inside a worker process or Ray actor).

    Raises ``ValueError`` for an object that is not a :class:`Command`; a command raises what its shard raises.
    """

    def __init__(self, cfg: "Config", member_ids: Sequence[int], hparams: Sequence[dict]):
        from rpbt.pbt.backends.shard import Shard

        self.shard = Shard(cfg, list(member_ids), list(hparams))

    def handle(self, command: Command) -> Any:
        if not isinstance(command, Command):
            raise ValueError(f"unknown shard command {command!r}")
        return command.run(self.shard)

    def close(self) -> None:
        self.shard.close()
