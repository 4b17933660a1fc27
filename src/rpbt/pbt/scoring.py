"""Where a member's PBT score comes from, decided once per run: :class:`ScoreSource`.

Two sources (``pbt.score_source``): ``training``, the member's last ``pbt.score_window`` finished training episodes
(with ``pbt.score_since_exploit``: only those it finished since its last exploit), and ``validation``, deterministic
evaluation episodes on the trading environment's validation split (the same starts for every member, so selection
rewards what generalises past the training period). ``auto`` is resolved once per run, by the config's rule
:func:`rpbt.config.rules.resolve_score_source` (validation for ``env.id: trading``, training otherwise).
``pbt.score`` (mean, or CVaR at ``pbt.score_cvar_alpha``) is applied to the returns the source gives
(:func:`score_returns`). The t-test (``pbt.ttest``) is given the same returns the score is computed from.

Shapes: every per-member list is indexed by member, in the order of the ``members`` asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from rpbt.agent.distributional import empirical_cvar
from rpbt.config import Config, PBTConfig
from rpbt.config.rules import resolve_score_source

if TYPE_CHECKING:
    from rpbt.envs.market_data import MarketData
    from rpbt.pbt.backends.base import Backend

__all__ = ["RoundScores", "ScoreSource", "score_returns", "own_returns", "check_run_inputs"]


def score_returns(returns: Sequence[float], pbt: PBTConfig, window: Optional[int] = None) -> Optional[float]:
    """A member's PBT score from its recent episode returns (last ``window``, default ``pbt.score_window``).

    ``pbt.score: mean`` -> mean return; ``cvar`` -> CVaR at ``pbt.score_cvar_alpha`` (mean of the worst alpha
    fraction, fractional weighting, see :func:`rpbt.agent.distributional.empirical_cvar`). None when no episode
    has finished yet (the scheduler ranks None last).
    """
    recent = list(returns)[-(pbt.score_window if window is None else window):]
    if not recent:
        return None
    if pbt.score == "cvar":
        return float(empirical_cvar(recent, pbt.score_cvar_alpha))
    return float(np.mean(recent))


def own_returns(info: dict[str, Any], mark: Optional[int]) -> list[float]:
    """A member's recent training returns (``member_info``'s ``recent_returns``, oldest first) from the episodes it
    finished after its episode count was ``mark`` (the count it inherited at its last exploit; None: all of them).
    Episodes that were running at the mark count: their last steps were played by the new weights."""
    returns = list(info["recent_returns"])
    if mark is None:
        return returns
    own = int(info.get("episodes", len(returns))) - mark
    return returns[-own:] if own > 0 else []


@dataclass(frozen=True)
class RoundScores:
    """One round's scores and the returns behind them, per member.

    ``scores``: the PBT scores (None: no episode yet, or a faulty member). ``returns``: the returns each score is
    computed from (the t-test's input). ``own``: the training returns since the member's last exploit (all recent
    ones without ``pbt.score_since_exploit``). ``validation``: the validation returns (validation source only).
    ``eligible``: whether each member may take part in exploit (``pbt.score_since_exploit`` with the training
    source: at least ``pbt.score_window`` returns of its own), None: all may.
    """

    scores: list[Optional[float]]
    returns: list[list[float]]
    own: list[list[float]]
    validation: Optional[list[list[float]]] = None
    eligible: Optional[list[bool]] = None

    def without(self, members: set[int]) -> "RoundScores":
        """The same, with no score for ``members`` (faulty members: never a donor)."""
        return replace(self, scores=[None if m in members else s for m, s in enumerate(self.scores)])


class ScoreSource:
    """The score source of a run, resolved once (see the module docstring).

    Args:
        pbt: the ``pbt`` settings (``score``, ``score_window``, ``score_cvar_alpha``, ``score_since_exploit``).
        validation: score on validation episodes (``backend.evaluate_members(..., "validation")``) instead of
            training returns.
    """

    def __init__(self, pbt: PBTConfig, validation: bool):
        self.pbt = pbt
        self.validation = validation

    @classmethod
    def from_config(cls, cfg: Config) -> "ScoreSource":
        """``pbt.score_source`` with ``auto`` resolved: validation for ``env.id: trading``, training otherwise."""
        return cls(cfg.pbt, validation=resolve_score_source(cfg.pbt.score_source, cfg.env.id) == "validation")

    @property
    def kind(self) -> str:
        """``"validation"`` or ``"training"``."""
        return "validation" if self.validation else "training"

    def score_round(self, backend: "Backend", members: Sequence[int], info: dict[int, dict[str, Any]],
                    marks: Optional[Sequence[int]] = None) -> RoundScores:
        """Score ``members`` from their ``member_info`` (``info``) and, for the validation source, one batched
        ``backend.evaluate_members(members, "validation")``. ``marks``: each member's episode count at its last
        exploit, used with ``pbt.score_since_exploit`` (None: every recent return is the member's own)."""
        since = self.pbt.score_since_exploit and marks is not None
        own = [own_returns(info[m], marks[i] if since else None) for i, m in enumerate(members)]
        if self.validation:
            found = {int(m): r for m, r in backend.evaluate_members(list(members), "validation").items()}
            val = [list(found[m]) for m in members]
            return RoundScores([score_returns(x, self.pbt, window=len(x)) for x in val], val, own, validation=val)
        eligible = [len(x) >= self.pbt.score_window for x in own] if since else None
        return RoundScores([score_returns(x, self.pbt) for x in own], own, own, eligible=eligible)


def check_run_inputs(cfg: Config) -> Optional["MarketData"]:
    """Check what a run reads besides its config before anything trains or is written: the trading data and its
    split (:func:`rpbt.envs.trading.check_trading_setup`). Returns the trading run's
    :class:`~rpbt.envs.market_data.MarketData` (None for other environments). Raises a ``ValueError`` subclass
    naming the culprit."""
    if cfg.env.id == "trading":
        from rpbt.envs.trading import check_trading_setup

        return check_trading_setup(cfg.env, validation_episodes=ScoreSource.from_config(cfg).validation)
    return None
