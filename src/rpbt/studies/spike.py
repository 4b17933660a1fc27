"""``rpbt spike-study``: what each hidden-state strategy does to the value loss right after an exploit.

A widely circulated design note claims that reusing the recipient's stale LSTM states after an exploit ("keep")
makes the value loss spike 5-15% for one or two episodes and that zeroing them keeps the spike under 5%. This
module measures it with a controlled experiment:

1. Train a population with the real round loop (:class:`~rpbt.pbt.runner.PopulationRunner`, local backend, the
   real scheduler's decisions), ``seeds`` times with run seeds ``run.seed + s``.
2. At every exploit (up to ``max_exploits_per_seed`` per seed), before the real transfer, clone the recipient once
   per strategy into a separate single-member learner (:func:`clone_member`: its member state, its carried state
   (LSTM states, burn-in history, running-episode counters) and deep copies of its environments), apply the same
   transfer (donor state, explored hyperparameters, ``pbt.optimizer_state``) with that strategy, and continue
   each clone for ``updates_after`` (K) PPO updates. All clones start from identical RNG streams (the donor's
   generator state, restored by the transfer) and identical environment states, so the strategy is the only
   difference. A *control* clone of the donor itself (no transfer) shows how much the value loss moves anyway.
   The real run then carries on with ``pbt.hidden_state`` as configured; the clones never touch it.
3. Record per strategy and exploit: ``train/value_loss`` at each of the K updates divided by the donor's
   ``train/value_loss`` at its last update before the exploit (1.0 = no change); the loss divided by the
   ``burn_in`` clone's at the same update (same start: environments, RNG, weights, hyperparameters); the three
   exploit measurements of :mod:`rpbt.pbt.transfer`; and the returns of the episodes that were running at the
   exploit (for ``reset_episodes`` these episodes are cut at the exploit, so their return is the return collected
   up to the cut; episodes still running after K updates are counted as ``unfinished`` and left out).
   Because the clones' trajectories diverge as soon as one action differs, the per-update losses carry the noise
   of different experience. The carried state's own effect is isolated on a *common rollout*: one more clone
   with the burn-in transfer collects a rollout R; the transferred critic is then replayed over R from each
   strategy's post-transfer states (keep, zero, burn_in; reset_episodes acts on other environments and is left
   out) and its value loss against R's lambda-returns is compared with burn_in's, over all of R and over the
   steps of the episodes that were running at the exploit (until each ends).
4. Summarize: per strategy and update, the mean over exploits within a seed, then the mean over seeds with a 95%
   confidence interval from Student's t with S - 1 degrees of freedom (seeds are the independent replicates;
   exploits within one run are not). Loss ratios are heavy-tailed (a donor's last loss is sometimes tiny, and one
   such exploit would dominate an arithmetic mean), so they are averaged as logs: geometric means, intervals
   on the log scale (arithmetic means of the ratio to the donor are kept in the JSON). Write ``spike_study.json``,
   ``spike_study.md`` (tables) and ``spike_study.png`` (relative value loss against updates after the exploit, one
   line per strategy).

Configuration: a run config (the four usual sections) plus an optional ``spike_study`` section
(:class:`StudySettings`); dotted overrides reach both (``spike_study.seeds=2``, ``pbt.population_size=4``).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from scipy import stats

from rpbt.agent.networks import LSTMState
from rpbt.agent.policy import PopulationPolicy
from rpbt.agent.ppo import auxiliary_losses, collect, train_iteration
from rpbt.agent.rollout import Rollout, compute_gae
from rpbt.checkpoint import MemberState
from rpbt.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    format_errors,
    member_hparams,
    read_config_data,
)
from rpbt.envs.runner import EnvRunner, StepResult
from rpbt.extras import require
from rpbt.pbt.backends.local import LocalBackend
from rpbt.pbt.runner import PopulationRunner
from rpbt.pbt.scheduler import PBTScheduler
from rpbt.pbt.transfer import HIDDEN_STATE_STRATEGIES, exploit

STUDY_SECTION = "spike_study"
CONTROL = "control"
JSON_NAME, TABLE_NAME, PLOT_NAME = "spike_study.json", "spike_study.md", "spike_study.png"


class StudySettings(BaseModel):
    """The ``spike_study`` section of a config file.

    seeds (S): independent population runs (run seeds ``run.seed .. run.seed + S - 1``); updates_after (K): PPO
    updates each clone continues for; max_exploits_per_seed: stop a run after this many studied exploits (None:
    every exploit until ``run.total_env_steps``); strategies: which hidden-state strategies to clone;
    control: also continue a clone of the donor without a transfer; out_dir: where results are written
    (``spike_study.json``, ``spike_study.md``, ``spike_study.png`` and ``runs/seed_<s>/``, the run directory of
    seed s, which replaces ``run.dir`` and is deleted and rewritten by every study). ``rpbt spike-study --help``
    lists these keys too: keep it in step when adding one.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seeds: int = Field(5, ge=1)
    updates_after: int = Field(5, ge=1)
    max_exploits_per_seed: Optional[int] = Field(None, ge=1)
    strategies: list[Literal["keep", "zero", "reset_episodes", "burn_in"]] = Field(
        default_factory=lambda: list(HIDDEN_STATE_STRATEGIES))
    control: bool = True
    out_dir: str = "runs/spike_study"

    @field_validator("strategies")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"spike_study.strategies must be a non-empty list without repeats, got {v}")
        return v


