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
]


def tiny_config(*overrides: str) -> Config:
    """The shipped default shrunk to a few milliseconds per update, with extra dotted overrides."""
    return load_config(None, TINY + list(overrides))


@pytest.fixture
def tiny() -> Config:
    return tiny_config()
