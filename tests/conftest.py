"""Shared fixtures: tiny configs that train in well under a second per update."""

from __future__ import annotations

import pytest
import torch

from rpbt.config import Config, load_config

torch.set_num_threads(1)

TINY = [
    "env.num_envs=2",
    "agent.num_steps=16",
    "agent.num_minibatches=1",
    "agent.update_epochs=2",
    "agent.network.encoder_sizes=[16]",
    "agent.network.lstm_hidden_size=16",
    "agent.critic.num_quantiles=8",
    "pbt.population_size=4",
    "pbt.perturbation_interval=2",
    "pbt.burn_in=2",
    "pbt.score_window=5",
    "run.total_env_steps=192",
    "run.progress=false",
    "run.tensorboard=false",
    "backend.kind=local",  # the default, auto, starts worker processes on a multi-core machine; tests that test a
                           # backend name it (tests/pbt/test_backends.py tests auto)
]


def tiny_config(*overrides: str) -> Config:
    """The shipped default shrunk to a few milliseconds per update, with extra dotted overrides."""
    return load_config(None, TINY + list(overrides))


TRADING = ["env.id=trading", "env.trading.episode_length=32", "env.trading.eval_episodes=3",
           "pbt.population_size=2"]


def trading_config(*extra: str) -> Config:
    """A tiny trading config (the shipped data, 32-bar episodes, 3 evaluation episodes, 2 members)."""
    return tiny_config(*TRADING, *extra)


def policy_alone(cfg: Config, member_ids):
    """A policy alone (no environments), on the CPU: what evaluation needs."""
    import torch

    from rpbt.agent.ppo import make_policy

    return make_policy(cfg, member_ids, device=torch.device("cpu"))


@pytest.fixture
def tiny() -> Config:
    return tiny_config()


class Learner:
    """A population policy with its environments and loss terms, as a backend's shard holds them (for tests)."""

    def __init__(self, cfg: Config, member_ids, hparams=None, device=None):
        from rpbt.agent.ppo import auxiliary_losses, make_policy, make_runner

        self.cfg = cfg
        self.policy = make_policy(cfg, member_ids, hparams, device=torch.device("cpu") if device is None else device)
        self.runner = make_runner(cfg, self.policy)
        self.aux_losses = auxiliary_losses(cfg)

    @property
    def carried(self):
        return self.runner.carried

    def collect(self):
        from rpbt.agent.ppo import collect

        return collect(self.policy, self.runner)

    def update(self, rollout):
        from rpbt.agent.ppo import update

        return update(self.policy, self.policy.optimizer, rollout, self.aux_losses)

    def train_update(self):
        from rpbt.agent.ppo import train_iteration

        return train_iteration(self.policy, self.runner, self.aux_losses)

    def close(self):
        self.runner.close()
