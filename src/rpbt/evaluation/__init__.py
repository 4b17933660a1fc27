"""Evaluation room: deterministic policy evaluation, trading accounting, attacks, and ``rpbt evaluate``.

- :mod:`rpbt.evaluation.policy`: deterministic evaluation of members (validation scores for PBT), loading a member
  of a run directory;
- :mod:`rpbt.evaluation.trading`: trading metrics, a member over a whole split against buy-and-hold and flat;
- :mod:`rpbt.evaluation.attacks`: clean against attacked returns (SA-PPO observation attacks);
- :mod:`rpbt.evaluation.run`: ``rpbt evaluate RUN_DIR``.
"""

from rpbt.evaluation.attacks import evaluate_robustness, evaluate_run_robustness
from rpbt.evaluation.policy import (
    EpisodeTrace,
    EvaluationResult,
    ObsPerturbation,
    evaluate_members,
    evaluate_policy,
    load_member,
    member_policy_head,
)
from rpbt.evaluation.run import evaluate_run
from rpbt.evaluation.trading import evaluate_trading_split, plot_equity_curves, trading_metrics, whole_split_env_config

__all__ = [
    "EpisodeTrace",
    "EvaluationResult",
    "ObsPerturbation",
    "evaluate_members",
    "evaluate_policy",
    "evaluate_robustness",
    "evaluate_run",
    "evaluate_run_robustness",
    "evaluate_trading_split",
    "load_member",
    "member_policy_head",
    "plot_equity_curves",
    "trading_metrics",
    "whole_split_env_config",
]
