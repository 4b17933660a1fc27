"""Callbacks: user code the round loop calls between rounds, in the driver process (every backend).

Stable-Baselines3's convention: subclass :class:`Callback`, override the hooks you need (each is a no-op by
default), pass instances as ``rpbt.train(..., callbacks=[...])`` / ``rpbt.resume(..., callbacks=[...])``. A hook that
returns ``False`` (exactly ``False``; None and anything else go on) stops the run cleanly: the round that was just
played is already committed, so the run directory is left as a run interrupted at that round boundary (plus a
``stop`` event naming the reason), and ``rpbt resume RUN`` continues it as it continues any interrupted run.

Hooks and the ``info`` dict each receives (plain values, safe to keep):

- ``on_training_start(info)``: once, before the first round this process plays: ``run_dir``, ``round`` (rounds
  already committed: 0, or the resumed round), ``rounds_total``, ``population_size``, ``score_source``.
- ``on_exploit(info)``: after each exploit of a round, once the round is committed: ``round``, ``env_steps``,
  ``recipient``, ``donor``, ``recipient_score``, ``donor_score``, ``hparams_before`` (the recipient's),
  ``hparams_after`` (the explored ones now in force), ``measurements`` (the transfer's, see
  :mod:`rpbt.pbt.transfer`).
- ``on_round_end(info)``: after every committed round: ``round``, ``rounds_total``, ``env_steps`` (per member, the
  schedule's), ``member_env_steps``, ``scores`` (per member, None: no score), ``hparams`` (per member, in force
  during the round), ``best_member``, ``best_score``, ``exploits`` (the round's exploit events), ``score_source``,
  ``evaluation`` (the evaluation source's cost this round, else None) and ``run_dir``.
- ``on_training_end(info)``: once, when this process stops playing rounds (the end of the budget or a stop):
  ``round``, ``summary`` (``summary.json``'s content) and ``stopped`` (the reason, None at the end of the budget).
  Not called when training raises (Ctrl-C, a fault).

Built in: :class:`StopAtScore` (also the config key ``run.stop_at_score``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Optional

__all__ = ["Callback", "CallbackList", "StopAtScore"]


class Callback:
    """Base class of rpbt callbacks: every hook is a no-op that lets the run go on (see the module docstring)."""

    def on_training_start(self, info: dict[str, Any]) -> Optional[bool]:
        """Before the first round this process plays. Return ``False`` to stop before it."""
        return None

    def on_exploit(self, info: dict[str, Any]) -> Optional[bool]:
        """After each exploit, once its round is committed. Return ``False`` to stop after this round."""
        return None

    def on_round_end(self, info: dict[str, Any]) -> Optional[bool]:
        """After each committed round. Return ``False`` to stop the run here."""
        return None

    def on_training_end(self, info: dict[str, Any]) -> None:
        """When this process stops playing rounds (budget reached or stopped)."""
        return None

    def describe(self) -> str:
        """How a stop by this callback is named in the ``stop`` event (default: the class name)."""
        return type(self).__name__


class StopAtScore(Callback):
    """Stop once the best member's PBT score reaches ``target`` (``>=``; ``<=`` with ``mode="min"``), after the round
    that reached it is committed. SB3's ``StopTrainingOnRewardThreshold`` for a population.

    Args:
        target: the score to reach (a finite number), in the run's score units (``pbt.score_source``).
        mode: ``"max"`` or ``"min"``, as ``pbt.mode``.

    Raises ``ValueError`` for a non-finite target or another mode.
    """

    def __init__(self, target: float, mode: str = "max"):
        if isinstance(target, bool) or not isinstance(target, numbers.Real) or not math.isfinite(float(target)):
            raise ValueError(f"StopAtScore target must be a finite number, got {target!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"StopAtScore mode must be 'max' or 'min', got {mode!r}")
        self.target, self.mode = float(target), mode
        self.reached: Optional[dict[str, Any]] = None

    def on_round_end(self, info: dict[str, Any]) -> Optional[bool]:
        best = info.get("best_score")
        if best is None:
            return None
        if (best >= self.target) if self.mode == "max" else (best <= self.target):
            self.reached = {"round": info["round"], "member": info["best_member"], "score": best}
            return False
        return None

    def describe(self) -> str:
        if self.reached is None:
            return f"StopAtScore({self.target:g})"
        sign = ">=" if self.mode == "max" else "<="
        return (f"StopAtScore: member {self.reached['member']}'s score {self.reached['score']:.6g} {sign} "
                f"{self.target:g} in round {self.reached['round']}")


class CallbackList:
    """Calls several callbacks in order; a hook stops the run when any of them returns ``False`` (every callback's
    hook is still called). ``stopped_by`` is the :meth:`Callback.describe` of the first that asked to stop.

    Raises ``TypeError`` for an item that has none of the hooks (a class instead of an instance, a function)."""

    HOOKS = ("on_training_start", "on_exploit", "on_round_end", "on_training_end")

    def __init__(self, callbacks: Iterable[Any] = ()):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if isinstance(cb, type) or not any(callable(getattr(cb, h, None)) for h in self.HOOKS):
                raise TypeError(f"callbacks must be objects with hooks ({', '.join(self.HOOKS)}; subclass "
                                f"rpbt.callbacks.Callback), got {cb!r:.80}")
        self.stopped_by: Optional[str] = None

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def call(self, hook: str, info: dict[str, Any]) -> bool:
        """Call ``hook`` on every callback that has it; False when one of them returned ``False``."""
        go_on = True
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is None:
                continue
            if fn(info) is False and hook != "on_training_end":
                go_on = False
                if self.stopped_by is None:
                    describe = getattr(cb, "describe", None)
                    self.stopped_by = describe() if callable(describe) else type(cb).__name__
        return go_on
