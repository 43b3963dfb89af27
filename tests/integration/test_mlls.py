"""CholeskyMarginalLogLikelihood: GPyTorch's value and gradients, by the covariance's gradient
written down."""

from __future__ import annotations

import gpytorch
import pytest
import torch

from gpytorch_rntk import RNTKKernel, encode_sequences
from gpytorch_rntk.mlls import CholeskyMarginalLogLikelihood, _GaussianLogProb


class SequenceGP(gpytorch.models.ExactGP):
    def __init__(self, x, y, engine: str):
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ConstantMean()
        prior = gpytorch.priors.GammaPrior(2.0, 1.0)
        kernel = RNTKKernel(input_dim=2, num_layers=2, engine=engine)
        self.covar_module = gpytorch.kernels.ScaleKernel(kernel, outputscale_prior=prior)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _loss_and_gradients(model, mll_class, x, y):
    model.zero_grad()
    loss = -mll_class(model.likelihood, model)(model(x), y)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("engine", ["tensor", "fused"])
def test_equals_gpytorch(engine, dtype, device, monkeypatch):
    """Loss and every hyperparameter's gradient (the kernel's variances, the output scale with
    its prior, the noise, the mean), against GPyTorch's exact marginal likelihood."""
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")  # the fused engine's loop, run eagerly
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 9, (20,), generator=gen)
    x = encode_sequences([torch.randn(int(t), 2, generator=gen) for t in lengths])
    x, y = x.to(device, dtype), torch.randn(20, generator=gen).to(device, dtype)
    model = SequenceGP(x, y, engine).to(device, dtype)
    model.covar_module.base_kernel.recurrent_var = 1.3
    model.train()
    expected, expected_grads = _loss_and_gradients(
        model, gpytorch.mlls.ExactMarginalLogLikelihood, x, y
    )
    got, grads = _loss_and_gradients(model, CholeskyMarginalLogLikelihood, x, y)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got, expected, **tol)
    assert grads.keys() == expected_grads.keys() and len(grads) == 6
    for name, grad in expected_grads.items():
        assert grad.abs().max() > 0, name  # every gradient is exercised
        torch.testing.assert_close(grads[name], grad, **tol, msg=name)


def test_gradients_gradcheck(device):
    """The written-down gradients against finite differences, batched (float64)."""
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(2, 6, 6, generator=gen, dtype=torch.float64)
    covariance = (a @ a.mT + 6 * torch.eye(6, dtype=torch.float64)).to(device)
    diff = torch.randn(2, 6, generator=gen, dtype=torch.float64).to(device)

    def log_prob(diff, covariance):  # a symmetric perturbation of K stays a covariance
        return _GaussianLogProb.apply(diff, (covariance + covariance.mT) / 2)

    inputs = (diff.requires_grad_(), covariance.requires_grad_())
    assert torch.autograd.gradcheck(log_prob, inputs)
    torch.testing.assert_close(
        _GaussianLogProb.apply(diff, covariance),
        torch.distributions.MultivariateNormal(torch.zeros_like(diff), covariance).log_prob(diff),
    )


def test_falls_back_where_gpytorch_does_not_factorise(device):
    """Above ``max_cholesky_size`` GPyTorch estimates the log determinant iteratively (a value
    that differs from the exact one), and so does this class."""
    gen = torch.Generator().manual_seed(2)
    x = encode_sequences([torch.randn(5, 2, generator=gen) for _ in range(12)]).to(device)
    y = torch.randn(12, generator=gen).to(device)
    model = SequenceGP(x, y, "tensor").to(device)
    model.train()
    exact = -CholeskyMarginalLogLikelihood(model.likelihood, model)(model(x), y).item()
    losses = []
    # (importing BoTorch switches GPyTorch's iterative log_prob off for the whole process)
    with gpytorch.settings.max_cholesky_size(4), gpytorch.settings.fast_computations(log_prob=True):
        for cls in (gpytorch.mlls.ExactMarginalLogLikelihood, CholeskyMarginalLogLikelihood):
            torch.manual_seed(3)  # the same probe vectors for both
            losses.append(-cls(model.likelihood, model)(model(x), y).item())
    assert losses[0] == losses[1] and losses[0] != exact


def test_second_derivatives_raise():
    """create_graph=True raises instead of treating d log p / dK as a constant."""
    gen = torch.Generator().manual_seed(3)
    x = encode_sequences([torch.randn(int(t), 2, generator=gen) for t in (3, 5, 4, 6)]).double()
    y = torch.randn(4, generator=gen, dtype=torch.float64)
    model = SequenceGP(x, y, "tensor").double()
    loss = -CholeskyMarginalLogLikelihood(model.likelihood, model)(model(x), y)
    with pytest.raises(RuntimeError, match="first derivatives only"):
        torch.autograd.grad(loss, model.covar_module.raw_outputscale, create_graph=True)


def test_fits_with_botorch():
    """A drop-in for BoTorch's fit_gpytorch_mll: the same fitted hyperparameters as GPyTorch's
    exact marginal likelihood (float64, L-BFGS-B from the same start)."""
    from botorch.fit import fit_gpytorch_mll

    from gpytorch_rntk.botorch import sequence_gp

    gen = torch.Generator().manual_seed(4)
    lengths = torch.randint(3, 9, (20,), generator=gen)
    x = encode_sequences([torch.randn(int(t), 1, generator=gen) for t in lengths]).double()
    y = x[:, 1:].sum(-1, keepdim=True).sin() + 0.1 * torch.randn(20, 1, generator=gen).double()
    fitted = []
    for cls in (gpytorch.mlls.ExactMarginalLogLikelihood, CholeskyMarginalLogLikelihood):
        # (ReLU: with erf both fits end with recurrent_var at its upper bound, where the raw
        # parameter's sigmoid is flat, and stop at raw values 12.76 and 12.67 with MLLs equal
        # to 5e-8: a tie of the optimiser, not a difference of the two MLLs)
        model = sequence_gp(x, y, input_dim=1, nonlinearity="relu")
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        fit_gpytorch_mll(cls(model.likelihood, model))
        params = dict(model.named_parameters())
        assert any((params[n] - p).abs().max() > 1e-3 for n, p in start.items())  # it moved
        fitted.append(params)
    for name, param in fitted[0].items():
        torch.testing.assert_close(fitted[1][name], param, rtol=1e-5, atol=1e-6, msg=name)
