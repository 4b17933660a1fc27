"""The Backend protocol: every backend implements each of its methods with the same signature."""

from __future__ import annotations

import pytest

from tests.conftest import tiny_config


def test_every_backend_implements_the_protocol():
    """Every backend class has every method of the Backend protocol (Ray's module imports without Ray installed)."""
    import inspect

    from rpbt.pbt.backends import make_backend
    from rpbt.pbt.backends.base import Backend
    from rpbt.pbt.backends.local import LocalBackend
    from rpbt.pbt.backends.process import ProcessBackend
    from rpbt.pbt.backends.ray import RayBackend

    methods = [n for n, v in vars(Backend).items() if inspect.isfunction(v) and not n.startswith("_")]
    assert set(methods) == {"train", "member_info", "evaluate_members", "evaluate_episodes", "snapshot", "restore",
                            "exploit", "exploit_many", "save_checkpoints", "attach_run", "close"}
    for cls in (LocalBackend, ProcessBackend, RayBackend):
        for name in methods:
            assert callable(getattr(cls, name, None)), f"{cls.__name__} lacks {name}"
            want = list(inspect.signature(getattr(Backend, name)).parameters)
            assert list(inspect.signature(getattr(cls, name)).parameters) == want, f"{cls.__name__}.{name}"
        assert isinstance(cls.kind, str)
    with pytest.raises(ValueError, match="backend.kind"):
        make_backend(tiny_config().model_copy(update={"backend": tiny_config().backend.model_copy(
            update={"kind": "nope"})}), [])
