"""The previous action / reward features that a recurrent policy may be fed after its observation.

One builder for every acting path: collection (:class:`rpbt.envs.runner.EnvRunner` keeps the features of the last
action), :meth:`rpbt.api.Policy.predict`, :func:`rpbt.evaluation.policy.evaluate_members` and the exported actor
(:class:`rpbt.actor_export.ExportedActor`, compiled by ``torch.jit.script`` and traced by the ONNX exporter). So the
functions here are pure tensor operations with TorchScript types (no ``from __future__ import annotations``).

Shapes: any leading batch shape ``...`` ((P, N) while training, (B,) for a standalone actor); A the width of the
action features: n for Discrete(n), sum(nvec) for MultiDiscrete(nvec), d for a Box of d values; D the observation
size. Kapturowski et al. 2019 (R2D2) and POPGym's baselines feed the previous action and reward the same way.
"""

# No `from __future__ import annotations`: TorchScript reads these annotations as types.

from typing import List, Optional

import torch
from torch import Tensor


def action_features(action: Tensor, kind: str, nvec: List[int], start: List[int], low: Tensor, high: Tensor
                    ) -> Tensor:
    """Actions as the environment took them, as the policy's input: float32 (..., A).

    action: (...) indices for Discrete, (..., K) for MultiDiscrete (each with Gymnasium's ``start`` included), or
    (..., d) values for Box (flat). kind: ``discrete``, ``multi_discrete`` or ``box``; nvec: the category counts
    ([n] for Discrete, empty for Box); start: each categorical's first action (empty for Box); low, high: (d,)
    float32 bounds of a Box (ignored otherwise).

    Discrete: the one-hot of ``action - start``; MultiDiscrete: the K one-hots concatenated; Box: the action
    clipped to [low, high] (what the environment received; clipping twice changes nothing). An index outside the
    space gives an all-zero one-hot.
    """
    if kind == "box":
        return torch.minimum(torch.maximum(action.to(torch.float32), low), high)
    a = action.long()
    if kind == "discrete":
        a = a.unsqueeze(-1)
    parts: List[Tensor] = []
    for k, n in enumerate(nvec):
        idx = a[..., k:k + 1] - start[k]
        parts.append((idx == torch.arange(n, device=a.device)).to(torch.float32))
    return torch.cat(parts, -1)


def network_input(obs: Tensor, prev_action: Optional[Tensor], prev_reward: Optional[Tensor],
                  episode_start: Optional[Tensor]) -> Tensor:
    """What the actor and critics see: (..., D + A' + R').

    obs: (..., D) normalized observations; prev_action: (..., A) from :func:`action_features`, or None when the
    policy is not fed it; prev_reward: (..., 1) the previous reward, or None; episode_start: (...) bool or 0/1,
    where both previous inputs are zeroed (an episode's first step has no previous action or reward), or None.
    Without previous inputs this is ``obs`` itself.
    """
    if prev_action is None and prev_reward is None:
        return obs
    keep: Optional[Tensor] = None
    if episode_start is not None:
        keep = torch.logical_not(episode_start.to(obs.device, torch.bool)).unsqueeze(-1).to(obs.dtype)
    parts: List[Tensor] = [obs]
    for extra in [prev_action, prev_reward]:
        if extra is not None:
            extra = extra.to(obs.device, obs.dtype)
            if keep is not None:
                extra = extra * keep
            parts.append(extra)
    return torch.cat(parts, -1)


def fed_input(extra: Optional[Tensor], width: int) -> Optional[Tensor]:
    """A previous input (..., width) of a policy fed it (``width`` > 0), checked; None when not fed (width 0).
    Raises ``ValueError`` for a fed input that is missing or of another width."""
    if width == 0:
        return None
    if extra is None or extra.shape[-1] != width:
        raise ValueError(f"this policy feeds previous inputs of width {width}; got "
                         f"{None if extra is None else tuple(extra.shape)}")
    return extra


class ActionFeatures:
    """:func:`action_features` bound to one action space: ``ActionFeatures(spec)(action)``.

    spec: anything with ``kind``, ``dim``, ``nvec``, ``start``, ``low`` and ``high`` as
    :class:`rpbt.envs.factory.ActionSpec` has them. Attributes ``kind``, ``nvec`` (``[n]`` for Discrete),
    ``start``, ``low`` and ``high`` ((d,) float32 for Box, else (1,) zeros) are what :func:`action_features` takes.
    """

    def __init__(self, spec) -> None:
        self.kind = str(spec.kind)
        self.dim = int(spec.dim)
        self.nvec: List[int] = [self.dim] if self.kind == "discrete" else [int(n) for n in spec.nvec]
        self.start: List[int] = [] if self.kind == "box" else [int(s) for s in spec.start]
        box = self.kind == "box"
        self.low = torch.as_tensor(spec.low if box else [0.0], dtype=torch.float32).reshape(-1).clone()
        self.high = torch.as_tensor(spec.high if box else [0.0], dtype=torch.float32).reshape(-1).clone()

    def __call__(self, action: Tensor) -> Tensor:
        """(..., *action shape) actions as the environment took them (Box flat) -> float32 (..., A)."""
        return action_features(action, self.kind, self.nvec, self.start, self.low.to(action.device),
                               self.high.to(action.device))


__all__ = ["ActionFeatures", "action_features", "fed_input", "network_input"]
