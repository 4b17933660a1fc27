"""Encoders as ordinary per-member modules, stacked across the population (``agent.network.encoder``).

``agent.network.encoder`` names the encoder in front of the recurrent cell: ``mlp`` (the default
:class:`~rpbt.agent.networks.PopMLP`, hand-batched), ``cnn`` (:class:`NatureCNN`, for Box image observations) or
``module:factory``, where ``factory(observation_space, **agent.network.encoder_kwargs)`` returns an ``nn.Module``
for ONE member that maps an observation batch (B, *observation_space.shape) to flat features (B, F) (the
features-extractor habit of Stable-Baselines3).

:class:`StackedEncoder` holds P copies of such a module as member-first parameters (``torch.func.stack_module_state``)
registered under ``module.<name>`` with shape (P, *shape), so snapshot / restore / exploit / checkpoints and
:class:`~rpbt.agent.optim.PopulationAdam` see them like every other parameter (member i's state is slice i), and runs
them as one batch with ``torch.func.vmap`` over ``torch.func.functional_call`` on a parameterless (meta) copy of the
module. Observations travel flat through the runner, the rollout and the normalizer (D = prod(shape), C order, as
``gymnasium.spaces.flatten`` ravels a Box); the encoder sees each member's observations in a Box's own shape (a
view, no copy), and any other space (Discrete, Dict, Tuple) as its flattened Box (``flatten_space``, as fed).
The previous action and reward features (``agent.network.prev_action`` / ``prev_reward``) are appended to the
encoder's output, not fed to the module.

Shapes: P members, B observations per member (any leading shape is flattened into B and restored), D the flat
observation size, E the previous inputs' width, F the module's feature size; ``out_features`` = F + E.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from rpbt.config import ConfigError, import_env_module

ENCODERS = ("mlp", "cnn")


class NatureCNN(nn.Module):
    """The convolutional torso of Mnih et al. 2015 (DQN; CleanRL's ``ppo_atari_lstm.py``) for one member, sized to
    small images: conv 8x8/4 (32), conv 4x4/2 (64), conv 3x3/1 (64), each followed by ReLU, then a linear layer to
    ``features`` (ReLU). A layer whose kernel does not fit the image shrinks to the image (stride 1), so 7x7 views
    (MiniGrid) work. Orthogonal weights with gain sqrt(2), zero biases (CleanRL's ``layer_init``).

    Input: (B, H, W, C) (``channels: last``) or (B, C, H, W) (``channels: first``), float; multiplied by ``scale``
    first (1/255 for raw uint8 pixels when observation normalization is off). Output (B, features).
    """

    def __init__(self, shape: Sequence[int], channels: str = "last", features: int = 256, scale: float = 1.0):
        super().__init__()
        if channels not in ("first", "last"):
            raise ValueError(f"channels must be 'first' or 'last', got {channels!r}")
        if len(shape) != 3:
            raise ValueError(f"an image observation (H, W, C) or (C, H, W) is expected, got shape {tuple(shape)}")
        self.channels_last, self.scale = channels == "last", float(scale)
        c, h, w = (shape[2], shape[0], shape[1]) if self.channels_last else tuple(shape)
        layers: list[nn.Module] = []
        for out, kernel, stride in ((32, 8, 4), (64, 4, 2), (64, 3, 1)):
            k = min(kernel, h, w)
            s = stride if k == kernel else 1
            layers += [nn.Conv2d(c, out, k, s), nn.ReLU()]
            c, h, w = out, (h - k) // s + 1, (w - k) // s + 1
        self.conv = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(c * h * w, features), nn.ReLU())
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.orthogonal_(m.weight, math.sqrt(2.0))
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        return self.fc(self.conv(x * self.scale))


def channel_order(shape: Sequence[int]) -> str:
    """``last`` for (H, W, C) and ``first`` for (C, H, W): the axis with at most 4 entries where the other does not
    have them (``last`` when both or neither do)."""
    first, last = shape[0] <= 4, shape[-1] <= 4
    return "first" if first and not last else "last"


def nature_cnn(observation_space: Any, channels: Optional[str] = None, features: int = 256,
               scale: float = 1.0) -> NatureCNN:
    """The built-in ``cnn`` encoder's factory: a :class:`NatureCNN` for a Box image space of shape (H, W, C) or
    (C, H, W) (``channels`` ``last`` / ``first``; detected by :func:`channel_order` when None)."""
    shape = tuple(int(n) for n in observation_space.shape)
    return NatureCNN(shape, channels or channel_order(shape), features, scale)


def encoder_factory(name: str) -> Callable[..., nn.Module]:
    """The factory that ``agent.network.encoder`` names (``cnn`` or ``module:factory``); raises
    :class:`~rpbt.config.ConfigError` naming the key for anything that does not import or is not callable."""
    if name == "cnn":
        return nature_cnn
    module, _, attr = name.partition(":")
    if not module or not attr or ":" in attr:
        raise ConfigError(f"agent.network.encoder: {name!r} is not mlp, cnn or 'module:factory'")
    try:
        mod = import_env_module(module, f"agent.network.encoder {name!r} cannot be imported")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    factory = getattr(mod, attr, None)
    if not callable(factory):
        raise ConfigError(f"agent.network.encoder {name!r}: module {module!r} has no callable {attr!r}")
    return factory


class StackedEncoder(nn.Module):
    """P copies of one member's encoder module as member-first parameters, run as one batch (see the module doc).

    Args:
        build: ``build()`` returns one member's module (called under a seeded fork of the global RNG: the global
            random state is not changed).
        population: P.
        obs_shape: the observation's shape as the module takes it (prod(obs_shape) = D).
        input_dim: I = D + E, the width of the network input the trunk is given.
        where: what to name in errors (``agent.network.encoder 'pkg:make'``).

    Raises :class:`~rpbt.config.ConfigError` naming ``where`` when ``build`` returns no ``nn.Module``, or when the
    module does not map a zero batch (2, *obs_shape) to (2, F).
    """

    def __init__(self, build: Callable[[], nn.Module], population: int, obs_shape: Sequence[int], input_dim: int,
                 where: str):
        super().__init__()
        self.build, self.where = build, where
        self.obs_shape = tuple(int(n) for n in obs_shape)
        self.obs_dim = int(np.prod(self.obs_shape))
        template = self._build(0)
        with torch.no_grad():
            try:
                out = template(torch.zeros(2, *self.obs_shape))
            except Exception as err:  # the user's module: say which one failed and on what
                raise ConfigError(f"{where}: the module fails on a zero observation batch of shape "
                                  f"{(2,) + self.obs_shape}: {type(err).__name__}: {err}") from None
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 2:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ConfigError(f"{where}: the module must map observations (B, *{self.obs_shape}) to flat features "
                              f"(B, F); it returned {got} for B = 2")
        self.out_features = int(out.shape[1]) + (int(input_dim) - self.obs_dim)
        params, buffers = stack_module_state([template] * population)
        self.module = copy.deepcopy(template)  # holds the stacked (P, ...) tensors under the module's own names
        self._param_names, self._buffer_names = list(params), list(buffers)
        for name, t in params.items():
            owner, leaf = self._owner(self.module, name)
            setattr(owner, leaf, nn.Parameter(t.detach().clone()))
        for name, t in buffers.items():
            owner, leaf = self._owner(self.module, name)
            owner.register_buffer(leaf, t.detach().clone())
        # The module run by functional_call: a parameterless copy (not registered, so not in the state dict).
        object.__setattr__(self, "_base", copy.deepcopy(template).to("meta"))

    def _build(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self.build()
        if not isinstance(module, nn.Module):
            raise ConfigError(f"{self.where}: the factory returned {type(module).__name__}, not a torch.nn.Module")
        return module

    @staticmethod
    def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
        prefix, _, leaf = name.rpartition(".")
        return (module.get_submodule(prefix) if prefix else module), leaf

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        """Member i's copy is a fresh module built under a seed drawn from member i's generator (its own init)."""
        with torch.no_grad():
            for i, gen in enumerate(generators):
                fresh = self._build(int(torch.randint(0, 2 ** 62, (1,), generator=gen)))
                state = dict(fresh.named_parameters()) | dict(fresh.named_buffers())
                for name in self._param_names + self._buffer_names:
                    owner, leaf = self._owner(self.module, name)
                    getattr(owner, leaf)[i].copy_(state[name])

    def weights(self) -> dict[str, Tensor]:
        """Every stacked tensor by its name in the module (parameters, then buffers), each (P, *shape)."""
        out = {}
        for name in self._param_names + self._buffer_names:
            owner, leaf = self._owner(self.module, name)
            out[name] = getattr(owner, leaf)
        return out

    def functional(self, weights: dict[str, Tensor], x: Tensor) -> Tensor:
        """x (P', ..., I) with weights of P' members -> features (P', ..., F + E)."""
        lead = x.shape[:-1]
        p = lead[0]
        obs = x[..., :self.obs_dim].reshape(p, -1, *self.obs_shape)  # (P', B, *obs_shape)
        params = {k: weights[k] for k in self._param_names}
        buffers = {k: weights[k] for k in self._buffer_names}

        def one(par: dict, buf: dict, o: Tensor) -> Tensor:
            return functional_call(self._base, (par, buf), (o,))

        feats = vmap(one)(params, buffers, obs)  # (P', B, F)
        feats = feats.reshape(*lead, feats.shape[-1])
        return torch.cat([feats, x[..., self.obs_dim:]], -1) if x.shape[-1] > self.obs_dim else feats

    def forward(self, x: Tensor) -> Tensor:
        return self.functional(self.weights(), x)

    def member_module(self, member: int) -> nn.Module:
        """Member ``member``'s encoder as a plain module (CPU copies of its slices), e.g. for export."""
        module = self._build(0)
        state = {k: v[member].detach().cpu().clone() for k, v in self.weights().items()}
        module.load_state_dict(state)
        return module


def make_encoder(net: Any, population: int, input_dim: int, obs_dim: int,
                 observation_space: Any = None) -> Optional[StackedEncoder]:
    """The encoder ``net`` (``agent.network``) asks for: None for ``mlp`` (the trunk builds its
    :class:`~rpbt.agent.networks.PopMLP`), else a :class:`StackedEncoder` of the ``cnn`` or ``module:factory``
    module for ``observation_space`` (the environment's space before flattening: a Box keeps its shape, any other
    space is given as ``gymnasium.spaces.flatten_space`` of it, the flat Box rpbt feeds; a flat Box of ``obs_dim``
    when None). Raises :class:`~rpbt.config.ConfigError` naming ``agent.network.encoder`` for a bad factory, module or
    space (``cnn`` needs a 3-D Box)."""
    if net.encoder == "mlp":
        return None
    import gymnasium as gym

    space = observation_space if observation_space is not None else gym.spaces.Box(-np.inf, np.inf, (obs_dim,))
    if not isinstance(space, gym.spaces.Box):  # Discrete, Dict, Tuple...: the module sees them as rpbt feeds them
        space = gym.spaces.flatten_space(space)
    where = f"agent.network.encoder {net.encoder!r}"
    if int(np.prod(space.shape)) != obs_dim:
        raise ConfigError(f"{where}: the observation space {space} does not flatten to the policy's {obs_dim} values")
    if net.encoder == "cnn" and (not isinstance(space, gym.spaces.Box) or len(space.shape) != 3):
        raise ConfigError(f"{where}: the cnn encoder needs a Box image observation (H, W, C) or (C, H, W), the "
                          f"environment's observation space is {space}")
    factory, kwargs = encoder_factory(net.encoder), dict(net.encoder_kwargs)

    def build() -> nn.Module:
        try:
            return factory(space, **kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where} with agent.network.encoder_kwargs {kwargs}: {err}") from None

    return StackedEncoder(build, population, space.shape, input_dim, where)


__all__ = ["ENCODERS", "NatureCNN", "StackedEncoder", "channel_order", "encoder_factory", "make_encoder",
           "nature_cnn"]
