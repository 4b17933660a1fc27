"""Value heads of the recurrent critic: scalar (MSE), quantile (QR) and categorical (C51) returns.

A critic (:class:`rpbt.agent.ppo.Critic`) is a :class:`~rpbt.agent.networks.RecurrentTrunk` (encoder + LSTM with
its own (h, c)) followed by a :class:`ValueHead`. Heads predict in *normalized return units*: returns divided by
the member's running return scale (:class:`~rpbt.agent.distributional.ReturnNormalizer`, scale only, no
centering), so one categorical support and one loss scale fit any reward scale. The learner multiplies by the
scale to get return units for GAE and bootstrapping.

Kinds (``agent.critic.kind``):

- ``scalar``: one output, squared-error loss ``(v - G)^2`` (the baseline; SB3's PPO uses the same, without 1/2).
- ``quantile``: N quantiles at midpoint fractions tau_i = (2i+1)/(2N), quantile Huber loss (Dabney et al. 2018,
  "Distributional Reinforcement Learning with Quantile Regression", eq. 10; summed over quantiles); value = mean of
  the quantiles.
- ``categorical``: M logits over atoms evenly spaced on [v_min, v_max]; cross-entropy against the two-hot
  projection of the target (Bellemare et al. 2017, C51, with a scalar target; a target outside the support goes to
  the edge atom); value = expected atom.

Twin critics (``agent.critic.twin``) are two whole critics, each with its own encoder, LSTM and head (not a shared
value LSTM): the two estimates then differ in their recurrent features as well as in their heads, which is what
makes the minimum a pessimistic estimate rather than two heads reading the same features. The learner takes the
elementwise minimum of their means (return units) for GAE and bootstrapping and trains both on the same targets.

Value clipping (``agent.clip_range_vf``, in normalized return units, off when None) limits how far the predicted
*mean* may move from the head's own prediction at collection time: with ``v`` the current mean, ``v_old`` the
rollout's and ``c`` the range, the clipped mean is ``v_old + clamp(v - v_old, -c, c)``. A distributional head gets
there by shifting its *whole* distribution by ``delta = clamp(v - v_old, -c, c) - (v - v_old)`` (quantiles: every
quantile + delta; categorical: every atom + delta, then projected back onto the support with the two-hot rule, which
moves the mean by exactly delta as long as the moved atoms carrying mass stay inside the support). The per-sample
loss is ``max(loss(unclipped), loss(shifted))``, as PPO's value clipping in CleanRL / SB3 (Huang et al. 2022, "The 37
implementation details of PPO", detail 9); for the scalar head this is exactly their formula.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from rpbt.agent import distributional as D
from rpbt.agent.networks import PopLinear

HEAD_KINDS = ("scalar", "quantile", "categorical")


class ValueHead(nn.Module):
    """A distributional (or scalar) value head over LSTM features, one per population member.

    Args:
        population: P, the leading member dimension of the weights.
        hidden: H, the width of the LSTM features.
        kind: ``scalar``, ``quantile`` or ``categorical``.
        num_quantiles: N for ``quantile``.
        num_atoms: M for ``categorical``.
        v_min, v_max: the categorical support, normalized return units.
        kappa: the Huber threshold of the quantile loss (normalized return units).

    ``forward(features (P, ..., H)) -> raw (P, ..., K)`` with K = 1, N or M (raw quantiles or logits). Every other
    method takes that raw output. Support and fractions are constants of the configuration, kept out of the state
    dict.

    Raises ``ValueError`` for an unknown kind, fewer than one quantile, fewer than two atoms, v_max <= v_min or
    kappa <= 0 (each naming the ``agent.critic`` key).
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
        if kind not in HEAD_KINDS:
            raise ValueError(f"agent.critic.kind must be one of {HEAD_KINDS}, got {kind!r}")
        if kind == "quantile" and num_quantiles < 1:
            raise ValueError(f"agent.critic.num_quantiles must be >= 1, got {num_quantiles}")
        if kind == "categorical" and (num_atoms < 2 or not v_max > v_min):
            raise ValueError(f"agent.critic needs num_atoms >= 2 and v_max > v_min, got num_atoms={num_atoms}, "
                             f"v_min={v_min}, v_max={v_max}")
        if not kappa > 0:
            raise ValueError(f"agent.critic.huber_kappa must be > 0, got {kappa}")
        self.kind = kind
        self.kappa = float(kappa)
        out = {"scalar": 1, "quantile": num_quantiles, "categorical": num_atoms}[kind]
        self.linear = PopLinear(population, hidden, out)
        # Constants, not member state: plain attributes so they stay out of the state dict.
        self.support = torch.linspace(v_min, v_max, num_atoms) if kind == "categorical" else None
        self.taus = D.quantile_fractions(num_quantiles) if kind == "quantile" else None

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        """Orthogonal weights with gain 1 (CleanRL's critic output layer), zero bias, member i from generator i."""
        self.linear.reset_parameters(1.0, generators)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(features)

    def value(self, raw: Tensor) -> Tensor:
        """Mean predicted return (normalized units), shape (P, ...), from raw (P, ..., K)."""
        if self.kind == "scalar":
            return raw[..., 0]
        if self.kind == "quantile":
            return raw.mean(-1)
        return D.categorical_mean(raw, self.support)

    def cvar(self, raw: Tensor, alpha: float) -> Tensor:
        """Lower-tail CVaR_alpha (mean of the worst alpha fraction) of the predicted distribution, (P, ...).

        Normalized units; always <= :meth:`value`. The scalar head is a point mass, so its CVaR is its value.
        Raises ``ValueError`` for alpha outside (0, 1].
        """
        if self.kind == "scalar":
            return raw[..., 0]
        if self.kind == "quantile":
            return D.quantile_cvar(raw, alpha)
        return D.categorical_cvar(torch.softmax(raw, -1), self.support, alpha)

    def shift(self, raw: Tensor, delta: Tensor) -> Tensor:
        """The predicted distribution moved by ``delta`` (P, ...), as a raw output of the same kind (P, ..., K).

        Scalar and quantile: ``raw + delta`` (the mean moves by exactly delta). Categorical: each atom ``z_j``
        carrying probability ``p_j`` is moved to ``z_j + delta`` and split between its two neighbouring atoms by the
        two-hot rule (mass at the edge when it leaves the support); the result is returned as log-probabilities
        (floored at 1e-8), which are valid logits. Its mean is ``mean + delta`` when every atom with mass stays
        inside the support, otherwise the mass leaving the support is clipped to the edge. Memory: (P, ..., M, M).
        """
        if self.kind in ("scalar", "quantile"):
            return raw + delta.unsqueeze(-1)
        probs = torch.softmax(raw, -1)
        moved = D.two_hot(self.support + delta.unsqueeze(-1), self.support)  # (P, ..., M from, M to)
        return (probs.unsqueeze(-1) * moved).sum(-2).clamp_min(1e-8).log()

    def unclipped_loss(self, raw: Tensor, target: Tensor) -> Tensor:
        """Per-sample loss (P, ...) of raw (P, ..., K) against scalar targets (P, ...) in normalized units."""
        if self.kind == "scalar":
            return (raw[..., 0] - target) ** 2
        if self.kind == "quantile":
            return D.quantile_huber_loss(raw, target, kappa=self.kappa)
        return D.categorical_cross_entropy(raw, D.two_hot(target, self.support))

    def loss(self, raw: Tensor, target: Tensor, old_value: Tensor, clip_range_vf: Optional[float]) -> Tensor:
        """Per-sample critic loss (P, ...), clipped around ``old_value`` when ``clip_range_vf`` is not None.

        Args:
            raw: (P, ..., K) head output.
            target: (P, ...) lambda-returns in normalized units, detached.
            old_value: (P, ...) the head's mean at collection time, normalized units, detached.
            clip_range_vf: the largest move of the mean, normalized units, or None (no clipping).

        Returns ``max(unclipped, loss of the distribution shifted so its mean is old_value + clamp(v - old_value,
        -clip, clip))`` (see the module docstring).
        """
        loss = self.unclipped_loss(raw, target)
        if clip_range_vf is None:
            return loss
        move = self.value(raw) - old_value
        delta = move.clamp(-clip_range_vf, clip_range_vf) - move
        return torch.maximum(loss, self.unclipped_loss(self.shift(raw, delta), target))


__all__ = ["ValueHead", "HEAD_KINDS"]
