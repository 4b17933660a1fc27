"""Warm start: every member of a new population starts from one trained member's weights and normalizers.

``rpbt train CONFIG --init-from RUN[:MEMBER]`` / ``rpbt.train(..., init_from="RUN:3")`` (fine-tuning on a harder
difficulty, a longer second stage). ``MEMBER`` defaults to the source run's best member (``summary.json``'s
``best_member``, the best by its last committed score); the state is that member's checkpoint of the source run's
last committed round.

What each new member takes from the source member's :class:`~rpbt.checkpoint.MemberState` (:func:`warm_keys`):
every network weight and every other network buffer, and the observation and return normalizer statistics (the
weights only mean something under the input scaling they were trained with). What it keeps of its own fresh
state: its hyperparameters (drawn from the search space as usual), its optimizer moments and step (reset: the new
run's learning rates start their own Adam statistics, as ``pbt.optimizer_state: reset`` does at an exploit), its
variance-gradient-scaler statistics (reset with the optimizer whose gradients they scale), its counters and recent
returns (the new run starts at 0 env steps) and its random generator (its own member seed). The members still
differ after the start: by their hyperparameters, action sampling and episodes.

A source whose network does not fit the new config (another observation space, hidden size, encoder, critic) is
refused with a :class:`~rpbt.config.ConfigError` naming the first tensor that differs and the settings that
differ, before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Union

from rpbt.checkpoint import MemberState
from rpbt.config import Config, ConfigError
from rpbt.config.loading import dotted_items
from rpbt.run.rundir import RunDirectory, RunDirError, load_run_config, require_run_dir

__all__ = ["WarmStart", "warm_keys", "parse_init_from"]

COUNTERS = ("env_steps", "updates", "episodes", "episode_returns", "episode_lengths")
OWN_PREFIXES = ("hp_", "optimizer.", "vgs.")  # the new member's own: hyperparameters, optimizer, VGS statistics
# Settings a network's shapes depend on, named when a source does not fit.
SHAPE_SETTINGS = ("env.id", "env.kwargs", "env.observation_noise", "agent.network", "agent.critic",
                  "agent.normalize_observations", "agent.normalize_returns")


def warm_keys(state: MemberState) -> list[str]:
    """The keys of ``state`` a warm start copies: weights, network buffers and normalizer statistics (every key
    but the hyperparameters, optimizer, VGS statistics and counters; see the module docstring)."""
    return [k for k in state.tensors if not k.startswith(OWN_PREFIXES) and k not in COUNTERS]


def parse_init_from(spec: Union[str, Path]) -> tuple[Path, Optional[int]]:
    """``RUN`` or ``RUN:MEMBER`` -> (run directory, member id or None for the best). Raises
    :class:`~rpbt.config.ConfigError` for a member that is not a non-negative integer."""
    text = str(spec)
    run, sep, member = text.rpartition(":")
    if not sep or "/" in member or not member or Path(text).exists():
        return Path(text), None
    if member == "best":
        return Path(run), None
    if not member.isdigit():
        raise ConfigError(f"--init-from {text!r}: the member after ':' must be a member id (an integer) or 'best', "
                          f"got {member!r}")
    return Path(run), int(member)



class WarmStart:
    """A loaded warm-start source: ``run_dir``, ``member``, ``round`` (the committed round its state is from),
    ``config`` (the source run's) and ``state`` (the member's :class:`~rpbt.checkpoint.MemberState`).

    Raises :class:`~rpbt.run.rundir.RunDirError` for a missing run, a run with nothing committed, a member that
    does not exist or no best member yet; :class:`~rpbt.checkpoint.CheckpointError` for a checkpoint that does not
    load.
    """

    def __init__(self, spec: Union[str, Path]):
        run_dir, member = parse_init_from(spec)
        self.run_dir = require_run_dir(run_dir)
        self.config = load_run_config(self.run_dir)
        P = self.config.pbt.population_size
        rundir = RunDirectory(self.run_dir, P, tensorboard=False)
        runner_state = rundir.read_runner_state(missing="no committed round to start from (the run stopped before "
                                                        "its first round ended)")
        if member is None:
            member = self._best(P)
        if not 0 <= member < P:
            raise RunDirError(f"--init-from {spec}: member {member} does not exist; {self.run_dir} has members "
                              f"0..{P - 1}")
        self.member = member
        self.round = int(runner_state["round"])
        folder = runner_state.get("checkpoint_dir")
        store = rundir.store(runner_state)  # the run directory's checkpoints/, or its run.storage
        self.state = (store.folder(folder).load_member(member) if folder
                      else MemberState.load(rundir.checkpoint_dir / f"member_{member}.pt"))

    def _best(self, P: int) -> int:
        path = self.run_dir / "summary.json"
        try:
            best = json.loads(path.read_text()).get("best_member")
        except (OSError, ValueError) as err:
            raise RunDirError(f"{path}: cannot read the best member ({err}); name one: --init-from RUN:MEMBER") \
                from None
        if not isinstance(best, int) or not 0 <= best < P:
            raise RunDirError(f"{path}: no best member yet (no member has a score); name one: --init-from "
                              f"{self.run_dir}:MEMBER")
        return best

    def describe(self) -> dict[str, Any]:
        """For the ``start`` event: ``{"run", "member", "round"}``."""
        return {"run": str(self.run_dir), "member": self.member, "round": self.round}

    def warm_state(self, own: MemberState, cfg: Config) -> MemberState:
        """``own`` (a fresh member's state) with the source's :func:`warm_keys`; ``cfg``: the new run's config,
        named with the source's when a tensor does not fit (:class:`~rpbt.config.ConfigError`)."""
        keys = warm_keys(self.state)
        mine = set(warm_keys(own))
        problem = None
        obs_a, obs_b = self.state.tensors.get("obs_rms.mean"), own.tensors.get("obs_rms.mean")
        if obs_a is not None and obs_b is not None and obs_a.shape != obs_b.shape:
            problem = (f"observations have {obs_a.numel()} features in the source, {obs_b.numel()} here (tensor "
                       f"obs_rms.mean)")
        for k in sorted(set(keys) | mine) if problem is None else ():
            if k not in mine or k not in self.state.tensors:
                where = "here" if k not in mine else "in the source"
                problem = f"tensor {k} is missing {where}"
                break
            a, b = self.state.tensors[k], own.tensors[k]
            if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
                problem = f"tensor {k} has shape {tuple(a.shape)} in the source, {tuple(b.shape)} here"
                break
        if problem is not None:
            raise ConfigError(f"--init-from {self.run_dir}:{self.member}: its network does not fit this config: "
                              f"{problem}; {self._differences(cfg)}")
        tensors = dict(own.tensors)
        tensors.update({k: self.state.tensors[k].clone() for k in keys})
        return MemberState(tensors=tensors, rng=own.rng, meta=dict(own.meta))

    def _differences(self, cfg: Config) -> str:
        """The shape-relevant settings that differ between the source run's config and ``cfg``."""
        old, new = dotted_items(self.config.to_dict()), dotted_items(cfg.to_dict())
        diff = [f"{k}: {old.get(k)!r} there, {new.get(k)!r} here" for k in sorted(set(old) | set(new))
                if k.startswith(SHAPE_SETTINGS) and old.get(k) != new.get(k)]
        return ("settings that differ: " + "; ".join(diff)) if diff else \
            "no shape setting differs (another observation or action space?)"

    def apply(self, backend: Any, cfg: Config) -> None:
        """Put the warm state into every member of ``backend`` (a fresh :class:`~rpbt.pbt.backends.base.Backend` of
        the new run's ``cfg``); every member is checked first, so a misfit changes nothing."""
        states = {m: self.warm_state(backend.snapshot(m), cfg) for m in range(backend.population_size)}
        for m, state in states.items():
            backend.restore(m, state)
