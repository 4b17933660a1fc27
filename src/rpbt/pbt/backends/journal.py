"""A shard's command journal: what a restarted shard replays on top of its members' last committed checkpoints.

The journal keeps the shard's mutating commands (:attr:`Command.mutating <rpbt.pbt.backends.commands.Command>`) in
the order they ran, and a :class:`Mark` for each checkpoint folder the backend wrote. Checkpoints are committed by
the runner one step after they are written, so when a new mark is added everything before the previous mark is
dropped (the journal is *pruned*): the previous folder stays replayable until the new one is committed.

A restart restores the shard from a marked folder and replays the commands after that mark
(:meth:`Journal.replay`); a shard that never reached a checkpoint starts fresh and replays every command, which is
possible only while nothing was pruned. A donor's state is kept as bytes inside its command, so a replay never needs
a checkpoint that may have been deleted since.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    from rpbt.pbt.backends.commands import Command

__all__ = ["Journal", "Mark", "folder_key"]


@dataclass(frozen=True)
class Mark:
    """The checkpoint folder ``folder`` (a real path, or a storage URL as given) was written here."""

    folder: str


def folder_key(folder: Union[str, Path]) -> str:
    """How a checkpoint folder is compared: its real path, or a storage URL (``s3://...``) as given."""
    return str(folder) if "://" in str(folder) else os.path.realpath(folder)


class Journal:
    """One shard's mutating commands since the checkpoint before last, with a :class:`Mark` at each checkpoint."""

    def __init__(self) -> None:
        self.entries: list[Union["Command", Mark]] = []
        self.pruned = False

    def record(self, command: "Command") -> None:
        """Keep ``command`` if it changes the shard (``command.mutating``); others are not replayed."""
        if command.mutating:
            self.entries.append(command)

    def mark(self, folder: Union[str, Path]) -> None:
        """The shard's members were written to ``folder``; drop what comes before the previous mark."""
        self.entries.append(Mark(folder_key(folder)))
        marks = self._mark_positions()
        if len(marks) >= 2 and marks[-2] > 0:
            del self.entries[:marks[-2]]
            self.pruned = True

    def marks(self) -> list[str]:
        """The marked folders (:func:`folder_key`), oldest first."""
        return [e.folder for e in self.entries if isinstance(e, Mark)]

    def replay(self, folder: Optional[Union[str, Path]]) -> list["Command"]:
        """The commands to run, in order, on a shard restored from ``folder`` (``None``: a fresh shard).

        Raises ``KeyError`` when ``folder`` is not marked (the latest mark of it counts), ``LookupError`` when a
        fresh shard is asked for after the journal was pruned (its first commands are gone).
        """
        start = 0
        if folder is not None:
            target = folder_key(folder)
            hits = [i for i in self._mark_positions() if self.entries[i].folder == target]  # type: ignore[union-attr]
            if not hits:
                raise KeyError(f"{folder} is not a checkpoint folder in this journal")
            start = hits[-1] + 1
        elif self.pruned:
            raise LookupError("the journal was pruned: its first commands are gone")
        return [e for e in self.entries[start:] if not isinstance(e, Mark)]

    def _mark_positions(self) -> list[int]:
        return [i for i, e in enumerate(self.entries) if isinstance(e, Mark)]

    def __len__(self) -> int:
        return len(self.entries)
