"""Value heads and the recurrent critic: scalar (MSE), quantile (QR) and categorical (C51) returns.

A critic is a :class:`~rpbt.agent.networks.RecurrentTrunk` (encoder + LSTM with its own (h, c)) and a value head.
Heads predict in *normalized return units* (returns divided by the member's running return scale, see
:class:`~rpbt.agent.distributional.ReturnNormalizer`), so a fixed categorical support and one loss scale fit any
reward scale. The learner converts to return units for GAE and bootstrapping.

Kinds (``agent.critic.kind``):

- ``scalar``: one output, squared-error loss (the baseline, as SB3's PPO).
- ``quantile``: N quantiles at midpoint fractions tau_i = (2i+1)/(2N), quantile Huber loss (Dabney et al. 2018,
  "Distributional Reinforcement Learning with Quantile Regression"); value = mean of the quantiles.
- ``categorical``: M logits over atoms evenly spaced on [v_min, v_max]; cross-entropy against the two-hot
  projection of the target (Bellemare et al. 2017, C51, with a scalar target); value = expected atom.

Value clipping (``clip_range_vf``) limits how far the predicted *mean* may move from the rollout's prediction; for
distributional heads the whole distribution is shifted by the clipped amount (for the categorical head the shifted
atoms are projected back onto the support), and the loss is the larger of the clipped and unclipped losses, as in
the PPO implementation details (Huang et al. 2022) / CleanRL.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from rpbt.agent import distributional as D
from rpbt.agent.networks import PopLinear


class ValueHead(nn.Module):
    """A distributional (or scalar) value head over LSTM features.

    ``forward(features (P, ..., H)) -> raw (P, ..., K)`` with K = 1, N or M. All other methods take that raw
    output. Raises ``ValueError`` for an unknown kind.
    """

    def __init__(
        self,
        population: int,
        hidden: int,
        kind: str,
        num_quantiles: int = 32,
        num_atoms: int = 51,
        v_min: float = -10.0,
        v_max: float = 10.0,
        kappa: float = 1.0,
    ):
        super().__init__()
        if kind not in ("scalar", "quantile", "categorical"):
            raise ValueError(f"agent.critic.kind must be scalar, quantile or categorical, got {kind!r}")
        self.kind = kind
        self.kappa = kappa
        out = {"scalar": 1, "quantile": num_quantiles, "categorical": num_atoms}[kind]
        self.linear = PopLinear(population, hidden, out)
        # Constants, not member state: kept as plain attributes so they stay out of the state dict.
        self.support = torch.linspace(v_min, v_max, num_atoms) if kind == "categorical" else None
        self.taus = D.quantile_fractions(num_quantiles) if kind == "quantile" else None

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        self.linear.reset_parameters(1.0, generators)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(features)

    def value(self, raw: Tensor) -> Tensor:
        """Mean predicted return (normalized units), shape (P, ...)."""
        if self.kind == "scalar":
            return raw[..., 0]
        if self.kind == "quantile":
            return raw.mean(-1)
        return D.categorical_mean(raw, self.support)

    def cvar(self, raw: Tensor, alpha: float) -> Tensor:
        """CVaR_alpha (mean of the worst alpha fraction) of the predicted return distribution, (P, ...).

        For the scalar head the distribution is a point mass, so CVaR equals the value.
        """
        if self.kind == "scalar":
            return raw[..., 0]
        if self.kind == "quantile":
            return D.quantile_cvar(raw, alpha)
        return D.categorical_cvar(torch.softmax(raw, -1), self.support, alpha)

    def _shift(self, raw: Tensor, delta: Tensor) -> Tensor:
        """The same distribution with its mean moved by ``delta`` (P, ...)."""
        if self.kind in ("scalar", "quantile"):
            return raw + delta.unsqueeze(-1)
        # Categorical: move every atom by delta, then project the shifted atoms back onto the support.
        probs = torch.softmax(raw, -1)
        moved = D.two_hot(self.support + delta.unsqueeze(-1), self.support)  # (P, ..., M, M)
        return (probs.unsqueeze(-1) * moved).sum(-2).clamp_min(1e-8).log()

    def _loss(self, raw: Tensor, target: Tensor) -> Tensor:
        if self.kind == "scalar":
            return (raw[..., 0] - target) ** 2
        if self.kind == "quantile":
            return D.quantile_huber_loss(raw, target, kappa=self.kappa)
        return D.categorical_cross_entropy(raw, D.two_hot(target, self.support))

    def loss(self, raw: Tensor, target: Tensor, old_value: Tensor, clip_range_vf: Optional[float]) -> Tensor:
        """Per-sample critic loss (P, ...). target, old_value: (P, ...) normalized units, detached."""
        loss = self._loss(raw, target)
        if clip_range_vf is None:
            return loss
        value = self.value(raw)
        delta = (value - old_value).clamp(-clip_range_vf, clip_range_vf) - (value - old_value)
        return torch.maximum(loss, self._loss(self._shift(raw, delta), target))
