"""Evaluation under attack: perturbations stay in their ball, a zero radius is clean evaluation, and
``rpbt evaluate --attack`` reports clean and attacked returns."""

from __future__ import annotations

import json

import pytest
import torch

from rpbt.agent.adversary import (
    make_obs_perturbation,
)
from rpbt.agent.ppo import make_policy
from rpbt.evaluation.attacks import evaluate_robustness
from tests.agent.test_adversary import CPU, NOISY, _sharpen
from tests.conftest import TINY, tiny_config


def test_evaluation_attack_stays_in_ball_and_zero_epsilon_is_clean():
    cfg = tiny_config("pbt.population_size=2", NOISY)
    policy = make_policy(cfg, [0, 1], device=CPU)
    _sharpen(policy)
    zero = evaluate_robustness(policy, 1, cfg.env, "pgd", 0.0, episodes=2, seed=3)
    assert zero["clean"]["returns"] == zero["attacked"]["returns"] and zero["drop"] == 0.0
    hook = make_obs_perturbation("pgd", 0.3, norm="l2", steps=3, seed=1)
    obs = torch.randn(4, policy.obs_dim)
    h, c = torch.randn(1, 4, 16), torch.randn(1, 4, 16)
    out = hook(policy, 1, obs, {"actor": (h, c)})
    assert out.shape == obs.shape and ((out - obs).norm(dim=-1) <= 0.3 + 1e-6).all()
    assert (out - obs).norm(dim=-1).max() > 0.1
    again = make_obs_perturbation("pgd", 0.3, norm="l2", steps=3, seed=1)(policy, 1, obs, {"actor": (h, c)})
    assert torch.equal(out, again)  # reproducible
    with pytest.raises(ValueError, match="attack"):
        make_obs_perturbation("cw", 0.1)


def test_cli_evaluate_with_attack_reports_clean_and_attacked(tmp_path, capsys):
    from rpbt.cli import main

    run = tmp_path / "run"
    rc = main(["train", "--overwrite", *_tiny_overrides(), f"run.dir={run}", "pbt.population_size=2",
               "agent.adversarial.enabled=true", NOISY])
    assert rc == 0
    rc = main(["evaluate", str(run), "--member", "1", "--attack", "fgsm", "--epsilon", "0.2", "--episodes", "2"])
    assert rc == 0
    report = json.loads((run / "evaluation" / "test_member1_fgsm_linf_eps0.2.json").read_text())
    assert report["episodes"] == 2 and len(report["attacked"]["returns"]) == 2
    assert "fgsm linf eps 0.2" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--member", "1", "--epsilon", "0.2"]) == 2


def _tiny_overrides() -> list[str]:

    return list(TINY)