def load_study_config(path: Optional[Union[str, Path]] = None,
                      overrides: Sequence[str] = ()) -> tuple[Config, StudySettings]:
    """Read a run config with an optional ``spike_study`` section and apply dotted overrides to both.

    ``path`` None means the shipped default run config (with default study settings). Raises
    :class:`~rpbt.config.ConfigError` naming the file and the dotted key when anything is invalid.
    """
    path, data = read_config_data(path)
    apply_overrides(data, list(overrides))
    study = data.pop(STUDY_SECTION, None) or {}
    if not isinstance(study, dict):
        raise ConfigError(f"{path}: {STUDY_SECTION}: expected a mapping, got {type(study).__name__}")
    try:  # validated under its section's name, so that errors read spike_study.KEY and name the override
        settings = TypeAdapter(dict[str, StudySettings]).validate_python({STUDY_SECTION: study})[STUDY_SECTION]
    except ValidationError as err:
        raise ConfigError(format_errors(err, str(path), list(overrides))) from None
    return config_from_dict(data, source=str(path), overrides=list(overrides)), settings


# --------------------------------------------------------------------------------------------------- clones


@dataclass
class Clone:
    """A single-member learner split off a population: its policy, its environments and its loss terms."""

    policy: PopulationPolicy
    runner: EnvRunner
    aux_losses: list

    def close(self) -> None:
        self.runner.close()


def clone_member(policy: PopulationPolicy, runner: EnvRunner, member: int) -> Clone:
    """A separate single-member learner that continues exactly where ``member`` stands.

    Copies the member state (weights, optimizer, normalizers, hyperparameters, counters, RNG) into a new
    one-member policy, and the member's environments and carried state with :meth:`EnvRunner.clone_member` (deep
    copies of its N environments, which step exactly like the originals, and of every carried tensor). Neither
    ``policy`` nor ``runner`` is modified.
    """
    single = PopulationPolicy(policy.cfg, [policy.member_ids[member]], policy.obs_dim, policy.action_dim,
                              policy.continuous, device=policy.device, nvec=policy.nvec,
                              observation_space=policy.observation_space)
    single.restore(0, policy.snapshot(member))
    return Clone(single, runner.clone_member(member), auxiliary_losses(policy.cfg))


