"""The exported actor (ONNX through onnxruntime, TorchScript through torch.jit.load) against Policy on whole
episodes, and ``rpbt export``'s errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import rpbt
import rpbt.actor_export
from rpbt.api import Policy
from rpbt.cli import main
from tests.conftest import Learner, tiny_config
from tests.test_api import _has, _policy_of, _train


def _episodes(policy: Policy, actor_fns: dict, batch: int = 3, steps: int = 70, seed: int = 0) -> dict[str, float]:
    """Run ``batch`` environments for ``steps`` steps with ``policy.predict`` (sampling, so actions vary), resetting
    finished ones; feed every exported actor the same observations, episode starts, previous actions and rewards,
    each carrying its own state ((h, c), or h for a GRU). Returns the max abs difference of every output from
    Policy's, per actor."""
    envs = [policy.make_env() for _ in range(batch)]
    obs = np.stack([e.reset(seed=seed + j)[0] for j, e in enumerate(envs)]).astype(np.float32)
    spec = policy.action_spec
    L, H = policy.num_layers, policy.hidden_size
    n_state = 1 if policy.cell == "gru" else 2
    carried = {name: [np.zeros((L, batch, H), np.float32)] * n_state for name in actor_fns}
    prev_action = np.zeros((batch, *spec.shape), np.float32 if spec.continuous else np.int64)
    prev_reward = np.zeros(batch, np.float32)
    start = np.ones(batch, dtype=bool)
    state = None
    worst = {name: 0.0 for name in actor_fns}
    starts_seen = 0
    for _ in range(steps):
        params, next_state = policy.action_distribution(obs, state, episode_start=start, prev_reward=prev_reward)
        assert (next_state.c is None) == (policy.cell == "gru")
        expected = list(params.values()) + [next_state.h] + ([] if next_state.c is None else [next_state.c])
        for name, fn in actor_fns.items():
            inputs = [obs, *carried[name], start.astype(np.float32)]
            if policy.prev_action:
                inputs.append(prev_action)
            if policy.prev_reward:
                inputs.append(prev_reward)
            out = fn(inputs)
            assert len(out) == len(expected)
            for got, want in zip(out, expected):
                assert got.shape == want.shape
                worst[name] = max(worst[name], float(np.abs(got - want).max()))
            carried[name] = list(out[-n_state:])
        actions, state = policy.predict(obs, state, episode_start=start, deterministic=False, prev_reward=prev_reward)
        start = np.zeros(batch, dtype=bool)
        for j, env in enumerate(envs):
            o, r, term, trunc, _ = env.step(actions[j])
            prev_reward[j] = r
            if term or trunc:
                o, _ = env.reset()
                start[j] = True
                starts_seen += 1
            obs[j] = o
        prev_action = np.array(actions, copy=True)
    assert starts_seen > 0, "the comparison must cross episode starts"
    return worst


CASES = {
    "discrete": ["agent.network.lstm_num_layers=2"],
    "discrete_raw_obs_clip": ["agent.raw_obs_clip=0.05"],  # clips the position-only CartPole's raw values
    "multi_discrete_prev_inputs": ["env.id=popgym-MineSweeperEasy-v0", "agent.network.prev_action=true",
                                   "agent.network.prev_reward=true"],
    "box_prev_inputs": ["env.id=Pendulum-v1", "env.kwargs={max_episode_steps: 30}", "agent.network.prev_action=true",
                        "agent.network.prev_reward=true"],
    "dict_obs_prev_reward_only": ["env.entry_point=tests.custom_envs:make_dict_beacon", "env.id=beacon",
                                  "agent.network.prev_reward=true"],
    "gru_discrete": ["agent.network.cell=gru", "agent.network.lstm_num_layers=2"],
    "gru_box_prev_inputs": ["agent.network.cell=gru", "env.id=Pendulum-v1", "env.kwargs={max_episode_steps: 30}",
                            "agent.network.prev_action=true", "agent.network.prev_reward=true"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_and_torchscript_exports_match_the_policy_over_whole_episodes(case, tmp_path):
    learner = Learner(tiny_config(*CASES[case]), [0, 1])
    for _ in range(2):  # non-trivial weights and normalizer statistics
        learner.train_update()
    policy = _policy_of(learner, member=1)
    names = rpbt.actor_export.input_names(policy)
    scripted = torch.jit.load(str(policy.export(tmp_path / "actor.pt", "torchscript")))

    def run_ts(inputs):  # TorchScript: the previous action and reward by name (each optional)
        with torch.no_grad():
            tensors = {n: torch.as_tensor(np.asarray(x)) for n, x in zip(names, inputs)}
            return [t.numpy() for t in scripted(**tensors)]

    actors = {"torchscript": run_ts}
    if _has("onnx") and _has("onnxruntime"):  # the rpbt[export] extra (CI installs it)
        import onnxruntime as ort

        session = ort.InferenceSession(str(policy.export(tmp_path / "actor.onnx", "onnx")),
                                       providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == names
        assert [o.name for o in session.get_outputs()] == rpbt.actor_export.output_names(policy)

        def run_onnx(inputs):
            return session.run(None, {n: np.asarray(x) for n, x in zip(names, inputs)})

        actors["onnx"] = run_onnx
    elif os.environ.get("CI"):
        pytest.fail("CI installs rpbt[export]: onnx and onnxruntime must be importable")
    worst = _episodes(policy, actors)
    assert all(w < 1e-5 for w in worst.values()), worst


def test_export_cli_and_errors(tmp_path, capsys):
    run = _train(tmp_path)
    out = tmp_path / "exported" / "actor.pt"
    assert main(["export", str(run.dir), "--member", "0", "--format", "torchscript", "-o", str(out)]) == 0
    assert "inputs obs, h, c, episode_start; outputs logits, h_out, c_out" in capsys.readouterr().out
    actor = torch.jit.load(str(out))
    logits, h, c = actor(torch.zeros(3, 2), torch.zeros(1, 3, 16), torch.zeros(1, 3, 16), torch.ones(3))
    assert logits.shape == (3, 2) and h.shape == (1, 3, 16)
    with pytest.raises(ValueError, match="--format"):
        rpbt.export(run.dir, tmp_path / "x", format="tflite")
    assert main(["export", str(tmp_path / "nowhere"), "--format", "onnx", "-o", str(tmp_path / "a.onnx")]) == 2
