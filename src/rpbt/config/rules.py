"""Cross-field rules: checks of a run configuration that read keys of more than one section.

Each rule is a function of the few settings it reads (plain values, so that it can be tested without building a
config) and raises ``ValueError`` naming the dotted keys when they do not fit together; a rule that applies only
under some setting takes that setting too and decides itself. :meth:`rpbt.config.schema.Config._cross_field_rules`
runs them all, in one place, once every section is valid; pydantic reports the first that fails at the config's
root, and :func:`rpbt.config.loading.format_errors` names the override whose key the message names.
"""

from __future__ import annotations

from typing import Optional


def resolve_score_source(score_source: str, env_id: str) -> str:
    """``"validation"``, ``"training"`` or ``"evaluation"``: ``pbt.score_source`` with ``auto`` resolved
    (validation for env.id trading, the one environment with a validation split; training otherwise)."""
    if score_source == "auto":
        return "validation" if env_id == "trading" else "training"
    return score_source


def minibatches_divide_the_rollout(num_envs: int, num_steps: int, bptt_length: Optional[int],
                                   num_minibatches: int) -> None:
    """``agent.num_minibatches`` splits the rollout evenly: by environment (``agent.bptt_length`` null), or by
    segment, which ``agent.bptt_length`` cuts from ``agent.num_steps`` without a remainder."""
    if bptt_length is None:
        if num_envs % num_minibatches != 0:
            raise ValueError(
                f"env.num_envs ({num_envs}) must be divisible by agent.num_minibatches ({num_minibatches}): "
                f"minibatches are split by environment (or set agent.bptt_length to split by segment)"
            )
        return
    if num_steps % bptt_length != 0:
        raise ValueError(f"agent.bptt_length ({bptt_length}) must divide agent.num_steps ({num_steps})")
    segments = num_envs * (num_steps // bptt_length)
    if segments % num_minibatches != 0:
        raise ValueError(
            f"the rollout's {segments} segments (env.num_envs x agent.num_steps / agent.bptt_length) must be "
            f"divisible by agent.num_minibatches ({num_minibatches})"
        )


def validation_score_needs_trading(score_source: str, env_id: str) -> None:
    """``pbt.score_source: validation`` needs a validation split, which only ``env.id: trading`` has."""
    if score_source == "validation" and env_id != "trading":
        raise ValueError(
            f"pbt.score_source: validation needs a walk-forward validation split, which only env.id: trading "
            f"has (env.id is {env_id!r}); use training or auto"
        )


def pb2_min_data_at_most_max_data(explore: str, min_data: int, max_data: int) -> None:
    """With ``pbt.explore: pb2``, the GP's ``pbt.pb2.min_data`` is reachable within its ``pbt.pb2.max_data``."""
    if explore == "pb2" and min_data > max_data:
        raise ValueError(f"pbt.pb2.min_data ({min_data}) must be at most pbt.pb2.max_data ({max_data}): PB2 would "
                         f"never have enough data and would always perturb")


def ttest_window_fits_the_returns(ttest: bool, ttest_window: Optional[int], score_window: int,
                                  score_source: str, eval_episodes: int, evaluation_episodes: int = 10) -> None:
    """With ``pbt.ttest``, the returns compared per member (``pbt.ttest_window``, or ``pbt.score_window`` when
    null; at least 2) are at most those a member has: ``env.trading.eval_episodes`` per round when scored on
    validation (``score_source``, resolved), ``pbt.evaluation_episodes`` per round when scored on evaluation,
    else the ``max(100, pbt.score_window)`` training returns it keeps."""
    if not ttest:
        return
    k = ttest_window if ttest_window is not None else max(2, score_window)
    if score_source == "validation":
        have, what = eval_episodes, "env.trading.eval_episodes validation returns per round"
    elif score_source == "evaluation":
        have, what = evaluation_episodes, "pbt.evaluation_episodes evaluation returns per round"
    else:
        have, what = max(100, score_window), "returns a member keeps (max(100, pbt.score_window))"
    if k > have:
        raise ValueError(f"pbt.ttest compares the last {k} returns per member (pbt.ttest_window, or "
                         f"pbt.score_window when null) but there are only {have} {what}: every exploit would "
                         f"be refused; lower pbt.ttest_window")


def workers_fit_the_population(num_workers: Optional[int], population_size: int) -> None:
    """``backend.num_workers``, when given, lies in ``[1, pbt.population_size]``: a worker holds at least one
    member."""
    if num_workers is not None and not 1 <= num_workers <= population_size:
        raise ValueError(f"backend.num_workers must be between 1 and pbt.population_size ({population_size}) (a "
                         f"worker holds at least one member), got {num_workers}")


def ray_options_need_ray(kind: str, num_gpus_per_shard: float, runtime_env: Optional[dict]) -> None:
    """``backend.num_gpus_per_shard`` and ``backend.runtime_env`` are Ray's: refused with another
    ``backend.kind`` (the local backend takes the GPU through ``agent.device``)."""
    named = [key for key, given in (("num_gpus_per_shard", num_gpus_per_shard > 0),
                                    ("runtime_env", runtime_env is not None)) if given]
    if named and kind != "ray":
        gpu = (" (on one machine, the local backend uses a GPU through agent.device)"
               if named[0] == "num_gpus_per_shard" else "")
        raise ValueError(f"backend.{named[0]} is a Ray backend setting, but backend.kind is {kind!r}; use "
                         f"backend.kind=ray{gpu}")


def gpus_per_shard_need_a_cuda_device(num_gpus_per_shard: float, device: str) -> None:
    """A shard that reserves a GPU learns on it: ``agent.device=cpu`` with ``backend.num_gpus_per_shard > 0`` is
    refused (the reserved GPUs would sit idle)."""
    if num_gpus_per_shard > 0 and device == "cpu":
        raise ValueError(f"backend.num_gpus_per_shard={num_gpus_per_shard} reserves GPUs, but agent.device is 'cpu'; "
                         "use agent.device=auto or cuda, or backend.num_gpus_per_shard=0")


def ray_shards_reserve_the_gpu_they_use(kind: str, num_gpus_per_shard: float, device: str) -> None:
    """On the Ray backend a shard sees a GPU only when it reserves one: ``agent.device=cuda[:N]`` there needs
    ``backend.num_gpus_per_shard > 0``."""
    if kind == "ray" and device.startswith("cuda") and num_gpus_per_shard == 0:
        raise ValueError(f"agent.device={device!r} on the Ray backend needs backend.num_gpus_per_shard > 0 (Ray "
                         "gives a shard's actor a GPU only when it reserves one), e.g. backend.num_gpus_per_shard=0.5")
