"""The geometric readout (a learnable ``readout_decay``) and per-channel input variances (ARD) as
kernel hyperparameters: their limits, gradients, GPyTorch conventions and refusals. Values
against the reference loop: ``tests/engines/test_conformance.py`` (geometric) and below (ARD);
against finite networks: ``tests/oracles/test_montecarlo_readout_ard.py``."""

from __future__ import annotations

import gpytorch
import pytest
import torch
from helpers import random_batch
from reference import reference_gram

from gpytorch_rntk import RNNGPKernel, RNTKKernel
from gpytorch_rntk.functional import RecurrentVariances, recurrent_kernel, recurrent_kernel_diag
from gpytorch_rntk.layout import split_layout

HYPER = dict(recurrent_var=1.3, input_var=0.8, bias_var=0.2)


def _values(seqs, dtype):
    values = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True).to(dtype)
    return values, torch.tensor([len(s) for s in seqs])


@pytest.mark.parametrize("engine", ["tensor", "compiled"])
def test_decay_one_is_the_mean_readout(dtype, engine, monkeypatch):
    """``readout_decay = 1`` weights every step alike: the mean readout, in each engine that
    runs both (the compiled loop eagerly here)."""
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    seqs, _ = random_batch([5, 1, 3, 4], m=2, seed=1)
    values, lengths = _values(seqs, dtype)
    mean = recurrent_kernel(
        values, lengths, values, lengths, RecurrentVariances(**HYPER), readout="mean"
    )
    geometric = recurrent_kernel(
        values,
        lengths,
        values,
        lengths,
        RecurrentVariances(**HYPER, readout_decay=1.0),
        readout="geometric",
        engine=engine,
    )
    tol = 1e-14 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(geometric, mean, rtol=tol, atol=tol * mean.abs().max().item())


def test_small_decay_approaches_the_last_readout():
    """As ``readout_decay -> 0`` only the last step is read: the difference shrinks like the
    decay (each earlier step's weight)."""
    seqs, _ = random_batch([5, 2, 3, 4], m=2, seed=2)
    values, lengths = _values(seqs, torch.float64)
    last = recurrent_kernel(values, lengths, values, lengths, RecurrentVariances(**HYPER))
    gaps = []
    for decay in (1e-2, 1e-4, 1e-6):
        variances = RecurrentVariances(**HYPER, readout_decay=decay)
        got = recurrent_kernel(values, lengths, values, lengths, variances, readout="geometric")
        gaps.append(((got - last).abs().max() / last.abs().max()).item())
    assert gaps[0] < 0.1
    assert gaps[1] < 2e-2 * gaps[0] and gaps[2] < 2e-2 * gaps[1]  # linear in the decay


def test_decay_gradcheck():
    """``torch.autograd.gradcheck`` of the Gram matrix and its diagonal in the decay and the
    variances (float64, tensor engine), sequences of different lengths."""
    seqs, _ = random_batch([4, 1, 3], m=2, seed=3)
    values, lengths = _values(seqs, torch.float64)

    def gram(decay, recurrent_var):
        variances = RecurrentVariances(recurrent_var, 0.8, 0.2, 0.0, decay)
        return recurrent_kernel(
            values, lengths, values[:2], lengths[:2], variances, readout="geometric"
        )

    def diagonal(decay):
        variances = RecurrentVariances(1.3, 0.8, 0.2, 0.0, decay)
        return recurrent_kernel_diag(values, lengths, variances, readout="geometric")

    decay = torch.tensor(0.55, dtype=torch.float64, requires_grad=True)
    recurrent_var = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gram, (decay, recurrent_var))
    assert torch.autograd.gradcheck(diagonal, (decay,))


@pytest.mark.parametrize("decay", [0.0, -0.5, 1.5, float("nan")])
def test_invalid_decay_is_refused(decay):
    seqs, _ = random_batch([3, 2], m=1, seed=4)
    values, lengths = _values(seqs, torch.float64)
    variances = RecurrentVariances(**HYPER, readout_decay=decay)
    with pytest.raises(ValueError, match=r"readout_decay must be in \(0, 1\]"):
        recurrent_kernel(values, lengths, values, lengths, variances, readout="geometric")


