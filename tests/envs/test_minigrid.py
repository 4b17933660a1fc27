"""MiniGrid's image view as an rpbt environment: the extra's error without MiniGrid, and with it (the rpbt[minigrid]
extra) the shipped config's environment gives uint8 images a CNN population trains on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rpbt.extras import MissingExtraError

HAS_MINIGRID = importlib.util.find_spec("minigrid") is not None


@pytest.mark.skipif(HAS_MINIGRID, reason="MiniGrid is installed")
def test_without_minigrid_the_entry_point_names_the_extra():
    from rpbt.envs.minigrid import image_env

    with pytest.raises(MissingExtraError, match=r"rpbt\[minigrid\]"):
        image_env()


@pytest.mark.skipif(not HAS_MINIGRID, reason="needs the rpbt[minigrid] extra")
def test_the_shipped_memory_config_trains_a_cnn_population_on_images():
    import torch

    from rpbt.config import load_config
    from tests.conftest import Learner

    shipped = Path(__file__).resolve().parents[2] / "configs" / "minigrid_memory.yaml"
    cfg = load_config(shipped, ["env.num_envs=2", "agent.num_steps=16", "agent.num_minibatches=1",
                                "pbt.population_size=2", "run.progress=false"])
    learner = Learner(cfg, [0, 1])
    assert learner.policy.observation_space.shape == (7, 7, 3)
    assert learner.policy.actor.encoder.obs_shape == (7, 7, 3)
    assert torch.isfinite(learner.train_update()["train/loss"]).all()
    learner.close()
