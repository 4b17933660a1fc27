"""Every derived random stream of a run, named in one place.

A run has one integer seed (``run.seed``). Every other seed is derived from it with :class:`numpy.random.SeedSequence`
and a *stream tag*, so two streams never share entropy by accident and a stream's seeds depend only on the values
named in its function (never on the backend, the shard layout or the order in which members are processed).

| stream | function | derived from |
|---|---|---|
| a member's weights, action sampling and minibatch order | :func:`member_seed` | run seed, global member index |
| a member's training environments | :func:`env_seeds` | member seed |
| fresh episodes of a restored member (resume, restart) | :func:`restore_env_seeds` | member seed, its env steps |
| the recipient's generator after an exploit | :func:`exploit_seed` | run seed, recipient, inherited update count |
| evaluation episodes (common random numbers for all members) | :func:`eval_episode_seeds` | evaluation seed |
| held-out scoring episodes (``pbt.score_source: evaluation``) | :func:`heldout_episode_seeds` | run seed, round |
| SA-PPO random starts and noise baselines | :func:`noise_generators` | member seed, stream tag, counters |

The tag values are those of rpbt's first release, so runs recorded before this module existed reproduce exactly.

Held-out seeds: every training seed (:func:`env_seeds`, :func:`restore_env_seeds`) and every ``rpbt evaluate`` seed
(:func:`eval_episode_seeds`) is a uint32, below ``2**32``; :func:`heldout_episode_seeds` adds ``HELDOUT_OFFSET =
2**32`` to uint32s of its own stream, so the episodes a member is scored on are never episodes it trained on (nor
the final evaluation's), by construction rather than by chance. (Gymnasium seeds an environment's generator through
``numpy.random.SeedSequence``, which takes any non-negative integer.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

TAG_ENV = 0xE0
TAG_RESTORE_ENV = 0xE1
TAG_EXPLOIT = 0xF0
TAG_FAULT_RETRY = 0xF1
TAG_EVAL = 0xE7A1
TAG_HELDOUT = 0xE7A2
HELDOUT_OFFSET = 2 ** 32  # held-out seeds lie in [2**32, 2**33): above every uint32 training / evaluation seed
TAG_ADVERSARY_TRAIN = 0x5A
TAG_ADVERSARY_EVAL = 0x5E


def _uint32s(entropy: Sequence[int], n: int) -> list[int]:
    return [int(x) for x in np.random.SeedSequence([int(e) for e in entropy]).generate_state(n, dtype=np.uint32)]


def member_seed(run_seed: int, member: int) -> int:
    """Member ``member``'s seed (uint32), from the run seed and the member's global index alone."""
    return _uint32s([run_seed, member], 1)[0]


def env_seeds(member_seed: int, num_envs: int) -> list[int]:
    """Seeds (uint32) of a member's ``num_envs`` training environments, from its seed alone."""
    return _uint32s([member_seed, TAG_ENV], num_envs)


def restore_env_seeds(member_seed: int, env_steps: int, num_envs: int, retry: int = 0) -> list[int]:
    """Seeds of a restored member's fresh episodes, from its seed and the env steps it was restored at.

    A resumed run therefore does not replay the episodes its members started the run with. ``retry`` > 0 (the
    member's fault count, when it is restored after a fault) gives other episodes than the failed attempt's.
    """
    return _uint32s([member_seed, env_steps, TAG_RESTORE_ENV, *([retry] if retry else [])], num_envs)


def fault_retry_seed(run_seed: int, member: int, env_steps: int, retry: int) -> int:
    """Seed of a member's generator when it is restored after its ``retry``-th fault (a fork: neither the stream
    that failed nor the donor's)."""
    return _uint32s([run_seed, member, env_steps, retry, TAG_FAULT_RETRY], 1)[0]


def exploit_seed(run_seed: int, recipient: int, updates: int) -> int:
    """Seed of the recipient's generator after an exploit (a fork: not the donor's stream).

    ``recipient`` is the global member id and ``updates`` the update count it inherited from the donor.
    """
    return _uint32s([run_seed, recipient, updates, TAG_EXPLOIT], 1)[0]


def eval_episode_seeds(seed: int, n: int) -> list[int]:
    """Seeds of ``n`` evaluation episodes, episode j from (seed, j): every member sees the same episodes."""
    return [_uint32s([seed, TAG_EVAL, j], 1)[0] for j in range(n)]


def heldout_episode_seeds(run_seed: int, round_: int, n: int) -> list[int]:
    """Seeds of the ``n`` held-out episodes every ready member is scored on in round ``round_`` (``pbt.score_source:
    evaluation``): episode j from (run seed, round, j), plus :data:`HELDOUT_OFFSET`, so each lies in ``[2**32,
    2**33)`` and is never a training seed (see the module docstring). The same for every member of a round (common
    random numbers); other episodes every round, as Stable-Baselines3's ``EvalCallback`` plays on."""
    return [HELDOUT_OFFSET + _uint32s([run_seed, TAG_HELDOUT, round_, j], 1)[0] for j in range(n)]


def noise_generators(seeds: Sequence[int], *keys: int) -> list[torch.Generator]:
    """One CPU generator per member seed, seeded from (member seed, keys...): stateless, reproducible noise."""
    out = []
    for s in seeds:
        hi, lo = _uint32s([int(s)] + [int(k) for k in keys], 2)
        out.append(torch.Generator().manual_seed(hi << 32 | lo))
    return out


__all__ = ["member_seed", "env_seeds", "restore_env_seeds", "exploit_seed", "eval_episode_seeds",
           "heldout_episode_seeds", "HELDOUT_OFFSET", "noise_generators", "TAG_ADVERSARY_TRAIN", "TAG_ADVERSARY_EVAL"]