@pytest.mark.parametrize("readout", ["last", "mean"])
def test_decay_without_the_geometric_readout_is_refused(readout):
    """A decay other than 1 with a readout that has none is an error, not ignored."""
    seqs, _ = random_batch([3, 2], m=1, seed=4)
    values, lengths = _values(seqs, torch.float64)
    variances = RecurrentVariances(**HYPER, readout_decay=0.5)
    with pytest.raises(ValueError, match="readout_decay is the geometric readout's"):
        recurrent_kernel(values, lengths, values, lengths, variances, readout=readout)
    with pytest.raises(ValueError, match="readout_decay is the geometric readout's"):
        recurrent_kernel_diag(values, lengths, variances, readout=readout)


def test_readout_decay_hyperparameter():
    """``readout="geometric"`` adds ``readout_decay`` (raw parameter, ``Interval(0, 1)``
    constraint, optional prior; default 0.9); the other readouts have none and refuse its
    prior or constraint."""
    kernel = RNTKKernel(input_dim=2, readout="geometric")
    assert isinstance(kernel.raw_readout_decay_constraint, gpytorch.constraints.Interval)
    torch.testing.assert_close(kernel.readout_decay, torch.tensor([[0.9]]))
    kernel.readout_decay = 0.3
    torch.testing.assert_close(kernel.readout_decay, torch.tensor([[0.3]]))
    prior = gpytorch.priors.UniformPrior(0.05, 0.999)
    kernel = RNNGPKernel(input_dim=2, readout="geometric", readout_decay_prior=prior)
    assert "readout_decay_prior" in [name for name, *_ in kernel.named_priors()]
    assert not hasattr(RNTKKernel(input_dim=2), "raw_readout_decay")
    with pytest.raises(ValueError, match="need readout='geometric'"):
        RNTKKernel(input_dim=2, readout="mean", readout_decay_prior=prior)


def test_readout_decay_is_learned_by_the_marginal_likelihood():
    """Targets that depend on the last step only: maximising an exact GP's marginal likelihood
    over the decay (started at 0.9) moves it down, towards the last readout; targets that are
    the series' mean move it up, towards the mean readout."""
    seqs, x = random_batch([12] * 24, m=1, seed=5)
    fitted = {}
    for name, target in (
        ("last", lambda s: s[-1, 0]),
        ("mean", lambda s: s[:, 0].mean()),
    ):
        y = torch.stack([target(s) for s in seqs])
        y = (y - y.mean()) / y.std()
        kernel = gpytorch.kernels.ScaleKernel(RNTKKernel(input_dim=1, readout="geometric"))
        likelihood = gpytorch.likelihoods.GaussianLikelihood()
        model = _ExactGP(x, y, likelihood, kernel).double()
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
        for _ in range(40):
            optimizer.zero_grad()
            loss = -mll(model(x.double()), y.double())
            loss.backward()
            optimizer.step()
        fitted[name] = model.covar_module.base_kernel.readout_decay.item()
    assert fitted["last"] < 0.8 < 0.95 < fitted["mean"], fitted


class _ExactGP(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, kernel):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = kernel

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


# ---------------------------------------------------------------------------------------------
# Per-channel input variances (ARD)
# ---------------------------------------------------------------------------------------------

CHANNELS = [2.0, 0.5, 1.25]


