"""What the round loop keeps about each member between rounds: one :class:`MemberRecord` per member.

A record holds the member's lineage (the chain of exploits its weights came through, oldest first, each
``{"round", "member"}``: the round and the donor), how often it exploited, its last score, its fault and
observation-outlier counts, and its episode mark (its episode count right after its last exploit: what it
inherited, 0 before any). The records are saved in ``checkpoints/runner.json`` as one list per field
(:func:`records_to_state`, the keys of ``RUNDIR_FORMAT.md``) and read back by :func:`records_from_state`.
Everything the learner holds (weights, hyperparameters, env steps, returns) is asked of the backend instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from rpbt.run.rundir import clean_float

__all__ = ["MemberRecord", "records_to_state", "records_from_state"]


@dataclass
class MemberRecord:
    """One member's bookkeeping (see the module docstring)."""

    lineage: list[dict[str, int]] = field(default_factory=list)
    exploitation_count: int = 0
    score: Optional[float] = None  # the last round's
    faults: int = 0  # non-finite trainings so far (run.on_member_fault)
    obs_outliers: int = 0  # outlying raw observation values so far (warned at the first)
    episode_mark: int = 0

    def copied_from(self, donor: "MemberRecord", donor_index: int, round_: int) -> None:
        """This member's weights are now ``donor``'s (an exploit, or a fault's copy): it takes the donor's lineage,
        extended by ``{"round": round_, "member": donor_index}``."""
        self.lineage = donor.lineage + [{"round": round_, "member": donor_index}]


def records_to_state(records: list[MemberRecord]) -> dict[str, list[Any]]:
    """The records as ``runner.json``'s per-member lists: ``lineage``, ``exploitation_count``, ``member_faults``,
    ``obs_outliers``, ``scores`` (non-finite as None) and ``episode_marks``."""
    return {
        "lineage": [r.lineage for r in records],
        "exploitation_count": [r.exploitation_count for r in records],
        "member_faults": [r.faults for r in records],
        "obs_outliers": [r.obs_outliers for r in records],
        "scores": [clean_float(r.score) for r in records],
        "episode_marks": [r.episode_mark for r in records],
    }


def records_from_state(state: dict[str, Any], population_size: int) -> list[MemberRecord]:
    """The records of a ``runner.json`` state (:func:`records_to_state`); the lists a state may lack (written
    before they existed, or empty) count as zeros / no scores."""
    P = population_size
    faults = state.get("member_faults") or [0] * P
    outliers = state.get("obs_outliers") or [0] * P
    scores = state.get("scores") or [None] * P
    marks = state.get("episode_marks", [0] * P)
    return [MemberRecord(lineage=state["lineage"][m], exploitation_count=state["exploitation_count"][m],
                         score=scores[m], faults=faults[m], obs_outliers=int(outliers[m]), episode_mark=int(marks[m]))
            for m in range(P)]
