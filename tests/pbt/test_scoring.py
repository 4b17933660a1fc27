"""Tests of the score source (rpbt.pbt.scoring): resolved once, training returns since the last exploit."""

from __future__ import annotations

import json

import pytest

from rpbt.pbt.runner import PopulationRunner
from rpbt.pbt.scoring import ScoreSource, own_returns
from tests.conftest import tiny_config


class FakeBackend:
    def evaluate_members(self, members, split):
        assert split == "validation"
        return {m: [float(m), float(m) + 2.0] for m in members}


INFO = {0: {"recent_returns": [1.0, 2.0, 3.0], "episodes": 5}, 1: {"recent_returns": [4.0, 6.0], "episodes": 4}}


def test_own_returns_keeps_the_episodes_finished_since_the_mark():
    assert own_returns(INFO[0], None) == [1.0, 2.0, 3.0]
    assert own_returns(INFO[0], 3) == [2.0, 3.0] and own_returns(INFO[0], 5) == []


def test_training_source_scores_own_returns_and_marks_eligibility():
    source = ScoreSource.from_config(tiny_config("pbt.score_since_exploit=true", "pbt.score_window=2"))
    assert source.kind == "training"
    scored = source.score_round(FakeBackend(), [0, 1], INFO, marks=[4, 0])
    assert scored.scores == [3.0, 5.0] and scored.eligible == [False, True] and scored.validation is None
    assert scored.without({1}).scores == [3.0, None]


def test_validation_source_scores_every_validation_episode():
    source = ScoreSource.from_config(tiny_config("pbt.score_window=1"))
    source.validation = True
    scored = source.score_round(FakeBackend(), [0, 1], INFO)
    assert scored.scores == [pytest.approx(1.0), pytest.approx(2.0)] and scored.returns == scored.validation
    assert scored.own == [[1.0, 2.0, 3.0], [4.0, 6.0]] and scored.eligible is None


@pytest.mark.parametrize("transfer", ["whole_state", "weights_only"])
def test_score_since_exploit_scores_only_the_recipients_own_episodes(tmp_path, transfer):
    # weights_only: the recipient keeps its own episode count and returns, so its mark is its own count
    cfg = tiny_config(f"run.dir={tmp_path / 'r'}", "pbt.score_since_exploit=true", "pbt.score_window=2",
                      "run.total_env_steps=384", f"pbt.transfer={transfer}")
    runner = PopulationRunner(cfg, tmp_path / "r")
    info = {m: {"recent_returns": [1.0, 2.0, 3.0, 4.0], "episodes": 10} for m in range(4)}
    marks = [0, 7, 10, 12]
    assert [own_returns(info[m], marks[m]) for m in range(4)] == [[1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0], [], []]
    runner.start()
    exploited = 0
    while runner.round < runner.total_rounds:
        events = runner.play_round()
        info = runner.backend.member_info()
        for e in events:
            exploited += 1
            # right after the exploit the recipient holds the donor's returns and none of its own
            recipient = runner.members[e["recipient"]]
            assert recipient.episode_mark == info[e["recipient"]]["episodes"] > 0
            assert own_returns(info[e["recipient"]], recipient.episode_mark) == []
    assert exploited, "the tiny config must exploit"
    runner.close()
    events = [json.loads(line) for line in (tmp_path / "r" / "events.jsonl").read_text().splitlines()]
    rounds = {e["round"]: e for e in events if e["type"] == "round"}
    for e in (e for e in events if e["type"] == "exploit"):
        assert e["transfer"] == transfer
        own = rounds[e["round"]]["episodes_since_exploit"]
        assert own[e["donor"]] >= 2 and own[e["recipient"]] >= 2  # both had a full window of their own
    state = json.loads((tmp_path / "r" / "checkpoints" / "runner.json").read_text())
    assert state["episode_marks"] == [record.episode_mark for record in runner.members]


# --------------------------------------------------------------------------------------------- evaluation source

class SeedRecordingCartPole:
    """CartPole that records, per reset, the seed it was given and how many steps the episode took."""

    resets: list = []  # [seed, steps] per reset, in order (class-level: the local backend runs in this process)

    def __new__(cls):
        import gymnasium as gym

        class Env(gym.Wrapper):
            def reset(self, *, seed=None, options=None):
                SeedRecordingCartPole.resets.append([seed, 0])
                self.entry = SeedRecordingCartPole.resets[-1]
                return self.env.reset(seed=seed, options=options)

            def step(self, action):
                self.entry[1] += 1
                return self.env.step(action)

        return Env(gym.make("CartPole-v1"))


def make_recording_cartpole():
    return SeedRecordingCartPole()


