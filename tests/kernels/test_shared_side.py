"""A side repeated across the batch (GPyTorch's posterior on a batch of candidates against the
training inputs) is computed as one unbatched Gram matrix: the same values and gradients as the
batched computation, which it replaces."""

from __future__ import annotations

import pytest
import torch

from gpytorch_rntk import RNTKKernel, encode_sequences
from gpytorch_rntk.kernels import RNNGPKernel


def _inputs(dtype, device, n=6, b=4, q=2):
    gen = torch.Generator().manual_seed(0)
    seqs = [
        torch.randn(int(t), 2, generator=gen)
        for t in torch.randint(1, 6, (n + b * q,), generator=gen)
    ]
    x = encode_sequences(seqs, max_len=5).to(device=device, dtype=dtype)
    return x[:n], x[n:].view(b, q, -1)


@pytest.mark.parametrize("kernel_cls", [RNTKKernel, RNNGPKernel])
@pytest.mark.parametrize("readout", ["last", "mean"])
def test_repeated_side_equals_the_batched_gram(kernel_cls, readout, dtype, device, monkeypatch):
    train, cand = _inputs(dtype, device)
    kernel = kernel_cls(2, readout=readout, bidirectional=True).to(device=device, dtype=dtype)
    repeated = train.expand(len(cand), *train.shape)
    calls = []
    forward = kernel_cls.forward
    monkeypatch.setattr(
        kernel_cls,
        "forward",
        lambda self, a, b, **kw: calls.append(a.shape) or forward(self, a, b, **kw),
    )
    cand = cand.clone().requires_grad_()
    got = kernel.forward(cand, repeated)
    assert calls[-1] == (len(cand) * cand.shape[1], train.shape[-1])  # one unbatched Gram
    expected = torch.stack([forward(kernel, c, train) for c in cand])
    # the same pairs; the mean readout's sums may be ordered differently (a few ulps)
    eps = 10 * torch.finfo(dtype).eps
    torch.testing.assert_close(got, expected, rtol=eps, atol=eps * expected.abs().max().item())
    # the other way round, and the gradient for the candidates
    torch.testing.assert_close(
        kernel.forward(repeated, cand), expected.transpose(-1, -2), rtol=eps, atol=eps
    )
    (grad,) = torch.autograd.grad(got.square().sum(), cand)
    (reference,) = torch.autograd.grad(expected.square().sum(), cand)
    torch.testing.assert_close(grad, reference)


def test_sides_that_differ_across_the_batch_stay_batched(dtype, device):
    train, cand = _inputs(dtype, device)
    kernel = RNTKKernel(2).to(device=device, dtype=dtype)
    other = train.expand(len(cand), *train.shape).clone()
    other[1, 0, 1] += 1.0  # one batch's training set differs
    got = kernel.forward(cand, other)
    expected = torch.stack([kernel.forward(c, o) for c, o in zip(cand, other, strict=True)])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_posterior_of_a_batch_of_candidates(dtype, device):
    botorch = pytest.importorskip("botorch")
    from gpytorch_rntk.botorch import sequence_gp

    del botorch
    train, cand = _inputs(torch.float64, device)
    y = train[:, 1:2].clone()
    model = sequence_gp(train, y, input_dim=2)
    model.eval()
    with torch.no_grad():
        batched = model.posterior(cand)
        single = [model.posterior(c) for c in cand]
    torch.testing.assert_close(batched.mean, torch.stack([p.mean for p in single]))
    torch.testing.assert_close(batched.variance, torch.stack([p.variance for p in single]))
