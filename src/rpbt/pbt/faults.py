"""Member faults and observation outliers: what the round loop does when one member's training goes wrong.

Member faults: after training, a member whose observations, rewards, loss, gradients or weights turned non-finite
(the learner's ``health/nonfinite`` flag) is handled by ``run.on_member_fault``. ``restore`` puts it back to its
last committed checkpoint (before the first commit: a copy of a healthy member's state, without explore, recorded in
its lineage), on fresh episodes (its carried state came from non-finite data) that differ from the failed attempt's,
with a forked generator (:func:`rpbt.seeding.fault_retry_seed`), so that a retry does not replay the fault; it
records a ``member_fault`` event naming the member, the update and the first non-finite quantity, warns, and goes
on; the faulty member neither scores nor donates in that round, and keeps the env-step count it was restored with
(round events and the summary give each member's own count as ``member_env_steps``). At ``run.max_member_faults``
faults of one member, or at the first fault under ``error``, the run stops with a :class:`MemberFaultError`
naming the environment and every faulty member of the round with its update and quantity (all of them when all
fault at once), before anything of the faulty round is committed.

Observation outliers: a member whose environment emitted finite but absurd raw observations (the learner's
``health/obs_outliers`` count, :func:`rpbt.agent.normalizer.find_obs_outliers`) is warned about once
(:class:`ObsOutlierWarning`, naming the environment, the member, the update and the observation index) with an
``obs_outlier`` event; every round event counts each member's outliers of the round. Training is not changed.

Both read and strip their keys from the round's metric rows (``{member: [row per update]}``) and count into the
members' :class:`~rpbt.pbt.records.MemberRecord`.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any, Optional

from rpbt.agent.ppo import first_nonfinite
from rpbt.config import Config
from rpbt.pbt.records import MemberRecord

if TYPE_CHECKING:
    from rpbt.pbt.backends.base import Backend
    from rpbt.run.rundir import RunDirectory

__all__ = ["MemberFaultError", "ObsOutlierWarning", "OBS_OUTLIER_KEYS", "pop_obs_outliers", "obs_outlier_message",
           "MemberFaults"]

log = logging.getLogger(__name__)

Rows = dict[int, list[dict[str, Any]]]


class MemberFaultError(RuntimeError):
    """A member's training went non-finite too often (or once, under ``run.on_member_fault: error``, or every
    member at once before the first commit); the message names the environment and every faulty member of the round
    with its update and first non-finite quantity."""


class ObsOutlierWarning(UserWarning):
    """A member's environment emitted a finite raw observation component more than ``agent.obs_outlier_factor``
    times beyond its typical magnitude (:func:`rpbt.agent.normalizer.find_obs_outliers`); the message names the
    environment, the member, the update and the observation index. Given once per member and run."""


OBS_OUTLIER_KEYS = ("health/obs_outliers", "health/obs_outlier_index", "health/obs_outlier_value",
                    "health/obs_outlier_scale")


def pop_obs_outliers(rows: list[dict[str, Any]]) -> tuple[int, Optional[dict[str, Any]]]:
    """Remove the observation-outlier metrics (:data:`OBS_OUTLIER_KEYS`) from one member's per-update rows.
    Returns the number of outlying values and the worst outlier of the first update that had any, as
    ``{"update", "index", "value", "scale"}`` (None when there was none)."""
    total, first = 0, None
    for row in rows:
        count, index, value, scale = (row.pop(k, 0.0) or 0.0 for k in OBS_OUTLIER_KEYS)
        if count > 0:
            total += int(count)
            if first is None:
                first = {"update": int(row.get("update", 0)), "index": int(index), "value": float(value),
                         "scale": float(scale)}
    return total, first


def obs_outlier_message(cfg: Config, member: int, first: dict[str, Any]) -> str:
    """The one-line warning for a member's first observation outlier (see :class:`ObsOutlierWarning`)."""
    a = cfg.agent
    if not a.normalize_observations:
        effect = "the network sees it unnormalized"
    elif a.raw_obs_clip is not None:
        effect = f"agent.raw_obs_clip ({a.raw_obs_clip:g}) clips it before normalization"
    else:
        effect = ("it ruins the observation normalizer's statistics of that index; fix the environment or set "
                  "agent.raw_obs_clip")
    return (f"env {cfg.env.id!r}: member {member} saw observation index {first['index']} at {first['value']:.3g} "
            f"(update {first['update']}), over agent.obs_outlier_factor ({a.obs_outlier_factor:g}) x its typical "
            f"magnitude {first['scale']:.3g}; {effect} (warned once per member; counted in events.jsonl)")


def find_faults(per_member: Rows) -> dict[int, tuple[int, str]]:
    """``{member: (update, quantity)}`` of the first non-finite quantity of each faulty member; removes the
    ``health/nonfinite`` flag from every row."""
    faults: dict[int, tuple[int, str]] = {}
    for m, rows in per_member.items():
        for row in rows:
            quantity = first_nonfinite(row.pop("health/nonfinite", 0) or 0)
            if quantity is not None and m not in faults:
                faults[m] = (int(row.get("update", 0)), quantity)
    return faults


