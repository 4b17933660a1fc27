"""The error every environment maker raises for an environment that cannot be made or is not supported."""

from __future__ import annotations


class EnvError(ValueError):
    """An environment id cannot be made or has spaces rpbt does not support."""


__all__ = ["EnvError"]
