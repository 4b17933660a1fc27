"""Distributional value functions: losses, projections, risk measures and the return normalizer.

Pure functions on torch tensors that accept any leading batch shape ``...`` (for the learner that is
``(P, T, B)``: members, time, environments), plus :class:`ReturnNormalizer`, whose per-member statistics are
registered buffers with a leading member dimension ``P`` so they move with a member on a PBT exploit.

Units: quantiles, atoms, targets and CVaR values are all in the units of the (possibly normalized) return; the
fractions ``tau`` and the risk level ``alpha`` are probabilities in ``(0, 1]``.

References
----------
- W. Dabney, M. Rowland, M. G. Bellemare, R. Munos, "Distributional Reinforcement Learning with Quantile
  Regression", AAAI 2018 (QR-DQN): quantile midpoints and the quantile Huber loss.
- M. G. Bellemare, W. Dabney, R. Munos, "A Distributional Perspective on Reinforcement Learning", ICML 2017 (C51):
  fixed categorical support and the projection of a target onto it (here a single scalar target, the "two-hot"
  special case of the C51 projection).
- R. T. Rockafellar, S. Uryasev, "Optimization of Conditional Value-at-Risk", Journal of Risk 2000, and
  "Conditional value-at-risk for general loss distributions", Journal of Banking & Finance 2002: CVaR of a discrete
  distribution, with a fractional weight on the atom that straddles the alpha-quantile.
- T. F. Chan, G. H. Golub, R. J. LeVeque, "Updating formulae and a pairwise algorithm for computing sample
  variances", 1979 (parallel merge of mean / variance used by :class:`ReturnNormalizer`).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

__all__ = [
    "quantile_fractions",
    "quantile_huber_loss",
    "two_hot",
    "categorical_cross_entropy",
    "categorical_mean",
    "quantile_cvar",
    "categorical_cvar",
    "empirical_cvar",
    "ReturnNormalizer",
]


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not (0.0 < alpha <= 1.0) or math.isnan(alpha):
        raise ValueError(f"CVaR alpha must be in (0, 1], got {alpha}")
    return alpha


# --------------------------------------------------------------------------------------------------- quantiles


def quantile_fractions(
    n: int, *, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None
) -> Tensor:
    """The quantile midpoints ``tau_i = (2 i + 1) / (2 n)``, ``i = 0 .. n-1`` (Dabney et al. 2018, Lemma 2).

    Returns a tensor of shape ``(n,)`` (default dtype unless ``dtype`` is given). Raises ``ValueError`` if
    ``n < 1``.
    """
    if int(n) < 1:
        raise ValueError(f"the number of quantiles must be >= 1, got {n}")
    n = int(n)
    return (2 * torch.arange(n, device=device, dtype=dtype or torch.get_default_dtype()) + 1) / (2 * n)


def quantile_huber_loss(quantiles: Tensor, targets: Tensor, kappa: float = 1.0) -> Tensor:
    """Quantile Huber loss of QR-DQN (Dabney et al. 2018, eq. 10).

    With ``u = target - quantile`` and the Huber loss ``L_kappa(u) = u^2 / 2`` if ``|u| <= kappa`` else
    ``kappa (|u| - kappa / 2)``, each pair (quantile ``i``, target sample ``j``) costs

        ``rho_tau_i^kappa(u_ij) = |tau_i - 1{u_ij < 0}| * L_kappa(u_ij) / kappa``

    with ``tau_i`` the midpoints of :func:`quantile_fractions`.

    Reduction: **summed over the N quantiles, averaged over the M target samples** (the paper's
    ``sum_i E_j[rho]``), giving one loss per leading index; the caller averages over the batch. Dividing by
    ``kappa`` makes the loss tend to the plain quantile (pinball) loss ``|tau - 1{u<0}| |u|`` for large ``|u|``
    whatever ``kappa``, so its gradient for outliers is ``|tau - 1{u<0}|`` per quantile.

    Caveat (a property of the loss, not of this code): the minimizer of ``E[rho_tau^kappa(X - q)]`` is the
    tau-quantile of ``X`` only as ``kappa -> 0``; for ``kappa`` comparable to the spread of the targets it is pulled
    towards the centre (between the quantile and the expectile). For ``X ~ N(0, 1)``, ``kappa = 1``, ``tau = 1/16``
    it is about ``-1.21`` instead of ``-1.53``. Tail statistics computed from the fitted quantiles (CVaR) are then
    less extreme than the true ones; a ``kappa`` well below the target standard deviation (e.g. ``0.1`` of it, error
    under 0.05 sigma in that example) keeps the quantiles honest.

    Args:
        quantiles: ``(..., N)`` predicted quantiles, ordered by ``tau`` (they need not be monotone).
        targets: ``(...)`` one scalar target per leading index, or ``(..., M)`` M target samples (e.g. the
            target network's quantiles). **Not detached here**: the caller passes detached targets (a
            bootstrapped target must not receive gradient).
        kappa: Huber threshold, ``> 0``.

    Returns:
        ``(...)`` the loss per leading index.

    Raises:
        ValueError: ``kappa <= 0`` or leading shapes that do not match.
    """
    if not kappa > 0:
        raise ValueError(f"kappa must be > 0, got {kappa}")
    if targets.dim() == quantiles.dim() - 1:
        targets = targets.unsqueeze(-1)
    if targets.dim() != quantiles.dim() or targets.shape[:-1] != quantiles.shape[:-1]:
        raise ValueError(
            f"targets of shape {tuple(targets.shape)} do not match quantiles of shape {tuple(quantiles.shape)}: "
            "expected (...) or (..., M) with the same leading shape"
        )
    n = quantiles.shape[-1]
    tau = quantile_fractions(n, device=quantiles.device, dtype=quantiles.dtype)
    u = targets.unsqueeze(-2) - quantiles.unsqueeze(-1)  # (..., N, M)
    abs_u = u.abs()
    huber = torch.where(abs_u <= kappa, 0.5 * u.pow(2), kappa * (abs_u - 0.5 * kappa))
    weight = (tau.unsqueeze(-1) - (u.detach() < 0).to(u.dtype)).abs()  # (N, 1) broadcast over (..., N, M)
    return (weight * huber / kappa).mean(dim=-1).sum(dim=-1)


# --------------------------------------------------------------------------------------------------- categorical


def _check_support(support: Tensor) -> None:
    if support.dim() != 1 or support.shape[0] < 2:
        raise ValueError(f"support must be a 1-D tensor of at least 2 atoms, got shape {tuple(support.shape)}")


def two_hot(targets: Tensor, support: Tensor) -> Tensor:
    """Project scalar targets onto a fixed support (the single-target C51 projection, Bellemare et al. 2017).

    A target ``x`` between neighbouring atoms ``z_k <= x <= z_{k+1}`` puts mass ``(z_{k+1} - x) / (z_{k+1} - z_k)``
    on ``z_k`` and the rest on ``z_{k+1}``, so the distribution sums to 1 and its expectation is exactly ``x``
    (up to float rounding). Targets outside ``[v_min, v_max] = [support[0], support[-1]]`` are clipped: all mass on
    the edge atom (the mean is then the clipped value).

    The support is meant to be uniformly spaced (``torch.linspace(v_min, v_max, M)``), but the neighbours are
    found with ``searchsorted``, so any strictly increasing support works.

    Args:
        targets: ``(...)`` scalar targets, detached by the caller.
        support: ``(M,)`` strictly increasing atoms, ``M >= 2``.

    Returns:
        ``(..., M)`` probabilities in ``support``'s dtype.

    Raises:
        ValueError: the support is not 1-D with at least 2 atoms.
    """
    _check_support(support)
    m = support.shape[0]
    x = targets.to(support.dtype).clamp(support[0], support[-1])
    flat = x.reshape(-1).contiguous()
    lo_idx = (torch.searchsorted(support.contiguous(), flat, right=True) - 1).clamp(0, m - 2)
    lo = support[lo_idx]
    hi = support[lo_idx + 1]
    w_hi = ((flat - lo) / (hi - lo)).clamp(0.0, 1.0)
    out = torch.zeros(flat.shape[0], m, dtype=support.dtype, device=support.device)
    out.scatter_add_(1, lo_idx.unsqueeze(1), (1.0 - w_hi).unsqueeze(1))
    out.scatter_add_(1, (lo_idx + 1).unsqueeze(1), w_hi.unsqueeze(1))
    return out.reshape(*x.shape, m)


def categorical_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Cross-entropy ``-sum_k p_k log softmax(logits)_k`` over the last dimension.

    Args:
        logits: ``(..., M)`` unnormalized log-probabilities of the predicted distribution.
        target_probs: ``(..., M)`` target probabilities (e.g. :func:`two_hot`), detached by the caller.

    Returns:
        ``(...)`` in nats.

    Raises:
        ValueError: the shapes differ.
    """
    if logits.shape != target_probs.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target_probs {tuple(target_probs.shape)} differ")
    return -(target_probs * torch.log_softmax(logits, dim=-1)).sum(dim=-1)


