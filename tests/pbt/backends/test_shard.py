"""A shard: a batched learner of some members that trains them bit for bit like the whole population."""

from __future__ import annotations

import math

import torch

from tests.conftest import tiny_config

# Seed 2 with P=4 in two shards [0, 1] | [2, 3] exploits both inside a shard (index copy) and across shards
# (bytes), and every member has finished episodes (no None scores) from round 1 on. One update per round, 6 rounds.
# torch_threads=1 everywhere: intra-op thread counts change float rounding, shard sizes do not.
DECIDE = ["run.torch_threads=1", "pbt.perturbation_interval=1", "pbt.burn_in=1", "run.total_env_steps=192",
          "run.seed=2", "pbt.quantile_fraction=0.25"]


def test_a_shard_trains_its_members_bit_for_bit_like_the_whole_population():
    from rpbt.config import member_hparams
    from rpbt.pbt.backends.shard import Shard

    cfg = tiny_config(*DECIDE)
    hp = [dict(member_hparams(cfg), learning_rate=1e-3 * (m + 1)) for m in range(4)]
    whole, part = Shard(cfg, [0, 1, 2, 3], hp), Shard(cfg, [2, 3], hp[2:])
    try:
        rows_whole, rows_part = whole.train(2), part.train(2)
        for m in (2, 3):
            assert len(rows_whole[m]) == len(rows_part[m]) == 2
            for r_whole, r_part in zip(rows_whole[m], rows_part[m]):
                assert r_whole.keys() == r_part.keys()
                for key in r_whole.keys() - {"time/fps"}:  # wall-clock rate: the only row value allowed to differ
                    x, y = r_whole[key], r_part[key]
                    assert x == y or (math.isnan(x) and math.isnan(y)), key
            a, b = whole.snapshot(m), part.snapshot(m)
            assert a.tensors.keys() == b.tensors.keys()
            assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors), m
            assert torch.equal(a.rng, b.rng)
        assert whole.member_info()[3]["recent_returns"] == part.member_info()[3]["recent_returns"]
    finally:
        whole.close()
        part.close()
