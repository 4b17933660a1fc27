"""Making environments from a config: Gymnasium ids, POPGym ids and rpbt's trading environment.

Every member gets ``env.num_envs`` environments; a learner holding P members steps one Gymnasium
``SyncVectorEnv`` of P * num_envs environments (member-major order) with ``autoreset_mode=SAME_STEP``, so the
observation returned at an episode's end is already the next episode's first, and the final observation is in
``infos["final_obs"]`` for bootstrapping at a time limit. Environment j of member m is seeded from member m's seed
only, so a member's experience does not depend on which other members share its process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import gymnasium as gym
import numpy as np

from rpbt.config import EnvConfig


class EnvError(ValueError):
    """An environment id cannot be made or has spaces rpbt does not support."""


class ObservationNoise(gym.ObservationWrapper):
    """Adds i.i.d. Gaussian noise of standard deviation ``std`` to every observation (a noisier POMDP)."""

    def __init__(self, env: gym.Env, std: float):
        super().__init__(env)
        self.std = std

    def observation(self, observation):
        noise = self.np_random.normal(0.0, self.std, size=np.shape(observation))
        return (observation + noise).astype(np.float32)


def _import_popgym() -> None:
    try:
        import popgym  # noqa: F401  (registers the popgym-* ids)
    except ImportError as err:  # pragma: no cover - popgym is a dependency
        raise EnvError("env.id names a POPGym environment but the 'popgym' package is not installed") from err


def make_env(cfg: EnvConfig, split: str = "train") -> gym.Env:
    """One environment for ``cfg.id`` with a flat float32 observation vector.

    Raises :class:`EnvError` naming ``env.id`` when the id is unknown or its spaces are unsupported.
    """
    if cfg.id == "trading":
        from rpbt.envs.trading import make_trading_env

        env = make_trading_env(cfg, split=split)
    else:
        if cfg.id.startswith("popgym-"):
            _import_popgym()
        try:
            env = gym.make(cfg.id, **cfg.kwargs)
        except gym.error.Error as err:
            raise EnvError(f"env.id {cfg.id!r} cannot be made: {err}") from None
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 1:
        env = gym.wrappers.FlattenObservation(env)
    if not isinstance(env.action_space, (gym.spaces.Discrete, gym.spaces.Box)):
        raise EnvError(f"env.id {cfg.id!r}: action space {env.action_space} is not Discrete or Box")
    if cfg.observation_noise_std > 0:
        env = ObservationNoise(env, cfg.observation_noise_std)
    return env


def make_vector_env(cfg: EnvConfig, num_envs: int, split: str = "train") -> gym.vector.SyncVectorEnv:
    """A ``SyncVectorEnv`` of ``num_envs`` copies with same-step autoreset (final obs in ``infos['final_obs']``)."""
    fns: list[Callable[[], gym.Env]] = [lambda: make_env(cfg, split) for _ in range(num_envs)]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


@dataclass(frozen=True)
class ActionSpec:
    """What a policy needs to know of an action space: ``continuous`` (Box) or not (Discrete), ``dim`` (the number
    of discrete actions, or the Box's flat size) and, for Box, the bounds ``low``/``high`` (dim,) that actions are
    clipped to before they reach the environment (None for Discrete)."""

    continuous: bool
    dim: int
    low: Optional[np.ndarray] = None
    high: Optional[np.ndarray] = None


def space_info(space: gym.Space) -> ActionSpec:
    """The :class:`ActionSpec` of a Discrete or Box action space."""
    if isinstance(space, gym.spaces.Discrete):
        return ActionSpec(continuous=False, dim=int(space.n))
    return ActionSpec(continuous=True, dim=int(np.prod(space.shape)), low=space.low, high=space.high)


__all__: Sequence[str] = ["make_env", "make_vector_env", "EnvError", "space_info", "ActionSpec"]