def categorical_mean(logits: Tensor, support: Tensor) -> Tensor:
    """Expectation ``sum_k softmax(logits)_k z_k`` of a categorical distribution on ``support``.

    Args:
        logits: ``(..., M)``.
        support: ``(M,)``.

    Returns:
        ``(...)`` in the units of ``support``.
    """
    _check_support(support)
    if logits.shape[-1] != support.shape[0]:
        raise ValueError(f"logits have {logits.shape[-1]} atoms, support has {support.shape[0]}")
    return (torch.softmax(logits, dim=-1) * support).sum(dim=-1)


# --------------------------------------------------------------------------------------------------- CVaR


def _lower_tail_mean(values: Tensor, probs: Tensor, alpha: float) -> Tensor:
    """CVaR_alpha of a discrete distribution whose atoms ``values`` (..., K) are sorted ascending.

    Atom ``k`` gets weight ``clamp(alpha - F_{k-1}, 0, p_k)`` with ``F_{k-1}`` the mass strictly below it, so the
    weights sum to ``alpha`` (when the probabilities sum to 1) and the atom straddling the alpha-quantile is counted
    fractionally (Rockafellar & Uryasev 2002).
    """
    before = torch.cumsum(probs, dim=-1) - probs
    weights = torch.minimum((alpha - before).clamp_min(0.0), probs)
    return (weights * values).sum(dim=-1) / alpha


