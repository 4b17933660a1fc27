"""The action distribution of P members, from the policy head's output: sampling, log-probabilities, KL.

Discrete(n): one categorical over the head's n logits; MultiDiscrete(nvec): K independent categoricals over the
head's logits split into groups of nvec[k] (log-probabilities, entropies and KLs add up); Box(d): a diagonal
Gaussian with the head's output as mean and a state-independent log-std (P, d), which is passed in (it is a
parameter of the policy head). Shapes: head outputs (P, ..., A); actions (P, ...) indices for Discrete,
(P, ..., K) for MultiDiscrete, (P, ..., d) for Box. Sampling is by inverse CDF (categoricals, one uniform each)
or reparameterization (Gaussian, one standard normal per dimension), so the noise is drawn apart from the head,
from each member's own generator on the CPU: draws move with the member.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from rpbt.agent.networks import kl_divergence, log_prob, log_prob_entropy


@dataclass(frozen=True)
class ActionDistribution:
    """One action space's distribution family: ``action_dim`` A (the head's width), ``continuous`` (Box) and
    ``nvec`` (MultiDiscrete's K category counts; None for Discrete and Box). ``log_std``: (P, d) for Box, else
    ignored (may be None)."""

    action_dim: int
    continuous: bool
    nvec: Optional[tuple[int, ...]] = None

    @classmethod
    def of(cls, action_dim: int, continuous: bool, nvec: Optional[Sequence[int]] = None) -> "ActionDistribution":
        """The distribution of a head of width ``action_dim``; ``ValueError`` unless a given ``nvec`` is
        categorical with sum(nvec) = action_dim."""
        if nvec is not None and (continuous or sum(int(n) for n in nvec) != int(action_dim)):
            raise ValueError(f"MultiDiscrete nvec {list(nvec)} needs categorical actions with action_dim = "
                             f"sum(nvec), got action_dim={action_dim}, continuous={continuous}")
        return cls(int(action_dim), bool(continuous), None if nvec is None else tuple(int(n) for n in nvec))

    @property
    def action_shape(self) -> tuple[int, ...]:
        """Trailing shape of one action: () for Discrete (an index), (K,) for MultiDiscrete, (A,) for Box."""
        if self.continuous:
            return (self.action_dim,)
        return () if self.nvec is None else (len(self.nvec),)

    def draw_noise(self, generators: Sequence[torch.Generator], num_envs: int) -> Tensor:
        """One step's sampling noise, member p's from ``generators[p]``, on the CPU: uniform (P, N) for Discrete,
        uniform (P, N, K) for MultiDiscrete, standard normal (P, N, A) for Box."""
        if not self.continuous:
            shape = (num_envs,) if self.nvec is None else (num_envs, len(self.nvec))
            return torch.stack([torch.rand(shape, generator=g) for g in generators])
        return torch.stack([torch.randn(num_envs, self.action_dim, generator=g) for g in generators])

    def actions(self, head: Tensor, noise: Optional[Tensor] = None, log_std: Optional[Tensor] = None) -> Tensor:
        """Actions from head outputs (P, N, A): sampled with ``noise`` (:meth:`draw_noise`, on the head's device)
        or the mode when ``noise`` is None. Returns (P, N) indices for Discrete, (P, N, K) for MultiDiscrete,
        (P, N, A) for Box."""
        if not self.continuous:
            if self.nvec is not None:
                parts = torch.split(head, list(self.nvec), dim=-1)
                return torch.stack([_categorical_action(part, None if noise is None else noise[..., k])
                                    for k, part in enumerate(parts)], -1)
            return _categorical_action(head, noise)
        if noise is None:
            return head
        assert log_std is not None
        return head + log_std.exp().unsqueeze(1) * noise

    def log_prob(self, head: Tensor, actions: Tensor, log_std: Optional[Tensor] = None) -> Tensor:
        """Log-probability of ``actions`` alone (no entropy: what acting needs), shaped like the batch (P, ...)."""
        return log_prob(head, actions, self.continuous, log_std, self.nvec)

    def log_prob_entropy(self, head: Tensor, actions: Tensor, log_std: Optional[Tensor] = None
                         ) -> tuple[Tensor, Tensor]:
        """Log-probability of ``actions`` and the distribution's entropy, each (P, ...)
        (:func:`rpbt.agent.networks.log_prob_entropy`)."""
        return log_prob_entropy(head, actions, self.continuous, log_std, self.nvec)

    def kl(self, head_a: Tensor, head_b: Tensor, log_std: Optional[Tensor] = None) -> Tensor:
        """KL(pi_a || pi_b) per batch element, (P, ...) (:func:`rpbt.agent.networks.kl_divergence`)."""
        return kl_divergence(head_a, head_b, self.continuous, log_std, self.nvec)


def _categorical_action(logits: Tensor, noise: Optional[Tensor]) -> Tensor:
    """One categorical's action from logits (P, N, n): the argmax, or the inverse CDF at ``noise`` (P, N)."""
    if noise is None:
        return logits.argmax(-1)
    cdf = torch.softmax(logits, -1).cumsum(-1)
    return (cdf < noise.unsqueeze(-1)).sum(-1).clamp_max(logits.shape[-1] - 1)


__all__ = ["ActionDistribution"]
