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
ttest_alpha`` (:func:`rpbt.pbt.selection.welch_ttest`). A side with fewer than K returns is not tested and the pair
is refused; two samples without variance are significant exactly when their means differ the right way. Refused
pairs are returned with the exploits (:attr:`RoundDecision.refused`). The paper draws the opponent uniformly from the
population; the binary tournament's random matching gives each member a uniform opponent too, so
``exploit="tournament"`` with the test is the paper's T-test selection, and ``"truncation"`` with it is truncation
selection with a significance guard. The strategies themselves are in :mod:`rpbt.pbt.selection`.

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
run continues the same random stream and the same model. :meth:`PBTScheduler.initial_hparams` uses its own
generator derived from the seed, so calling it (or not) never shifts the decision stream.

Settings: :meth:`PBTScheduler.from_config` takes them from the ``pbt`` section; the constructor's defaults and
range checks are the config's own (:class:`rpbt.config.PBTConfig`), so they are written in one place.

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
from typing import TYPE_CHECKING, Any, Optional, Union

from pydantic import BaseModel, ValidationError

from rpbt.config import PB2Config, PBTConfig, RunConfig, SearchDim
from rpbt.pbt import selection
from rpbt.pbt.space import SearchSpace

if TYPE_CHECKING:  # imported when explore="pb2": PB2 needs scikit-learn, the rpbt[pb2] extra
    from rpbt.pbt.pb2 import PB2Explorer

__all__ = ["Decision", "RoundDecision", "PBTScheduler", "explore", "ttest_window"]

_STATE_VERSION = 1
# The defaults of every setting, as the config declares them (constructed without validation: nothing is checked).
_PBT = PBTConfig.model_construct()
_PB2 = PB2Config.model_construct()


def _pb2_explorer() -> type[PB2Explorer]:
    """:class:`rpbt.pbt.pb2.PB2Explorer`; raises :class:`rpbt.extras.MissingExtraError` naming ``rpbt[pb2]`` when
    scikit-learn (PB2's Gaussian process) is not installed."""
    from rpbt.extras import require

    for module in ("sklearn", "threadpoolctl"):
        require(module, "pb2", "PB2 (pbt.explore: pb2)")
    from rpbt.pbt.pb2 import PB2Explorer

    return PB2Explorer


def ttest_window(pbt: PBTConfig) -> int:
    """K, the returns per side the t-test compares: ``pbt.ttest_window``, or ``max(2, pbt.score_window)`` when null."""
    return pbt.ttest_window if pbt.ttest_window is not None else max(2, pbt.score_window)


def _setting(section: type[BaseModel], name: str, value: Any) -> Any:
    """``value`` as the config's field ``name`` of ``section`` reads it, checked by the config's own rules; a
    ``ValueError`` naming the argument otherwise."""
    probe = section.model_construct()
    try:
        setattr(probe, name, value)  # the config models validate assignments
    except ValidationError as err:
        why = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                        for e in err.errors())
        raise ValueError(f"{why}, got {value!r}") from None
    return getattr(probe, name)