class MemberFaults:
    """Applies ``run.on_member_fault`` and the outlier warning for one run directory (see the module docstring).

    Args:
        cfg: the run config (``run.on_member_fault``, ``run.max_member_faults``, ``env.id``, ``agent``'s outlier
            settings for the message).
        rundir: where the ``member_fault`` / ``obs_outlier`` events go and the committed checkpoints are read.
    """

    def __init__(self, cfg: Config, rundir: "RunDirectory"):
        self.cfg = cfg
        self.rundir = rundir

    def count_obs_outliers(self, r: int, per_member: Rows, members: list[MemberRecord]) -> list[int]:
        """Count each member's raw observation outliers of round ``r`` (removed from the metric rows with the rest of
        :data:`OBS_OUTLIER_KEYS`). At a member's first, warns (:class:`ObsOutlierWarning`) and records an
        ``obs_outlier`` event. Returns the count per member this round."""
        counts = [0] * len(members)
        for m, record in enumerate(members):
            count, first = pop_obs_outliers(per_member.get(m, []))
            counts[m] = count
            if first is None:
                continue
            if record.obs_outliers == 0:
                self.rundir.write_event({"type": "obs_outlier", "round": r, "member": m, "env": self.cfg.env.id,
                                         **first, "count": count, "factor": self.cfg.agent.obs_outlier_factor})
                warnings.warn(ObsOutlierWarning(obs_outlier_message(self.cfg, m, first)), stacklevel=2)
            record.obs_outliers += count
        return counts

    def handle(self, r: int, per_member: Rows, members: list[MemberRecord], backend: "Backend") -> set[int]:
        """Find the members whose training went non-finite in round ``r`` (the round after the committed round
        ``r - 1``) and apply ``run.on_member_fault`` to them; returns them (restored by now).

        Raises :class:`MemberFaultError` when the policy is ``error``, when a member reaches
        ``run.max_member_faults`` faults, or when no healthy member is left to copy before the first commit; then no
        member is restored, every faulty member of the round gets a ``member_fault`` event with action ``stop`` (and
        a ``reason`` where its own fault stops the run).
        """
        faults = find_faults(per_member)
        run = self.cfg.run
        healthy = [d for d in range(len(members)) if d not in faults]
        stops: dict[int, str] = {}  # member -> why its fault stops the run
        for m in sorted(faults):
            members[m].faults += 1
            if run.on_member_fault == "error":
                stops[m] = "run.on_member_fault is 'error'"
            elif members[m].faults >= run.max_member_faults:
                stops[m] = f"run.max_member_faults ({run.max_member_faults}) reached"
            elif r == 1 and not healthy:
                stops[m] = "no healthy member to copy before the first commit"
        if stops:
            self._stop(r, faults, stops, members)
        for m in sorted(faults):
            action = self._restore(r, m, healthy, members, backend)
            self.rundir.write_event({**self._event(r, m, faults[m], members), "action": action})
            log.warning("env %r: %s; %s", self.cfg.env.id, self._what(m, faults[m], members), action)
        return set(faults)

    def _restore(self, r: int, m: int, healthy: list[int], members: list[MemberRecord], backend: "Backend") -> str:
        """Put faulty member ``m`` back: its last committed checkpoint, or before the first commit a healthy
        member's state. The retry runs on other episodes with a forked generator (retry = the fault count):
        restoring the same state onto the same episodes would replay the failed attempt step for step."""
        retry = members[m].faults
        if r > 1:
            state = self.rundir.read_runner_state()
            backend.restore(m, self.rundir.store(state).folder(state["checkpoint_dir"]).load_member(m), retry=retry)
            return f"restored from round {r - 1}"
        donor = min(healthy)  # its member state, on fresh episodes: the faulty carried state is dropped
        donor_state = backend.snapshot(donor)
        backend.restore(m, donor_state, retry=retry)
        if "episodes" in donor_state.tensors:  # its returns are the donor's from now on
            members[m].episode_mark = int(donor_state.tensors["episodes"])
        members[m].copied_from(members[donor], donor, r)  # its weights are the donor's
        return f"copied member {donor}"

    def _stop(self, r: int, faults: dict[int, tuple[int, str]], stops: dict[int, str],
              members: list[MemberRecord]) -> None:
        """Record every faulty member of the round with action ``stop`` and raise :class:`MemberFaultError`."""
        for m in sorted(faults):
            self.rundir.write_event({**self._event(r, m, faults[m], members), "action": "stop",
                                     **({"reason": stops[m]} if m in stops else {})})
        reasons: dict[str, list[int]] = {}
        for m, why in stops.items():
            reasons.setdefault(why, []).append(m)
        if len(faults) == 1:
            why = next(iter(reasons))
        else:
            why = "; ".join(f"{reason} (member{'s' if len(ms) > 1 else ''} {', '.join(map(str, ms))})"
                            for reason, ms in reasons.items())
        kept = (f"its last committed round ({r - 1}) is intact (rpbt resume continues from it)"
                if r > 1 else "nothing had been committed yet")
        what = "; ".join(self._what(m, faults[m], members) for m in sorted(faults))
        raise MemberFaultError(f"env {self.cfg.env.id!r}: {what}; {why}. The run stops; {kept}.")

    @staticmethod
    def _what(m: int, fault: tuple[int, str], members: list[MemberRecord]) -> str:
        update, quantity = fault
        return (f"member {m} produced a non-finite {quantity} at update {update} "
                f"(fault {members[m].faults} of this member)")

    @staticmethod
    def _event(r: int, m: int, fault: tuple[int, str], members: list[MemberRecord]) -> dict[str, Any]:
        update, quantity = fault
        return {"type": "member_fault", "round": r, "member": m, "update": update, "quantity": quantity,
                "faults": members[m].faults}
