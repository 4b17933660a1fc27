"""Where a run's committed member states live: the run directory's ``checkpoints/`` folder, or shared storage.

A :class:`CheckpointStore` is a root location, a local path or any `fsspec <https://filesystem-spec.readthedocs.io>`_
URL (``file:///mnt/nfs/runs``, ``s3://bucket/prefix``, ``gs://...``, ``memory://...``: the protocol's fsspec
package, such as ``s3fs`` or ``gcsfs``, must be installed), holding one folder per kept round
(``round_<r>/member_<i>.pt`` and ``round_<r>/runner.json``). A :class:`CheckpointFolder` is one such folder, named by
a location string that travels to a shard's worker, which then writes its members' files there itself.

Writes are atomic: on a local path a temporary file in the same folder, fsync, then rename (:func:`atomic_write_bytes
<rpbt.checkpoint.atomic_write_bytes>`); elsewhere a temporary object ``.NAME.<random>.tmp`` written whole, then
moved onto the final name (on object stores a whole-object PUT is itself atomic, so a reader sees the old file, no
file, or the whole new one, never a torn one).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Union

from rpbt.checkpoint import CheckpointError, MemberState, atomic_write_bytes

__all__ = ["CheckpointStore", "CheckpointFolder", "is_url"]


def is_url(location: Union[str, Path]) -> bool:
    """Whether ``location`` names a protocol (``s3://...``, ``file://...``) rather than a plain local path."""
    return "://" in str(location)


def _local_path(location: str) -> Path | None:
    """The local path a location names (a plain path or a ``file://`` URL), or None for another protocol."""
    if is_url(location) and not location.startswith("file://"):
        return None
    return Path(location.removeprefix("file://"))


def _filesystem(location: str) -> tuple[Any, str]:
    """(fsspec filesystem, path in it) of a URL; raises :class:`CheckpointError` naming the URL when its protocol
    is unknown or its package is not installed."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(location)
    except (ImportError, ValueError) as err:
        raise CheckpointError(f"{location}: cannot open this storage ({err}); install the fsspec package of its "
                              "protocol (s3fs for s3://, gcsfs for gs://, adlfs for az://)") from None


class CheckpointFolder:
    """One checkpoint folder at ``location`` (a local path or an fsspec URL); see the module docstring."""

    def __init__(self, location: Union[str, Path]):
        self.location = str(location)
        self.local = _local_path(self.location)
        if self.local is None:
            self.fs, self.path = _filesystem(self.location)
        else:
            self.fs, self.path = None, str(self.local)

    def url(self, name: str) -> str:
        """Where file ``name`` lives, for messages and for :class:`MemberState` sources."""
        return str(self.local / name) if self.local is not None else f"{self.location.rstrip('/')}/{name}"

    def make(self) -> None:
        """Create the folder, empty: a leftover of an interrupted attempt is removed first."""
        self.remove()
        if self.local is not None:
            self.local.mkdir(parents=True)
        else:
            self.fs.makedirs(self.path, exist_ok=True)

    def remove(self) -> None:
        """Delete the folder and what it holds (nothing when it does not exist)."""
        if self.local is not None:
            if self.local.is_dir():
                shutil.rmtree(self.local, ignore_errors=True)
        elif self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)

    def exists(self, name: str) -> bool:
        if self.local is not None:
            return (self.local / name).is_file()
        return bool(self.fs.isfile(f"{self.path}/{name}"))

    def write(self, name: str, data: bytes) -> None:
        """Write ``data`` as file ``name`` atomically (see the module docstring)."""
        if self.local is not None:
            atomic_write_bytes(self.local / name, data)
            return
        tmp = f"{self.path}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, f"{self.path}/{name}")
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise

    def read(self, name: str) -> bytes:
        """File ``name``'s bytes; raises :class:`CheckpointError` naming it when it is missing or unreadable."""
        if not self.exists(name):
            raise CheckpointError(f"{self.url(name)}: checkpoint not found")
        try:
            if self.local is not None:
                return (self.local / name).read_bytes()
            return bytes(self.fs.cat_file(f"{self.path}/{name}"))
        except OSError as err:
            raise CheckpointError(f"{self.url(name)}: cannot read ({err.strerror or err})") from None

    def load_member(self, member: int) -> MemberState:
        """``member_<member>.pt``, checked (``weights_only=True``); :class:`CheckpointError` naming the file."""
        name = f"member_{int(member)}.pt"
        return MemberState.from_bytes(self.read(name), source=self.url(name))

    def save_member(self, member: int, state: Union[MemberState, bytes]) -> None:
        """Write ``member_<member>.pt`` atomically (``state``: a member state or its checkpoint-format bytes)."""
        self.write(f"member_{int(member)}.pt", state if isinstance(state, bytes) else state.to_bytes())


class CheckpointStore:
    """A run's checkpoint folders under ``root`` (a local path or an fsspec URL): ``round_<r>/`` each."""

    def __init__(self, root: Union[str, Path]):
        self.root = str(root).rstrip("/") if is_url(root) else os.fspath(root)

    def folder(self, name: str) -> CheckpointFolder:
        """The folder ``name`` (``round_000012``), existing or not."""
        return CheckpointFolder(f"{self.root}/{name}" if is_url(self.root) else Path(self.root) / name)

    def folders(self) -> list[str]:
        """Names of the ``round_*`` folders that exist, sorted."""
        local = _local_path(self.root)
        if local is not None:
            return sorted(p.name for p in local.glob("round_*") if p.is_dir()) if local.is_dir() else []
        fs, path = _filesystem(self.root)
        if not fs.exists(path):
            return []
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
        return sorted(n for n in names if n.startswith("round_") and fs.isdir(f"{path}/{n}"))

    def keep_only(self, names: list[str]) -> None:
        """Delete every ``round_*`` folder not in ``names``."""
        for name in self.folders():
            if name not in names:
                self.folder(name).remove()