@dataclass
class Decision:
    """One exploit-and-explore: ``recipient`` copies ``donor``'s member state, then takes ``new_hparams``.

    ``old_hparams`` are the recipient's hyperparameters before the exploit, ``new_hparams`` the donor's after
    explore, ``resampled`` the searched names that were resampled rather than perturbed. Scores are ``None`` when
    missing or NaN. ``explore``: ``"perturb"`` or ``"pb2"`` (how ``new_hparams`` were chosen); ``pb2``: the GP's
    prediction at the chosen point (see :meth:`rpbt.pbt.pb2.PB2Explorer.select`), else None; ``ttest``: the
    significance test that let the exploit through (see :func:`~rpbt.pbt.selection.welch_ttest`), else None.
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


@dataclass
class RoundDecision:
    """Everything one :meth:`PBTScheduler.step` decided: the ``exploits`` (sorted by recipient) and the pairs the
    significance test ``refused`` (JSON-able dicts, see :func:`rpbt.pbt.selection.significant`; empty without
    ``ttest``)."""

    exploits: list[Decision] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)


def explore(space: SearchSpace, rng: random.Random, donor_hparams: Mapping[str, Any],
            pb2_choice: Optional[tuple[dict[str, Any], dict[str, Any]]], factors: Sequence[float],
            resample_probability: float) -> tuple[dict[str, Any], list[str], Optional[dict[str, Any]]]:
    """One recipient's explore: ``(new_hparams, resampled names, PB2's prediction or None)``.

    Without ``pb2_choice`` the donor's hyperparameters perturbed (:meth:`SearchSpace.perturb`); with PB2's
    ``(hparams, prediction)`` for this recipient, those hyperparameters with the categorical names perturbed. Draws
    only from ``rng``.
    """
    if pb2_choice is None:
        new_hparams, resampled = space.perturb(donor_hparams, rng, factors, resample_probability)
        return new_hparams, resampled, None
    new_hparams, info = pb2_choice
    categorical = [n for n in space.names if n not in space.numeric_names]
    if not categorical:
        return new_hparams, [], info
    new_hparams, resampled = space.perturb(new_hparams, rng, factors, resample_probability, names=categorical)
    return new_hparams, resampled, info


def _clean_score(score: Optional[float]) -> Optional[float]:
    if score is None:
        return None
    score = float(score)
    return None if math.isnan(score) else score


class PBTScheduler:
    """Population-Based Training decisions (Jaderberg et al. 2017, arXiv 1711.09846); see the module docstring.

    Every setting but ``space`` and ``population_size`` is the ``pbt`` setting of the same name
    (:class:`rpbt.config.PBTConfig`, which gives its default and its valid range; ``pb2_*``: ``pbt.pb2.*``;
    ``seed``: ``run.seed``); :meth:`from_config` passes them all.

    Args:
        space: the search space (a :class:`SearchSpace`, or a mapping accepted by its constructor).
        population_size: number of members (>= 1 here; a run's config asks for >= 2, see ``pbt.population_size``).
        perturbation_interval: updates between two ready points of a member.
        burn_in: updates before a member can first be ready.
        exploit: ``"truncation"`` (truncation selection) or ``"tournament"`` (binary tournament).
        quantile_fraction: ``q`` of truncation selection.
        resample_probability: per searched hyperparameter, probability to resample instead of perturb.
        perturb_factors: factors a float is multiplied by when perturbed (one chosen uniformly).
        mode: ``"max"`` (higher score is better) or ``"min"``.
        seed: seed of the decision generator (and, derived, of :meth:`initial_hparams`).
        explore: ``"perturb"`` (PBT) or ``"pb2"`` (PB2's GP bandit, :mod:`rpbt.pbt.pb2`).
        pb2_max_data, pb2_min_data, pb2_candidates: PB2's observation window, the observations it needs before it
            models (before: perturb), random acquisition candidates.
        ttest: keep only the pairs whose donor is significantly better (Welch's t-test; :meth:`step` then needs
            ``returns``).
        ttest_alpha: its significance level.
        ttest_window: K, the last returns per side it compares (default: :func:`ttest_window` of the defaults).

    Raises ``ValueError`` naming the argument when one is invalid.
    """

    def __init__(
        self,
        space: Union[SearchSpace, Mapping[str, Union[SearchDim, Mapping[str, Any]]]],
        *,
        population_size: int,
        perturbation_interval: int,
        burn_in: int,
        exploit: str = _PBT.exploit,
        quantile_fraction: float = _PBT.quantile_fraction,
        resample_probability: float = _PBT.resample_probability,
        perturb_factors: Sequence[float] = _PBT.perturb_factors,
        mode: str = _PBT.mode,
        seed: int = RunConfig.model_construct().seed,
        explore: str = _PBT.explore,
        pb2_max_data: int = _PB2.max_data,
        pb2_min_data: int = _PB2.min_data,
        pb2_candidates: int = _PB2.candidates,
        ttest: bool = _PBT.ttest,
        ttest_alpha: float = _PBT.ttest_alpha,
        ttest_window: int = ttest_window(_PBT),
    ) -> None:
        self.space = space if isinstance(space, SearchSpace) else SearchSpace(space)
        self.population_size = _check_int("population_size", population_size, minimum=1)
        self.perturbation_interval = _setting(PBTConfig, "perturbation_interval", perturbation_interval)
        self.burn_in = _setting(PBTConfig, "burn_in", burn_in)
        self.exploit = _setting(PBTConfig, "exploit", exploit)
        self.quantile_fraction = _setting(PBTConfig, "quantile_fraction", quantile_fraction)
        self.resample_probability = _setting(PBTConfig, "resample_probability", resample_probability)
        self.perturb_factors = _setting(PBTConfig, "perturb_factors", perturb_factors)
        self.mode = _setting(PBTConfig, "mode", mode)
        self.seed = _setting(RunConfig, "seed", seed)
        self.explore = _setting(PBTConfig, "explore", explore)
        self._pb2: Optional[PB2Explorer] = None
        if self.explore == "pb2":
            explorer = _pb2_explorer()
            self._pb2 = explorer(self.space, population_size=self.population_size,
                                 perturbation_interval=self.perturbation_interval,
                                 max_data=_setting(PB2Config, "max_data", pb2_max_data),
                                 min_data=_setting(PB2Config, "min_data", pb2_min_data),
                                 candidates=_setting(PB2Config, "candidates", pb2_candidates))
        self.ttest = _setting(PBTConfig, "ttest", ttest)
        self.ttest_alpha = _setting(PBTConfig, "ttest_alpha", ttest_alpha)
        self.ttest_window = _setting(PBTConfig, "ttest_window", ttest_window)
        self._rng = random.Random(self.seed)
        self._last_ready: list[Optional[int]] = [None] * self.population_size

    @classmethod
    def from_config(cls, pbt: PBTConfig, seed: int) -> "PBTScheduler":
        """A scheduler from the ``pbt`` section of a run configuration and ``run.seed``."""
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
            ttest_window=ttest_window(pbt),
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
        _check_member(member, self.population_size)
        last = self._last_ready[member]
        return updates >= self.burn_in and updates - (0 if last is None else last) >= self.perturbation_interval

    # ------------------------------------------------------------------ step

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
    ) -> RoundDecision:
        """Decide this round's exploits and explores; returns them (sorted by recipient) with the refused pairs.

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
        if self._pb2 is not None:
            self._pb2.observe(self._larger_is_better(clean), hparams, updates)
        decision = self._decide(clean, hparams, updates, returns, eligible)
        if self._pb2 is not None:
            after_scores, after_hparams = list(clean), list(hparams)
            for d in decision.exploits:
                after_scores[d.recipient], after_hparams[d.recipient] = clean[d.donor], d.new_hparams
            self._pb2.remember(self._larger_is_better(after_scores), after_hparams, updates)
        return decision

    def _decide(self, clean: list[Optional[float]], hparams: Sequence[Mapping[str, Any]], updates: Sequence[int],
                returns: Optional[Sequence[Sequence[float]]], eligible: Optional[Sequence[bool]]) -> RoundDecision:
        ready_members = [m for m in range(self.population_size)
                         if (eligible is None or eligible[m]) and self.ready(m, updates[m])]
        for m in ready_members:
            self._last_ready[m] = int(updates[m])
        if len(ready_members) < 2:
            return RoundDecision()

        if self.exploit == "truncation":
            pairs = selection.truncation(self._rng, ready_members, clean, self.mode, self.quantile_fraction)
        else:
            pairs = selection.tournament(self._rng, ready_members, clean, self.mode)
        tests: dict[int, dict[str, Any]] = {}
        refused: list[dict[str, Any]] = []
        if self.ttest:
            assert returns is not None
            pairs, tests, refused = selection.significant(pairs, returns, self.mode, self.ttest_window,
                                                          self.ttest_alpha)
        return RoundDecision(self._explore(sorted(pairs), clean, hparams, updates, tests), refused)

    def _explore(self, pairs: list[tuple[int, int]], clean: list[Optional[float]],
                 hparams: Sequence[Mapping[str, Any]], updates: Sequence[int], tests: dict[int, dict[str, Any]]
                 ) -> list[Decision]:
        """A :class:`Decision` per pair: PB2 places the recipients it can model together, then each is explored."""
        chosen: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        if self._pb2 is not None and pairs and self._pb2.ready_to_model():
            seed = self._rng.getrandbits(32)
            chosen = self._pb2.select(pairs, self._larger_is_better(clean), hparams, updates, seed)
        decisions = []
        for recipient, donor in pairs:
            new_hparams, resampled, info = explore(self.space, self._rng, hparams[donor], chosen.get(recipient),
                                                   self.perturb_factors, self.resample_probability)
            decisions.append(Decision(
                recipient=recipient, donor=donor, recipient_score=clean[recipient], donor_score=clean[donor],
                old_hparams=dict(hparams[recipient]), new_hparams=new_hparams, resampled=resampled,
                explore="pb2" if info is not None else "perturb", pb2=info, ttest=tests.get(recipient),
            ))
        return decisions

    def _larger_is_better(self, scores: Sequence[Optional[float]]) -> list[Optional[float]]:
        return [None if s is None else (s if self.mode == "max" else -s) for s in scores]

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: the decision generator's state (as lists), ``last_ready`` and, with ``explore="pb2"``,
        PB2's observations (``"pb2"``)."""
        state = {"version": _STATE_VERSION, "population_size": self.population_size,
                 "rng_state": _rng_to_json(self._rng), "last_ready": list(self._last_ready)}
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
            last_ready = [None if v is None else int(v) for v in state["last_ready"]]
            rng = _rng_from_json(state["rng_state"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed PBT scheduler state: {err!r}") from None
        if population_size != self.population_size or len(last_ready) != self.population_size:
            raise ValueError(
                f"scheduler state is for a population of {population_size}, this scheduler has {self.population_size}"
            )
        if self._pb2 is not None and state.get("pb2") is not None:
            self._pb2.load_state_dict(state["pb2"])
        self._rng = rng
        self._last_ready = last_ready


def _rng_to_json(rng: random.Random) -> list[Any]:
    version, internal, gauss_next = rng.getstate()
    return [version, list(internal), gauss_next]


def _rng_from_json(value: Any) -> random.Random:
    """The generator :func:`_rng_to_json` described; ``ValueError`` / ``TypeError`` when ``value`` is malformed."""
    version, internal, gauss_next = value
    rng = random.Random()
    try:
        rng.setstate((int(version), tuple(int(x) for x in internal), gauss_next))
    except (TypeError, ValueError) as err:
        raise ValueError(f"bad generator state: {err}") from None
    return rng


def _check_member(member: Any, population_size: int) -> None:
    try:
        index = operator.index(member)
    except TypeError:
        index = None
    if isinstance(member, bool) or index is None or not (0 <= index < population_size):
        raise ValueError(f"member must be an index in [0, {population_size}), got {member!r}")


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
