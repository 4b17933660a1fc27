"""Tests of the per-member records (rpbt.pbt.records): runner.json's per-member lists round-trip through them."""

from __future__ import annotations

import json
import math

from rpbt.pbt.records import MemberRecord, records_from_state, records_to_state


def test_records_round_trip_through_runner_json_lists():
    members = [MemberRecord(), MemberRecord(exploitation_count=2, score=1.5, faults=1, obs_outliers=3, episode_mark=7)]
    members[0].copied_from(members[1], 1, round_=4)
    members[1].score = math.nan
    state = json.loads(json.dumps(records_to_state(members)))
    assert state == {"lineage": [[{"round": 4, "member": 1}], []], "exploitation_count": [0, 2],
                     "member_faults": [0, 1], "obs_outliers": [0, 3], "scores": [None, None], "episode_marks": [0, 7]}
    back = records_from_state(state, 2)
    assert back[0].lineage == [{"round": 4, "member": 1}] and back[1].episode_mark == 7 and back[1].faults == 1


def test_a_state_without_the_later_lists_reads_as_zeros():
    back = records_from_state({"lineage": [[], []], "exploitation_count": [1, 0]}, 2)
    assert back == [MemberRecord(exploitation_count=1), MemberRecord()]