@pytest.mark.parametrize("readout", ["last", "mean", "geometric"])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_ard_matches_the_reference(num_layers, readout, dtype):
    """The ARD kernel equals the reference loop of a network whose first layer's input weights
    of channel ``c`` have variance ``input_var[c]`` (the layers above their mean)."""
    seqs, x = random_batch([4, 1, 3, 3], m=3, seed=6)
    kernel = RNTKKernel(input_dim=3, num_layers=num_layers, readout=readout, ard_num_dims=3)
    kernel = kernel.to(dtype)
    values = dict(HYPER, input_var=torch.tensor(CHANNELS, dtype=dtype))
    decay = {"readout_decay": 0.625} if readout == "geometric" else {}
    kernel.initialize(**values, **decay)
    with torch.no_grad():
        got = kernel(x.to(dtype)).to_dense()
    expected = reference_gram(
        seqs,
        seqs,
        num_layers=num_layers,
        nonlinearity="relu",
        readout=readout,
        **dict(HYPER, input_var=CHANNELS),
        **decay,
    )
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    assert ((got.double() - expected).abs().max() / expected.abs().max()).item() < tol


def test_equal_channel_variances_give_the_kernel_without_ard():
    """ARD with every channel at ``v`` is the kernel with ``input_var = v`` (all depths)."""
    _, x = random_batch([5, 2, 4], m=2, seed=7)
    for num_layers in (1, 3):
        plain = RNTKKernel(input_dim=2, num_layers=num_layers).double()
        ard = RNTKKernel(input_dim=2, num_layers=num_layers, ard_num_dims=2).double()
        plain.initialize(input_var=0.7)
        ard.initialize(input_var=torch.full((1, 2), 0.7, dtype=torch.float64))
        torch.testing.assert_close(ard(x).to_dense(), plain(x).to_dense(), rtol=1e-14, atol=0)


def test_ard_gradcheck_and_diag():
    """Gradients for each channel's variance (``gradcheck`` of the Gram matrix in the raw
    parameter, float64), and ``diag=True`` equal to the Gram matrix's diagonal."""
    _, x = random_batch([4, 2, 3], m=3, seed=8)
    x = x.double()
    kernel = RNTKKernel(input_dim=3, num_layers=2, readout="geometric", ard_num_dims=3).double()
    kernel.initialize(input_var=torch.tensor(CHANNELS, dtype=torch.float64))
    raw = kernel.raw_input_var.detach().clone().requires_grad_()

    def gram(raw_input_var):
        scale = kernel.raw_input_var_constraint.transform(raw_input_var)
        values = RecurrentVariances(
            kernel.recurrent_var,
            scale.mean(-1, keepdim=True),
            kernel.bias_var,
            0.0,
            kernel.readout_decay,
        )
        steps, lengths = split_layout(x, 3, True)
        steps = steps * (scale / scale.mean(-1, keepdim=True)).sqrt().unsqueeze(-2)
        return recurrent_kernel(
            steps, lengths, steps, lengths, values, num_layers=2, readout="geometric"
        )

    assert torch.autograd.gradcheck(gram, (raw,))
    # the kernel's own path gives the same values and gradient as the function above
    torch.testing.assert_close(kernel(x).to_dense(), gram(raw), rtol=1e-14, atol=0)
    (kernel(x).to_dense() ** 2).sum().backward()
    (expected,) = torch.autograd.grad((gram(raw) ** 2).sum(), raw)
    torch.testing.assert_close(kernel.raw_input_var.grad, expected, rtol=1e-12, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(
            kernel(x, diag=True), kernel(x).to_dense().diagonal(), rtol=1e-13, atol=0
        )


def test_ard_shapes_and_refusals():
    kernel = RNTKKernel(input_dim=3, ard_num_dims=3, batch_shape=torch.Size([2]))
    assert kernel.input_var.shape == (2, 1, 3)
    _, x = random_batch([3, 2], m=3, seed=9)
    assert kernel(x).to_dense().shape == (2, 2, 2)
    assert "ard_num_dims=3" in repr(kernel)
    with pytest.raises(ValueError, match="ard_num_dims must be input_dim = 3"):
        RNTKKernel(input_dim=3, ard_num_dims=2)
    fused = RNTKKernel(input_dim=3, ard_num_dims=3, engine="compiled")
    with pytest.raises(ValueError, match="cannot learn per-channel input variances"):
        fused(x).to_dense()
    with torch.no_grad():  # predictions need no gradient: the compiled engine computes them
        assert torch.isfinite(fused(x).to_dense()).all()