class RunningEpisodes:
    """Follows the episodes running at the exploit on a single-member clone until each ends.

    Wraps the clone's ``runner.step`` and reads each step's finished episodes. ``returns`` maps environment index
    to the first finished episode's return (the runner's running return, so the part collected before the exploit
    is included); ``pending`` holds the environments whose episode has not ended yet.
    """

    def __init__(self, runner: EnvRunner):
        self.pending = set((~runner.carried.episode_start[0]).nonzero().flatten().tolist())
        self.returns: dict[int, float] = {}
        step = runner.step

        def tracked_step(actions: torch.Tensor) -> StepResult:
            result = step(actions)
            for _, env, ret, _ in result.finished:
                if env in self.pending:
                    self.returns[env] = float(ret)
                    self.pending.discard(env)
            return result

        runner.step = tracked_step  # type: ignore[method-assign]


def continue_clone(clone: Clone, updates: int) -> dict[str, list[float]]:
    """Run ``updates`` PPO updates on a single-member clone; returns per-update value loss and value MSE."""
    out: dict[str, list[float]] = {"value_loss": [], "value_mse": []}
    for _ in range(updates):
        metrics = train_iteration(clone.policy, clone.runner, clone.aux_losses)
        out["value_loss"].append(float(metrics["train/value_loss"][0]))
        out["value_mse"].append(float(metrics.get("train/value_mse", metrics["train/value_loss"])[0]))
    return out


@torch.no_grad()
def common_rollout_value_losses(learner: PopulationPolicy, rollout: Rollout, states: dict[str, dict[str, LSTMState]],
                                running: torch.Tensor) -> dict[str, dict[str, Optional[float]]]:
    """Value loss of a single-member learner's critic(s) over ``rollout`` replayed from each set of initial states.

    Targets are the rollout's lambda-returns (GAE with the learner's gamma and lambda over the rollout's own
    values), in the learner's normalized units; the loss is the critic's training loss (summed over twin
    critics, ``agent.clip_range_vf`` around the rollout's values), as in :func:`rpbt.agent.ppo.update`.
    states: {arm: {name: (h, c) each (1, L, N, H)}}; running: (N,) bool, environments whose episode was running
    when ``rollout`` began. Returns {arm: {"all": mean loss over the rollout, "running": mean over the steps of
    the running episodes until each ends (None if none), "running_steps": their count}}.
    """
    P, T, N = rollout.rewards.shape
    a = learner.cfg.agent
    values = rollout.values.min(0).values
    _, returns = compute_gae(rollout.rewards, values, rollout.dones, rollout.terminated, rollout.truncation_values,
                             rollout.last_values, learner.hparam("gamma").float(), learner.hparam("gae_lambda").float())
    scale = learner.return_normalizer.scale.float().view(P, 1, 1)
    target, old = returns / scale, rollout.values / scale.unsqueeze(0)
    mask = torch.zeros(T, N, dtype=torch.bool)
    for n in running.nonzero().flatten().tolist():
        later = rollout.episode_starts[0, 1:, n].nonzero().flatten()
        mask[: (int(later[0]) + 1 if len(later) else T), n] = True
    out: dict[str, dict[str, Optional[float]]] = {}
    for arm, init in states.items():
        _, raws = learner.sequence(rollout.obs, init, rollout.episode_starts)
        loss = sum(c.head.loss(raw, target, old[k], a.clip_range_vf) for k, (c, raw) in
                   enumerate(zip(learner.critics, raws)))[0]  # (T, N)
        out[arm] = {"all": float(loss.mean()), "running": float(loss[mask].mean()) if mask.any() else None,
                    "running_steps": int(mask.sum())}
    return out


