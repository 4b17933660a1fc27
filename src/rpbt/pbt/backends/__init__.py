"""Backends: where the population lives (:class:`~rpbt.pbt.backends.base.Backend`, the protocol they implement).

``local`` (:mod:`rpbt.pbt.backends.local`): the whole population in this process, one batched learner;
``process`` (:mod:`rpbt.pbt.backends.process`): shards in worker processes; ``ray`` (:mod:`rpbt.pbt.backends.ray`):
shards in Ray actors. :func:`make_backend` builds the one a config names; each backend module is imported only when
it is built (Ray is optional).
"""

from __future__ import annotations

from typing import Sequence

from rpbt.config import Config
from rpbt.pbt.backends.base import Backend

__all__ = ["Backend", "make_backend"]


def make_backend(cfg: Config, hparams: Sequence[dict]) -> Backend:
    """Build the backend named by ``backend.kind``. Raises ``ValueError`` for an unknown kind."""
    kind = cfg.backend.kind
    if kind == "local":
        from rpbt.pbt.backends.local import LocalBackend

        return LocalBackend(cfg, hparams)
    if kind == "process":
        from rpbt.pbt.backends.process import ProcessBackend

        return ProcessBackend(cfg, hparams)
    if kind == "ray":
        from rpbt.pbt.backends.ray import RayBackend

        return RayBackend(cfg, hparams)
    raise ValueError(f"backend.kind must be local, process or ray, got {kind!r}")
