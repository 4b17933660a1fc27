"""Adam with a per-member learning rate, for population-batched parameters.

``torch.optim.Adam`` accepts one learning rate per parameter group, and a population's parameters are single
tensors whose leading dimension is the member, so no stock optimizer can honour a (P,) learning rate exactly
(scaling gradients would not do it: Adam is invariant to gradient scale). This is a small Adam (Kingma & Ba 2015,
the update of ``torch.optim.Adam`` with ``amsgrad=False``, ``weight_decay=0``, bias-corrected moments) whose
moments are registered buffers with the member dimension first and whose step count is per member (P,), so they
belong to the member state. Tests compare it step by step with ``torch.optim.Adam``.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor, nn


def buffer_name(param_name: str) -> str:
    """A buffer-safe spelling of a dotted parameter name."""
    return param_name.replace(".", "__")


class PopulationAdam(nn.Module):
    """Adam over named population parameters (each (P, ...)) with learning rate (P,) given at each step.

    Buffers: ``exp_avg__<name>``, ``exp_avg_sq__<name>`` (shaped like the parameter) and ``step`` (P,).
    :meth:`reset_member` zeroes one member's moments and step (``pbt.optimizer_state: reset``).
    """

    def __init__(self, named_params: Iterable[tuple[str, nn.Parameter]], population: int,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-5):
        super().__init__()
        self.params: list[tuple[str, nn.Parameter]] = list(named_params)
        self.betas, self.eps = betas, eps
        for name, p in self.params:
            if p.shape[0] != population:
                raise ValueError(f"parameter {name} has leading dim {p.shape[0]}, expected population {population}")
            self.register_buffer("exp_avg__" + buffer_name(name), torch.zeros_like(p))
            self.register_buffer("exp_avg_sq__" + buffer_name(name), torch.zeros_like(p))
        self.register_buffer("step_count", torch.zeros(population))

    @torch.no_grad()
    def step(self, lr: Tensor) -> None:
        """One Adam update with per-member learning rate ``lr`` (P,); parameters without a gradient are skipped.

        Written with ``torch._foreach_*`` (one call per operation for all parameters, as ``torch.optim.Adam``'s
        ``foreach`` path); element by element the same operations in the same order as a per-parameter loop.
        """
        beta1, beta2 = self.betas
        self.step_count += 1
        bc1 = 1 - beta1 ** self.step_count  # (P,)
        bc2 = 1 - beta2 ** self.step_count
        live = [(name, p) for name, p in self.params if p.grad is not None]
        if not live:
            return
        params = [p for _, p in live]
        grads = [p.grad for p in params]
        ms = [getattr(self, "exp_avg__" + buffer_name(name)) for name, _ in live]
        vs = [getattr(self, "exp_avg_sq__" + buffer_name(name)) for name, _ in live]
        shapes = [(-1,) + (1,) * (p.dim() - 1) for p in params]
        step_size = lr / bc1
        torch._foreach_lerp_(ms, grads, 1 - beta1)
        torch._foreach_mul_(vs, beta2)
        torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)
        denom = torch._foreach_div(vs, [bc2.view(s) for s in shapes])
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, self.eps)
        update = torch._foreach_mul([step_size.view(s) for s in shapes], ms)
        torch._foreach_div_(update, denom)
        torch._foreach_sub_(params, update)

    @torch.no_grad()
    def reset_member(self, i: int) -> None:
        """Forget member i's moments and step count."""
        for buf in self.buffers():
            buf[i].zero_()


def clip_grad_norm_per_member(params: Iterable[nn.Parameter], max_norm: Tensor) -> Tensor:
    """Scale each member's gradient so its global L2 norm (over all parameters) is at most ``max_norm[i]``.

    params: population parameters (P, ...); max_norm: (P,). Returns the pre-clipping norms (P,). Same rule as
    ``torch.nn.utils.clip_grad_norm_`` (coefficient max_norm / (norm + 1e-6), capped at 1), member by member.
    """
    grads = [p.grad for p in params if p.grad is not None]
    sq = torch.zeros_like(max_norm)
    for g in grads:
        sq = sq + g.pow(2).reshape(g.shape[0], -1).sum(1)
    norms = sq.sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view((-1,) + (1,) * (g.dim() - 1)))
    return norms
