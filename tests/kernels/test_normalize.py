"""``normalize=True``: ``k(x, x') / sqrt(k(x, x) k(x', x'))`` on both kernels, every readout,
``diag=True``, gradients, and the engines."""

from __future__ import annotations

import pytest
import torch
from helpers import random_batch

from gpytorch_rntk import RNNGPKernel, RNTKKernel, encode_sequences

READOUTS = ["last", "mean", "geometric"]


def _pair(readout, cls=RNTKKernel, dtype=torch.float64, **options):
    plain = cls(input_dim=2, readout=readout, **options).to(dtype)
    normalized = cls(input_dim=2, readout=readout, normalize=True, **options).to(dtype)
    return plain, normalized


@pytest.mark.parametrize("cls", [RNTKKernel, RNNGPKernel])
@pytest.mark.parametrize("readout", READOUTS)
def test_normalized_gram(readout, cls, dtype):
    """``K(x, x)``, ``K(x, z)`` and the paired diagonal of the normalised kernel are the plain
    kernel's entries divided by the square roots of the two self terms; the diagonal of ``K(x,
    x)`` is exactly 1 and the matrix is positive semi-definite."""
    _, x = random_batch([6, 1, 4, 3, 6], m=2, seed=1)
    _, z = random_batch([2, 5, 6], m=2, seed=2, max_len=6)
    x, z = x.to(dtype), z.to(dtype)
    plain, normalized = _pair(readout, cls, dtype, initial_state="per_input")
    with torch.no_grad():
        joint = plain(torch.cat([x, z])).to_dense()
        scale = joint.diagonal().rsqrt()
        expected = joint * scale.unsqueeze(-1) * scale.unsqueeze(-2)
        gram = normalized(x).to_dense()
        cross = normalized(x, z).to_dense()
        rows = normalized(x[:3], z, diag=True)
        selves = normalized(x, diag=True)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-6)
    torch.testing.assert_close(gram, expected[:5, :5], **tol)
    torch.testing.assert_close(cross, expected[:5, 5:], **tol)
    torch.testing.assert_close(rows, expected[:3, 5:].diagonal(), **tol)
    assert torch.equal(selves, torch.ones(5, dtype=dtype))
    torch.testing.assert_close(gram.diagonal(), torch.ones(5, dtype=dtype), **tol)
    assert torch.linalg.eigvalsh(gram.double()).min() > -1e-6


def test_normalized_gradients():
    """``gradcheck`` of the normalised Gram matrix (float64) in the variances and in the
    sequences, through the kernel."""
    _, x = random_batch([4, 2, 3], m=2, seed=3)
    _, z = random_batch([3, 4], m=2, seed=4, max_len=4)
    kernel = RNTKKernel(input_dim=2, normalize=True, nonlinearity="erf").double()
    raw = kernel.raw_recurrent_var.detach().clone().requires_grad_()

    dense = _Dense(kernel)

    def by_variance(raw_recurrent_var):
        parameters = {"kernel.raw_recurrent_var": raw_recurrent_var}
        return torch.func.functional_call(dense, parameters, (x.double(), z.double()))

    assert (by_variance(raw + 0.3) - by_variance(raw)).abs().max() > 1e-3  # (it is a function)
    assert torch.autograd.gradcheck(by_variance, (raw,))
    values = z.double()[:, :8].clone().requires_grad_()  # the steps of z (not its lengths)

    def by_sequence(steps):
        return kernel(x.double(), torch.cat([steps, z.double()[:, 8:]], -1)).to_dense()

    assert torch.autograd.gradcheck(by_sequence, (values,))


class _Dense(torch.nn.Module):
    def __init__(self, kernel):
        super().__init__()
        self.kernel = kernel

    def forward(self, x1, x2):
        return self.kernel(x1, x2).to_dense()


def test_normalized_compiled_engine(monkeypatch):
    """The compiled engine (its loop run eagerly) gives the same normalised Gram matrix."""
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    _, x = random_batch([5, 2, 4, 4], m=2, seed=5)
    tensor = RNTKKernel(input_dim=2, normalize=True, readout="mean").double()
    compiled = RNTKKernel(input_dim=2, normalize=True, readout="mean", engine="compiled")
    compiled = compiled.double()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x).to_dense(), tensor(x).to_dense(), rtol=1e-13, atol=0)


def test_normalized_prior_variance_is_one_at_every_scale():
    """Sequences of any length and size have prior variance 1 (the plain ReLU kernel's grows
    with both)."""
    gen = torch.Generator().manual_seed(6)
    seqs = [scale * torch.randn(t, 2, generator=gen) for scale, t in ((0.1, 3), (10.0, 30))]
    x = encode_sequences(seqs).double()
    plain, normalized = _pair("last")
    with torch.no_grad():
        assert plain(x, diag=True)[1] > 100 * plain(x, diag=True)[0]
        torch.testing.assert_close(
            normalized(x).to_dense().diagonal(), torch.ones(2, dtype=torch.float64)
        )


def test_normalize_must_be_a_bool():
    with pytest.raises(TypeError, match="normalize must be True or False"):
        RNTKKernel(input_dim=1, normalize="yes")
    assert "normalize=True" in repr(RNTKKernel(input_dim=1, normalize=True))
