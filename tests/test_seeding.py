"""Derived random streams: each is numpy's SeedSequence of a named entropy list, so the seeds are checked against
SeedSequence directly, and the streams that must differ (members, restores, retries, exploits) do."""

from __future__ import annotations

import numpy as np
import torch

from rpbt import seeding


def _seq(*entropy: int, n: int = 1) -> list[int]:
    return [int(x) for x in np.random.SeedSequence(list(entropy)).generate_state(n, dtype=np.uint32)]


def test_each_seed_is_the_seed_sequence_of_its_documented_entropy():
    assert seeding.member_seed(7, 3) == _seq(7, 3)[0]
    assert seeding.env_seeds(123, 4) == _seq(123, 0xE0, n=4)
    assert seeding.restore_env_seeds(123, 640, 2) == _seq(123, 640, 0xE1, n=2)
    assert seeding.restore_env_seeds(123, 640, 2, retry=2) == _seq(123, 640, 0xE1, 2, n=2)
    assert seeding.fault_retry_seed(7, 3, 640, 1) == _seq(7, 3, 640, 1, 0xF1)[0]
    assert seeding.exploit_seed(7, 3, 12) == _seq(7, 3, 12, 0xF0)[0]
    assert seeding.eval_episode_seeds(5, 3) == [_seq(5, 0xE7A1, j)[0] for j in range(3)]


def test_seeds_are_uint32_and_distinct_across_members_envs_and_retries():
    members = [seeding.member_seed(0, m) for m in range(64)]
    assert len(set(members)) == 64 and all(0 <= s < 2 ** 32 for s in members)
    envs = seeding.env_seeds(members[0], 16)
    assert len(set(envs)) == 16
    # a restored member's episodes are neither its initial ones nor those of the attempt that failed
    restored = seeding.restore_env_seeds(members[0], 640, 16)
    retried = seeding.restore_env_seeds(members[0], 640, 16, retry=1)
    assert not set(restored) & set(envs) and not set(retried) & set(restored)
    assert seeding.restore_env_seeds(members[0], 640, 16, retry=0) == restored


def test_evaluation_episodes_do_not_depend_on_how_many_are_asked_for():
    assert seeding.eval_episode_seeds(9, 5)[:3] == seeding.eval_episode_seeds(9, 3)
    assert seeding.eval_episode_seeds(9, 3) != seeding.eval_episode_seeds(10, 3)


def test_noise_generators_are_reproducible_per_member_and_keyed():
    hi, lo = _seq(11, 0x5A, n=2)
    ref = torch.Generator().manual_seed(hi << 32 | lo)
    a, b = seeding.noise_generators([11, 12], seeding.TAG_ADVERSARY_TRAIN)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=ref))
    again = seeding.noise_generators([11], seeding.TAG_ADVERSARY_TRAIN)[0]
    other_key = seeding.noise_generators([11], seeding.TAG_ADVERSARY_EVAL)[0]
    x = torch.rand(4, generator=again)
    assert not torch.equal(x, torch.rand(4, generator=b)) and not torch.equal(x, torch.rand(4, generator=other_key))


def test_held_out_seeds_lie_above_every_uint32_training_seed_and_change_with_the_round():
    from rpbt.seeding import HELDOUT_OFFSET, env_seeds, heldout_episode_seeds, member_seed, restore_env_seeds

    a = heldout_episode_seeds(0, 1, 50)
    assert all(HELDOUT_OFFSET <= s < 2 * HELDOUT_OFFSET for s in a) and len(set(a)) == 50
    assert heldout_episode_seeds(0, 1, 3) == a[:3]  # episode j's seed does not depend on how many are asked for
    assert not set(a) & set(heldout_episode_seeds(0, 2, 50)) and not set(a) & set(heldout_episode_seeds(1, 1, 50))
    training = env_seeds(member_seed(0, 0), 64) + restore_env_seeds(member_seed(0, 0), 1000, 64)
    assert max(training) < HELDOUT_OFFSET
