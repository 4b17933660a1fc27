"""Finished-episode bookkeeping of P members: a ring of each member's last C episode returns and lengths.

The tensors are the policy's registered buffers (so they are part of the member state): ``count`` (P,) int64,
the episodes finished so far; ``returns`` and ``lengths`` (P, C) float64, episode e of member p in slot e mod C.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn


def register_episode_ring(module: nn.Module, population: int, capacity: int) -> None:
    """Register the ring's buffers on ``module`` (so they are part of its member state): ``episodes`` (P,) int64,
    ``episode_returns`` and ``episode_lengths`` (P, capacity) float64, all zero."""
    module.register_buffer("episodes", torch.zeros(population, dtype=torch.int64))
    module.register_buffer("episode_returns", torch.zeros(population, capacity, dtype=torch.float64))
    module.register_buffer("episode_lengths", torch.zeros(population, capacity, dtype=torch.float64))


@torch.no_grad()
def record_episodes(count: Tensor, returns: Tensor, lengths: Tensor,
                    finished: Sequence[tuple[int, float, int]]) -> None:
    """Record finished episodes ``(member, return, length)``, in order, into the rings (one indexed write)."""
    if not finished:
        return
    capacity, device = returns.shape[1], returns.device
    counts = count.tolist()
    latest: dict[tuple[int, int], tuple[float, float]] = {}  # a later episode overwrites an earlier one's slot
    for p, ret, length in finished:
        latest[(p, counts[p] % capacity)] = (float(ret), float(length))
        counts[p] += 1
    rows = torch.tensor([k[0] for k in latest], device=device)
    slots = torch.tensor([k[1] for k in latest], device=device)
    values = torch.tensor(list(latest.values()), dtype=torch.float64, device=device)  # (E, 2)
    returns[rows, slots] = values[:, 0]
    lengths[rows, slots] = values[:, 1]
    count.copy_(torch.tensor(counts, dtype=torch.int64))


def recent_values(ring: Tensor, count: Tensor, member: int, k: Optional[int] = None) -> np.ndarray:
    """Member's last ``k`` values of ``ring`` (P, C) (all kept, up to C, if None), oldest first."""
    capacity = ring.shape[1]
    n = int(count[member])
    k = min(n, capacity if k is None else k)
    slots = [(n - 1 - j) % capacity for j in range(k)][::-1]
    return ring[member, slots].cpu().numpy().copy()


__all__ = ["recent_values", "record_episodes", "register_episode_ring"]
