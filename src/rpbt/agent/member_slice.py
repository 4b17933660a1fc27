"""A member's state as slice i of every registered tensor of a population module (member dimension first),
plus its own ``torch.Generator``: taking it (:func:`snapshot_member`) and writing it back (:func:`restore_member`).
The value itself and its file format are :class:`rpbt.checkpoint.MemberState`.
"""

from __future__ import annotations

import torch
from torch import nn

from rpbt.checkpoint import MEMBER_STATE_FORMAT, CheckpointError, MemberState


def check_member_dim(module: nn.Module, population: int) -> None:
    """Raise ``AssertionError`` naming the first registered tensor whose leading dimension is not ``population``."""
    for name, t in module.state_dict().items():
        if t.dim() == 0 or t.shape[0] != population:
            raise AssertionError(f"population tensor {name} lacks the member dimension: shape {tuple(t.shape)}")


def snapshot_member(module: nn.Module, generator: torch.Generator, member: int, member_id: int) -> MemberState:
    """Slice ``member`` of every tensor of ``module`` and ``generator``'s state, on the CPU (cloned; nothing is
    modified); ``member_id`` is recorded in the metadata."""
    tensors = {k: v[member].detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
    return MemberState(tensors=tensors, rng=generator.get_state(),
                       meta={"member_id": member_id, "format": MEMBER_STATE_FORMAT})


@torch.no_grad()
def restore_member(module: nn.Module, generator: torch.Generator, member: int, state: MemberState) -> None:
    """Overwrite slice ``member`` of every tensor of ``module`` and ``generator`` with ``state`` (any device).

    Raises :class:`~rpbt.checkpoint.CheckpointError` naming the first missing, unexpected or mis-shaped key;
    nothing is written unless every key fits.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state.tensors))
    extra = sorted(set(state.tensors) - set(own))
    if missing or extra:
        raise CheckpointError(f"member state does not fit this learner: missing {missing[:5]}, "
                              f"unexpected {extra[:5]} (different agent config?)")
    for k, v in own.items():
        src = state.tensors[k]
        if tuple(src.shape) != tuple(v.shape[1:]) or src.dtype != v.dtype:
            raise CheckpointError(f"member state key {k}: shape {tuple(src.shape)} {src.dtype}, expected "
                                  f"{tuple(v.shape[1:])} {v.dtype} (different agent config?)")
    for k, v in own.items():
        v[member].copy_(state.tensors[k])
    generator.set_state(state.rng.clone())


__all__ = ["check_member_dim", "restore_member", "snapshot_member"]