def quantile_cvar(quantiles: Tensor, alpha: float) -> Tensor:
    """Lower-tail CVaR_alpha (mean of the worst ``alpha`` fraction) of N equally weighted quantiles.

    Each quantile is an atom of mass ``1/N``; the atoms are sorted (a network's quantiles may cross) and the
    worst ones summed until mass ``alpha`` is reached, the boundary atom with a fractional weight. Example:
    quantiles ``[-4, -2, 0, 2]`` with ``alpha = 0.375`` give ``(0.25 * -4 + 0.125 * -2) / 0.375 = -10/3``.

    Args:
        quantiles: ``(..., N)``.
        alpha: risk level in ``(0, 1]``; ``alpha = 1`` is the mean.

    Returns:
        ``(...)`` in the units of the quantiles (differentiable).

    Raises:
        ValueError: ``alpha`` outside ``(0, 1]``.
    """
    alpha = _check_alpha(alpha)
    values, _ = torch.sort(quantiles, dim=-1)
    probs = torch.full_like(values, 1.0 / values.shape[-1])
    return _lower_tail_mean(values, probs, alpha)


def categorical_cvar(probs: Tensor, support: Tensor, alpha: float) -> Tensor:
    """Exact lower-tail CVaR_alpha of a categorical distribution on ``support``.

    Example: atoms ``[-10, 0, 10]`` with probabilities ``[0.1, 0.3, 0.6]``: ``alpha = 0.05`` gives ``-10``,
    ``alpha = 0.2`` gives ``(0.1 * -10 + 0.1 * 0) / 0.2 = -5``.

    Args:
        probs: ``(..., M)`` probabilities summing to 1 (e.g. ``softmax(logits)``).
        support: ``(M,)`` atoms (sorted here if not increasing).
        alpha: risk level in ``(0, 1]``.

    Returns:
        ``(...)`` in the units of ``support``.

    Raises:
        ValueError: ``alpha`` outside ``(0, 1]`` or ``probs`` and ``support`` of different sizes.
    """
    alpha = _check_alpha(alpha)
    _check_support(support)
    if probs.shape[-1] != support.shape[0]:
        raise ValueError(f"probs have {probs.shape[-1]} atoms, support has {support.shape[0]}")
    values, order = torch.sort(support)
    probs = probs.index_select(-1, order)
    return _lower_tail_mean(values.to(probs.dtype).expand_as(probs), probs, alpha)


