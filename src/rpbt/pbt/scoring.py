"""Where a member's PBT score comes from, decided once per run: :class:`ScoreSource`.

Three sources (``pbt.score_source``): ``training``, the member's last ``pbt.score_window`` finished training
episodes (with ``pbt.score_since_exploit``: only those it finished since its last exploit); ``validation``,
deterministic evaluation episodes on the trading environment's validation split (the same starts for every member,
so selection rewards what generalises past the training period); and ``evaluation``, for any environment: each
round every *ready* member plays ``pbt.evaluation_episodes`` deterministic episodes reset with held-out seeds
(:func:`rpbt.seeding.heldout_episode_seeds`: never a training seed; the same for every member of a round, other
ones every round, as Stable-Baselines3's ``EvalCallback``), a member not ready is not evaluated (no score). Both
evaluating sources run in the backend's shards, batched, and leave the training state untouched; the evaluation
source's cost (episodes, env steps, seconds) is returned in :attr:`RoundScores.cost`. ``auto`` is resolved once per
run by :func:`rpbt.config.rules.resolve_score_source` (validation for ``env.id: trading``, training otherwise).
``pbt.score`` (mean, or CVaR at ``pbt.score_cvar_alpha``) is applied to the returns the source gives
(:func:`score_returns`). The t-test (``pbt.ttest``) is given the same returns the score is computed from.

A custom score function (``rpbt.train(..., score_fn=f)``, :class:`ScoreSource`'s ``score_fn``) replaces the score
(not the returns the t-test sees): ``f(info) -> float | None`` is called in the driver once per member per round
with a dict: ``member``, ``round``, ``env_steps``, ``updates``, ``hparams``, ``training_returns`` (the member's own
recent training returns, oldest first), ``evaluation_returns`` / ``evaluation_lengths`` (the evaluating sources'
episodes, None otherwise) and ``source_score`` (the score the source would give, None when it has none). None
means "no score yet" (ranked last, never a donor).

Shapes: every per-member list is indexed by member, in the order of the ``members`` asked for.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

import numpy as np

from rpbt.agent.distributional import empirical_cvar
from rpbt.config import Config, PBTConfig
from rpbt.config.rules import resolve_score_source
from rpbt.seeding import heldout_episode_seeds

if TYPE_CHECKING:
    from rpbt.envs.market_data import MarketData
    from rpbt.pbt.backends.base import Backend

__all__ = ["RoundScores", "ScoreFn", "ScoreSource", "score_returns", "own_returns", "check_run_inputs"]


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
    source: at least ``pbt.score_window`` returns of its own), None: all may. ``evaluation``: the held-out
    evaluation returns and ``evaluation_lengths`` their env steps (evaluation source only; empty for a member not
    ready, not evaluated). ``cost``: what
    the evaluation source spent this round (``episodes``, ``env_steps`` summed over members, ``seconds``), else
    None.
    """

    scores: list[Optional[float]]
    returns: list[list[float]]
    own: list[list[float]]
    validation: Optional[list[list[float]]] = None
    eligible: Optional[list[bool]] = None
    evaluation: Optional[list[list[float]]] = None
    evaluation_lengths: Optional[list[list[int]]] = None
    cost: Optional[dict[str, Any]] = None

    def without(self, members: set[int]) -> "RoundScores":
        """The same, with no score for ``members`` (faulty members: never a donor)."""
        return replace(self, scores=[None if m in members else s for m, s in enumerate(self.scores)])


ScoreFn = Callable[[dict[str, Any]], Optional[float]]


