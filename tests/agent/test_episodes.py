"""rpbt.agent.episodes: the ring of each member's last C episode returns and lengths."""

from __future__ import annotations

import numpy as np
from torch import nn

from rpbt.agent.episodes import recent_values, record_episodes, register_episode_ring


def test_ring_keeps_the_last_capacity_episodes_per_member_oldest_first():
    m = nn.Module()
    register_episode_ring(m, 2, 3)
    record_episodes(m.episodes, m.episode_returns, m.episode_lengths,
                    [(0, 1.0, 10), (1, -1.0, 5), (0, 2.0, 11), (0, 3.0, 12), (0, 4.0, 13)])
    assert m.episodes.tolist() == [4, 1]
    np.testing.assert_array_equal(recent_values(m.episode_returns, m.episodes, 0), [2.0, 3.0, 4.0])
    np.testing.assert_array_equal(recent_values(m.episode_lengths, m.episodes, 0, 2), [12.0, 13.0])
    np.testing.assert_array_equal(recent_values(m.episode_returns, m.episodes, 1), [-1.0])
    record_episodes(m.episodes, m.episode_returns, m.episode_lengths, [])
    assert m.episodes.tolist() == [4, 1]