def empirical_cvar(samples: Union[Tensor, Sequence[float]], alpha: float) -> float:
    """Lower-tail CVaR_alpha of a sample of episode returns (the worst returns are the lower tail).

    The samples are treated as the empirical distribution (each of the ``n`` samples has mass ``1/n``) and its
    exact CVaR is returned: the mean of the worst ``alpha * n`` samples, **fractional** when ``alpha * n`` is not
    an integer (the boundary sample weighted by the fractional part), so it agrees with :func:`quantile_cvar`
    and :func:`categorical_cvar`. With ``alpha * n`` an integer ``k`` it is the mean of the ``k`` worst returns.
    Example: ``[5, 1, 3, 2]`` with ``alpha = 0.5`` gives ``(1 + 2) / 2 = 1.5``; with ``alpha = 0.375``
    (``1.5`` samples) ``(1 + 0.5 * 2) / 1.5 = 4/3``.

    Args:
        samples: ``(n,)`` tensor or sequence of floats, ``n >= 1``.
        alpha: risk level in ``(0, 1]``.

    Returns:
        a Python float (computed in float64).

    Raises:
        ValueError: no samples, not 1-D, or ``alpha`` outside ``(0, 1]``.
    """
    alpha = _check_alpha(alpha)
    if isinstance(samples, Tensor):
        x = samples.detach().to(device="cpu", dtype=torch.float64)
    else:
        x = torch.as_tensor(list(samples), dtype=torch.float64)
    if x.dim() != 1 or x.numel() == 0:
        raise ValueError(f"empirical_cvar needs a non-empty 1-D sample, got shape {tuple(x.shape)}")
    values, _ = torch.sort(x)
    probs = torch.full_like(values, 1.0 / values.numel())
    return float(_lower_tail_mean(values, probs, alpha))


# --------------------------------------------------------------------------------------------------- normalizer


