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


# ------------------------------------------------------------------------------------------------- devices, fitting


def test_a_shard_learns_on_the_gpu_it_reserves_and_on_the_cpu_otherwise():
    from rpbt.config import ConfigError
    from rpbt.pbt.backends.ray import shard_device

    assert shard_device("auto", 0.0, [], cuda_available=True) == "cpu"  # no reservation: Ray hides the GPUs
    assert shard_device("cpu", 0.0, ["0"], cuda_available=True) == "cpu"
    assert shard_device("auto", 0.5, ["3"], cuda_available=True) == "cuda:0"  # CUDA_VISIBLE_DEVICES=3 -> cuda:0
    assert shard_device("cuda", 1.0, ["1"], cuda_available=True) == "cuda:0"
    assert shard_device("cuda:1", 2.0, ["0", "1"], cuda_available=True) == "cuda:1"
    with pytest.raises(ConfigError, match=r"cuda:2.*only GPU\(s\) \['0', '1'\].*cuda:0..cuda:1"):
        shard_device("cuda:2", 2.0, ["0", "1"], cuda_available=True)
    with pytest.raises(ConfigError, match="num_gpus_per_shard > 0"):
        shard_device("cuda", 0.0, [], cuda_available=True)
    with pytest.raises(BackendError, match=r"Ray assigned GPU \['0'\], but torch there sees no CUDA device"):
        shard_device("auto", 0.5, [0], cuda_available=False)
    with pytest.raises(BackendError, match="Ray assigned no GPU"):
        shard_device("auto", 0.5, [], cuda_available=True)


def _node(cpu, gpu=0.0, alive=True):
    return {"Alive": alive, "Resources": {"CPU": cpu, "GPU": gpu} if gpu else {"CPU": cpu}}


def test_shards_are_fitted_first_fit_on_the_alive_nodes():
    from rpbt.pbt.backends.ray import shards_fit

    assert shards_fit([_node(2), _node(2)], 4, 1.0, 0.0) is None
    assert shards_fit([_node(1.5), _node(1.5)], 2, 1.0, 0.0) is None
    # 1.5 + 1.5 = 3 CPUs in all, but a node holds only one shard of 1 CPU: 2 of 3 fit
    assert "3 shards of 1 CPU and 0 GPU each do not fit the cluster (only 2 do" in shards_fit(
        [_node(1.5), _node(1.5)], 3, 1.0, 0.0)
    assert shards_fit([_node(4, 1), _node(4, 1)], 4, 1.0, 0.5) is None  # half a GPU each: two per GPU
    message = shards_fit([_node(4, 1), _node(4, 1)], 4, 1.0, 0.6)
    assert "only 2 do; alive nodes: 4 CPU / 1 GPU, 4 CPU / 1 GPU" in message
    assert "backend.wait_for_resources=true" in message
    assert "only 0 do; alive nodes: 2 CPU / 0 GPU" in shards_fit([_node(8, alive=False), _node(2)], 1, 4.0, 0.0)


@pytest.mark.parametrize("overrides, key", [
    (["backend.kind=process", "backend.num_gpus_per_shard=1"], "backend.num_gpus_per_shard is a Ray backend"),
    (["backend.kind=local", "backend.runtime_env={env_vars: {A: '1'}}"], "backend.runtime_env is a Ray backend"),
    (["backend.kind=ray", "backend.num_gpus_per_shard=0.5", "agent.device=cpu"], "agent.device is 'cpu'"),
    (["backend.kind=ray", "agent.device=cuda"], "needs backend.num_gpus_per_shard > 0"),
])
def test_ray_only_settings_are_refused_elsewhere_naming_the_key(overrides, key):
    from rpbt.config import ConfigError

    with pytest.raises(ConfigError, match=key):
        tiny_config(*overrides)


def test_an_address_where_nothing_answers_is_named_at_once():
    """backend.address HOST:PORT (or ray://HOST:PORT) with no Ray there: ray.init would retry for minutes with
    Ray's own log lines; the backend names the address and the cause first."""
    import socket

    from rpbt.pbt.backends.ray import address_refused

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert address_refused(f"127.0.0.1:{port}") is None
        assert address_refused(f"ray://127.0.0.1:{port}") is None
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: connections are refused
        said = address_refused(f"127.0.0.1:{port}")
        assert said is not None and said.startswith(f"backend.address 127.0.0.1:{port}: no Ray cluster answers"), said
        assert "ray start --head" in said
    assert address_refused("auto") is None and address_refused("local") is None
