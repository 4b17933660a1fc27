"""Member state: complete by construction, atomic checkpoint round trip, clear errors for bad files."""

from __future__ import annotations

import pickle

import pytest
import torch

from rpbt.agent.member_slice import check_member_dim
from rpbt.agent.ppo import make_policy
from rpbt.checkpoint import CheckpointError, MemberState
from tests.conftest import Learner, tiny_config

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_snapshot_holds_slice_of_every_registered_tensor_and_new_buffers_join_by_construction():
    trained = Learner(tiny_config("agent.vgs.enabled=true"), [0, 1, 2])
    trained.train_update()
    learner = trained.policy
    snap = learner.snapshot(1)
    own = learner.state_dict()
    assert set(snap.tensors) == set(own)
    for k, v in own.items():
        assert torch.equal(snap.tensors[k], v[1]), k
    kinds = " ".join(own)
    for part in ["actor.", "critics.0.", "optimizer.exp_avg", "obs_rms.mean", "return_normalizer", "vgs.",
                 "hp_learning_rate", "env_steps", "updates", "episode_returns"]:
        assert part in kinds, part
    learner.register_buffer("new_statistic", torch.arange(3.0))
    assert float(learner.snapshot(2).tensors["new_statistic"]) == 2.0


def test_learner_refuses_a_registered_tensor_without_member_dimension():
    learner = make_policy(tiny_config(), [0, 1])
    learner.register_buffer("global_thing", torch.zeros(5))
    with pytest.raises(AssertionError, match="global_thing"):
        check_member_dim(learner, learner.population)


def test_checkpoint_round_trip_restores_every_field_and_rng(tmp_path):
    cfg = tiny_config()
    trained = Learner(cfg, [0, 1])
    trained.train_update()
    a = trained.policy
    path = tmp_path / "m.pt"
    a.snapshot(0).save(path)
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind
    loaded = MemberState.load(path)
    b = make_policy(cfg, [5, 6])
    b.restore(1, loaded)
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k][1], v[0]), k
    # same RNG stream from now on
    assert torch.equal(torch.rand(4, generator=a.generators[0]), torch.rand(4, generator=b.generators[1]))


def test_truncated_foreign_and_code_carrying_files_are_rejected(tmp_path):
    learner = make_policy(tiny_config(), [0])
    good = learner.snapshot(0).to_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        MemberState.load(cut)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an rpbt member-state"):
        MemberState.load(foreign)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "rpbt.member_state", "payload": Exploit()}))
    with pytest.raises(CheckpointError, match="evil.pt"):
        MemberState.load(evil)
    with pytest.raises(CheckpointError, match="not found"):
        MemberState.load(tmp_path / "missing.pt")


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_restore_of_a_state_from_another_architecture_names_the_key_and_writes_nothing():
    small = make_policy(tiny_config(), [0])
    big = make_policy(tiny_config("agent.network.lstm_hidden_size=32"), [0])
    before = {k: v.clone() for k, v in big.state_dict().items()}
    with pytest.raises(CheckpointError, match="lstm"):
        big.restore(0, small.snapshot(0))
    for k, v in big.state_dict().items():
        assert torch.equal(v, before[k])


def _policy_equal(a, b, ia: int, ib: int) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        assert torch.equal(sa[k][ia].cpu(), sb[k][ib].cpu()), k
    assert torch.equal(torch.rand(3, generator=a.generators[ia]), torch.rand(3, generator=b.generators[ib]))


def test_a_saved_member_restores_into_a_policy_on_another_device_cpu(tmp_path):
    cfg = tiny_config()
    trained = Learner(cfg, [0, 1])
    trained.train_update()
    path = tmp_path / "member.pt"
    trained.policy.snapshot(1).save(path)
    raw = torch.load(path, weights_only=True, map_location="cpu")
    assert all(t.device.type == "cpu" for t in raw["tensors"].values())
    fresh = make_policy(cfg, [4, 1, 7], device=torch.device("cpu"))
    fresh.restore(1, MemberState.load(path))
    _policy_equal(trained.policy, fresh, 1, 1)


@CUDA
def test_a_saved_member_restores_across_cpu_and_cuda(tmp_path):
    cfg = tiny_config()
    on_gpu = Learner(cfg, [0, 1], device=torch.device("cuda"))
    on_gpu.train_update()
    state = on_gpu.policy.snapshot(0)
    assert all(t.device.type == "cpu" for t in state.tensors.values())
    state.save(tmp_path / "m.pt")
    on_cpu = make_policy(cfg, [0], device=torch.device("cpu"))
    on_cpu.restore(0, MemberState.load(tmp_path / "m.pt"))
    back = make_policy(cfg, [0], device=torch.device("cuda"))
    back.restore(0, on_cpu.snapshot(0))
    _policy_equal(on_gpu.policy, back, 0, 0)
