"""Train on your own Gymnasium environment: pass a function that makes it (``env_fn``), or register it and name it.

    python examples/custom_env.py [RUN_DIR]

Two ways, both shown in the README:

- ``rpbt.train(..., env_fn=make_env)``: a callable returning a ``gymnasium.Env`` (called with ``env.kwargs``).
  The local backend calls it in this process. The process and Ray backends send it to their workers by reference,
  so there it must be importable: a module-level function like ``make_env`` below (this script keeps the training
  under ``if __name__ == "__main__":``), not a lambda or a nested function.
- in a config file: ``env: {id: my_package.envs:Remember-v0}``: Gymnasium imports ``my_package.envs`` (which calls
  ``gymnasium.register("Remember-v0", ...)``) and makes the id; or ``env: {entry_point: my_package.envs:make_env}``.

Observations that are Dict or Tuple spaces (as here) are flattened (``gymnasium.spaces.flatten``: Discrete entries
one-hot, Dict entries in key order); ``Policy.predict`` takes the environment's own observations and flattens them
the same way. The agent is also fed its previous action and reward (``agent.network.prev_action`` /
``prev_reward``).
"""

import sys

import gymnasium as gym
import numpy as np

import rpbt


class Remember(gym.Env):
    """A cue (left or right) is shown at the first step only; every later step pays 1 for the matching action."""

    def __init__(self, length: int = 8):
        self.length = length
        self.observation_space = gym.spaces.Dict({"cue": gym.spaces.Discrete(3),
                                                  "noise": gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)})
        self.action_space = gym.spaces.Discrete(2)
        self.t, self.side = 0, 0

    def _obs(self):
        cue = 1 + self.side if self.t == 0 else 0
        return {"cue": cue, "noise": self.np_random.uniform(-1, 1, 2).astype(np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.side = 0, int(self.np_random.integers(2))
        return self._obs(), {}

    def step(self, action):
        reward = float(self.t > 0 and int(action) == self.side)
        self.t += 1
        return self._obs(), reward, self.t >= self.length, False, {}


def make_env(length: int = 8) -> gym.Env:
    return Remember(length)


SMALL = {"pbt.population_size": 4, "env.num_envs": 4, "agent.num_steps": 32, "agent.num_minibatches": 2,
         "agent.update_epochs": 2, "agent.network.encoder_sizes": [32], "agent.network.lstm_hidden_size": 32,
         "agent.network.prev_action": True, "agent.network.prev_reward": True, "pbt.perturbation_interval": 2,
         "pbt.burn_in": 2, "run.total_env_steps": 2_048, "run.progress": False, "run.tensorboard": False,
         "env.kwargs": {"length": 8}}


def main(run_dir: str = "runs/examples/custom_env") -> None:
    run = rpbt.train(env_fn=make_env, overwrite=True, **SMALL, **{"run.dir": run_dir})
    print(f"trained on {run.config.env.id}: best score {run.best_score}")
    policy = run.load_policy()
    env = make_env()  # the raw environment: Dict observations, flattened by predict
    obs, _ = env.reset(seed=0)
    state, start, reward, total = None, True, 0.0, 0.0
    while True:
        action, state = policy.predict(obs, state, episode_start=start, prev_reward=reward)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += reward
        start = False
        if terminated or truncated:
            break
    print(f"one episode with the best member: return {total}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
