"""The checkpoint format: one member's training state as data, its errors, and atomic writes.

A member-state file is ``torch.save`` of a plain dictionary (format tag, version, a flat ``{name: tensor}`` map,
the member's generator state, and scalar metadata) and is read back with ``torch.load(weights_only=True,
map_location="cpu")``: a checkpoint is data, never code. Tensors are stored on the CPU, so a state saved on one
device restores on another. This module is a leaf: it imports no learner, so writing a file does not pull in the
networks or the environments.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Union

import torch
from torch import Tensor

MEMBER_STATE_FORMAT = "rpbt.member_state"
MEMBER_STATE_VERSION = 1
HPARAM_PREFIX = "hp_"


class CheckpointError(ValueError):
    """A member-state file or value is truncated, foreign, or does not fit this learner; names the file or key."""


def hparam_key(name: str) -> str:
    """The state key of hyperparameter ``name`` (``adversarial.epsilon`` -> ``hp_adversarial__epsilon``)."""
    return HPARAM_PREFIX + name.replace(".", "__")


@dataclass
class MemberState:
    """Everything that defines one member's training, as one value.

    ``tensors``: slice i of every registered tensor of a population policy (weights, optimizer moments and step,
    observation and return normalizer statistics, gradient-scaler statistics, hyperparameters, counters, recent
    episode returns), keyed by ``state_dict`` name, on the CPU. ``rng``: the member's ``torch.Generator`` state
    (uint8). ``meta``: format, version and the member id it was taken from (informational).
    The carried state of running episodes is deliberately *not* part of it: it belongs to the environments
    (:class:`rpbt.envs.runner.CarriedState`).
    """

    tensors: dict[str, Tensor]
    rng: Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def hparams(self) -> dict[str, float]:
        """The member's hyperparameters, ``{name: value}``, read from its ``hp_*`` tensors."""
        n = len(HPARAM_PREFIX)
        return {k[n:].replace("__", "."): float(v) for k, v in self.tensors.items() if k.startswith(HPARAM_PREFIX)}

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": MEMBER_STATE_FORMAT,
            "version": MEMBER_STATE_VERSION,
            "tensors": self.tensors,
            "rng": self.rng,
            "meta": {k: v for k, v in self.meta.items() if isinstance(v, (int, float, str, bool))},
        }

    def to_bytes(self) -> bytes:
        """Serialize in the checkpoint format (``torch.save`` of plain tensors and scalars)."""
        buf = io.BytesIO()
        torch.save(self.to_payload(), buf)
        return buf.getvalue()

    @classmethod
    def from_payload(cls, payload: Any, source: str) -> "MemberState":
        """Check a loaded payload's format and version; raises :class:`CheckpointError` naming ``source``."""
        if not isinstance(payload, dict) or payload.get("format") != MEMBER_STATE_FORMAT:
            raise CheckpointError(f"{source}: not an rpbt member-state checkpoint")
        if payload.get("version") != MEMBER_STATE_VERSION:
            raise CheckpointError(f"{source}: member-state version {payload.get('version')!r}, "
                                  f"expected {MEMBER_STATE_VERSION}")
        tensors, rng = payload.get("tensors"), payload.get("rng")
        if not isinstance(tensors, dict) or not isinstance(rng, Tensor):
            raise CheckpointError(f"{source}: member-state checkpoint lacks 'tensors' or 'rng'")
        return cls(tensors=tensors, rng=rng, meta=dict(payload.get("meta") or {}))

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> "MemberState":
        """Read the checkpoint format with ``weights_only=True``; raises :class:`CheckpointError` naming ``source``."""
        try:
            with warnings.catch_warnings():  # torch warns about a foreign pickle's protocol before refusing it
                warnings.simplefilter("ignore")
                payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except Exception as err:  # truncated, foreign or pickled bytes
            raise CheckpointError(f"{source}: cannot read member state ({_load_failure(err, data)})") from None
        return cls.from_payload(payload, source)

    def save(self, path: Union[str, Path]) -> None:
        """Write atomically: a temporary file in the same folder, fsync, then rename over ``path``."""
        atomic_write_bytes(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: Union[str, Path]) -> "MemberState":
        """Load with ``torch.load(weights_only=True)``; raises :class:`CheckpointError` naming the file."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None
        return cls.from_bytes(data, source=str(path))


@contextmanager
def naming_checkpoint(source: Union[str, Path], config: Union[str, Path, None] = None) -> Iterator[None]:
    """Put ``source`` (the checkpoint file) in front of a :class:`CheckpointError` raised inside the block.

    For restoring a loaded state into a learner, whose "does not fit" errors know the key but not the file.
    ``config``: the config the learner was built from, named as the likely mismatch.
    """
    try:
        yield
    except CheckpointError as err:
        msg = str(err)
        if msg.startswith(str(source)):
            raise
        if config is not None:  # name the config as the likely mismatch, instead of the learner's generic hint
            msg = msg.replace(" (different agent config?)", "")
            msg += f" (was it written by a run with another config than {config}?)"
        raise CheckpointError(f"{source}: {msg}") from None


def _load_failure(err: Exception, data: bytes) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``data``, in a few words.

    torch's own message advises retrying with ``weights_only=False``, i.e. running the file's code: that advice is
    never forwarded (a checkpoint is data, never code).
    """
    text = str(err)
    if not data:
        return "the file is empty"
    found = re.search(r"unsupported GLOBAL ([\w.]+)", text)
    if found:
        return (f"it refers to Python code ({found.group(1)}); refused without running it: a checkpoint is data, "
                "never code")
    if "weights_only" in text or "WeightsUnpickler" in text:
        return ("not a torch tensor file: it holds pickled Python objects or other bytes; refused without running "
                "it: a checkpoint is data, never code")
    if "PytorchStreamReader" in text or "zip archive" in text:
        return f"truncated or not a torch zip archive: {text.split('. ')[0].split(chr(10))[0]}"
    first = text.split("\n")[0].split(". ")[0]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename, fsync the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600 files; a run directory is meant to be shared and read
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems do not allow fsync on folders
        pass


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode())


__all__ = ["MemberState", "CheckpointError", "atomic_write_bytes", "atomic_write_text", "hparam_key",
           "naming_checkpoint", "MEMBER_STATE_FORMAT", "MEMBER_STATE_VERSION"]
