"""PopulationAdam and per-member gradient clipping against torch's own, member by member."""

from __future__ import annotations

import copy

import torch

from rpbt.agent.optim import PopulationAdam, clip_grad_norm_per_member


def test_population_adam_matches_torch_adam_per_member():
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 4, 5, generator=gen))
    b = torch.nn.Parameter(torch.randn(3, 5, generator=gen))
    lrs = torch.tensor([1e-3, 3e-2, 0.0])
    refs = [(torch.nn.Parameter(w[i].detach().clone()), torch.nn.Parameter(b[i].detach().clone())) for i in range(3)]
    ref_opts = [torch.optim.Adam(list(r), lr=float(lrs[i]), eps=1e-5) for i, r in enumerate(refs)]
    opt = PopulationAdam([("w", w), ("b", b)], population=3, eps=1e-5)
    for _step in range(6):
        gw, gb = torch.randn(3, 4, 5, generator=gen), torch.randn(3, 5, generator=gen)
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step(lrs)
        for i, (rw, rb) in enumerate(refs):
            rw.grad, rb.grad = gw[i].clone(), gb[i].clone()
            ref_opts[i].step()
    for i, (rw, rb) in enumerate(refs):
        torch.testing.assert_close(w[i], rw, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(b[i], rb, atol=1e-6, rtol=1e-5)


def test_grad_clipping_is_per_member_like_torch():
    gen = torch.Generator().manual_seed(1)
    params = [torch.nn.Parameter(torch.zeros(2, 3, 3)), torch.nn.Parameter(torch.zeros(2, 3))]
    params[0].grad = torch.randn(2, 3, 3, generator=gen) * torch.tensor([10.0, 0.01]).view(2, 1, 1)
    params[1].grad = torch.randn(2, 3, generator=gen)
    refs = [[copy.deepcopy(p.grad[i]) for p in params] for i in range(2)]
    max_norm = torch.tensor([0.5, 100.0])
    clip_grad_norm_per_member(params, max_norm)
    for i in range(2):
        ps = [torch.nn.Parameter(torch.zeros_like(g)) for g in refs[i]]
        for p, g in zip(ps, refs[i]):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(ps, float(max_norm[i]))
        for p, ref in zip(params, ps):
            torch.testing.assert_close(p.grad[i], ref.grad)
