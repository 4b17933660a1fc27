"""SA-PPO attacks on a trained member: clean against attacked returns, and ``rpbt evaluate RUN_DIR --attack``.

The attack itself (:func:`rpbt.agent.adversary.make_obs_perturbation`, PGD / FGSM on the policy's KL, Zhang et al.
2020) lives with the learner; this module runs it through the deterministic evaluation
(:mod:`rpbt.evaluation.policy`), so :mod:`rpbt.agent` imports nothing from evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from rpbt.agent.adversary import make_obs_perturbation
from rpbt.checkpoint import atomic_write_text
from rpbt.evaluation.policy import evaluate_policy, load_member
from rpbt.evaluation.run import _best_member
from rpbt.evaluation.trading import evaluate_trading_split

__all__ = ["evaluate_robustness", "evaluate_run_robustness"]


def evaluate_robustness(learner: Any, member: int, env_cfg: Any, attack: str, epsilon: float, *,
                        split: str = "validation", episodes: Optional[int] = None, seed: int = 0,
                        norm: str = "linf", steps: int = 10, step_size: Optional[float] = None) -> dict[str, Any]:
    """Clean and attacked deterministic returns of member ``member`` (local index) on the same episodes.

    Both runs use :func:`rpbt.evaluation.policy.evaluate_policy` with the same seeds (common random numbers), the
    attacked one with :func:`make_obs_perturbation`. Trading: one episode over the whole ``split``
    (:func:`rpbt.evaluation.trading.evaluate_trading_split`), returns are total log returns. Returns a JSON-able dict:
    ``clean`` and ``attacked`` (each ``mean_return``, ``std_return`` (ddof 0), ``returns``, ``lengths``), ``drop``
    = clean mean - attacked mean, and the attack's settings. Raises ``ValueError`` for bad attack arguments.
    """
    hook = make_obs_perturbation(attack, epsilon, norm=norm, steps=steps, step_size=step_size, seed=seed)
    out: dict[str, Any] = {"attack": attack, "epsilon": float(epsilon), "norm": norm,
                           "steps": 1 if attack == "fgsm" else int(steps), "step_size": step_size,
                           "split": split, "seed": int(seed)}
    for name, perturb in (("clean", None), ("attacked", hook)):
        if env_cfg.id == "trading":
            rep = evaluate_trading_split(learner, member, env_cfg, split, obs_perturbation=perturb)
            rets, lens = [float(rep["policy"]["total_log_return"])], [int(rep["policy"]["bars"])]
        else:
            res = evaluate_policy(learner, member, env_cfg, split, episodes=episodes, seed=seed,
                                  obs_perturbation=perturb)
            rets, lens = [float(r) for r in res.returns], [int(n) for n in res.lengths]
        out[name] = {"mean_return": float(np.mean(rets)), "std_return": float(np.std(rets)), "returns": rets,
                     "lengths": lens}
    out["episodes"] = len(out["clean"]["returns"])
    out["drop"] = out["clean"]["mean_return"] - out["attacked"]["mean_return"]
    return out


def evaluate_run_robustness(run_dir: Any, attack: str, epsilon: float, member: Optional[int] = None,
                            split: str = "test", episodes: Optional[int] = None, seed: Optional[int] = None,
                            norm: str = "linf", steps: int = 10, step_size: Optional[float] = None
                            ) -> tuple[dict[str, Any], Any]:
    """``rpbt evaluate RUN_DIR --attack A --epsilon E``: clean and attacked returns of a run's member.

    ``member`` defaults to ``summary.json``'s best member; ``seed`` to ``run.seed``; ``episodes`` to 10 (not
    allowed for trading runs). Writes ``RUN_DIR/evaluation/<split>_member<ID>_<attack>_<norm>_eps<E>.json`` and
    returns ``(report, path)``. Raises what :func:`rpbt.evaluation.policy.load_member` raises and ``ValueError`` for bad
    arguments.
    """
    run_dir = Path(run_dir)
    if member is None:
        member = _best_member(run_dir)
    cfg, learner = load_member(run_dir, member)
    if cfg.env.id == "trading" and episodes is not None:
        raise ValueError("episodes (--episodes) does not apply to a trading run: it is evaluated as one episode "
                         "over the split")
    if cfg.env.id != "trading":
        episodes = 10 if episodes is None else int(episodes)
        if episodes < 1:
            raise ValueError(f"episodes (--episodes) must be >= 1, got {episodes}")
    s = cfg.run.seed if seed is None else int(seed)
    report = {"run_dir": str(run_dir), "member": int(member), "env_id": cfg.env.id,
              "checkpoint": learner.checkpoint_name,
              "env_steps": int(learner.env_steps[0]), "updates": int(learner.updates[0]),
              **evaluate_robustness(learner, 0, cfg.env, attack, epsilon, split=split, episodes=episodes, seed=s,
                                    norm=norm, steps=steps, step_size=step_size)}
    path = run_dir / "evaluation" / f"{split}_member{member}_{attack}_{norm}_eps{epsilon:g}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(report, indent=1))
    return report, path
