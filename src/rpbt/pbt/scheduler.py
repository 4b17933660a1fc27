"""PBT decision logic: when is a member ready, who exploits whom, which hyperparameters does it explore to.

Population-Based Training (Jaderberg et al. 2017, "Population Based Training of Neural Networks",
arXiv 1711.09846). This module is pure: no tensors, no I/O, one seeded :class:`random.Random`. The runner trains,
scores, asks :meth:`PBTScheduler.step` for :class:`Decision` s and carries them out (copies the donor's member state
into the recipient, then sets the recipient's hyperparameters to ``new_hparams``).

Rules
-----
**Ready.** Member ``m`` is ready at ``updates`` (its own count of learner updates) when::

    updates >= burn_in  and  updates - last_ready[m] >= perturbation_interval

where ``last_ready[m]`` is the update count at which ``m`` was last ready, counted as 0 before the first time
(as Ray Tune's PBT does). The first ready is therefore at the first ``updates >= max(burn_in,
perturbation_interval)``. :meth:`PBTScheduler.ready` only asks; :meth:`PBTScheduler.step` records ``last_ready``
for every ready member, whether or not it exploits.

**Exploit, truncation selection** (paper section 4.1 "Truncation selection"). Only ready members take part. With
``n`` ready members (``n >= 2``) and ``q = quantile_fraction``, ``k = max(1, floor(q * n))``. The ready members are
ranked by score; the bottom ``k`` are recipients, each copying a donor chosen uniformly from those of the top ``k``
whose score is strictly better than its own (none: it does not exploit; copying a tie is churn that discards the
population's diversity). Since ``q <= 0.5`` the two sides never overlap. Ties are broken by a seeded shuffle: the
ready indices, in ascending order, are shuffled with the scheduler's generator and then stably sorted by score, so
tied members keep their shuffled order.

**Exploit, binary tournament** (paper section 4.1 "Binary tournament"). The ready members are shuffled and paired
off in order (a uniformly random matching, so each member's opponent is uniform among the other ready members);
in each pair, a member copies its opponent when the opponent's score is strictly better. With an odd count the
member left over compares with a uniformly chosen other ready member and copies it if strictly better, unless
that member is already a recipient in this step (a donor is never a recipient in the same step).

**Significance test** (``ttest=True``; paper section 4.1 "T-test selection"). Each pair the exploit strategy
chose is kept only when the donor's last ``ttest_window`` (K) episode returns are better than the recipient's by
Welch's t-test (unequal variances), one-sided at level ``ttest_alpha``: with donor sample ``d`` and recipient
sample ``r`` (K each), ``t = (mean(d) - mean(r)) / sqrt(var(d)/K + var(r)/K)`` (sample variances, ddof 1; the sign
flipped for ``mode="min"``), Welch-Satterthwaite degrees of freedom, ``p = P(T_df >= t)``, copy when ``p <
ttest_alpha`` (:func:`welch_ttest`). A side with fewer than K returns is not tested and the pair is refused; two
samples without variance are significant exactly when their means differ the right way. Refused pairs are listed
in :attr:`PBTScheduler.last_refused`. The paper draws the opponent uniformly from the population; the binary
tournament's random matching gives each member a uniform opponent too, so ``exploit="tournament"`` with the test is
the paper's T-test selection, and ``"truncation"`` with it is truncation selection with a significance guard.

**Eligibility.** ``step(..., eligible=...)`` may exclude members (the runner does when ``pbt.score_since_exploit``
is on and a member has fewer than ``score_window`` episodes of its own since its last exploit): an ineligible
member is neither donor nor recipient, and its ready point is not recorded, so it takes part in the first step at
which it is eligible and ready.

**Explore.** Only recipients get new hyperparameters. ``explore="perturb"``: ``space.perturb(donor's hparams)``
(see :mod:`rpbt.pbt.space`: each searched value is resampled with probability ``resample_probability``, else
perturbed). ``explore="pb2"``: the numeric searched values are chosen by PB2's time-varying GP bandit over the
score change per interval, the batch of this step's recipients chosen together (:mod:`rpbt.pbt.pb2`); categorical
values are perturbed as above; while the GP has fewer than ``pb2_min_data`` observations the whole explore is
``perturb``. Every step (ready or not, exploit or not) feeds the GP one observation per scored member.

Scores: higher is better with ``mode="max"``, lower with ``mode="min"``. ``None`` and NaN count as worst (equal to
each other); in a :class:`Decision` they are reported as ``None`` so decisions stay JSON-able.

Determinism: the decisions depend only on the seed, the generator's history and the inputs (search dimensions are
visited in sorted name order; members in index order; PB2 draws one 32-bit seed from the generator per step that
places recipients by the GP, for its fit restarts and candidates). :meth:`PBTScheduler.state_dict` /
:meth:`PBTScheduler.load_state_dict` carry the generator state, ``last_ready`` and PB2's observations so a resumed
run continues the same random stream and the same model. With the defaults (``explore="perturb"``, no test, every
member eligible) the decisions are exactly those of the scheduler before these options existed.
:meth:`PBTScheduler.initial_hparams` uses its own generator derived from the seed, so calling
it (or not) never shifts the decision stream.

Errors: ``ValueError`` for invalid constructor arguments (naming the argument), for ``step`` inputs whose lengths
differ from ``population_size``, for a member index out of range, and for a state dict that does not fit this
scheduler (wrong population size or malformed).
"""

