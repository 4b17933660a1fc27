"""VarianceGradientScaler against an independent numpy implementation of its formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rpbt.agent.vgs import VarianceGradientScaler


def reference_scales(stream: np.ndarray, beta: float, alpha: float, min_scale: float, warmup: int) -> list[float]:
    """Scales of one (member, tensor) for a stream of gradients (T, ...) computed with float64 numpy."""
    m = np.zeros(stream.shape[1:])
    s = np.zeros(stream.shape[1:])
    out = []
    for t, g in enumerate(stream, start=1):
        m = beta * m + (1 - beta) * g
        s = beta * s + (1 - beta) * g * g
        m_hat = m / (1 - beta**t)
        s_hat = s / (1 - beta**t)
        nu = np.clip((s_hat - m_hat**2) / (s_hat + 1e-38), 0.0, 1.0)
        scale = float(np.clip(1.0 / (1.0 + alpha * nu.mean()), min_scale, 1.0))
        out.append(1.0 if t <= warmup else scale)
    return out


def _stream(rng: np.random.Generator, steps: int, shape: tuple[int, ...], signal: float, noise: float) -> np.ndarray:
    return signal + noise * rng.standard_normal((steps, *shape))


def test_scale_matches_numpy_formula_and_warmup_is_exactly_one():
    rng = np.random.default_rng(0)
    p, steps, warmup = 3, 40, 5
    shapes = {"enc.weight": (p, 4, 6), "head.bias": (p, 2)}
    # member 0 mostly signal, member 1 balanced, member 2 mostly noise
    streams = {
        name: np.stack([_stream(rng, steps, shape[1:], sig, noi) for sig, noi in [(1, 0.1), (1, 1), (0.05, 2)]], 1)
        for name, shape in shapes.items()
    }  # (T, P, ...)
    sizes = {n: torch.Size(s) for n, s in shapes.items()}
    vgs = VarianceGradientScaler(sizes, beta=0.9, alpha=2.0, min_scale=0.2, warmup=warmup)
    ref = {
        name: np.array([[reference_scales(streams[name][:, i], 0.9, 2.0, 0.2, warmup)] for i in range(p)])[:, 0].T
        for name in shapes
    }  # (T, P)
    for t in range(steps):
        raw = {n: torch.tensor(streams[n][t], dtype=torch.float32) for n in shapes}
        grads = {n: g.clone() for n, g in raw.items()}
        metrics = vgs.scale_(grads)
        for n in shapes:
            expected = ref[n][t]
            got = (grads[n] / raw[n]).reshape(p, -1)
            np.testing.assert_allclose(got.numpy(), np.repeat(expected[:, None], got.shape[1], 1), rtol=1e-4)
        exp_scales = np.stack([ref[n][t] for n in shapes])
        np.testing.assert_allclose(metrics["vgs/mean_scale"].numpy(), exp_scales.mean(0), rtol=1e-4)
        np.testing.assert_allclose(metrics["vgs/min_scale"].numpy(), exp_scales.min(0), rtol=1e-4)
        if t < warmup:
            assert torch.equal(grads["enc.weight"], raw["enc.weight"])
            assert torch.equal(metrics["vgs/mean_scale"], torch.ones(p))
    final = metrics["vgs/mean_scale"]
    assert final[0] > 0.95 and final[0] > final[1] > final[2]  # noisier member -> smaller scale
    assert final[2] >= 0.2 - 1e-6


def test_min_scale_bound_and_alpha_zero():
    rng = np.random.default_rng(1)
    for alpha, lo in [(100.0, 0.3), (0.0, 1.0)]:
        vgs = VarianceGradientScaler({"w": torch.Size((1, 50))}, beta=0.9, alpha=alpha, min_scale=0.3, warmup=0)
        for _ in range(30):
            g = torch.tensor(rng.standard_normal((1, 50)), dtype=torch.float32)
            metrics = vgs.scale_({"w": g})
        assert metrics["vgs/min_scale"].item() == pytest.approx(lo)


def test_members_are_independent():
    rng = np.random.default_rng(2)
    steps = 25
    base = rng.standard_normal((steps, 2, 8)) * 0.5 + 1.0
    other = base.copy()
    other[:, 0] = rng.standard_normal((steps, 8)) * 10.0  # only member 0's stream changes
    scales = []
    for stream in (base, other):
        vgs = VarianceGradientScaler({"w": torch.Size((2, 8))}, beta=0.9, warmup=2)
        for t in range(steps):
            m = vgs.scale_({"w": torch.tensor(stream[t], dtype=torch.float32)})
        scales.append(m["vgs/mean_scale"])
    assert scales[0][1].item() == scales[1][1].item()
    assert scales[0][0].item() != scales[1][0].item()


def test_state_dict_round_trip_gives_same_next_scale():
    rng = np.random.default_rng(3)
    shapes = {"lstm.weight_ih_l0": torch.Size((2, 12, 3)), "v.bias": torch.Size((2, 1))}
    a = VarianceGradientScaler(shapes, beta=0.95, warmup=3)
    for _ in range(7):
        a.scale_({n: torch.tensor(rng.standard_normal(tuple(s)), dtype=torch.float32) for n, s in shapes.items()})
    state = a.state_dict()
    assert set(state) == {"m_lstm__weight_ih_l0", "s_lstm__weight_ih_l0", "m_v__bias", "s_v__bias", "step"}
    assert all(v.shape[0] == 2 for v in state.values())
    assert all("." not in k for k in state)
    b = VarianceGradientScaler(shapes, beta=0.95, warmup=3)
    b.load_state_dict(state)
    nxt = {n: torch.tensor(rng.standard_normal(tuple(s)), dtype=torch.float32) for n, s in shapes.items()}
    ga = {n: g.clone() for n, g in nxt.items()}
    gb = {n: g.clone() for n, g in nxt.items()}
    ma, mb = a.scale_(ga), b.scale_(gb)
    for n in shapes:
        assert torch.equal(ga[n], gb[n])
    assert torch.equal(ma["vgs/mean_scale"], mb["vgs/mean_scale"])
    # a freshly built scaler (no state) is still in warm-up and leaves the gradient alone
    c = VarianceGradientScaler(shapes, beta=0.95, warmup=3)
    gc = {n: g.clone() for n, g in nxt.items()}
    c.scale_(gc)
    assert all(torch.equal(gc[n], nxt[n]) for n in shapes)


def test_member_slice_copy_moves_scaler_state():
    """An exploit is an index copy of every buffer: the recipient then scales exactly like the donor."""
    rng = np.random.default_rng(4)
    vgs = VarianceGradientScaler({"w": torch.Size((2, 5))}, beta=0.9, warmup=1)
    for _ in range(6):
        vgs.scale_({"w": torch.tensor(rng.standard_normal((2, 5)) * [[0.1], [3.0]] + 1.0, dtype=torch.float32)})
    for buf in vgs.buffers():
        buf[1] = buf[0]
    g = torch.tensor(np.tile(rng.standard_normal((1, 5)), (2, 1)), dtype=torch.float32)
    m = vgs.scale_({"w": g})
    assert m["vgs/mean_scale"][0].item() == m["vgs/mean_scale"][1].item()
    assert torch.equal(g[0], g[1])


def test_errors():
    with pytest.raises(ValueError):
        VarianceGradientScaler({})
    with pytest.raises(ValueError):
        VarianceGradientScaler({"a": torch.Size((2, 3)), "b": torch.Size((3, 3))})
    with pytest.raises(ValueError):
        VarianceGradientScaler({"a.b": torch.Size((2,)), "a__b": torch.Size((2,))})
    vgs = VarianceGradientScaler({"a": torch.Size((2, 3))})
    with pytest.raises(KeyError):
        vgs.scale_({"zzz": torch.zeros(2, 3)})
    with pytest.raises(ValueError):
        vgs.scale_({"a": torch.zeros(2, 4)})
    assert vgs.scale_({"a": None})["vgs/mean_scale"].tolist() == [1.0, 1.0]


def test_from_config():
    from rpbt.config import VGSConfig

    cfg = VGSConfig(enabled=True, beta=0.5, alpha=3.0, min_scale=0.25, warmup=0)
    vgs = VarianceGradientScaler.from_config(cfg, {"w": torch.Size((1, 2))})
    assert (vgs.beta, vgs.alpha, vgs.min_scale, vgs.warmup) == (0.5, 3.0, 0.25, 0)
