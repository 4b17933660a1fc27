"""Export one member's actor as a standalone ONNX or TorchScript file: raw observation and (h, c) in (h alone for a
GRU actor, ``agent.network.cell: gru``), the action distribution's parameters and the new state out.

The exported module, :class:`ExportedActor`, is rebuilt from the member's weights with plain tensor operations
(no population dimension, no data-dependent Python control flow), so ``torch.jit.script`` compiles it and the ONNX
exporter traces it; the learner's population-batched networks (:mod:`rpbt.agent.networks`) are not what is exported.
It computes what :meth:`rpbt.api.Policy.action_distribution` computes, on a batch of B environments:

1. observation normalization with the member's frozen running statistics:
   ``clip((obs - mean) / sqrt(var + 1e-8), -obs_clip, obs_clip)``, in float64 as the learner does (with
   ``agent.raw_obs_clip``, obs is first clipped to [-raw_obs_clip, raw_obs_clip]);
2. with ``agent.network.prev_action`` / ``prev_reward``: the previous action's features (one-hot of
   ``prev_action - start``; the K one-hots of a MultiDiscrete concatenated; a Box action clipped to its bounds) and
   the previous reward appended, both zeroed where ``episode_start`` is 1;
3. the encoder (tanh MLP; or the member's own encoder module, ``agent.network.encoder``, unstacked into a plain
   module fed the observation in its space's shape, the previous inputs appended to its output), then the LSTM
   layers (gate order i, f, g, o as ``torch.nn.LSTM``) from (h, c), or the GRU layers (r, z, n as ``torch.nn.GRU``)
   from h, zeroed where ``episode_start`` is 1;
4. the policy head: logits, or a Gaussian's mean and its (state-independent) log-std.

Inputs, in this order (names as in the ONNX file):

- ``obs``: (B, D) float32, the raw observation flattened as :func:`rpbt.envs.factory.make_env` does
  (``gymnasium.spaces.flatten``; ``Policy.flatten_obs`` does it for you);
- ``h``, ``c``: (L, B, H) float32, the actor LSTM's state (zeros at the start); a GRU actor takes ``h`` alone;
- ``episode_start``: (B,) float32, 1.0 where this observation is the first of an episode;
- ``prev_action`` (only with ``agent.network.prev_action``): the previous action as the environment took it,
  (B,) int64 for Discrete, (B, K) int64 for MultiDiscrete, (B, d) float32 for Box;
- ``prev_reward`` (only with ``agent.network.prev_reward``): (B,) float32, the previous step's reward.

Outputs: ``logits`` (B, A) (MultiDiscrete: the K categoricals' logits concatenated, A = sum(nvec)) or ``mean`` and
``log_std`` (B, d) each; then ``h_out``, ``c_out`` (L, B, H) (``h_out`` alone for a GRU). The TorchScript module's
``forward`` is ``forward(obs, h, c, episode_start, prev_action=None, prev_reward=None)`` (GRU: ``forward(obs, h,
episode_start, ...)``; pass the previous inputs by name) and
returns the same tensors as a list. The actions of the
deterministic policy are the argmax of each categorical (plus Gymnasium's ``start``) or the mean clipped to the Box.

The ONNX file is written with ``torch.onnx.export(..., dynamo=False)`` (the TorchScript-based exporter, opset 17,
dynamic batch axis); it needs the ``rpbt[export]`` extra (onnx; onnxruntime to run it). Tested against
:meth:`~rpbt.api.Policy.action_distribution` over whole episodes, episode starts included (max abs diff < 1e-5).
"""

# No `from __future__ import annotations`: TorchScript reads the class annotations below as types.

import inspect
import warnings
from pathlib import Path
from typing import Any, List, Optional, Union

import torch
from torch import Tensor, nn

from rpbt.envs.features import action_features, network_input

__all__ = ["EXPORT_FORMATS", "ExportedActor", "ExportedGRUActor", "actor_module", "export_policy", "input_names",
           "output_names"]

EXPORT_FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17


