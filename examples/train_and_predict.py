"""Train a small population with the Python API, load its best member and act with it in your own loop.

    python examples/train_and_predict.py [RUN_DIR]

Seconds on a laptop CPU: a population of 4 on POPGym's position-only CartPole for 2,048 env steps per member (far
too few to learn the task; raise ``run.total_env_steps`` for a real run). ``Policy.predict`` has the meaning of
Stable-Baselines3's ``RecurrentPPO.predict``: pass back the state it returned, and ``episode_start=True`` with an
episode's first observation.
"""

import sys

import numpy as np

import rpbt

SMALL = {
    "pbt.population_size": 4,
    "pbt.perturbation_interval": 2,
    "pbt.burn_in": 2,
    "env.num_envs": 4,
    "agent.num_steps": 64,
    "agent.num_minibatches": 2,
    "agent.update_epochs": 2,
    "agent.network.encoder_sizes": [32],
    "agent.network.lstm_hidden_size": 32,
    "run.total_env_steps": 2_048,
    "run.progress": False,
    "run.tensorboard": False,
}


def main(run_dir: str = "runs/examples/train_and_predict") -> None:
    run = rpbt.train(overwrite=True, **SMALL, **{"run.dir": run_dir})
    print(f"trained {run.dir}: best member {run.best_member}, score {run.best_score}")

    policy = rpbt.load_policy(run.dir)  # the best member: one policy, no population dimension
    env = policy.make_env()  # the run's environment, made as training and evaluation make it
    returns = []
    for episode in range(3):
        obs, _ = env.reset(seed=episode)
        state, start, rewards = None, True, []
        while True:
            action, state = policy.predict(obs, state, episode_start=start, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            rewards.append(reward)
            start = False
            if terminated or truncated:
                break
        returns.append(float(np.sum(rewards)))
    print(f"deterministic returns of member {policy.member}: {[round(r, 3) for r in returns]}")

    report = rpbt.evaluate(run.dir, episodes=5)  # as `rpbt evaluate RUN_DIR --episodes 5`
    print(f"rpbt evaluate: mean return {report['mean_return']:.3f} over {report['episodes']} episodes")


if __name__ == "__main__":
    main(*sys.argv[1:2])
