"""Exploit strategies of PBT: who copies whom among the ready members (pure; one seeded generator passed in).

Jaderberg et al. 2017, section 4.1. Every function takes the ready members (indices into ``scores``), the scores
(``None`` for missing / NaN, ranked worst) and the score ``mode`` (``"max"``: higher is better, ``"min"``: lower),
and returns ``(recipient, donor)`` pairs. The rules are those of :mod:`rpbt.pbt.scheduler`'s docstring:

- :func:`truncation`: the bottom ``k`` (:func:`truncation_group_size`) copy a strictly better member of the top ``k``.
- :func:`tournament`: a random matching; in each pair the worse copies the strictly better.
- :func:`significant`: the t-test selection guard, Welch's one-sided test (:func:`welch_ttest`) on each pair's last
  ``window`` returns; returns the kept pairs, each kept pair's test and the refused pairs with their reason.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any, Optional

__all__ = ["truncation_group_size", "rank_key", "truncation", "tournament", "significant", "welch_ttest"]

Pair = tuple[int, int]  # (recipient, donor)


def truncation_group_size(quantile_fraction: float, n: int) -> int:
    """``k``, the size of truncation selection's top and bottom groups among ``n`` ready members:
    ``max(1, floor(quantile_fraction * n))``."""
    return max(1, math.floor(quantile_fraction * n))


def rank_key(score: Optional[float], mode: str) -> tuple[int, float]:
    """Sort key, larger is better: missing/NaN scores rank below every real score (including -inf)."""
    if score is None:
        return (0, 0.0)
    return (1, score if mode == "max" else -score)


def _better(a: Optional[float], b: Optional[float], mode: str) -> bool:
    """Whether score ``a`` is strictly better than score ``b``."""
    return rank_key(a, mode) > rank_key(b, mode)


def truncation(rng: random.Random, ready_members: list[int], scores: Sequence[Optional[float]], mode: str,
               quantile_fraction: float) -> list[Pair]:
    """Truncation selection: the bottom ``k`` ready members each copy a strictly better member of the top ``k``."""
    order = list(ready_members)  # ascending member index
    rng.shuffle(order)  # seeded tie-break
    order.sort(key=lambda m: rank_key(scores[m], mode))  # stable: worst first, ties in shuffled order
    k = truncation_group_size(quantile_fraction, len(order))
    bottom, top = order[:k], order[-k:]
    # A recipient copies only a strictly better donor: copying a tie (or an unscored member) is pure churn that
    # discards the population's diversity, e.g. once every member has reached a task's maximum score. The donor
    # is uniform among the top members strictly better than the recipient: a first draw from the whole top, and
    # a second among the better ones only when the first drew a tie (uniform overall: 1/k + (k - b)/k * 1/b).
    pairs = []
    for recipient in sorted(bottom):
        donor = top[rng.randrange(k)]
        if not _better(scores[donor], scores[recipient], mode):
            better = [d for d in top if _better(scores[d], scores[recipient], mode)]
            if not better:
                continue
            donor = better[rng.randrange(len(better))]
        pairs.append((recipient, donor))
    return pairs


def tournament(rng: random.Random, ready_members: list[int], scores: Sequence[Optional[float]], mode: str
               ) -> list[Pair]:
    """Binary tournament: a uniformly random matching of the ready members; the worse of a pair copies the better.
    With an odd count the member left over meets a uniformly chosen other one (not one already a recipient)."""
    order = list(ready_members)
    rng.shuffle(order)
    pairs: list[Pair] = []
    recipients: set[int] = set()
    for a, b in zip(order[0::2], order[1::2]):
        if _better(scores[b], scores[a], mode):
            pairs.append((a, b))
            recipients.add(a)
        elif _better(scores[a], scores[b], mode):
            pairs.append((b, a))
            recipients.add(b)
    if len(order) % 2 == 1:
        leftover = order[-1]
        others = sorted(m for m in ready_members if m != leftover)
        opponent = others[rng.randrange(len(others))]
        if opponent not in recipients and _better(scores[opponent], scores[leftover], mode):
            pairs.append((leftover, opponent))
    return pairs


def significant(pairs: list[Pair], returns: Sequence[Sequence[float]], mode: str, window: int, alpha: float
                ) -> tuple[list[Pair], dict[int, dict[str, Any]], list[dict[str, Any]]]:
    """The t-test guard: ``(kept pairs, test of each kept pair by recipient, refused pairs)``.

    A pair is kept when the donor's last ``window`` returns are better than the recipient's by
    :func:`welch_ttest` at level ``alpha``. A refused pair is a JSON-able dict: ``recipient``, ``donor``,
    ``n_donor``, ``n_recipient``, ``window``, ``alpha``, when tested ``t`` (None when not finite), ``df``, ``p``,
    and ``reason`` (``"too few returns"``, ``"non-finite returns"`` or ``"not significant"``).
    """
    kept: list[Pair] = []
    tests: dict[int, dict[str, Any]] = {}
    refused: list[dict[str, Any]] = []
    for recipient, donor in pairs:
        d, r = list(returns[donor])[-window:], list(returns[recipient])[-window:]
        base = {"recipient": recipient, "donor": donor, "n_donor": len(d), "n_recipient": len(r),
                "window": window, "alpha": alpha}
        if len(d) < window or len(r) < window:
            refused.append({**base, "reason": "too few returns"})
            continue
        if not all(math.isfinite(float(v)) for v in d + r):
            refused.append({**base, "reason": "non-finite returns"})
            continue
        t, df, p = welch_ttest(d, r, mode)
        test = {**base, "t": t if math.isfinite(t) else None, "df": df, "p": p}
        if p < alpha:
            kept.append((recipient, donor))
            tests[recipient] = {k: v for k, v in test.items() if k not in ("recipient", "donor")}
        else:
            refused.append({**test, "reason": "not significant"})
    return kept, tests, refused


def welch_ttest(donor: Sequence[float], recipient: Sequence[float], mode: str = "max") -> tuple[float, float, float]:
    """One-sided Welch's t-test that ``donor``'s returns are better than ``recipient``'s: ``(t, df, p)``.

    ``t = (mean(donor) - mean(recipient)) / sqrt(s_d**2 / n_d + s_r**2 / n_r)`` with sample variances (ddof 1),
    negated for ``mode="min"`` (lower is better); ``df`` by Welch-Satterthwaite; ``p = P(T_df >= t)`` (scipy's
    Student t survival function). Both variances zero: ``t`` is +-inf (p 0 or 1) when the means differ, NaN
    (p 1) when they are equal, and ``df = n_d + n_r - 2``. Raises ``ValueError`` when a side has fewer than 2
    values or a value is not finite.
    """
    d = [float(v) for v in donor]
    r = [float(v) for v in recipient]
    if len(d) < 2 or len(r) < 2:
        raise ValueError(f"Welch's t-test needs at least 2 values per side, got {len(d)} and {len(r)}")
    if not all(math.isfinite(v) for v in d + r):
        raise ValueError("Welch's t-test needs finite returns")
    nd, nr = len(d), len(r)
    md, mr = sum(d) / nd, sum(r) / nr
    vd = sum((v - md) ** 2 for v in d) / (nd - 1)
    vr = sum((v - mr) ** 2 for v in r) / (nr - 1)
    diff = (md - mr) if mode == "max" else (mr - md)
    se2 = vd / nd + vr / nr
    if se2 == 0.0:
        t = math.copysign(math.inf, diff) if diff != 0 else math.nan
        return t, float(nd + nr - 2), (0.0 if t == math.inf else 1.0)
    t = diff / math.sqrt(se2)
    df = se2 ** 2 / ((vd / nd) ** 2 / (nd - 1) + (vr / nr) ** 2 / (nr - 1))
    from scipy import stats  # a core dependency, imported here so that a run without pbt.ttest never loads it

    return t, df, float(stats.t.sf(t, df))
