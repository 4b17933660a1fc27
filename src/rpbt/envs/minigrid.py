"""MiniGrid's environments with their image view alone, for ``env.entry_point: rpbt.envs.minigrid:image_env``.

MiniGrid (Chevalier-Boisvert et al. 2023) observes a Dict of the agent's (7, 7, 3) egocentric image (object,
colour and state indices per cell), its direction and a mission string; the mission is a ``Text`` space rpbt cannot
feed, and the memory tasks (``MiniGrid-MemoryS7-v0`` and larger) need the image only. :func:`image_env` makes the
environment with MiniGrid's ``ImgObsWrapper``: observations ``Box(0, 255, (7, 7, 3), uint8)``, for the ``cnn``
encoder (``agent.network.encoder: cnn``). Needs the ``rpbt[minigrid]`` extra.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from rpbt.extras import require


def image_env(env_id: str = "MiniGrid-MemoryS7-v0", **kwargs: Any) -> gym.Env:
    """``gymnasium.make(env_id, **kwargs)`` (a MiniGrid id) seen through ``ImgObsWrapper``.

    Raises :class:`rpbt.extras.MissingExtraError` naming ``rpbt[minigrid]`` when MiniGrid is not installed.
    """
    require("minigrid", "minigrid", f"env.entry_point rpbt.envs.minigrid:image_env ({env_id})")
    from minigrid.wrappers import ImgObsWrapper

    return ImgObsWrapper(gym.make(env_id, **kwargs))


__all__ = ["image_env"]
