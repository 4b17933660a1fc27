"""Encoders as per-member modules stacked across the population: a custom two-layer MLP factory (defined here) and
the built-in CNN on a tiny image-observation memory environment (defined here) train, exploit (every parameter and
Adam moment moved exactly), burn in, resume, predict and export (ONNX / TorchScript vs ``Policy``), and the
stacked batch equals running each member's own module alone."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

import rpbt
from rpbt.agent.encoders import NatureCNN, channel_order
from rpbt.checkpoint import hparam_key
from rpbt.config import ConfigError
from rpbt.pbt.transfer import exploit
from tests.conftest import Learner, tiny_config

# ------------------------------------------------------------------------------------------ what a user writes


class TwoLayerMLP(nn.Module):
    """A user's encoder: observations (B, *shape) -> (B, width), ReLU then tanh."""

    def __init__(self, observation_space: gym.Space, width: int = 12):
        super().__init__()
        d = int(np.prod(observation_space.shape))
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def two_layer_mlp(observation_space: gym.Space, width: int = 12) -> nn.Module:
    return TwoLayerMLP(observation_space, width)


class ImageCue(gym.Env):
    """A pixel memory task: the first frame of an episode shows a cue (the left or right half of channel 0 lit), the
    next ``length - 1`` frames are noise; the last action is rewarded 1 when it names the cue's side. Observations
    (H, W, C) = (8, 8, 2) float32 in [0, 1] (``channels_first``: (2, 8, 8))."""

    def __init__(self, length: int = 5, channels_first: bool = False):
        self.length, self.channels_first = length, channels_first
        shape = (2, 8, 8) if channels_first else (8, 8, 2)
        self.observation_space = gym.spaces.Box(0.0, 1.0, shape, np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def _frame(self, cue: bool) -> np.ndarray:
        img = self.np_random.uniform(0.0, 0.2, (8, 8, 2)).astype(np.float32)
        if cue:
            img[:, (0 if self.side == 0 else 4):(4 if self.side == 0 else 8), 0] = 1.0
        return img.transpose(2, 0, 1).copy() if self.channels_first else img

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.side = 0, int(self.np_random.integers(2))
        return self._frame(True), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.length
        reward = float(int(action) == self.side) if done else 0.0
        return self._frame(False), reward, done, False, {}


def make_image_cue(**kwargs) -> gym.Env:
    return ImageCue(**kwargs)


IMAGE_ENV = ["env.entry_point=tests.agent.test_encoders:make_image_cue", "env.id=image_cue"]
CASES = {
    "custom_mlp": ["agent.network.encoder=tests.agent.test_encoders:two_layer_mlp",
                   "agent.network.encoder_kwargs={width: 10}"],
    "cnn": IMAGE_ENV + ["agent.network.encoder=cnn", "agent.network.encoder_kwargs={features: 16}"],
    "cnn_gru_prev_inputs": IMAGE_ENV + ["agent.network.encoder=cnn", "agent.network.encoder_kwargs={features: 16}",
                                        "agent.network.cell=gru", "agent.network.prev_action=true",
                                        "agent.network.prev_reward=true", "agent.critic.twin=true"],
}


# ------------------------------------------------------------------------------------------ the stacked batch


@pytest.mark.parametrize("case", sorted(CASES))
def test_stacked_encoder_equals_each_members_own_module(case):
    learner = Learner(tiny_config(*CASES[case]), [0, 1, 2])
    policy = learner.policy
    enc = policy.actor.encoder
    assert all(p.shape[0] == 3 for p in enc.parameters())
    names = {n for n, _ in policy.named_parameters()}
    assert {n for n in names if ".encoder.module." in n}, "the module's weights are registered parameters"
    assert all(f"exp_avg__{n.replace('.', '__')}" in dict(policy.optimizer.named_buffers()) for n in names)
    x = torch.randn(3, 5, policy.input_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batched = enc(x)  # (P, B, F + E)
        for i in range(3):
            alone = enc.member_module(i)
            obs = x[i, :, :enc.obs_dim].reshape(5, *enc.obs_shape)
            expected = torch.cat([alone(obs), x[i, :, enc.obs_dim:]], -1)
            torch.testing.assert_close(batched[i], expected, atol=1e-6, rtol=0)
    # members' initial weights differ (each from its own seed) and do not depend on who else is in the batch
    w = next(iter(enc.weights().values()))
    assert not torch.equal(w[0], w[1])
    alone = Learner(tiny_config(*CASES[case]), [1]).policy.actor.encoder
    for name, t in enc.weights().items():
        assert torch.equal(alone.weights()[name][0], t[1]), name


# ------------------------------------------------------------------------------------------ training and exploit


@pytest.mark.parametrize("case", sorted(CASES))
def test_module_encoder_trains_and_exploit_moves_every_parameter_and_moment(case):
    from tests.pbt.test_transfer import InputRecorder, reference_states, reference_states_with_inputs

    cfg = tiny_config(*CASES[case], "agent.update_epochs=1", "pbt.optimizer_state=copy")
    learner = Learner(cfg, [0, 1, 2])
    rec = InputRecorder(learner.runner)
    before = {n: p.detach().clone() for n, p in learner.policy.named_parameters()}
    for _ in range(2):
        metrics = learner.train_update()
    assert torch.isfinite(metrics["train/loss"]).all()
    moved = [n for n, p in learner.policy.named_parameters() if ".encoder." in n and not torch.equal(p, before[n])]
    assert moved, "the encoder's parameters must train"
    policy = learner.policy
    donor, r = 0, 2
    donor_state = policy.snapshot(donor)
    assert not torch.equal(policy.actor.encoder.weights()[next(iter(policy.actor.encoder.weights()))][r],
                           donor_state.tensors[f"actor.encoder.module.{next(iter(policy.actor.encoder.weights()))}"])
    hp = policy.get_hparams(donor)
    hp["learning_rate"] *= 0.5
    exploit(policy, learner.runner, r, donor_state, hp, strategy="burn_in", optimizer_state="copy")
    got = policy.snapshot(r)
    enc_keys = [k for k in donor_state.tensors if ".encoder.module." in k]
    assert enc_keys and any(k.startswith("optimizer.exp_avg__") and "encoder__module" in k for k in donor_state.tensors)
    for key, value in donor_state.tensors.items():
        if key == hparam_key("learning_rate"):
            continue
        assert torch.equal(got.tensors[key], value), key
    for name, p in policy.named_parameters():  # the live tensors, not only the snapshot
        assert torch.equal(p[r].detach(), donor_state.tensors[name]), name
    # burn-in through the stacked encoder equals stepping the donor's networks over each running episode
    if policy.input_dim > policy.obs_dim:
        prefixes = [rec.prefix_inputs(learner.carried, r, n, None) for n in range(cfg.env.num_envs)]
        ref = reference_states_with_inputs(cfg, donor_state, prefixes)
    else:
        prefixes = [rec.prefix(learner.carried, r, n) for n in range(cfg.env.num_envs)]
        ref = reference_states(cfg, donor_state, prefixes)
    assert any(len(p) > 1 for p in prefixes), "test needs a running episode"
    for name, state_ref in ref.items():
        for t, t_ref in zip(learner.carried.hidden[name], state_ref):
            assert float((t[r] - t_ref).abs().max()) < 1e-5, name
    learner.train_update()  # trains on after the exploit


# ---------------------------------------------------------------------------------------- run, resume, predict, export


@pytest.mark.parametrize("case", ["custom_mlp", "cnn_gru_prev_inputs"])
def test_module_encoder_run_resumes_predicts_and_exports_like_the_policy(case, tmp_path):
    from rpbt.pbt.runner import PopulationRunner
    from tests.pbt.test_resume import _events

    run_dir = tmp_path / "run"
    cfg = tiny_config(*CASES[case], f"run.dir={run_dir}", "run.total_env_steps=256")  # 4 rounds of 64 steps
    runner = PopulationRunner(cfg, run_dir)
    runner.start()
    runner.play_round()
    runner.play_round()
    runner.close()  # interrupted after round 2
    run = rpbt.resume(run_dir, announce=False)
    events = _events(run.dir)
    assert [e["round"] for e in events if e["type"] == "round"] == [1, 2, 3, 4]
    assert any(e["type"] == "exploit" for e in events), "the run must exploit through the backend"
    policy = rpbt.load_policy(run.dir, "best")
    env = policy.make_env()
    obs, _ = env.reset(seed=3)
    actions, state = policy.predict(obs, episode_start=True, prev_reward=0.0)
    assert env.action_space.contains(actions)
    from tests.test_actor_export import _episodes
    from tests.test_api import _has

    names = rpbt.actor_export.input_names(policy)
    scripted = torch.jit.load(str(policy.export(tmp_path / "actor.pt", "torchscript")))

    def run_ts(inputs):
        with torch.no_grad():
            return [t.numpy() for t in scripted(**{n: torch.as_tensor(np.asarray(x)) for n, x in zip(names, inputs)})]

    actors = {"torchscript": run_ts}
    if _has("onnx") and _has("onnxruntime"):
        import onnxruntime as ort

        session = ort.InferenceSession(str(policy.export(tmp_path / "actor.onnx", "onnx")),
                                       providers=["CPUExecutionProvider"])
        actors["onnx"] = lambda inputs: session.run(None, {n: np.asarray(x) for n, x in zip(names, inputs)})
    worst = _episodes(policy, actors, steps=30)
    assert all(w < 1e-5 for w in worst.values()), worst


# ------------------------------------------------------------------------------------------ the built-in CNN, errors


def test_cnn_channel_order_is_detected_or_configured_and_both_orders_see_the_same_image():
    assert channel_order((8, 8, 2)) == "last" and channel_order((2, 8, 8)) == "first"
    assert channel_order((3, 64, 64)) == "first" and channel_order((7, 7, 3)) == "last"
    torch.manual_seed(0)
    last = NatureCNN((8, 8, 2), "last", features=8)
    first = NatureCNN((2, 8, 8), "first", features=8)
    first.load_state_dict(last.state_dict())
    img = torch.rand(3, 8, 8, 2)
    torch.testing.assert_close(last(img), first(img.permute(0, 3, 1, 2)))
    # channels_first environment: detected from the space
    learner = Learner(tiny_config(*IMAGE_ENV, "env.kwargs={channels_first: true}", "agent.network.encoder=cnn",
                                  "agent.network.encoder_kwargs={features: 8}"), [0])
    assert learner.policy.actor.encoder.obs_shape == (2, 8, 8)
    assert not learner.policy.actor.encoder.member_module(0).channels_last
    assert torch.isfinite(learner.train_update()["train/loss"]).all()


def test_bad_encoders_are_named_config_errors():
    with pytest.raises(ConfigError, match="agent.network.encoder"):
        tiny_config("agent.network.encoder=transformer")
    with pytest.raises(ConfigError, match="cnn encoder needs a Box image"):
        Learner(tiny_config("agent.network.encoder=cnn"), [0])  # CartPole: a flat vector
    with pytest.raises(ConfigError, match="no callable 'nothing'"):
        Learner(tiny_config("agent.network.encoder=tests.agent.test_encoders:nothing"), [0])
    with pytest.raises(ConfigError, match="encoder_kwargs"):
        Learner(tiny_config(CASES["custom_mlp"][0], "agent.network.encoder_kwargs={depth: 3}"), [0])
    with pytest.raises(ConfigError, match=r"flat features \(B, F\)"):
        Learner(tiny_config("agent.network.encoder=tests.agent.test_encoders:not_flat"), [0])


class _AddDim(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1)


def not_flat(observation_space: gym.Space) -> nn.Module:
    return _AddDim()  # (B, 1, D): not flat features


@pytest.mark.parametrize("env", [["env.id=popgym-RepeatPreviousEasy-v0"],
                                 ["env.entry_point=tests.custom_envs:make_dict_beacon", "env.id=beacon"]])
def test_a_module_encoder_sees_a_non_box_observation_space_as_the_flat_box_rpbt_feeds(env):
    learner = Learner(tiny_config(*env, CASES["custom_mlp"][0]), [0, 1])
    enc = learner.policy.actor.encoder
    assert enc.obs_shape == (learner.policy.obs_dim,)
    assert torch.isfinite(learner.train_update()["train/loss"]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stacked_encoder_and_gru_on_cuda_match_the_cpu():
    cfg = tiny_config(*CASES["cnn_gru_prev_inputs"])
    cpu, gpu = Learner(cfg, [0, 1]), Learner(cfg, [0, 1], device=torch.device("cuda"))
    x = torch.randn(2, 3, cpu.policy.input_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(gpu.policy.actor.encoder(x.cuda()).cpu(), cpu.policy.actor.encoder(x),
                                   atol=1e-5, rtol=1e-5)
    assert torch.isfinite(gpu.train_update()["train/loss"]).all()
    exploit(gpu.policy, gpu.runner, 1, gpu.policy.snapshot(0), gpu.policy.get_hparams(0), strategy="burn_in")
    for name, p in gpu.policy.named_parameters():
        assert torch.equal(p[1], p[0]), name
