"""Export a trained member's actor to ONNX and run it with onnxruntime, carrying (h, c) yourself.

    pip install 'rpbt[export]'
    python examples/export_onnx.py [RUN_DIR]

Trains a small population first (seconds), then writes ``RUN_DIR/actor.onnx`` (the same as ``rpbt export RUN_DIR
--format onnx -o RUN_DIR/actor.onnx``). The ONNX file takes the raw (flattened) observation, the LSTM state (h, c)
and episode_start, normalizes the observation inside, and returns the logits (Discrete) and the new (h, c). Its
actions are checked against ``Policy.predict`` over one episode.
"""

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

import rpbt

SMALL = {"pbt.population_size": 2, "env.num_envs": 2, "agent.num_steps": 32, "agent.num_minibatches": 1,
         "agent.update_epochs": 2, "agent.network.encoder_sizes": [16], "agent.network.lstm_hidden_size": 16,
         "pbt.perturbation_interval": 2, "pbt.burn_in": 2, "run.total_env_steps": 256, "run.progress": False,
         "run.tensorboard": False}


def main(run_dir: str = "runs/examples/export_onnx") -> None:
    run = rpbt.train(overwrite=True, **SMALL, **{"run.dir": run_dir})
    path = rpbt.export(run.dir, Path(run.dir) / "actor.onnx", format="onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    print(f"wrote {path}: inputs {[i.name for i in session.get_inputs()]}, "
          f"outputs {[o.name for o in session.get_outputs()]}")

    policy = rpbt.load_policy(run.dir)
    env = policy.make_env()
    obs, _ = env.reset(seed=0)
    h = np.zeros((policy.num_layers, 1, policy.hidden_size), np.float32)  # (L, batch, H)
    c = np.zeros_like(h)
    start = np.ones(1, np.float32)
    state, steps = None, 0
    while True:
        logits, h, c = session.run(None, {"obs": obs.reshape(1, -1).astype(np.float32), "h": h, "c": c,
                                          "episode_start": start})
        action = int(logits[0].argmax())
        expected, state = policy.predict(obs, state, episode_start=bool(start[0]))
        assert action == int(expected), "the ONNX actor and Policy.predict disagree"
        obs, _, terminated, truncated, _ = env.step(action)
        start[:] = 0.0
        steps += 1
        if terminated or truncated:
            break
    print(f"one episode of {steps} steps: the ONNX actor's actions equal Policy.predict's")


if __name__ == "__main__":
    main(*sys.argv[1:2])