class _LSTMLayer(nn.Module):
    """One LSTM layer: ``gates = x @ weight_ih + h @ weight_hh + bias`` (weights (in, 4H), (H, 4H), bias (4H,))."""

    def __init__(self, weight_ih: Tensor, weight_hh: Tensor, bias: Tensor):
        super().__init__()
        self.register_buffer("weight_ih", weight_ih.detach().float().cpu().clone())
        self.register_buffer("weight_hh", weight_hh.detach().float().cpu().clone())
        self.register_buffer("bias", bias.detach().float().cpu().clone())

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> List[Tensor]:
        gates = x @ self.weight_ih + h @ self.weight_hh + self.bias
        i, f, g, o = gates.chunk(4, dim=-1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return [h_new, c_new]


class _GRULayer(nn.Module):
    """One GRU layer as ``torch.nn.GRU`` (gate order r, z, n): ``gi = x @ weight_ih + bias_ih``,
    ``gh = h @ weight_hh + bias_hh``, ``r, z = sigmoid(gi_r + gh_r), sigmoid(gi_z + gh_z)``,
    ``n = tanh(gi_n + r * gh_n)``, ``h' = (1 - z) * n + z * h`` (weights (in, 3H), (H, 3H), biases (3H,))."""

    def __init__(self, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor):
        super().__init__()
        for name, t in (("weight_ih", weight_ih), ("weight_hh", weight_hh), ("bias_ih", bias_ih),
                        ("bias_hh", bias_hh)):
            self.register_buffer(name, t.detach().float().cpu().clone())

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        i_r, i_z, i_n = (x @ self.weight_ih + self.bias_ih).chunk(3, dim=-1)
        h_r, h_z, h_n = (h @ self.weight_hh + self.bias_hh).chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h


class _TanhMLP(nn.Module):
    """The default encoder: linear layers with tanh, one member's weights."""

    def __init__(self, encoder: Any):
        super().__init__()
        self.layers = nn.ModuleList()
        for layer in encoder.layers:
            lin = nn.Linear(layer.in_features, layer.out_features)
            with torch.no_grad():
                lin.weight.copy_(layer.weight[0].t())
                lin.bias.copy_(layer.bias[0])
            lin.requires_grad_(False)
            self.layers.append(lin)

    def forward(self, x: Tensor) -> Tensor:
        for lin in self.layers:
            x = torch.tanh(lin(x))
        return x


class _ModuleEncoder(nn.Module):
    """A module encoder (``agent.network.encoder``: ``cnn`` or ``module:factory``), member 0 unstacked into a plain
    module: the observation part (B, D) reshaped to the space's shape, the previous inputs appended to its output."""

    obs_shape: List[int]

    def __init__(self, encoder: Any):
        super().__init__()
        self.module = encoder.member_module(0).requires_grad_(False).eval()
        self.obs_dim = int(encoder.obs_dim)
        self.obs_shape = [int(n) for n in encoder.obs_shape]

    def forward(self, x: Tensor) -> Tensor:
        obs = x[:, :self.obs_dim].reshape([x.shape[0]] + self.obs_shape)
        feats = self.module(obs)
        if x.shape[1] > self.obs_dim:
            feats = torch.cat([feats, x[:, self.obs_dim:]], -1)
        return feats


class _ActorParts(nn.Module):
    """What every exported actor shares: normalization, previous inputs, encoder and head (the cell is the
    subclass's). Built from a :class:`rpbt.api.Policy`; every weight is a buffer or frozen (nothing trains)."""

    kind: str
    normalize: bool
    obs_clip: float
    raw_clip: bool
    raw_obs_clip: float
    prev_action: bool
    prev_reward: bool
    nvec: List[int]
    starts: List[int]

    def __init__(self, policy: Any):
        super().__init__()
        learner, spec = policy.learner, policy.action_spec
        self.kind = spec.kind
        self.normalize = bool(policy.config.agent.normalize_observations)
        self.obs_clip = float(policy.config.agent.obs_clip)
        raw_obs_clip = policy.config.agent.raw_obs_clip
        self.raw_clip = raw_obs_clip is not None
        self.raw_obs_clip = float(raw_obs_clip) if raw_obs_clip is not None else 0.0
        self.register_buffer("obs_mean", learner.obs_rms.mean[0].detach().clone().double().cpu())
        self.register_buffer("obs_var", learner.obs_rms.var[0].detach().clone().double().cpu())
        self.prev_action = learner.prev_action_dim > 0
        self.prev_reward = learner.prev_reward_dim > 0
        nvec = [spec.dim] if spec.kind == "discrete" else list(spec.nvec)
        self.nvec = nvec
        self.starts = [int(s) for s in spec.start] if spec.kind != "box" else []
        low = spec.low if spec.kind == "box" else [0.0]
        high = spec.high if spec.kind == "box" else [0.0]
        self.register_buffer("action_low", torch.as_tensor(low, dtype=torch.float32).reshape(-1).clone())
        self.register_buffer("action_high", torch.as_tensor(high, dtype=torch.float32).reshape(-1).clone())
        enc = learner.actor.encoder
        self.encoder = _ModuleEncoder(enc) if hasattr(enc, "member_module") else _TanhMLP(enc)
        head = learner.policy_head.linear
        self.head = nn.Linear(head.in_features, head.out_features)
        with torch.no_grad():
            self.head.weight.copy_(head.weight[0].t())
            self.head.bias.copy_(head.bias[0])
        self.head.requires_grad_(False)
        log_std = learner.policy_head.log_std[0] if spec.kind == "box" else torch.zeros(1)
        self.register_buffer("log_std", log_std.detach().clone().float().cpu())

    def features(self, obs: Tensor, episode_start: Tensor, prev_action: Optional[Tensor],
                 prev_reward: Optional[Tensor]) -> Tensor:
        """Steps 1 and 2 of the module docstring and the encoder: (B, D) raw observations -> (B, F) features."""
        x = obs.float()
        if self.normalize:
            raw = x.double()
            if self.raw_clip:
                raw = torch.minimum(torch.maximum(raw, torch.full_like(raw, -self.raw_obs_clip)),
                                    torch.full_like(raw, self.raw_obs_clip))
            y = (raw - self.obs_mean) / torch.sqrt(self.obs_var + 1e-8)
            y = torch.minimum(torch.maximum(y, torch.full_like(y, -self.obs_clip)), torch.full_like(y, self.obs_clip))
            x = y.float()
        action_feats: Optional[Tensor] = None
        reward: Optional[Tensor] = None
        if self.prev_action:
            assert prev_action is not None, "this actor was trained with previous actions: pass prev_action"
            action_feats = action_features(prev_action, self.kind, self.nvec, self.starts, self.action_low,
                                           self.action_high)
        if self.prev_reward:
            assert prev_reward is not None, "this actor was trained with previous rewards: pass prev_reward"
            reward = prev_reward.float().reshape(-1, 1)
        x = network_input(x, action_feats, reward, episode_start.reshape(-1))
        return self.encoder(x)

    def outputs(self, x: Tensor, states: List[Tensor]) -> List[Tensor]:
        """The head on the cell's output x (B, H), then the new states."""
        params = self.head(x)
        if self.kind == "box":
            return [params, self.log_std.unsqueeze(0).expand_as(params)] + states
        return [params] + states


class ExportedActor(_ActorParts):
    """One member's LSTM actor, standalone (see the module docstring for inputs and outputs).

    Built by :func:`actor_module` from a :class:`rpbt.api.Policy`; every weight is a buffer (nothing trains).
    Attributes: ``kind`` (``discrete``, ``multi_discrete``, ``box``), ``nvec``/``starts`` (per categorical),
    ``prev_action``/``prev_reward`` (which previous inputs are fed).
    """

    def __init__(self, policy: Any):
        super().__init__(policy)
        self.lstm = nn.ModuleList([_LSTMLayer(w_ih[0], w_hh[0], b[0])
                                   for w_ih, w_hh, b in policy.learner.actor.cell.layer_weights()])
        self.eval()

    def forward(self, obs: Tensor, h: Tensor, c: Tensor, episode_start: Tensor,
                prev_action: Optional[Tensor] = None, prev_reward: Optional[Tensor] = None) -> List[Tensor]:
        keep = 1.0 - episode_start.float().reshape(-1, 1)  # (B, 1)
        x = self.features(obs, episode_start, prev_action, prev_reward)
        hs: List[Tensor] = []
        cs: List[Tensor] = []
        for k, layer in enumerate(self.lstm):
            out = layer(x, h[k] * keep, c[k] * keep)
            x = out[0]
            hs.append(out[0])
            cs.append(out[1])
        return self.outputs(x, [torch.stack(hs, 0), torch.stack(cs, 0)])


class ExportedGRUActor(_ActorParts):
    """One member's GRU actor (``agent.network.cell: gru``), standalone: as :class:`ExportedActor` with the state
    ``h`` alone: ``forward(obs, h, episode_start, prev_action=None, prev_reward=None)``, outputs ending in ``h_out``.
    """

    def __init__(self, policy: Any):
        super().__init__(policy)
        self.gru = nn.ModuleList([_GRULayer(*(t[0] for t in layer))
                                  for layer in policy.learner.actor.cell.layer_weights()])
        self.eval()

    def forward(self, obs: Tensor, h: Tensor, episode_start: Tensor,
                prev_action: Optional[Tensor] = None, prev_reward: Optional[Tensor] = None) -> List[Tensor]:
        keep = 1.0 - episode_start.float().reshape(-1, 1)  # (B, 1)
        x = self.features(obs, episode_start, prev_action, prev_reward)
        hs: List[Tensor] = []
        for k, layer in enumerate(self.gru):
            x = layer(x, h[k] * keep)
            hs.append(x)
        return self.outputs(x, [torch.stack(hs, 0)])


class _OnnxInputs(nn.Module):
    """The actor with exactly the inputs the policy needs, positionally (what the ONNX exporter traces)."""

    def __init__(self, actor: nn.Module):
        super().__init__()
        self.actor = actor
        self.gru = isinstance(actor, ExportedGRUActor)

    def forward(self, obs: Tensor, *rest: Tensor) -> List[Tensor]:
        n_state = 1 if self.gru else 2
        states, episode_start, prev = rest[:n_state], rest[n_state], rest[n_state + 1:]
        it = iter(prev)
        prev_action = next(it) if self.actor.prev_action else None
        prev_reward = next(it) if self.actor.prev_reward else None
        return self.actor(obs, *states, episode_start, prev_action, prev_reward)


def actor_module(policy: Any) -> nn.Module:
    """The :class:`ExportedActor` (:class:`ExportedGRUActor` for a GRU) of a :class:`rpbt.api.Policy` (weights
    copied to the CPU)."""
    return ExportedGRUActor(policy) if policy.cell == "gru" else ExportedActor(policy)


def input_names(policy: Any) -> list[str]:
    """The exported actor's inputs, in order (see the module docstring)."""
    names = ["obs", "h", "episode_start"] if policy.cell == "gru" else ["obs", "h", "c", "episode_start"]
    if policy.prev_action:
        names.append("prev_action")
    if policy.prev_reward:
        names.append("prev_reward")
    return names


def output_names(policy: Any) -> list[str]:
    """The exported actor's outputs, in order."""
    first = ["mean", "log_std"] if policy.action_spec.continuous else ["logits"]
    return first + (["h_out"] if policy.cell == "gru" else ["h_out", "c_out"])


def example_inputs(policy: Any, batch: int = 2) -> tuple[Tensor, ...]:
    """Zero inputs of the right shapes and types for ``batch`` environments."""
    spec = policy.action_spec
    L, H = policy.num_layers, policy.hidden_size
    states = [torch.zeros(L, batch, H)] * (1 if policy.cell == "gru" else 2)
    out = [torch.zeros(batch, policy.obs_dim), *states, torch.zeros(batch)]
    if policy.prev_action:
        if spec.continuous:
            out.append(torch.zeros(batch, spec.dim))
        else:
            shape = (batch,) if spec.kind == "discrete" else (batch, len(spec.nvec))
            out.append(torch.zeros(shape, dtype=torch.int64) + torch.as_tensor(
                spec.start if spec.kind == "multi_discrete" else spec.start[0]))
    if policy.prev_reward:
        out.append(torch.zeros(batch))
    return tuple(out)


def export_policy(policy: Any, path: Union[str, Path], format: str = "onnx") -> Path:
    """Write ``policy``'s actor to ``path``: ``onnx`` (needs ``rpbt[export]``) or ``torchscript``
    (``torch.jit.script``; load with ``torch.jit.load``). Creates the parent folder; returns the path.

    Raises ``ValueError`` for an unknown format, :class:`rpbt.extras.MissingExtraError` without onnx.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format (--format) must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"export to {path}: is a folder; give a file name (-o FILE)")
    path.parent.mkdir(parents=True, exist_ok=True)
    actor = actor_module(policy)
    if format == "torchscript":
        torch.jit.script(actor).save(str(path))
        return path
    from rpbt.extras import require

    require("onnx", "export", "ONNX export")
    names, outs = input_names(policy), output_names(policy)
    dynamic = {"obs": {0: "batch"}, "h": {1: "batch"}, "c": {1: "batch"}, "episode_start": {0: "batch"},
               "prev_action": {0: "batch"}, "prev_reward": {0: "batch"}, "logits": {0: "batch"}, "mean": {0: "batch"},
               "log_std": {0: "batch"}, "h_out": {1: "batch"}, "c_out": {1: "batch"}}
    kwargs: dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript-based exporter: no onnxscript needed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_OnnxInputs(actor), example_inputs(policy), str(path), input_names=names,
                          output_names=outs, dynamic_axes={k: v for k, v in dynamic.items() if k in names + outs},
                          opset_version=ONNX_OPSET, **kwargs)
    return path