class ScoreSource:
    """The score source of a run, resolved once (see the module docstring).

    Args:
        pbt: the ``pbt`` settings (``score``, ``score_window``, ``score_cvar_alpha``, ``score_since_exploit``,
            ``evaluation_episodes``).
        validation: score on validation episodes (``backend.evaluate_members(..., "validation")``) instead of
            training returns.
        kind: ``"training"``, ``"validation"`` or ``"evaluation"`` (overrides ``validation`` when given).
        run_seed: the run seed the held-out seeds derive from (evaluation source).
        score_fn: a custom score function (module docstring), called in the driver; None: the source's score.
    """

    def __init__(self, pbt: PBTConfig, validation: bool = False, kind: Optional[str] = None, run_seed: int = 0,
                 score_fn: Optional[ScoreFn] = None):
        self.pbt = pbt
        self._kind = kind if kind is not None else ("validation" if validation else "training")
        if self._kind not in ("training", "validation", "evaluation"):
            raise ValueError(f"unknown score source {self._kind!r}")
        self.validation = self._kind == "validation"
        self.run_seed = int(run_seed)
        self.score_fn = score_fn

    @classmethod
    def from_config(cls, cfg: Config, score_fn: Optional[ScoreFn] = None) -> "ScoreSource":
        """``pbt.score_source`` with ``auto`` resolved: validation for ``env.id: trading``, training otherwise."""
        return cls(cfg.pbt, kind=resolve_score_source(cfg.pbt.score_source, cfg.env.id), run_seed=cfg.run.seed,
                   score_fn=score_fn)

    @property
    def kind(self) -> str:
        """``"validation"``, ``"evaluation"`` or ``"training"``."""
        return "validation" if self.validation else self._kind

    def score_round(self, backend: "Backend", members: Sequence[int], info: dict[int, dict[str, Any]],
                    marks: Optional[Sequence[int]] = None, round_: int = 0,
                    ready: Optional[Sequence[bool]] = None) -> RoundScores:
        """Score ``members`` from their ``member_info`` (``info``) and, for the validation source, one batched
        ``backend.evaluate_members(members, "validation")``; for the evaluation source, one batched
        ``backend.evaluate_episodes`` of the ready members (``ready``, per member; None: all) on round
        ``round_``'s held-out seeds. ``marks``: each member's episode count at its last exploit, used with
        ``pbt.score_since_exploit`` (None: every recent return is the member's own)."""
        since = self.pbt.score_since_exploit and marks is not None
        own = [own_returns(info[m], marks[i] if since else None) for i, m in enumerate(members)]
        if self.validation:
            found = {int(m): r for m, r in backend.evaluate_members(list(members), "validation").items()}
            val = [list(found[m]) for m in members]
            scored = RoundScores([score_returns(x, self.pbt, window=len(x)) for x in val], val, own, validation=val)
        elif self._kind == "evaluation":
            scored = self._evaluation_scores(backend, members, own, round_, ready)
        else:
            eligible = [len(x) >= self.pbt.score_window for x in own] if since else None
            scored = RoundScores([score_returns(x, self.pbt) for x in own], own, own, eligible=eligible)
        return scored if self.score_fn is None else self._custom(scored, members, info, round_)

    def _evaluation_scores(self, backend: "Backend", members: Sequence[int], own: list[list[float]], round_: int,
                           ready: Optional[Sequence[bool]]) -> RoundScores:
        """The evaluation source: held-out episodes of the ready members, their scores and the round's cost."""
        n = self.pbt.evaluation_episodes
        chosen = [m for i, m in enumerate(members) if ready is None or ready[i]]
        started = time.perf_counter()
        found = backend.evaluate_episodes(chosen, heldout_episode_seeds(self.run_seed, round_, n)) if chosen else {}
        seconds = time.perf_counter() - started
        found = {int(m): r for m, r in found.items()}
        evals = [list(found[m]["returns"]) if m in found else [] for m in members]
        steps = sum(int(x) for r in found.values() for x in r["lengths"])
        cost = {"members": len(chosen), "episodes": n * len(chosen), "env_steps": steps, "seconds": round(seconds, 4)}
        lengths = [[int(x) for x in found[m]["lengths"]] if m in found else [] for m in members]
        scores = [score_returns(x, self.pbt, window=len(x)) for x in evals]
        return RoundScores(scores, evals, own, evaluation=evals, evaluation_lengths=lengths, cost=cost)

    def _custom(self, scored: RoundScores, members: Sequence[int], info: dict[int, dict[str, Any]], round_: int
                ) -> RoundScores:
        """``scored`` with the custom score function's scores (see the module docstring)."""
        evals = scored.evaluation if scored.evaluation is not None else scored.validation
        out: list[Optional[float]] = []
        for i, m in enumerate(members):
            given = {"member": int(m), "round": int(round_), "env_steps": int(info[m]["env_steps"]),
                     "updates": int(info[m]["updates"]), "hparams": dict(info[m]["hparams"]),
                     "training_returns": list(scored.own[i]),
                     "evaluation_returns": None if evals is None else list(evals[i]),
                     "evaluation_lengths": (None if scored.evaluation_lengths is None
                                            else list(scored.evaluation_lengths[i])),
                     "source_score": scored.scores[i]}
            value = self.score_fn(given)
            # numbers.Real: Python and numpy numbers (np.float32(np.mean(...))); bool and np.bool_ are refused
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                      or not math.isfinite(float(value))):
                raise ValueError(f"score_fn {getattr(self.score_fn, '__qualname__', self.score_fn)!r} returned "
                                 f"{value!r} for member {m}: expected a finite number or None")
            out.append(None if value is None else float(value))
        return replace(scored, scores=out)


def check_run_inputs(cfg: Config) -> Optional["MarketData"]:
    """Check what a run reads besides its config before anything trains or is written: the trading data and its
    split (:func:`rpbt.envs.trading.check_trading_setup`). Returns the trading run's
    :class:`~rpbt.envs.market_data.MarketData` (None for other environments). Raises a ``ValueError`` subclass
    naming the culprit."""
    if cfg.env.id == "trading":
        from rpbt.envs.trading import check_trading_setup

        return check_trading_setup(cfg.env, validation_episodes=ScoreSource.from_config(cfg).validation)
    return None
