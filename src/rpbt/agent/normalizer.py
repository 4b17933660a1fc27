"""Running observation normalizer per member (as Stable-Baselines3's ``VecNormalize`` / ``RunningMeanStd``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RunningMeanStd(nn.Module):
    """Per-member running mean and variance of a feature vector, merged batch by batch (Chan et al. 1979).

    Buffers: ``mean`` (P, D), ``var`` (P, D), ``count`` (P,), initialized to 0, 1 and ``epsilon`` as in SB3.
    :meth:`update` takes x of shape (P, N, D); :meth:`normalize` returns clip((x - mean) / sqrt(var + 1e-8)).
    """

    def __init__(self, population: int, dim: int, clip: float = 10.0, epsilon: float = 1e-4):
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.zeros(population, dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(population, dim, dtype=torch.float64))
        self.register_buffer("count", torch.full((population,), float(epsilon), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Merge a batch x (P, N, D) into each member's statistics."""
        x = x.to(torch.float64)
        batch_mean, batch_var = x.mean(1), x.var(1, unbiased=False)  # (var_mean's mean rounds differently)
        n = x.shape[1]
        count = self.count.unsqueeze(-1)
        total = count + n
        delta = batch_mean - self.mean
        self.mean += delta * (torch.full_like(total, n) / total)  # (a Python n / total multiplies by 1 / total)
        self.var.copy_((self.var * count + batch_var * n + delta.square() * (count * n / total)) / total)
        self.count.add_(n)

    def normalize(self, x: Tensor) -> Tensor:
        """Normalize x (P, ..., D) with each member's statistics; result float32."""
        mean, var = self.mean, self.var
        shape = (mean.shape[0],) + (1,) * (x.dim() - 2) + (mean.shape[1],)
        y = (x.to(torch.float64) - mean.view(shape)) / torch.sqrt(var.view(shape) + 1e-8)
        return y.clamp(-self.clip, self.clip).to(torch.float32)
