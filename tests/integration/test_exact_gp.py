"""An exact GP with ScaleKernel(RNTKKernel) trains on real sequences (GunPoint, shipped in aeon)."""

from __future__ import annotations

import gpytorch
import pytest
import torch

from gpytorch_rntk import RNTKKernel, encode_sequences

aeon_datasets = pytest.importorskip("aeon.datasets")


class SequenceGP(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(RNTKKernel(input_dim=1))

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def test_exact_gp_marginal_likelihood_improves_on_gunpoint():
    series, labels = aeon_datasets.load_gunpoint(split="train")
    series = torch.as_tensor(series[:40, 0, ::5], dtype=torch.float64)  # 40 series, 30 steps
    series = (series - series.mean()) / series.std()
    # Variable lengths: keep the last 20-30 steps of each series.
    lengths = torch.arange(40) % 11 + 20
    x = encode_sequences([s[-t:] for s, t in zip(series, lengths, strict=True)])
    y = torch.as_tensor(labels[:40].astype(float), dtype=torch.float64) * 2 - 3  # classes -> +-1
    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = SequenceGP(x, y, likelihood).double()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model.train()
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = -mll(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.1
    model.eval()
    with torch.no_grad():
        pred = likelihood(model(x[:5]))
    assert torch.isfinite(pred.mean).all() and (pred.variance > 0).all()
