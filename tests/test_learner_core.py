"""The learner core: member isolation, the carried state as one value, device independence of the member state."""

from __future__ import annotations

import math

import pytest
import torch

from rpbt.agent.policy import resolve_device
from rpbt.agent.ppo import make_policy
from rpbt.checkpoint import MemberState
from rpbt.cli import main
from rpbt.config import ConfigError
from rpbt.envs.runner import CarriedState
from tests.conftest import TINY, Learner, tiny_config

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
FULL = ("agent.vgs.enabled=true", "agent.vgs.warmup=0", "agent.critic.kind=categorical", "agent.critic.twin=true",
        "agent.adversarial.enabled=true", "agent.adversarial.steps=2", "agent.adversarial.epsilon=0.1")
PREV = ("env.id=popgym-MineSweeperEasy-v0", "agent.network.prev_action=true", "agent.network.prev_reward=true")


def _poison(learner: Learner, what: str) -> None:
    """Make every observation (or reward) of member 0 NaN, from the first step on."""
    runner = learner.runner
    step = runner.step
    if what == "obs":
        runner.carried.next_obs[0] = float("nan")

    def poisoned(actions):
        result = step(actions)
        if what == "obs":
            runner.carried.next_obs[0] = float("nan")
        else:
            result.reward[0] = float("nan")
        return result

    runner.step = poisoned


def _member_tensors(learner: Learner, member: int) -> dict[str, torch.Tensor]:
    out = {f"policy.{k}": v[member].detach().cpu().clone() for k, v in learner.policy.state_dict().items()}
    out.update({f"carried.{k}": v[member].detach().cpu().clone() for k, v in learner.carried.tensors().items()})
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("what", ["obs", "reward"])
@pytest.mark.parametrize("extra", [(), FULL, PREV], ids=["plain", "vgs_categorical_twin_sappo",
                                                        "multi_discrete_prev_inputs"])
def test_a_non_finite_member_never_changes_another_members_tensors(device, what, extra):
    cfg = tiny_config("pbt.population_size=2", *extra)
    clean = Learner(cfg, [0, 1], device=torch.device(device))
    poisoned = Learner(cfg, [0, 1], device=torch.device(device))
    _poison(poisoned, what)
    for _ in range(2):
        clean.train_update()
        metrics = poisoned.train_update()
    assert not math.isfinite(float(metrics["train/loss"][0])), "the injection must reach member 0's loss"
    assert not all(torch.isfinite(p[0]).all() for p in poisoned.policy.parameters()), "member 0 must be poisoned"
    assert math.isfinite(float(metrics["train/loss"][1]))
    want, got = _member_tensors(clean, 1), _member_tensors(poisoned, 1)
    assert set(want) == set(got)
    for k in want:
        assert torch.equal(want[k], got[k]), f"member 1's {k} changed because member 0 went non-finite"


def test_carried_state_tensor_form_round_trips_and_declares_every_field():
    learner = Learner(tiny_config("pbt.population_size=3", "pbt.burn_in_max_steps=8"), [0, 1, 2])
    learner.collect()
    carried = learner.carried
    flat = carried.tensors()
    assert {"hidden.actor.h", "hidden.critic0.c", "next_obs", "episode_start", "running_return", "running_length",
            "history_obs", "history_start", "history_steps"} <= set(flat)
    for k, v in flat.items():
        assert v.shape[0] == 3, f"{k} lacks the member dimension"
    back = CarriedState.from_tensors({k: v.clone() for k, v in flat.items()})
    for k, v in back.tensors().items():
        assert torch.equal(v, flat[k]), k
    # every field of the dataclass is in the tensor form (a new field cannot be missed)
    import dataclasses

    names = {f.name for f in dataclasses.fields(CarriedState)} - {"hidden"}
    assert names <= set(flat)


def test_member_view_clone_set_and_reset():
    learner = Learner(tiny_config("pbt.population_size=3"), [0, 1, 2])
    learner.collect()
    carried = learner.carried
    before = {k: v.clone() for k, v in carried.tensors().items()}
    copy1 = carried.clone_member(1)
    copy1.running_return.fill_(123.0)
    assert torch.equal(carried.running_return, before["running_return"]), "a clone must not share storage"
    view2 = carried.member(2)
    view2.running_length.fill_(77)
    assert (carried.running_length[2] == 77).all() and torch.equal(carried.running_length[0],
                                                                    before["running_length"][0])
    carried.set_member(0, carried.clone_member(1))
    for k, v in carried.tensors().items():
        assert torch.equal(v[0], v[1]), k
    carried.reset_member(1)
    assert bool(carried.episode_start[1].all())
    assert all(float(h[1].abs().sum()) == 0 and float(c[1].abs().sum()) == 0 for h, c in carried.hidden.values())
    assert float(carried.running_return[1].abs().sum()) == 0
    assert (carried.episode_lengths()[1] == 0).all()
    with pytest.raises(ValueError, match="shape"):
        carried.set_member(0, carried.map(lambda t: t[:2]))


def test_runner_clone_steps_exactly_like_the_original():
    learner = Learner(tiny_config("pbt.population_size=2"), [0, 1])
    learner.collect()
    clone = learner.runner.clone_member(1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        actions = torch.randint(0, learner.policy.action_dim, (2, learner.runner.num_envs), generator=gen)
        a = learner.runner.step(actions)
        b = clone.step(actions[1:2])
        assert torch.equal(a.reward[1:2], b.reward) and torch.equal(a.done[1:2], b.done)
        assert torch.equal(learner.carried.next_obs[1:2], clone.carried.next_obs)
        assert torch.equal(learner.carried.running_return[1:2], clone.carried.running_return)


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


def test_device_setting_is_resolved_or_refused_clearly(capsys):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="agent.device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="agent.device.*no CUDA"):
            resolve_device("cuda:0")
        assert main(["train", *TINY, "agent.device=cuda", "run.dir=/nonexistent/never"]) == 2
        err = capsys.readouterr().err
        assert "agent.device" in err and "Traceback" not in err
