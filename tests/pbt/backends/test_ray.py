"""The Ray backend's parts that need no Ray: the install line when Ray is missing, the actor body (one ShardServer,
a construction error kept for the first call), and which Ray exceptions count as a dead actor. A whole run on Ray
against the local decisions: tests/pbt/test_backends.py."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from rpbt.config import member_hparams
from rpbt.envs.errors import EnvError
from rpbt.pbt.backends.commands import Close, MemberInfo, Ping
from rpbt.pbt.backends.errors import BackendError
from rpbt.pbt.backends.ray import ShardActor, _death_types, import_ray
from tests.conftest import tiny_config


def test_a_missing_ray_is_a_backend_error_with_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(BackendError, match=r"pip install 'rpbt\[ray\]'"):
        import_ray()


@pytest.fixture
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_the_actor_serves_its_members_and_keeps_a_construction_error_for_the_first_call(keep_torch_threads):
    cfg = tiny_config()
    actor = ShardActor(cfg, [2, 3], [member_hparams(cfg)] * 2, threads=1)
    assert actor.error is None and torch.get_num_threads() == 1
    assert sorted(actor.call(MemberInfo)) == [2, 3]
    assert isinstance(actor.call(Ping), int)
    actor.call(Close)
    bad = cfg.model_copy(update={"env": cfg.env.model_copy(update={"id": "NoSuchEnv-v9"})})
    broken = ShardActor(bad, [0], [member_hparams(cfg)], threads=1)
    assert isinstance(broken.error, EnvError)
    with pytest.raises(EnvError, match="NoSuchEnv"):
        broken.call(Ping)


def test_death_types_are_the_ray_exceptions_this_ray_has():
    class RayActorError(Exception):
        pass

    class NodeDiedError(Exception):
        pass

    fake = types.SimpleNamespace(exceptions=types.SimpleNamespace(RayActorError=RayActorError,
                                                                  NodeDiedError=NodeDiedError))
    assert _death_types(fake) == (RayActorError, NodeDiedError)