@dataclass
class ExploitRecord:
    """One studied exploit: per arm (strategy or control) the K value losses, measurements and returns."""

    seed: int
    round: int
    recipient: int
    donor: int
    donor_value_loss: float
    donor_value_mse: float
    arms: dict[str, dict[str, Any]] = field(default_factory=dict)
    common_rollout: dict[str, dict[str, Optional[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "round": self.round, "recipient": self.recipient, "donor": self.donor,
                "donor_value_loss": self.donor_value_loss, "donor_value_mse": self.donor_value_mse,
                "arms": self.arms, "common_rollout": self.common_rollout}


def study_exploit(policy: PopulationPolicy, runner: EnvRunner, recipient: int, donor: int, donor_state: MemberState,
                  new_hparams: dict[str, float], donor_row: dict[str, float], settings: StudySettings,
                  optimizer_state: str, seed: int, round_: int, transfer: str = "whole_state") -> ExploitRecord:
    """Clone ``recipient`` once per strategy (and the donor for the control), transfer (``pbt.transfer``,
    ``pbt.optimizer_state`` as the run's own exploits), continue K updates."""
    donor_vl = float(donor_row["train/value_loss"])
    donor_mse = float(donor_row.get("train/value_mse", donor_vl))
    rec = ExploitRecord(seed, round_, recipient, donor, donor_vl, donor_mse)
    arms: list[str] = list(settings.strategies) + ([CONTROL] if settings.control else [])
    post_states: dict[str, dict[str, LSTMState]] = {}
    for arm in arms:
        if arm == CONTROL:
            clone = clone_member(policy, runner, donor)
            measurements: dict[str, float] = {}
            cut: list[float] = []
        else:
            clone = clone_member(policy, runner, recipient)
            carried = clone.runner.carried
            running = (~carried.episode_start[0]).nonzero().flatten().tolist()
            cut = [float(carried.running_return[0, n]) for n in running] if arm == "reset_episodes" else []
            measurements = exploit(clone.policy, clone.runner, 0, donor_state, new_hparams, strategy=arm,
                                   optimizer_state=optimizer_state, transfer=transfer)
            post_states[arm] = {k: tuple(t.clone() for t in st) for k, st in clone.runner.carried.hidden.items()}
        tracker = None if arm == "reset_episodes" else RunningEpisodes(clone.runner)
        losses = continue_clone(clone, settings.updates_after)
        returns = cut if tracker is None else list(tracker.returns.values())
        rec.arms[arm] = {
            "value_loss": losses["value_loss"],
            "value_mse": losses["value_mse"],
            "relative_value_loss": [v / donor_vl for v in losses["value_loss"]],
            "relative_value_mse": [v / donor_mse for v in losses["value_mse"]],
            "measurements": {k: _finite(v) for k, v in measurements.items()},
            "running_episode_returns": returns,
            "running_episodes_cut": arm == "reset_episodes",
            "unfinished": 0 if tracker is None else len(tracker.pending),
        }
        clone.close()
    if "burn_in" in rec.arms:
        base = rec.arms["burn_in"]["value_loss"]
        for arm in rec.arms.values():
            arm["ratio_vs_burn_in"] = [v / b if b > 0 else None for v, b in zip(arm["value_loss"], base)]
        probe = clone_member(policy, runner, recipient)
        exploit(probe.policy, probe.runner, 0, donor_state, new_hparams, strategy="burn_in",
                optimizer_state=optimizer_state, transfer=transfer)
        running = ~probe.runner.carried.episode_start[0]
        rollout = collect(probe.policy, probe.runner)
        rec.common_rollout = common_rollout_value_losses(
            probe.policy, rollout, {a: s for a, s in post_states.items() if a in ("keep", "zero", "burn_in")}, running)
        probe.close()
    return rec


class StudyBackend(LocalBackend):
    """The local backend, plus: remember each member's last update metrics and study exploits before doing them."""

    def __init__(self, cfg: Config, hparams: Sequence[dict], settings: StudySettings, seed_index: int):
        super().__init__(cfg, hparams)
        self.settings = settings
        self.seed_index = seed_index
        self.last_rows: dict[int, dict[str, float]] = {}
        self.records: list[ExploitRecord] = []
        self.round = 0

    def train(self, n_updates: int) -> dict[int, list[dict[str, float]]]:
        rows = super().train(n_updates)
        self.round += 1
        self.last_rows = {m: dict(r[-1]) for m, r in rows.items() if r}
        return rows

    def wants_more(self) -> bool:
        cap = self.settings.max_exploits_per_seed
        return cap is None or len(self.records) < cap

    def exploit(self, recipient: int, donor_state: MemberState, new_hparams: dict[str, float]) -> dict[str, float]:
        if self.wants_more():
            donor = int(donor_state.meta["member_id"])
            local = self.shard.local
            self.records.append(study_exploit(
                self.shard.policy, self.shard.runner, local[recipient], local[donor], donor_state, new_hparams,
                self.last_rows[donor], self.settings, self.cfg.pbt.optimizer_state, self.seed_index, self.round,
                transfer=self.cfg.pbt.transfer))
        return super().exploit(recipient, donor_state, new_hparams)


def run_seed(cfg: Config, settings: StudySettings, seed_index: int, run_dir: Path,
             log: Any = print) -> list[ExploitRecord]:
    """One population run (run seed ``cfg.run.seed + seed_index``) with every exploit studied."""
    cfg = cfg.model_copy(deep=True)
    cfg.run.seed = cfg.run.seed + seed_index
    cfg.run.dir = str(run_dir)
    cfg.run.progress = False
    if run_dir.exists():
        shutil.rmtree(run_dir)
    hparams = PBTScheduler.from_config(cfg.pbt, seed=cfg.run.seed).initial_hparams(member_hparams(cfg))
    backend = StudyBackend(cfg, hparams, settings, seed_index)
    runner = PopulationRunner(cfg, run_dir, backend=backend)
    try:
        runner.start()
        while runner.round < runner.total_rounds and backend.wants_more():
            runner.play_round()
            log(f"  seed {seed_index}: round {runner.round}/{runner.total_rounds}, "
                f"{len(backend.records)} exploits studied")
    finally:
        runner.close()
    return backend.records


# --------------------------------------------------------------------------------------------------- statistics


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t distribution with ``df`` degrees of freedom (0.5 < p < 1), ``scipy.stats.t.ppf``.

    Raises ``ValueError`` for p outside (0.5, 1) or df <= 0.
    """
    if not 0.5 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and df > 0, got p={p}, df={df}")
    return float(stats.t.ppf(p, df))


def mean_ci(values: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Mean and two-sided t confidence interval of independent replicates (NaNs dropped).

    Returns {"mean", "low", "high", "n"}; the bounds are None with fewer than 2 values, everything None with none.
    """
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return {"mean": None, "low": None, "high": None, "n": 0}
    m = float(np.mean(xs))
    if len(xs) < 2:
        return {"mean": m, "low": None, "high": None, "n": len(xs)}
    half = t_quantile(0.5 + level / 2, len(xs) - 1) * float(np.std(xs, ddof=1)) / math.sqrt(len(xs))
    return {"mean": m, "low": m - half, "high": m + half, "n": len(xs)}


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    """a / b, or None when either is missing or b is not positive."""
    return None if a is None or b is None or b <= 0 else a / b


def _per_seed(records: Sequence[ExploitRecord], fn) -> list[float]:
    """fn(record) -> float or None, averaged over each seed's exploits: one value per seed."""
    by_seed: dict[int, list[float]] = {}
    for r in records:
        v = fn(r)
        if v is not None and math.isfinite(v):
            by_seed.setdefault(r.seed, []).append(v)
    return [float(np.mean(v)) for _, v in sorted(by_seed.items())]


def geo_ci(ratios_per_seed: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Geometric mean and t interval of positive ratios: :func:`mean_ci` of the logs, exponentiated.

    ``ratios_per_seed`` are per-seed geometric means (see :func:`_per_seed_geo`). Returns {"mean", "low", "high",
    "n"} in ratio units (1.0 = no change).
    """
    ci = mean_ci([math.log(x) for x in ratios_per_seed], level)
    return {k: (math.exp(v) if k != "n" and v is not None else v) for k, v in ci.items()}


def _per_seed_geo(records: Sequence[ExploitRecord], fn) -> list[float]:
    """Per seed, the geometric mean of fn(record) over that seed's exploits (non-positive / missing values dropped)."""
    logs = _per_seed(records, lambda r: (math.log(v) if (v := fn(r)) is not None and v > 0 else None))
    return [math.exp(x) for x in logs]


def summarize(records: Sequence[ExploitRecord], settings: StudySettings) -> dict[str, Any]:
    """Per arm, each statistic over seeds (a seed's value: the mean over its exploits) with a 95% t interval.

    Value-loss ratios are heavy-tailed (the donor's last loss is sometimes tiny), so they are summarized by
    geometric means (intervals on the log scale, exponentiated); ``*_arithmetic`` keeps arithmetic means.
    Keys: ``relative_value_loss`` / ``relative_value_mse`` (K entries, ratio to the donor's last update),
    ``peak_relative_value_loss`` (largest of the K), ``ratio_vs_burn_in`` (K entries, ratio to the burn_in clone's
    loss at the same update), ``common_rollout_vs_burn_in`` ({"all", "running"}: ratio to burn_in's loss on the
    common rollout, and ``share_worse``: the pooled fraction of exploits where it is above 1), ``measurements``,
    ``running_episode_return``, ``unfinished_episodes``.
    """
    arms = list(settings.strategies) + ([CONTROL] if settings.control else [])
    K = settings.updates_after
    out: dict[str, Any] = {}
    for arm in arms:
        have = [r for r in records if arm in r.arms]
        entry: dict[str, Any] = {}
        for key in ("relative_value_loss", "relative_value_mse", "ratio_vs_burn_in"):
            if have and key in have[0].arms[arm]:
                entry[key] = [geo_ci(_per_seed_geo(have, lambda r, k=k: r.arms[arm][key][k])) for k in range(K)]
        entry["relative_value_loss_arithmetic"] = [
            mean_ci(_per_seed(have, lambda r, k=k: r.arms[arm]["relative_value_loss"][k])) for k in range(K)]
        entry["peak_relative_value_loss"] = geo_ci(
            _per_seed_geo(have, lambda r: max(r.arms[arm]["relative_value_loss"])))
        names = sorted({k for r in have for k in r.arms[arm]["measurements"]})
        entry["measurements"] = {k: mean_ci(_per_seed(have, lambda r, k=k: r.arms[arm]["measurements"].get(k)))
                                 for k in names}
        entry["running_episode_return"] = mean_ci(_per_seed(
            have, lambda r: float(np.mean(r.arms[arm]["running_episode_returns"]))
            if r.arms[arm]["running_episode_returns"] else None))
        entry["unfinished_episodes"] = int(sum(r.arms[arm]["unfinished"] for r in have))
        common = [r for r in have if arm in r.common_rollout and "burn_in" in r.common_rollout]
        if common and arm != "burn_in":
            ratio = {part: (lambda r, p=part: _ratio(r.common_rollout[arm][p], r.common_rollout["burn_in"][p]))
                     for part in ("all", "running")}
            entry["common_rollout_vs_burn_in"] = {part: geo_ci(_per_seed_geo(common, f)) for part, f in ratio.items()}
            pooled = [v for r in common if (v := ratio["all"](r)) is not None]
            entry["common_rollout_vs_burn_in"]["share_worse"] = (
                float(np.mean([v > 1 for v in pooled])) if pooled else None)
        out[arm] = entry
    seeds = sorted({r.seed for r in records})
    return {"arms": out, "exploits": len(records), "seeds": len(seeds),
            "exploits_per_seed": {str(s): sum(r.seed == s for r in records) for s in seeds},
            "statistic": "value-loss ratios: geometric mean over exploits per seed, then over seeds, 95% t interval "
                         "on the log scale; other quantities: arithmetic means, 95% t interval over seeds"}


# --------------------------------------------------------------------------------------------------- output


def _fmt(ci: dict[str, Any], pct: bool = False, digits: int = 3) -> str:
    """'mean [low, high]'; with pct, a ratio shown as a change in percent (1.25 -> +25.0%)."""
    if ci.get("mean") is None:
        return "n/a"
    f = (lambda x: f"{100 * (x - 1):+.1f}%") if pct else (lambda x: f"{x:.{digits}f}")
    if ci.get("low") is None:
        return f(ci["mean"])
    return f"{f(ci['mean'])} [{f(ci['low'])}, {f(ci['high'])}]"


def markdown_tables(summary: dict[str, Any], settings: StudySettings, header: str = "") -> str:
    """The study's tables in Markdown: value loss per update, against burn_in, on the common rollout, measurements."""
    arms = summary["arms"]
    K = settings.updates_after
    cols = " | ".join(f"update {k + 1}" for k in range(K))
    lines = [header] if header else []
    lines += [f"Exploits studied: {summary['exploits']} over {summary['seeds']} seeds. Each seed's value is the "
              "mean over its exploits (geometric for loss ratios); shown: the mean over seeds with a 95% "
              "t confidence interval (on the log scale for ratios).", "",
              "**Value loss after the exploit, relative to the donor's value loss at its last update before it** "
              "(change in percent; 0% = no change; geometric means):", "",
              f"| arm | {cols} | peak |", "|---|" + "---|" * (K + 1)]
    for arm, e in arms.items():
        lines.append(f"| {arm} | " + " | ".join(_fmt(c, pct=True) for c in e["relative_value_loss"])
                     + f" | {_fmt(e['peak_relative_value_loss'], pct=True)} |")
    if any("ratio_vs_burn_in" in e for e in arms.values()):
        lines += ["", "**Against the burn_in clone at the same update** (loss / burn_in clone's loss; same start: "
                  "environments, RNG streams, weights and hyperparameters; trajectories diverge after the first "
                  "differing action):", "", f"| arm | {cols} |", "|---|" + "---|" * K]
        for arm, e in arms.items():
            if arm in ("burn_in", CONTROL) or "ratio_vs_burn_in" not in e:
                continue
            lines.append(f"| {arm} | " + " | ".join(_fmt(c, pct=True) for c in e["ratio_vs_burn_in"]) + " |")
    common = {arm: e["common_rollout_vs_burn_in"] for arm, e in arms.items() if "common_rollout_vs_burn_in" in e}
    if common:
        lines += ["", "**Value loss on a common rollout, relative to burn_in** (the transferred critic replayed over "
                  "the same first rollout from each strategy's carried states; the state is the only difference):",
                  "", "| arm | whole rollout | steps of the episodes running at the exploit | exploits worse than "
                  "burn_in |", "|---|---|---|---|"]
        for arm, e in common.items():
            worse = "n/a" if e["share_worse"] is None else f"{100 * e['share_worse']:.0f}%"
            lines.append(f"| {arm} | {_fmt(e['all'], pct=True)} | {_fmt(e['running'], pct=True)} | {worse} |")
    lines += ["", "**At the exploit** (measurements of `rpbt.pbt.transfer`, arithmetic means; returns of the "
              "episodes running at the exploit, cut at the exploit for reset_episodes):", "",
              "| arm | hidden_state_drift | policy_kl_at_exploit | value_gap_at_exploit | burn_in_truncated | "
              "running-episode return |", "|---|---|---|---|---|---|"]
    for arm, e in arms.items():
        m = e["measurements"]
        cell = lambda k: _fmt(m[k], digits=4) if k in m else "n/a"  # noqa: E731
        lines.append(f"| {arm} | {cell('pbt/hidden_state_drift')} | {cell('pbt/policy_kl_at_exploit')} | "
                     f"{cell('pbt/value_gap_at_exploit')} | {cell('pbt/burn_in_truncated')} | "
                     f"{_fmt(e['running_episode_return'])} |")
    return "\n".join(lines) + "\n"


def plot_relative_value_loss(summary: dict[str, Any], settings: StudySettings, path: Path) -> None:
    """PNG: relative value loss (1 = donor's last) against updates after the exploit, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    K = settings.updates_after
    xs = list(range(0, K + 1))
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm, e in summary["arms"].items():
        cis = e["relative_value_loss"]
        mean = [1.0] + [c["mean"] if c["mean"] is not None else np.nan for c in cis]
        low = [1.0] + [c["low"] if c["low"] is not None else np.nan for c in cis]
        high = [1.0] + [c["high"] if c["high"] is not None else np.nan for c in cis]
        style = {"linestyle": "--", "color": "gray"} if arm == CONTROL else {}
        line, = ax.plot(xs, mean, marker="o", label=arm if arm != CONTROL else "control (donor, no exploit)",
                        **style)
        ax.fill_between(xs, low, high, alpha=0.15, color=line.get_color())
    ax.axhline(1.0, color="black", linewidth=0.7)
    ax.set_xlabel("updates after the exploit (0 = donor's last update before it)")
    ax.set_ylabel("value loss / donor's value loss (geometric mean)")
    ax.set_title(f"Value loss after an exploit ({summary['exploits']} exploits, {summary['seeds']} seeds, 95% CI)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_study(cfg: Config, settings: StudySettings, out_dir: Optional[Path] = None, log: Any = print,
              command: str = "") -> dict[str, Any]:
    """Run the whole study; write ``spike_study.json``, ``spike_study.md`` and ``spike_study.png`` into out_dir.

    Returns the JSON document (settings, resolved config, every exploit record, the summary, wall time). Raises
    :class:`rpbt.extras.MissingExtraError` (``pip install 'rpbt[report]'``) before training when matplotlib is not
    installed.
    """
    require("matplotlib", "report", "the spike study's figure (spike_study.png)")  # before hours of training
    out = Path(out_dir if out_dir is not None else settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.run.torch_threads:
        torch.set_num_threads(cfg.run.torch_threads)
    t0 = time.time()
    records: list[ExploitRecord] = []
    for s in range(settings.seeds):
        log(f"rpbt spike-study: seed {s + 1}/{settings.seeds} (run.seed={cfg.run.seed + s})")
        records.extend(run_seed(cfg, settings, s, out / "runs" / f"seed_{s}", log=log))
    summary = summarize(records, settings)
    wall = time.time() - t0
    doc = {"settings": settings.model_dump(mode="json"), "config": cfg.to_dict(), "command": command,
           "wall_time_s": round(wall, 1), "torch_threads": torch.get_num_threads(), "summary": summary,
           "records": [r.to_dict() for r in records]}
    (out / JSON_NAME).write_text(json.dumps(doc, indent=1, allow_nan=False, default=_json_safe))
    header = f"# Hidden-state spike study\n\n`{command}` ({wall / 60:.1f} min).\n" if command else ""
    (out / TABLE_NAME).write_text(markdown_tables(summary, settings, header))
    plot_relative_value_loss(summary, settings, out / PLOT_NAME)
    return doc


def _finite(x: float) -> Optional[float]:
    """A float for JSON: None for NaN or infinity (e.g. drift against an all-zero reference)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _json_safe(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


__all__ = ["StudySettings", "load_study_config", "clone_member", "RunningEpisodes", "study_exploit",
           "run_study", "summarize", "mean_ci", "geo_ci", "t_quantile", "markdown_tables", "ExploitRecord",
           "common_rollout_value_losses"]
