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
ranked by score; the bottom ``k`` are recipients, each copying a donor chosen uniformly from the top ``k``.
Since ``q <= 0.5`` the two sides never overlap. Ties are broken by a seeded shuffle: the ready indices, in
ascending order, are shuffled with the scheduler's generator and then stably sorted by score, so tied members
keep their shuffled order. Members of equal score on both sides still exploit (as in the paper and Ray Tune).

**Exploit, binary tournament** (paper section 4.1 "Binary tournament"). The ready members are shuffled and paired
off in order (a uniformly random matching, so each member's opponent is uniform among the other ready members);
in each pair, a member copies its opponent when the opponent's score is strictly better. With an odd count the
member left over compares with a uniformly chosen other ready member and copies it if strictly better, unless
that member is already a recipient in this step (a donor is never a recipient in the same step).

**Explore.** Only recipients get new hyperparameters: ``space.perturb(donor's hparams)`` (see
:mod:`rpbt.pbt.space`: each searched value is resampled with probability ``resample_probability``, else perturbed).

Scores: higher is better with ``mode="max"``, lower with ``mode="min"``. ``None`` and NaN count as worst (equal to
each other); in a :class:`Decision` they are reported as ``None`` so decisions stay JSON-able.

Determinism: the decisions depend only on the seed, the generator's history and the inputs (search dimensions are
visited in sorted name order; members in index order). :meth:`PBTScheduler.state_dict` /
:meth:`PBTScheduler.load_state_dict` carry the generator state and ``last_ready`` so a resumed run continues the
same random stream. :meth:`PBTScheduler.initial_hparams` uses its own generator derived from the seed, so calling
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

from rpbt.config import PBTConfig, SearchDim
from rpbt.pbt.space import (
    DEFAULT_PERTURB_FACTORS,
    SearchSpace,
    check_factors,
    check_probability,
)

__all__ = ["Decision", "PBTScheduler", "EXPLOIT_STRATEGIES", "MODES"]

#: The exploit strategies and score modes ``pbt.exploit`` / ``pbt.mode`` accept (read from :class:`PBTConfig`).
EXPLOIT_STRATEGIES: tuple[str, ...] = get_args(PBTConfig.model_fields["exploit"].annotation)
MODES: tuple[str, ...] = get_args(PBTConfig.model_fields["mode"].annotation)
_STATE_VERSION = 1


@dataclass
class Decision:
    """One exploit-and-explore: ``recipient`` copies ``donor``'s member state, then takes ``new_hparams``.

    ``old_hparams`` are the recipient's hyperparameters before the exploit, ``new_hparams`` the donor's after
    explore, ``resampled`` the searched names that were resampled rather than perturbed. Scores are ``None`` when
    missing or NaN.
    """

    recipient: int
    donor: int
    recipient_score: Optional[float]
    donor_score: Optional[float]
    old_hparams: dict[str, Any]
    new_hparams: dict[str, Any]
    resampled: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy (for ``events.jsonl``)."""
        return asdict(self)


def _clean_score(score: Optional[float]) -> Optional[float]:
    if score is None:
        return None
    score = float(score)
    return None if math.isnan(score) else score


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
        self._rng = random.Random(self.seed)
        self._last_ready: list[Optional[int]] = [None] * self.population_size

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

    def step(
        self,
        scores: Sequence[Optional[float]],
        hparams: Sequence[Mapping[str, Any]],
        updates: Sequence[int],
    ) -> list[Decision]:
        """Decide this round's exploits and explores; returns decisions sorted by recipient.

        ``scores[i]``, ``hparams[i]`` and ``updates[i]`` describe member ``i`` (each list has ``population_size``
        entries). Ready members (see :meth:`ready`) have their ready point recorded, then take part in the exploit
        strategy; members that are not ready are ignored (neither donor nor recipient). Fewer than two ready
        members means no decision. Raises ``ValueError`` when a list has the wrong length.
        """
        for what, seq in (("scores", scores), ("hparams", hparams), ("updates", updates)):
            if len(seq) != self.population_size:
                raise ValueError(f"{what} has {len(seq)} entries, expected population_size={self.population_size}")

        ready_members = [m for m in range(self.population_size) if self.ready(m, updates[m])]
        for m in ready_members:
            self._last_ready[m] = int(updates[m])
        if len(ready_members) < 2:
            return []

        clean = [_clean_score(s) for s in scores]
        if self.exploit == "truncation":
            pairs = self._truncation(ready_members, clean)
        else:
            pairs = self._tournament(ready_members, clean)

        decisions = []
        for recipient, donor in sorted(pairs):
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
                )
            )
        return decisions

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
        k = max(1, math.floor(self.quantile_fraction * len(order)))
        bottom, top = order[:k], order[-k:]
        pairs = [(recipient, top[self._rng.randrange(k)]) for recipient in sorted(bottom)]
        # A recipient copies only a strictly better donor: copying a tie (or an unscored member) is pure churn that
        # discards the population's diversity, e.g. once every member has reached a task's maximum score.
        return [(r, d) for r, d in pairs if self._better(scores[d], scores[r])]

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
        """JSON-able state: the decision generator's state (as lists) and ``last_ready``."""
        version, internal, gauss_next = self._rng.getstate()
        return {
            "version": _STATE_VERSION,
            "population_size": self.population_size,
            "rng_state": [version, list(internal), gauss_next],
            "last_ready": list(self._last_ready),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output, so decisions continue the same random stream.

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
