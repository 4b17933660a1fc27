"""The errors of the sharded backends (process and Ray), in a module of their own so that every part imports them."""

from __future__ import annotations

__all__ = ["BackendError", "WorkerDied"]


class BackendError(RuntimeError):
    """A shard's worker kept dying (more than ``backend.max_failures``) or a backend cannot be built.

    The message names the backend, the shard, its members and the last cause.
    """


class WorkerDied(Exception):
    """Internal: a shard's worker process or actor is gone; ``cause`` says why (signal, exit code, Ray error)."""

    def __init__(self, cause: str):
        super().__init__(cause)
        self.cause = cause
