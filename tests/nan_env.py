"""A test environment that returns a non-finite observation or reward now and then (``tests.nan_env:NanCartPole-v0``).

CartPole whose observation (or reward) is NaN with probability ``p`` per step, drawn from the environment's own
seeded generator, so which member sees the first NaN, and when, is fixed by the run seed. Made through Gymnasium's
``module:EnvId`` form, as a user's custom environment would be.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control import CartPoleEnv


class NanCartPole(CartPoleEnv):
    def __init__(self, p: float = 0.02, what: str = "obs", **kwargs):
        super().__init__(**kwargs)
        self.p, self.what = float(p), what

    def step(self, action):
        obs, reward, term, trunc, info = super().step(action)
        if self.np_random.random() < self.p:
            if self.what == "obs":
                obs = np.full_like(obs, np.nan)
            else:
                reward = float("nan")
        return obs, reward, term, trunc, info


if "NanCartPole-v0" not in gym.registry:
    gym.register("NanCartPole-v0", entry_point=NanCartPole, max_episode_steps=200)