def test_evaluation_source_plays_only_held_out_seeds_counts_its_cost_and_scores_their_mean(tmp_path):
    """Training seeds are uint32 (< 2**32), held-out ones 2**32 + uint32: the recorded resets show which envs were
    the evaluation's, and they must be exactly rpbt.seeding.heldout_episode_seeds of each round with ready
    members; CartPole's return is its length, so each round's scores times N sum to the evaluation's env steps."""
    import rpbt
    from rpbt.seeding import HELDOUT_OFFSET, heldout_episode_seeds

    SeedRecordingCartPole.resets.clear()
    N = 3
    run = rpbt.train(tiny_config(f"run.dir={tmp_path / 'r'}", "pbt.score_source=evaluation",
                                 f"pbt.evaluation_episodes={N}", "pbt.burn_in=4", "run.total_env_steps=256"),
                     env_fn=make_recording_cartpole)
    resets = SeedRecordingCartPole.resets
    held = [(s, n) for s, n in resets if s is not None and s >= HELDOUT_OFFSET]
    training = {s for s, _ in resets if s is not None and s < HELDOUT_OFFSET}
    assert training and not training & {s for s, _ in held}
    rounds = [e for e in json.loads("[" + ",".join((run.dir / "events.jsonl").read_text().splitlines()) + "]")
              if e["type"] == "round"]
    # burn_in 4 = round 2: nobody is ready (nor evaluated, nor scored) in round 1; all 4 members in rounds 2 to 4.
    assert rounds[0]["scores"] == [None] * 4 and rounds[0]["evaluation"] == {
        "members": 0, "episodes": 0, "env_steps": 0, "seconds": 0.0}
    expected = [s for r in (2, 3, 4) for s in heldout_episode_seeds(0, r, N) * 4]
    assert sorted(s for s, _ in held) == sorted(expected)
    assert len(set(heldout_episode_seeds(0, 2, N)) & set(heldout_episode_seeds(0, 3, N))) == 0
    steps = 0
    for r, e in enumerate(rounds[1:], start=2):
        cost = e["evaluation"]
        round_seeds = set(heldout_episode_seeds(0, r, N))
        played = sum(n for s, n in held if s in round_seeds)
        assert cost["members"] == 4 and cost["episodes"] == 4 * N and cost["env_steps"] == played
        assert sum(e["scores"]) * N == pytest.approx(played)
        steps += played
    assert run.summary["evaluation"]["env_steps"] == steps and run.summary["evaluation"]["episodes"] == 3 * 4 * N
    with (run.dir / "members" / "0" / "metrics.csv").open() as f:
        import csv

        last = [row for row in csv.DictReader(f)][-1]
    assert float(last["eval/mean_return"]) == pytest.approx(rounds[-1]["scores"][0])


def test_a_custom_score_function_sees_the_round_and_its_scores_are_the_run_s(tmp_path):
    import rpbt
    from rpbt.config import ConfigError

    seen = []

    def score_fn(info):
        seen.append(info)
        return None if info["round"] == 1 else float(info["member"]) * 10.0

    run = rpbt.train(tiny_config(f"run.dir={tmp_path / 'r'}", "pbt.score_source=evaluation",
                                 "pbt.evaluation_episodes=2"), score_fn=score_fn)
    assert [(i["round"], i["member"]) for i in seen] == [(r, m) for r in (1, 2, 3) for m in range(4)]
    first = seen[0]
    assert set(first) == {"member", "round", "env_steps", "updates", "hparams", "training_returns",
                          "evaluation_returns", "evaluation_lengths", "source_score"}
    assert len(first["evaluation_returns"]) == 2 and first["source_score"] == pytest.approx(
        sum(first["evaluation_returns"]) / 2)
    assert len(first["evaluation_lengths"]) == 2 and all(n >= 1 for n in first["evaluation_lengths"])
    events = [json.loads(x) for x in (run.dir / "events.jsonl").read_text().splitlines()]
    rounds = [e for e in events if e["type"] == "round"]
    assert rounds[0]["scores"] == [None] * 4 and rounds[1]["scores"] == [0.0, 10.0, 20.0, 30.0]
    assert run.summary["best_member"] == 3
    assert events[0]["score_fn"].endswith("score_fn")
    # A run scored by a score_fn is not resumed without it (the command line cannot pass one).
    with pytest.raises(ConfigError, match="custom score function"):
        rpbt.resume(run.dir, overrides=["run.total_env_steps=256"])
    assert rpbt.resume(run.dir, overrides=["run.total_env_steps=256"], score_fn=score_fn).summary["round"] == 4
    with pytest.raises(ValueError, match="expected a finite number or None"):
        rpbt.train(tiny_config(f"run.dir={tmp_path / 'bad'}"), score_fn=lambda info: "high")


def test_a_score_function_may_return_numpy_scalars_but_not_booleans(tmp_path):
    """np.float32(np.mean(returns)) is a number: it scores as its float; True / np.bool_ are refused as before."""
    import numpy as np

    import rpbt

    run = rpbt.train(tiny_config(f"run.dir={tmp_path / 'np'}"),
                     score_fn=lambda info: np.float32(0.25 * info["member"]) if info["member"] % 2 else np.int64(1))
    assert run.summary["scores"] == [1.0, 0.25, 1.0, 0.75]
    for flag in (True, np.bool_(True)):
        with pytest.raises(ValueError, match="expected a finite number or None"):
            rpbt.train(tiny_config(f"run.dir={tmp_path / 'flag'}"), score_fn=lambda info, f=flag: f, overwrite=True)


def test_evaluation_scores_are_the_same_on_the_process_backend(tmp_path):
    """The held-out episodes run in the shards (EvaluateEpisodes): the same seeds give the same scores and cost."""
    import rpbt

    runs = [rpbt.train(tiny_config(f"run.dir={tmp_path / kind}", "pbt.score_source=evaluation",
                                   "pbt.evaluation_episodes=2", f"backend.kind={kind}",
                                   *(["backend.num_workers=2"] if kind == "process" else [])))
            for kind in ("local", "process")]
    rounds = [[e for e in map(json.loads, (r.dir / "events.jsonl").read_text().splitlines()) if e["type"] == "round"]
              for r in runs]
    assert [e["scores"] for e in rounds[0]] == [e["scores"] for e in rounds[1]]
    assert [e["evaluation"]["env_steps"] for e in rounds[0]] == [e["evaluation"]["env_steps"] for e in rounds[1]]
    assert rounds[0][-1]["evaluation"]["members"] == 4
