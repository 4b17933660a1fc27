"""Small custom environments for the API, export and video tests, made the ways a user's would be.

``DictBeacon`` has a Dict observation (a Box and a Discrete entry: flattened to 2 + 3 features), Discrete actions,
and renders ``rgb_array`` frames without pygame; it is registered as ``RpbtDictBeacon-v0`` when this module is
imported (``env.id: tests.custom_envs:RpbtDictBeacon-v0``) and made by :func:`make_dict_beacon` (``env_fn`` /
``env.entry_point: tests.custom_envs:make_dict_beacon``). The task needs memory: the beacon's side is shown only at
the first step, and the agent is rewarded for pointing to it at every later step. ``SpikyCartPole`` emits a finite
but absurd observation component now and then (the observation-outlier tests).
"""

from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import CartPoleEnv


class DictBeacon(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(self, length: int = 10, render_mode: Optional[str] = None):
        self.length = int(length)
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Dict({
            "position": gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32),
            "beacon": gym.spaces.Discrete(3),  # 0: hidden, 1: left, 2: right
        })
        self.action_space = gym.spaces.Discrete(2)
        self.t, self.side = 0, 1

    def _obs(self):
        pos = self.np_random.uniform(-1.0, 1.0, 2).astype(np.float32)
        return {"position": pos, "beacon": self.side if self.t == 0 else 0}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.side = 0, int(self.np_random.integers(1, 3))
        return self._obs(), {}

    def step(self, action):
        reward = 1.0 if int(action) + 1 == self.side else 0.0
        self.t += 1
        return self._obs(), reward, self.t >= self.length, False, {}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        frame = np.zeros((32, 48, 3), dtype=np.uint8)
        frame[:, : 24 if self.side == 1 else 48, 0] = 255
        frame[:, :, 1] = min(255, 20 * self.t)
        return frame


def make_dict_beacon(length: int = 10, render_mode: Optional[str] = None) -> gym.Env:
    """The ``env_fn`` form: a module-level function, importable by reference."""
    return DictBeacon(length=length, render_mode=render_mode)


if "RpbtDictBeacon-v0" not in gym.registry:
    gym.register("RpbtDictBeacon-v0", entry_point=DictBeacon)


class MatrixAction(gym.Env):
    """A Box observation (3,) and a Box action of ``shape`` ((2, 2) by default; () is a scalar): the environment
    refuses an action of any other shape or a non-float one, and its reward says how close the action is to a fixed
    target."""

    def __init__(self, length: int = 6, shape: tuple = (2, 2)):
        self.length, self.shape = int(length), tuple(shape)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, self.shape, dtype=np.float32)
        self.target = np.linspace(-0.5, 0.5, int(np.prod(self.shape))).reshape(self.shape)
        self.t = 0
        self.actions: list[np.ndarray] = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1.0, 1.0, 3).astype(np.float32), {}

    def step(self, action):
        if np.asarray(action).dtype.kind != "f" or np.shape(action) != self.shape:
            raise ValueError(f"MatrixAction takes a float action of shape {self.shape}, got {action!r}")
        action = np.asarray(action)
        self.actions.append(action.copy())
        self.t += 1
        reward = -float(np.abs(action - self.target).sum())
        return self.np_random.uniform(-1.0, 1.0, 3).astype(np.float32), reward, self.t >= self.length, False, {}


def make_matrix_action(length: int = 6, shape: tuple = (2, 2)) -> gym.Env:
    return MatrixAction(length=length, shape=tuple(shape))


class SpikyCartPole(CartPoleEnv):
    """CartPole whose observation component ``index`` is ``value`` (finite, absurd: 1e30 by default) at every
    ``period``-th step of the environment's life (counted across episodes), as a buggy sensor or a unit mix-up would
    emit now and then. Registered as ``RpbtSpikyCartPole-v0`` (``env.id: tests.custom_envs:RpbtSpikyCartPole-v0``).
    Index 1 (the cart velocity) has unbounded observation-space bounds, so Gymnasium's checker does not complain."""

    def __init__(self, period: int = 30, index: int = 1, value: float = 1e30, **kwargs):
        super().__init__(**kwargs)
        self.period, self.index, self.value = int(period), int(index), float(value)
        self.steps = 0

    def step(self, action):
        obs, reward, term, trunc, info = super().step(action)
        self.steps += 1
        if self.steps % self.period == 0:
            obs = np.array(obs, dtype=np.float32)
            obs[self.index] = self.value
        return obs, reward, term, trunc, info


if "RpbtSpikyCartPole-v0" not in gym.registry:
    gym.register("RpbtSpikyCartPole-v0", entry_point=SpikyCartPole, max_episode_steps=200)
