"""Finding the round a resume starts from: the newest kept, committed round whose checkpoints load and fit.

A run directory keeps up to ``run.keep_checkpoints`` committed rounds (``checkpoints/round_<r>/``: one
``member_<m>.pt`` per member and the round's ``runner.json``); ``checkpoints/runner.json`` names the newest and lists
the kept ones, newest first (``history``). :func:`restore_newest` tries them in that order: a round whose runner
state or any member checkpoint does not load, or does not fit the run's learner, is skipped (and recorded with its
reason); the first whose every member restores wins.

A resume may change the run's budget (:func:`resume_config`): ``rpbt resume RUN run.total_env_steps=N`` extends a
finished or interrupted run (the rounds go on from the updates played; a last round the old budget cut short is
followed by full ones), ``run.stop_at_score`` sets or lifts the early stop, ``run.progress`` only changes what is
printed. Every other key is fixed by the run's ``config.yaml``: changing it mid-run would make the run's records
describe two different runs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rpbt.checkpoint import CheckpointError, MemberState, naming_checkpoint
from rpbt.config import Config, ConfigError
from rpbt.config.loading import dotted_items
from rpbt.pbt.scheduler import PBTScheduler
from rpbt.run.rundir import ROUND_FOLDER, RunDirError, round_folder

if TYPE_CHECKING:
    from rpbt.pbt.backends.base import Backend
    from rpbt.run.rundir import RunDirectory

__all__ = ["ResumeWarning", "RESUMABLE_KEYS", "resume_config", "resume_candidates", "load_round", "restore_newest"]

#: The keys ``rpbt resume RUN key=value`` may change: the budget, the early stop, what is printed, and where the run
#: executes (every ``backend.*`` key, ``run.torch_threads``, ``agent.device``: e.g. a Ray run resumed on one machine
#: once its cluster is gone). None of them changes what the run decides; the thread count and the device may move
#: floats in their last bits (docs/reproducibility.md).
RESUMABLE_KEYS = ("run.total_env_steps", "run.stop_at_score", "run.progress", "run.torch_threads", "agent.device",
                  "backend.*")


def _resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in RESUMABLE_KEYS)


def resume_config(run_dir: Path, overrides: list[str]) -> tuple[Config, dict[str, list[Any]]]:
    """The config a resume of ``run_dir`` runs with: its ``config.yaml`` with ``overrides`` (``key=value``
    strings) applied, and ``{key: [old, new]}`` of what they changed. Only :data:`RESUMABLE_KEYS` may change (an
    override that repeats the saved value is fine); anything else raises :class:`~rpbt.config.ConfigError` naming
    the key. Reads only; writes nothing."""
    from rpbt.config import load_config
    from rpbt.run.rundir import require_run_dir

    path = require_run_dir(Path(run_dir)) / "config.yaml"
    saved = load_config(path)
    if not overrides:
        return saved, {}
    cfg = load_config(path, list(overrides))
    if saved.env._env_fn is not None:
        cfg.env.with_env_fn(saved.env._env_fn)
    old, new = dotted_items(saved.to_dict()), dotted_items(cfg.to_dict())
    changed = {k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
    fixed = [k for k in changed if not _resumable(k)]
    if fixed:
        k = fixed[0]
        raise ConfigError(f"{k}: cannot change on resume ({changed[k][0]!r} in {path}, {changed[k][1]!r} given); a "
                          f"resume may change only {', '.join(RESUMABLE_KEYS)}. Train a new run for other settings "
                          f"(--init-from RUN starts it from a trained member)")
    return cfg, changed


class ResumeWarning(UserWarning):
    """A resume skipped a kept round whose checkpoints do not load or fit; the message names the file and why."""


def resume_candidates(latest: dict[str, Any]) -> tuple[str, list[str]]:
    """``(top, candidates)`` of a ``checkpoints/runner.json`` state: the round folder it names and the kept round
    folders to try, newest first (``top`` among them)."""
    top = latest.get("checkpoint_dir") or round_folder(latest["round"])
    candidates = list(latest.get("history") or [top])
    if top not in candidates:
        candidates.insert(0, top)
    return top, candidates


def load_round(rundir: "RunDirectory", folder: str, latest: dict[str, Any], top: str, scheduler: PBTScheduler
               ) -> tuple[dict[str, Any], list[MemberState]]:
    """The runner state and member states of a kept round folder; :class:`RunDirError` / :class:`CheckpointError`
    naming the file when one does not load. Loads the scheduler state into ``scheduler``."""
    P = scheduler.population_size
    store = rundir.store(latest)
    kept = store.folder(folder)
    state = latest if folder == top else rundir.read_runner_state(folder, store=store)
    where = rundir.runner_state_path if folder == top else kept.url("runner.json")
    match = ROUND_FOLDER.fullmatch(folder)
    if match is None or int(match.group(1)) != state["round"]:
        raise RunDirError(f"{where}: names round {state['round']}, but lies in (or points at) {folder}")
    for key in ("lineage", "exploitation_count"):
        if not isinstance(state.get(key), list) or len(state[key]) != P:
            raise RunDirError(f"{where}: {key!r} is not a list of {P} entries (one per member)")
    try:
        scheduler.load_state_dict(state["scheduler"])
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
        raise RunDirError(f"{where}: bad \"scheduler\" state ({type(err).__name__}: {err})") from None
    return state, [kept.load_member(m) for m in range(P)]


def restore_newest(rundir: "RunDirectory", latest: dict[str, Any], scheduler: PBTScheduler,
                   backend_for: Callable[[list[MemberState]], "Backend"], skipped: list[dict[str, Any]]
                   ) -> dict[str, Any]:
    """Restore every member from the newest kept round that loads and fits; returns its runner state.

    ``backend_for(states)`` gives the backend to restore into (built on the first round that loads: errors building
    it are not the round's fault). Each skipped round is appended to ``skipped`` as ``{"round", "folder",
    "reason"}`` and, once a round restores, warned about (:class:`ResumeWarning`). Raises :class:`CheckpointError`
    naming the files when no kept round restores.
    """
    top, candidates = resume_candidates(latest)
    config_path = rundir.path / "config.yaml"
    store = rundir.store(latest)
    for folder in candidates:
        match = ROUND_FOLDER.fullmatch(folder)
        r = int(match.group(1)) if match else None
        try:
            state, states = load_round(rundir, folder, latest, top, scheduler)
        except (CheckpointError, RunDirError) as err:
            skipped.append({"round": r, "folder": folder, "reason": str(err)})
            continue
        backend = backend_for(states)
        try:
            for m, s in enumerate(states):
                with naming_checkpoint(store.folder(folder).url(f"member_{m}.pt"), config_path):
                    backend.restore(m, s)
        except CheckpointError as err:
            skipped.append({"round": r, "folder": folder, "reason": str(err)})
            continue
        for skip in skipped:
            warnings.warn(ResumeWarning(f"round {skip['round']} skipped, resuming from round {state['round']}: "
                                        f"{skip['reason']}"), stacklevel=3)
        return state
    if len(skipped) == 1:
        raise CheckpointError(skipped[0]["reason"])
    raise CheckpointError(f"{store.root}: none of the kept rounds can be restored: " +
                          "; ".join(f"round {s['round']}: {s['reason']}" for s in skipped))