class ReturnNormalizer(nn.Module):
    """Per-member running statistics of the value targets (lambda-returns), used to rescale them.

    Buffers (leading member dimension ``P``, so a PBT exploit copies them with the member):

    - ``mean (P,)``: running mean of the returns (initially 0).
    - ``var (P,)``: running population variance (``ddof = 0``; initially 1, so the scale starts at 1).
    - ``count (P,)``: number of returns merged so far (initially 0).

    :meth:`update` merges a batch with the parallel Welford / Chan et al. formulae, so the statistics after any
    sequence of updates equal the mean and population variance of all the merged returns concatenated.

    Only a **scale** is used: ``normalize(x) = x / scale`` and ``denormalize(y) = y * scale`` with
    ``scale = max(sqrt(var + mean^2), epsilon)``, the root mean square of the returns. The root mean square, not the
    standard deviation, so that returns far from zero with little spread (CartPole-v1's ~100 +- 5) still map to
    about unit size and stay inside a fixed categorical support. No centering, because (a) a fixed categorical
    support ``[v_min, v_max]`` is symmetric around zero and stays centred on the normalized returns only if zero
    maps to zero, and (b) the running mean drifts from update to update: subtracting it would shift every stored
    value prediction by the drift, whereas a scale-only map leaves the sign and the zero of the value unchanged and
    keeps old predictions consistent with new targets up to a slowly varying factor.

    ``epsilon`` (default ``1e-2``, in return units) bounds the scale from below so that near-constant returns (e.g. an
    environment that pays nothing for a while) are not blown up to huge normalized targets.
    """

    mean: Tensor
    var: Tensor
    count: Tensor

    def __init__(self, num_members: int, epsilon: float = 1e-2) -> None:
        super().__init__()
        if int(num_members) < 1:
            raise ValueError(f"num_members must be >= 1, got {num_members}")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        self.num_members = int(num_members)
        self.epsilon = float(epsilon)
        self.register_buffer("mean", torch.zeros(self.num_members))
        self.register_buffer("var", torch.ones(self.num_members))
        self.register_buffer("count", torch.zeros(self.num_members))

    def extra_repr(self) -> str:
        return f"num_members={self.num_members}, epsilon={self.epsilon}"

    def _check(self, x: Tensor, what: str) -> None:
        if x.dim() < 1 or x.shape[0] != self.num_members:
            raise ValueError(f"{what}: expected a leading member dimension of {self.num_members}, got {tuple(x.shape)}")

    @torch.no_grad()
    def update(self, returns: Tensor, mask: Optional[Tensor] = None) -> None:
        """Merge a batch of returns ``(P, ...)`` into each member's statistics.

        ``mask`` (same shape, bool) selects the valid entries; a member with no valid entry is left unchanged.
        The merge runs in float64 and is stored back in the buffers' dtype.

        Raises:
            ValueError: wrong leading dimension or a mask of another shape.
        """
        self._check(returns, "ReturnNormalizer.update")
        p = self.num_members
        x = returns.detach().reshape(p, -1).to(torch.float64)
        if mask is None:
            w = torch.ones_like(x)
        else:
            if mask.shape != returns.shape:
                raise ValueError(f"mask {tuple(mask.shape)} does not match returns {tuple(returns.shape)}")
            w = mask.detach().reshape(p, -1).to(torch.float64)
        n_b = w.sum(dim=1)
        safe_nb = n_b.clamp_min(1.0)
        mean_b = (w * x).sum(dim=1) / safe_nb
        var_b = (w * (x - mean_b.unsqueeze(1)).pow(2)).sum(dim=1) / safe_nb

        n_a = self.count.to(torch.float64)
        mean_a = self.mean.to(torch.float64)
        var_a = self.var.to(torch.float64)
        n = n_a + n_b
        safe_n = n.clamp_min(1.0)
        delta = mean_b - mean_a
        mean = mean_a + delta * n_b / safe_n
        m2 = var_a * n_a + var_b * n_b + delta.pow(2) * n_a * n_b / safe_n
        var = m2 / safe_n
        has = n_b > 0
        self.mean.copy_(torch.where(has, mean, mean_a))
        self.var.copy_(torch.where(has, var, var_a))
        self.count.copy_(n)

    @property
    def scale(self) -> Tensor:
        """``(P,)``: ``max(sqrt(var + mean^2), epsilon)`` (root mean square of the returns), in return units."""
        return (self.var + self.mean.pow(2)).sqrt().clamp_min(self.epsilon)

    def _scale_like(self, x: Tensor) -> Tensor:
        return self.scale.to(x.dtype).reshape(self.num_members, *([1] * (x.dim() - 1)))

    def normalize(self, x: Tensor) -> Tensor:
        """``x / scale`` per member; ``x`` is ``(P, ...)``. Raises ``ValueError`` on a wrong leading dimension."""
        self._check(x, "ReturnNormalizer.normalize")
        return x / self._scale_like(x)

    def denormalize(self, y: Tensor) -> Tensor:
        """``y * scale`` per member (inverse of :meth:`normalize`); ``y`` is ``(P, ...)``."""
        self._check(y, "ReturnNormalizer.denormalize")
        return y * self._scale_like(y)
