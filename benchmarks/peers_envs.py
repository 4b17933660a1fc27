"""Gymnasium tasks of the peers benchmark that no installed package registers; importing this module registers them.

- ``PendulumNoVel-v1``: Gymnasium's ``Pendulum-v1`` with the angular velocity zeroed, the partially observable
  Pendulum of AgileRL's recurrent PPO tutorial (``docs/tutorials/gymnasium/agilerl_recurrent_ppo_tutorial.rst``),
  which takes its ``MaskVelocityWrapper`` from the RL Baselines3 Zoo (``rl_zoo3/wrappers.py``, the zoo's
  ``PendulumNoVel-v1``). Observation ``(cos theta, sin theta, 0)``, float32, shape (3,); action: torque in [-2, 2],
  shape (1,); episodes of 200 steps (Pendulum-v1's time limit); return per episode about -1,500 to 0.

``gymnasium.make("peers_envs:PendulumNoVel-v1")`` imports this module first, so rpbt's ``env.id`` can name it when
``benchmarks/`` is on ``PYTHONPATH`` (``benchmarks/peers.py`` puts it there for every arm).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

#: Index of the angular velocity in Pendulum-v1's observation (cos theta, sin theta, theta dot).
PENDULUM_VELOCITY = 2


class MaskVelocity(gym.ObservationWrapper):
    """Zeroes the observation entries at ``indices`` (the velocities), keeping the observation space's shape."""

    def __init__(self, env: gym.Env, indices: tuple[int, ...]):
        super().__init__(env)
        self.mask = np.ones(env.observation_space.shape, dtype=np.float32)
        self.mask[list(indices)] = 0.0

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return (np.asarray(observation, dtype=np.float32) * self.mask).astype(np.float32)


def pendulum_no_vel(**kwargs) -> gym.Env:
    """``Pendulum-v1`` (``kwargs`` passed on) with the angular velocity zeroed."""
    return MaskVelocity(gym.make("Pendulum-v1", **kwargs), (PENDULUM_VELOCITY,))


if "PendulumNoVel-v1" not in gym.registry:
    gym.register("PendulumNoVel-v1", entry_point=pendulum_no_vel)