from __future__ import annotations

import math
import operator
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Union, get_args

from scipy import stats

from rpbt.config import PBTConfig, SearchDim
from rpbt.pbt.pb2 import PB2Explorer
from rpbt.pbt.space import (
    DEFAULT_PERTURB_FACTORS,
    SearchSpace,
    check_factors,
    check_probability,
)

__all__ = ["Decision", "PBTScheduler", "EXPLOIT_STRATEGIES", "EXPLORE_STRATEGIES", "MODES", "welch_ttest"]

#: The exploit / explore strategies and score modes ``pbt.exploit`` / ``pbt.explore`` / ``pbt.mode`` accept (read
#: from :class:`PBTConfig`).
EXPLOIT_STRATEGIES: tuple[str, ...] = get_args(PBTConfig.model_fields["exploit"].annotation)
EXPLORE_STRATEGIES: tuple[str, ...] = get_args(PBTConfig.model_fields["explore"].annotation)
MODES: tuple[str, ...] = get_args(PBTConfig.model_fields["mode"].annotation)
_STATE_VERSION = 1


@dataclass
class Decision:
    """One exploit-and-explore: ``recipient`` copies ``donor``'s member state, then takes ``new_hparams``.

    ``old_hparams`` are the recipient's hyperparameters before the exploit, ``new_hparams`` the donor's after
    explore, ``resampled`` the searched names that were resampled rather than perturbed. Scores are ``None`` when
    missing or NaN. ``explore``: ``"perturb"`` or ``"pb2"`` (how ``new_hparams`` were chosen); ``pb2``: the GP's
    prediction at the chosen point (see :meth:`rpbt.pbt.pb2.PB2Explorer.select`), else None; ``ttest``: the
    significance test that let the exploit through (see :func:`welch_ttest`), else None.
    """

    recipient: int
    donor: int
    recipient_score: Optional[float]
    donor_score: Optional[float]
    old_hparams: dict[str, Any]
    new_hparams: dict[str, Any]
    resampled: list[str] = field(default_factory=list)
    explore: str = "perturb"
    pb2: Optional[dict[str, Any]] = None
    ttest: Optional[dict[str, Any]] = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy (for ``events.jsonl``)."""
        return asdict(self)


def _clean_score(score: Optional[float]) -> Optional[float]:
    if score is None:
        return None
    score = float(score)
    return None if math.isnan(score) else score


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
    return t, df, float(stats.t.sf(t, df))


class PBTScheduler:
    """Population-Based Training decisions (Jaderberg et al. 2017, arXiv 1711.09846); see the module docstring.

    Args:
        space: the search space (a :class:`SearchSpace`, or a mapping accepted by its constructor).
        population_size: number of members (>= 1 here; a run's config asks for >= 2, see ``pbt.population_size``).
        perturbation_interval: updates between two ready points of a member (>= 1).
        burn_in: updates before a member can first be ready (>= 0).
        exploit: ``"truncation"`` (truncation selection) or ``"tournament"`` (binary tournament).
        quantile_fraction: ``q`` of truncation selection, in ``(0, 0.5]``.
        resample_probability: per searched hyperparameter, probability to resample instead of perturb, in [0, 1].
        perturb_factors: factors a float is multiplied by when perturbed (one chosen uniformly), positive.
        mode: ``"max"`` (higher score is better) or ``"min"``.
        seed: seed of the decision generator (and, derived, of :meth:`initial_hparams`).
        explore: ``"perturb"`` (PBT) or ``"pb2"`` (PB2's GP bandit, :mod:`rpbt.pbt.pb2`).
        pb2_max_data, pb2_min_data, pb2_candidates: PB2's observation window (>= 4), the observations it needs
            before it models (>= 2; before: perturb), random acquisition candidates (>= 1).
        ttest: keep only the pairs whose donor is significantly better (Welch's t-test; :meth:`step` then needs
            ``returns``).
        ttest_alpha: its significance level, in (0, 1).
        ttest_window: K, the last returns per side it compares (>= 2).

    Raises ``ValueError`` naming the argument when one is invalid.
    """

    def __init__(
        self,
        space: Union[SearchSpace, Mapping[str, Union[SearchDim, Mapping[str, Any]]]],
        *,
        population_size: int,
        perturbation_interval: int,
        burn_in: int,
        exploit: str = "truncation",
        quantile_fraction: float = 0.25,
        resample_probability: float = 0.25,
        perturb_factors: Sequence[float] = DEFAULT_PERTURB_FACTORS,
        mode: str = "max",
        seed: int = 0,
        explore: str = "perturb",
        pb2_max_data: int = 128,
        pb2_min_data: int = 4,
        pb2_candidates: int = 512,
        ttest: bool = False,
        ttest_alpha: float = 0.05,
        ttest_window: int = 20,
    ) -> None:
        self.space = space if isinstance(space, SearchSpace) else SearchSpace(space)
        self.population_size = _check_int("population_size", population_size, minimum=1)
        self.perturbation_interval = _check_int("perturbation_interval", perturbation_interval, minimum=1)
        self.burn_in = _check_int("burn_in", burn_in, minimum=0)
        if exploit not in EXPLOIT_STRATEGIES:
            raise ValueError(f"exploit must be one of {EXPLOIT_STRATEGIES}, got {exploit!r}")
        self.exploit = exploit
        if (
            isinstance(quantile_fraction, bool)
            or not isinstance(quantile_fraction, (int, float))
            or not (0.0 < quantile_fraction <= 0.5)
        ):
            raise ValueError(f"quantile_fraction must be in (0, 0.5], got {quantile_fraction!r}")
        self.quantile_fraction = float(quantile_fraction)
        self.resample_probability = check_probability(resample_probability, "resample_probability")
        self.perturb_factors = check_factors(perturb_factors)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.seed = _check_int("seed", seed)
        if explore not in EXPLORE_STRATEGIES:
            raise ValueError(f"explore must be one of {EXPLORE_STRATEGIES}, got {explore!r}")
        self.explore = explore
        self._pb2: Optional[PB2Explorer] = None
        if explore == "pb2":
            self._pb2 = PB2Explorer(self.space, population_size=self.population_size,
                                    perturbation_interval=self.perturbation_interval, max_data=pb2_max_data,
                                    min_data=pb2_min_data, candidates=pb2_candidates)
        if not isinstance(ttest, bool):
            raise ValueError(f"ttest must be true or false, got {ttest!r}")
        self.ttest = ttest
        if isinstance(ttest_alpha, bool) or not isinstance(ttest_alpha, (int, float)) or not 0 < ttest_alpha < 1:
            raise ValueError(f"ttest_alpha must be in (0, 1), got {ttest_alpha!r}")
        self.ttest_alpha = float(ttest_alpha)
        self.ttest_window = _check_int("ttest_window", ttest_window, minimum=2)
        self._rng = random.Random(self.seed)
        self._last_ready: list[Optional[int]] = [None] * self.population_size
        self._last_refused: list[dict[str, Any]] = []

    @classmethod
    def from_config(cls, pbt: PBTConfig, seed: int = 0) -> "PBTScheduler":
        """A scheduler from the ``pbt`` section of a run configuration (``seed`` usually ``run.seed``)."""
        return cls(
            SearchSpace(pbt.search_space),
            population_size=pbt.population_size,
            perturbation_interval=pbt.perturbation_interval,
            burn_in=pbt.burn_in,
            exploit=pbt.exploit,
            quantile_fraction=pbt.quantile_fraction,
            resample_probability=pbt.resample_probability,
            perturb_factors=pbt.perturb_factors,
            mode=pbt.mode,
            seed=seed,
            explore=pbt.explore,
            pb2_max_data=pbt.pb2.max_data,
            pb2_min_data=pbt.pb2.min_data,
            pb2_candidates=pbt.pb2.candidates,
            ttest=pbt.ttest,
            ttest_alpha=pbt.ttest_alpha,
            ttest_window=pbt.ttest_window if pbt.ttest_window is not None else max(2, pbt.score_window),
        )

    # ------------------------------------------------------------------ initial values

    def initial_hparams(self, defaults: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Each member's starting hyperparameters: ``defaults`` overlaid with one draw from the search space.

        Searched names are sampled from the prior (added even when absent from ``defaults``); others keep the
        default. Uses a generator derived from the seed only, so the result is the same on every call and the
        decision stream is untouched.
        """
        rng = random.Random(f"rpbt.initial_hparams:{self.seed}")
        return [{**dict(defaults), **self.space.sample(rng)} for _ in range(self.population_size)]

    # ------------------------------------------------------------------ ready

    @property
    def last_ready(self) -> list[Optional[int]]:
        """Per member, the update count at which it was last ready (``None``: never). A copy."""
        return list(self._last_ready)

    def ready(self, member: int, updates: int) -> bool:
        """Whether ``member`` is ready at ``updates`` (a pure query; :meth:`step` records ready points).

        Ready when ``updates >= burn_in`` and ``updates - last_ready >= perturbation_interval``, with
        ``last_ready`` counted as 0 before the first ready point. Raises ``ValueError`` for a bad member index.
        """
        self._check_member(member)
        last = self._last_ready[member]
        return updates >= self.burn_in and updates - (0 if last is None else last) >= self.perturbation_interval

    # ------------------------------------------------------------------ step

    @property
    def last_refused(self) -> list[dict[str, Any]]:
        """The pairs the significance test refused in the last :meth:`step` (a copy): ``recipient``, ``donor``,
        ``reason`` (``"not significant"``, ``"too few returns"`` or ``"non-finite returns"``) and, when tested,
        ``t``, ``df``, ``p`` (see :func:`welch_ttest`; a non-finite ``t`` is given as None)."""
        return [dict(r) for r in self._last_refused]

    @property
    def pb2(self) -> Optional[PB2Explorer]:
        """PB2's explorer (its observations), or None with ``explore="perturb"``."""
        return self._pb2

    def step(
        self,
        scores: Sequence[Optional[float]],
        hparams: Sequence[Mapping[str, Any]],
        updates: Sequence[int],
        returns: Optional[Sequence[Sequence[float]]] = None,
        eligible: Optional[Sequence[bool]] = None,
    ) -> list[Decision]:
        """Decide this round's exploits and explores; returns decisions sorted by recipient.

        ``scores[i]``, ``hparams[i]`` and ``updates[i]`` describe member ``i`` (each list has ``population_size``
        entries). ``returns[i]``: member i's recent episode returns, oldest first (needed with ``ttest``, which
        compares the last ``ttest_window`` of them; ignored otherwise). ``eligible[i]`` False excludes member i
        from this step's exploit (default: all eligible). Ready and eligible members (see :meth:`ready`) have
        their ready point recorded, then take part in the exploit strategy; the others are ignored (neither donor
        nor recipient). Fewer than two such members means no decision. With ``explore="pb2"`` every call also
        feeds PB2 the interval that just ended. Raises ``ValueError`` when a list has the wrong length, or when
        ``ttest`` is on and ``returns`` is missing.
        """
        for what, seq in (("scores", scores), ("hparams", hparams), ("updates", updates), ("returns", returns),
                          ("eligible", eligible)):
            if seq is not None and len(seq) != self.population_size:
                raise ValueError(f"{what} has {len(seq)} entries, expected population_size={self.population_size}")
        if self.ttest and returns is None:
            raise ValueError("ttest is on: step needs every member's recent episode returns (returns=...)")

        clean = [_clean_score(s) for s in scores]
        self._last_refused = []
        if self._pb2 is not None:
            self._pb2.observe(self._larger_is_better(clean), hparams, updates)
        decisions = self._decide(clean, hparams, updates, returns, eligible)
        if self._pb2 is not None:
            after_scores, after_hparams = list(clean), list(hparams)
            for d in decisions:
                after_scores[d.recipient], after_hparams[d.recipient] = clean[d.donor], d.new_hparams
            self._pb2.remember(self._larger_is_better(after_scores), after_hparams, updates)
        return decisions

    def _decide(self, clean: list[Optional[float]], hparams: Sequence[Mapping[str, Any]], updates: Sequence[int],
                returns: Optional[Sequence[Sequence[float]]], eligible: Optional[Sequence[bool]]) -> list[Decision]:
        ready_members = [m for m in range(self.population_size)
                         if (eligible is None or eligible[m]) and self.ready(m, updates[m])]
        for m in ready_members:
            self._last_ready[m] = int(updates[m])
        if len(ready_members) < 2:
            return []

        if self.exploit == "truncation":
            pairs = self._truncation(ready_members, clean)
        else:
            pairs = self._tournament(ready_members, clean)
        tests: dict[int, dict[str, Any]] = {}
        if self.ttest:
            assert returns is not None
            pairs, tests = self._significant(pairs, returns)
        pairs = sorted(pairs)

        chosen: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        if self._pb2 is not None and pairs and self._pb2.ready_to_model():
            seed = self._rng.getrandbits(32)
            chosen = self._pb2.select(pairs, self._larger_is_better(clean), hparams, updates, seed)
        categorical = [n for n in self.space.names if n not in self.space.numeric_names]

        decisions = []
        for recipient, donor in pairs:
            info = None
            if recipient in chosen:
                new_hparams, info = chosen[recipient]
                resampled: list[str] = []
                if categorical:
                    new_hparams, resampled = self.space.perturb(new_hparams, self._rng, self.perturb_factors,
                                                                self.resample_probability, names=categorical)
            else:
                new_hparams, resampled = self.space.perturb(
                    hparams[donor], self._rng, self.perturb_factors, self.resample_probability
                )
            decisions.append(
                Decision(
                    recipient=recipient,
                    donor=donor,
                    recipient_score=clean[recipient],
                    donor_score=clean[donor],
                    old_hparams=dict(hparams[recipient]),
                    new_hparams=new_hparams,
                    resampled=resampled,
                    explore="pb2" if info is not None else "perturb",
                    pb2=info,
                    ttest=tests.get(recipient),
                )
            )
        return decisions

    def _larger_is_better(self, scores: Sequence[Optional[float]]) -> list[Optional[float]]:
        return [None if s is None else (s if self.mode == "max" else -s) for s in scores]

    def _significant(self, pairs: list[tuple[int, int]], returns: Sequence[Sequence[float]]
                     ) -> tuple[list[tuple[int, int]], dict[int, dict[str, Any]]]:
        """The pairs whose donor is significantly better (see the module docstring); records the refused ones."""
        k = self.ttest_window
        kept: list[tuple[int, int]] = []
        tests: dict[int, dict[str, Any]] = {}
        for recipient, donor in pairs:
            d, r = list(returns[donor])[-k:], list(returns[recipient])[-k:]
            base = {"recipient": recipient, "donor": donor, "n_donor": len(d), "n_recipient": len(r),
                    "window": k, "alpha": self.ttest_alpha}
            if len(d) < k or len(r) < k:
                self._last_refused.append({**base, "reason": "too few returns"})
                continue
            if not all(math.isfinite(float(v)) for v in d + r):
                self._last_refused.append({**base, "reason": "non-finite returns"})
                continue
            t, df, p = welch_ttest(d, r, self.mode)
            test = {**base, "t": t if math.isfinite(t) else None, "df": df, "p": p}
            if p < self.ttest_alpha:
                kept.append((recipient, donor))
                tests[recipient] = {k_: v for k_, v in test.items() if k_ not in ("recipient", "donor")}
            else:
                self._last_refused.append({**test, "reason": "not significant"})
        return kept, tests

    def _rank_key(self, score: Optional[float]) -> tuple[int, float]:
        """Sort key, larger is better: missing/NaN scores rank below every real score (including -inf)."""
        if score is None:
            return (0, 0.0)
        return (1, score if self.mode == "max" else -score)

    def _better(self, a: Optional[float], b: Optional[float]) -> bool:
        """Whether score ``a`` is strictly better than score ``b``."""
        return self._rank_key(a) > self._rank_key(b)

    def _truncation(self, ready_members: list[int], scores: list[Optional[float]]) -> list[tuple[int, int]]:
        order = list(ready_members)  # ascending member index
        self._rng.shuffle(order)  # seeded tie-break
        order.sort(key=lambda m: self._rank_key(scores[m]))  # stable: worst first, ties in shuffled order
        k = truncation_group_size(self.quantile_fraction, len(order))
        bottom, top = order[:k], order[-k:]
        # A recipient copies only a strictly better donor: copying a tie (or an unscored member) is pure churn that
        # discards the population's diversity, e.g. once every member has reached a task's maximum score. The donor
        # is uniform among the top members strictly better than the recipient: a first draw from the whole top, and
        # a second among the better ones only when the first drew a tie (uniform overall: 1/k + (k - b)/k * 1/b).
        pairs = []
        for recipient in sorted(bottom):
            donor = top[self._rng.randrange(k)]
            if not self._better(scores[donor], scores[recipient]):
                better = [d for d in top if self._better(scores[d], scores[recipient])]
                if not better:
                    continue
                donor = better[self._rng.randrange(len(better))]
            pairs.append((recipient, donor))
        return pairs

    def _tournament(self, ready_members: list[int], scores: list[Optional[float]]) -> list[tuple[int, int]]:
        order = list(ready_members)
        self._rng.shuffle(order)
        pairs: list[tuple[int, int]] = []
        recipients: set[int] = set()
        for a, b in zip(order[0::2], order[1::2]):
            if self._better(scores[b], scores[a]):
                pairs.append((a, b))
                recipients.add(a)
            elif self._better(scores[a], scores[b]):
                pairs.append((b, a))
                recipients.add(b)
        if len(order) % 2 == 1:
            leftover = order[-1]
            others = sorted(m for m in ready_members if m != leftover)
            opponent = others[self._rng.randrange(len(others))]
            if opponent not in recipients and self._better(scores[opponent], scores[leftover]):
                pairs.append((leftover, opponent))
        return pairs

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: the decision generator's state (as lists), ``last_ready`` and, with ``explore="pb2"``,
        PB2's observations (``"pb2"``)."""
        version, internal, gauss_next = self._rng.getstate()
        state = {
            "version": _STATE_VERSION,
            "population_size": self.population_size,
            "rng_state": [version, list(internal), gauss_next],
            "last_ready": list(self._last_ready),
        }
        if self._pb2 is not None:
            state["pb2"] = self._pb2.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output, so decisions continue the same random stream.

        A state without ``"pb2"`` (saved by a perturb scheduler) leaves a PB2 scheduler's observations empty.
        Raises ``ValueError`` when the state is malformed or was saved for another population size.
        """
        try:
            population_size = int(state["population_size"])
            version, internal, gauss_next = state["rng_state"]
            last_ready = [None if v is None else int(v) for v in state["last_ready"]]
            rng_state = (int(version), tuple(int(x) for x in internal), gauss_next)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed PBT scheduler state: {err!r}") from None
        if population_size != self.population_size or len(last_ready) != self.population_size:
            raise ValueError(
                f"scheduler state is for a population of {population_size}, this scheduler has {self.population_size}"
            )
        rng = random.Random()
        try:
            rng.setstate(rng_state)
        except (TypeError, ValueError) as err:
            raise ValueError(f"malformed PBT scheduler rng state: {err}") from None
        if self._pb2 is not None and state.get("pb2") is not None:
            self._pb2.load_state_dict(state["pb2"])
        self._rng = rng
        self._last_ready = last_ready

    # ------------------------------------------------------------------ helpers

    def _check_member(self, member: int) -> None:
        try:
            index = operator.index(member)
        except TypeError:
            index = None
        if isinstance(member, bool) or index is None or not (0 <= index < self.population_size):
            raise ValueError(f"member must be an index in [0, {self.population_size}), got {member!r}")


def truncation_group_size(quantile_fraction: float, n: int) -> int:
    """``k``, the size of truncation selection's top and bottom groups among ``n`` ready members:
    ``max(1, floor(quantile_fraction * n))``."""
    return max(1, math.floor(quantile_fraction * n))


def _check_int(what: str, value: Any, minimum: Optional[int] = None) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    return value
