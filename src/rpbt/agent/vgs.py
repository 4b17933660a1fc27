"""Variance gradient scaling (VGS): shrink the gradient of tensors whose gradient is mostly noise.

For every parameter tensor and every population member the scaler keeps exponential moving averages (EMA) of the
raw gradient ``g`` and of its square, per element:

    ``m <- beta m + (1 - beta) g``,  ``s <- beta s + (1 - beta) g^2``,
    ``m_hat = m / (1 - beta^t)``,  ``s_hat = s / (1 - beta^t)``  (bias correction as in Adam, ``t`` per member)

and estimates, per element, the **noise fraction** of the gradient's second moment

    ``nu = Var[g] / E[g^2] = clamp((s_hat - m_hat^2) / (s_hat + tiny), 0, 1)``

(``tiny`` the smallest normal number of the dtype, so an element that never received gradient counts as noise-free).
Averaging ``nu`` over a member's slice of the tensor gives ``noise (P,)``, and the member's gradient slice is
multiplied by

    ``scale = clamp(1 / (1 + alpha * noise), min_scale, 1)``,  and ``scale = 1`` while ``t <= warmup``.

Rationale: ``nu = 1 / (1 + GSNR)`` where ``GSNR = E[g]^2 / Var[g]`` is the gradient signal-to-noise ratio of a
parameter. A tensor whose gradient is dominated by its variance (low signal-to-noise: the minibatch gradients point
in inconsistent directions, as in a value head fitting noisy returns or an LSTM gate driven by rare events) gets a
smaller step, one whose gradient is consistent keeps its full step. ``alpha`` sets the strength (``alpha = 0``
disables the scaling), ``min_scale`` bounds the shrinkage, and ``warmup`` waits until the EMAs mean something.
The scaling is applied to the raw gradients **before** gradient-norm clipping.

Related ideas (this exact formulation is rpbt's own, not taken from a paper): Kingma & Ba (2015, Adam, §2.1) read
``m_hat / sqrt(v_hat)`` as a signal-to-noise ratio that shrinks the effective step when the gradient is uncertain;
Liu et al. (2020, "Understanding Why Neural Networks Generalize Well Through GSNR of Parameters", ICLR) define the
per-parameter gradient signal-to-noise ratio used above. Here the statistics are EMAs over successive minibatch
gradients (over time), not over per-sample gradients, and the scale is one number per (member, tensor).

The statistics are registered buffers with a leading member dimension ``P``, so a PBT exploit copies them with the
member and ``state_dict`` / ``load_state_dict`` save and restore them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Optional

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # pragma: no cover
    from rpbt.config import VGSConfig

__all__ = ["VarianceGradientScaler"]


def _key(name: str) -> str:
    return name.replace(".", "__")


class VarianceGradientScaler(nn.Module):
    """Per-member, per-tensor gradient scaling by the estimated gradient noise fraction (see the module docstring).

    Args:
        param_shapes: parameter name (as in ``named_parameters()``, dots allowed) -> shape; every shape has the
            same leading member dimension ``P``.
        beta: EMA decay in ``(0, 1)``.
        alpha: strength, ``>= 0``.
        min_scale: lower bound of the scale, in ``(0, 1]``.
        warmup: number of initial steps (per member) with scale exactly 1; the EMAs are updated meanwhile.

    Buffers (names: parameter name with ``.`` replaced by ``__``):
        ``m_<name>``, ``s_<name>``: EMAs of the gradient and squared gradient, the parameter's shape (float32).
        ``step (P,)``: int64 number of :meth:`scale_` calls seen by each member.

    Raises:
        ValueError: empty ``param_shapes``, a shape without the common leading ``P``, two names that collide
            after replacing dots, or hyperparameters out of range.
    """

    step: Tensor

    def __init__(
        self,
        param_shapes: Mapping[str, torch.Size],
        beta: float = 0.99,
        alpha: float = 1.0,
        min_scale: float = 0.1,
        warmup: int = 10,
    ) -> None:
        super().__init__()
        if not param_shapes:
            raise ValueError("VarianceGradientScaler needs at least one parameter shape")
        if not 0.0 < beta < 1.0:
            raise ValueError(f"beta must be in (0, 1), got {beta}")
        if not alpha >= 0.0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if not 0.0 < min_scale <= 1.0:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
        if int(warmup) < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        self.beta = float(beta)
        self.alpha = float(alpha)
        self.min_scale = float(min_scale)
        self.warmup = int(warmup)

        shapes = {name: torch.Size(shape) for name, shape in param_shapes.items()}
        leading = {s[0] if len(s) else None for s in shapes.values()}
        if len(leading) != 1 or None in leading:
            raise ValueError(
                "every parameter shape needs the same leading member dimension P, got "
                + ", ".join(f"{n}: {tuple(s)}" for n, s in shapes.items())
            )
        self.num_members = int(next(iter(leading)))
        self._names: dict[str, str] = {}  # parameter name -> buffer key
        for name, shape in shapes.items():
            key = _key(name)
            if key in self._names.values():
                raise ValueError(f"parameter names collide after replacing '.' with '__': {name!r} -> {key!r}")
            self._names[name] = key
            self.register_buffer(f"m_{key}", torch.zeros(shape))
            self.register_buffer(f"s_{key}", torch.zeros(shape))
        self.register_buffer("step", torch.zeros(self.num_members, dtype=torch.long))

    @classmethod
    def from_config(cls, cfg: "VGSConfig", param_shapes: Mapping[str, torch.Size]) -> "VarianceGradientScaler":
        """Build from the ``agent.vgs`` section of the run configuration (``enabled`` is the caller's business)."""
        return cls(param_shapes, beta=cfg.beta, alpha=cfg.alpha, min_scale=cfg.min_scale, warmup=cfg.warmup)

    def extra_repr(self) -> str:
        return (
            f"num_members={self.num_members}, tensors={len(self._names)}, beta={self.beta}, alpha={self.alpha}, "
            f"min_scale={self.min_scale}, warmup={self.warmup}"
        )

    @torch.no_grad()
    def scale_(self, grads: Mapping[str, Optional[Tensor]]) -> dict[str, Tensor]:
        """Update the statistics with the raw gradients and scale them in place, member by member.

        Args:
            grads: parameter name -> gradient of the parameter's shape (``(P, ...)``), e.g.
                ``{n: p.grad for n, p in net.named_parameters()}``; ``None`` entries (and names left out) are
                skipped for this step (their EMAs are not updated, the step count still advances).

        Returns:
            metrics, each ``(P,)`` float: ``vgs/mean_scale`` and ``vgs/min_scale`` (mean and min of the scale over
            the tensors seen in this call; 1 when none was), ``vgs/mean_noise`` (mean noise fraction over them).

        Raises:
            KeyError: a name the scaler was not built for.
            ValueError: a gradient whose shape differs from the parameter's.
        """
        self.step.add_(1)
        t = self.step.to(torch.float64)
        bias = 1.0 - torch.pow(torch.tensor(self.beta, dtype=torch.float64, device=t.device), t)  # (P,)
        in_warmup = self.step <= self.warmup
        scales: list[Tensor] = []
        noises: list[Tensor] = []
        p = self.num_members
        for name, grad in grads.items():
            if grad is None:
                continue
            if name not in self._names:
                raise KeyError(f"VarianceGradientScaler has no statistics for parameter {name!r}")
            key = self._names[name]
            m: Tensor = getattr(self, f"m_{key}")
            s: Tensor = getattr(self, f"s_{key}")
            if grad.shape != m.shape:
                raise ValueError(f"gradient of {name!r} has shape {tuple(grad.shape)}, expected {tuple(m.shape)}")
            g = grad.detach().to(m.dtype)
            m.mul_(self.beta).add_(g, alpha=1.0 - self.beta)
            s.mul_(self.beta).addcmul_(g, g, value=1.0 - self.beta)
            view = (p,) + (1,) * (m.dim() - 1)
            bc = bias.to(m.dtype).reshape(view)
            m_hat = m / bc
            s_hat = s / bc
            tiny = torch.finfo(m.dtype).tiny
            nu = ((s_hat - m_hat.pow(2)) / (s_hat + tiny)).clamp(0.0, 1.0)
            noise = nu.reshape(p, -1).mean(dim=1)
            scale = (1.0 / (1.0 + self.alpha * noise)).clamp(self.min_scale, 1.0)
            scale = torch.where(in_warmup, torch.ones_like(scale), scale)
            grad.mul_(scale.to(grad.dtype).reshape(view))
            scales.append(scale)
            noises.append(noise)
        if scales:
            stacked = torch.stack(scales)  # (tensors, P)
            return {
                "vgs/mean_scale": stacked.mean(dim=0),
                "vgs/min_scale": stacked.min(dim=0).values,
                "vgs/mean_noise": torch.stack(noises).mean(dim=0),
            }
        ones = torch.ones(p, device=self.step.device)
        return {"vgs/mean_scale": ones, "vgs/min_scale": ones.clone(), "vgs/mean_noise": torch.zeros_like(ones)}
