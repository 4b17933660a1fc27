"""Running observation normalizer per member (as Stable-Baselines3's ``VecNormalize`` / ``RunningMeanStd``), and the
check for raw observation outliers that would ruin it.

Shapes: P members, D flat observation features; a rollout's raw observations are (P, T, N, D).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn


class RunningMeanStd(nn.Module):
    """Per-member running mean and variance of a feature vector, merged batch by batch (Chan et al. 1979).

    Buffers: ``mean`` (P, D), ``var`` (P, D), ``count`` (P,), initialized to 0, 1 and ``epsilon`` as in SB3.
    :meth:`update` takes x of shape (P, N, D); :meth:`normalize` returns clip((x - mean) / sqrt(var + 1e-8)).
    ``raw_clip`` (``agent.raw_obs_clip``; None: off): raw values are clipped to [-raw_clip, raw_clip] before both,
    so a finite but absurd value (1e30) cannot drag the statistics away.
    """

    def __init__(self, population: int, dim: int, clip: float = 10.0, epsilon: float = 1e-4,
                 raw_clip: Optional[float] = None):
        super().__init__()
        self.clip = clip
        self.raw_clip = raw_clip
        self.register_buffer("mean", torch.zeros(population, dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(population, dim, dtype=torch.float64))
        self.register_buffer("count", torch.full((population,), float(epsilon), dtype=torch.float64))

    def clip_raw(self, x: Tensor) -> Tensor:
        """x clipped to [-raw_clip, raw_clip] (x itself when ``raw_clip`` is None)."""
        return x if self.raw_clip is None else x.clamp(-self.raw_clip, self.raw_clip)

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Merge a batch x (P, N, D) into each member's statistics."""
        x = self.clip_raw(x.to(torch.float64))
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
        y = (self.clip_raw(x.to(torch.float64)) - mean.view(shape)) / torch.sqrt(var.view(shape) + 1e-8)
        return y.clamp(-self.clip, self.clip).to(torch.float32)


@dataclass
class ObsOutliers:
    """Raw observation outliers of one rollout, per member (see :func:`find_obs_outliers`); every field (P,).

    ``count`` int64: outlying values (0: none); ``index`` int64: the flat observation component of the worst one
    (largest ratio to its scale; -1: none); ``value`` float64: its magnitude |x|; ``scale`` float64: that
    component's scale, max(median |x| over the rollout, 1) (0 where none).
    """

    count: Tensor
    index: Tensor
    value: Tensor
    scale: Tensor

    def metrics(self) -> dict[str, Tensor]:
        """As (P,) float64 metrics: ``health/obs_outliers``, ``health/obs_outlier_index``,
        ``health/obs_outlier_value``, ``health/obs_outlier_scale``."""
        return {"health/obs_outliers": self.count.double(), "health/obs_outlier_index": self.index.double(),
                "health/obs_outlier_value": self.value.double(), "health/obs_outlier_scale": self.scale.double()}


MEDIAN_SAMPLES = 256  # at most this many of a rollout's T x N values per component enter the median (its cost)


@torch.no_grad()
def find_obs_outliers(raw: Tensor, factor: float) -> ObsOutliers:
    """Finite raw observation values more than ``factor`` times beyond their component's typical magnitude.

    raw: (P, ..., D), one member's rollout per leading index (e.g. (P, T, N, D)). Per member and component d, the
    scale is max(median of |x| over the rollout's T x N values of d, 1) (environment units; the median of at most
    :data:`MEDIAN_SAMPLES` evenly spaced values, NaN left out), and a finite x is an outlier when
    |x| > factor x scale (every value is checked). The median ignores rare spikes (they are fewer than half of the
    values); the median magnitude measures a component with a large level (prices, volumes) by its level and a
    zero-centred one by its spread (about 0.67 standard deviations of a normal one); and the floor of one unit keeps
    components that are mostly zero (indicators, sparse counts) from firing on their ordinary values. Non-finite
    values are not outliers: they are member faults (``health/nonfinite``). A few tensor operations per rollout on
    the rollout's device, no host synchronisation. Returns :class:`ObsOutliers`.
    """
    P, D = raw.shape[0], raw.shape[-1]
    mag = raw.reshape(P, -1, D).abs()  # (P, S, D)
    stride = -(-mag.shape[1] // MEDIAN_SAMPLES)  # evenly spaced values have the same typical magnitude
    scale = torch.nanmedian(mag[:, ::stride], dim=1).values.clamp(min=1.0)  # (P, D); NaN where all are NaN
    finite = torch.nan_to_num(mag, nan=0.0, posinf=0.0)  # non-finite values are faults, never outliers
    flagged = finite > factor * scale.unsqueeze(1)  # a NaN scale compares False
    count = flagged.reshape(P, -1).sum(1, dtype=torch.int32).long()  # (an int64 sum of bools is 4x slower)
    peak = finite.amax(1)  # (P, D): a component's largest finite magnitude, an outlier wherever any is flagged
    worst = torch.where(flagged.any(1), peak / scale, torch.zeros_like(peak))  # (P, D) ratio of its worst outlier
    found = count > 0
    index = torch.where(found, worst.argmax(1), torch.full_like(count, -1))
    at = index.clamp(min=0).unsqueeze(1)
    zero = torch.zeros(P, dtype=torch.float64, device=raw.device)
    return ObsOutliers(count=count, index=index,
                       value=torch.where(found, peak.gather(1, at).squeeze(1).double(), zero),
                       scale=torch.where(found, scale.gather(1, at).squeeze(1).double(), zero))
