"""An exact GP with ScaleKernel(RNTKKernel) trains: on real sequences (GunPoint, shipped in aeon)
and, with the mean readout, on variable-length sequences whose target is their mean."""

from __future__ import annotations

import gpytorch
import pytest
import torch
from helpers import random_sequences

from gpytorch_rntk import RNTKKernel, encode_sequences


class SequenceGP(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, readout="last"):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(RNTKKernel(input_dim=1, readout=readout))

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _fit_improves_and_predicts(x, y, readout, steps):
    """Adam on the exact marginal likelihood: the loss stays finite and falls by more than 0.1;
    predictions are finite with positive variances."""
    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = SequenceGP(x, y, likelihood, readout).double()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model.train()
    losses = []
    for _ in range(steps):
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


def test_exact_gp_marginal_likelihood_improves_on_gunpoint():
    aeon_datasets = pytest.importorskip("aeon.datasets")
    series, labels = aeon_datasets.load_gunpoint(split="train")
    series = torch.as_tensor(series[:40, 0, ::5], dtype=torch.float64)  # 40 series, 30 steps
    series = (series - series.mean()) / series.std()
    # Variable lengths: keep the last 20-30 steps of each series.
    lengths = torch.arange(40) % 11 + 20
    x = encode_sequences([s[-t:] for s, t in zip(series, lengths, strict=True)])
    y = torch.as_tensor(labels[:40].astype(float), dtype=torch.float64) * 2 - 3  # classes -> +-1
    _fit_improves_and_predicts(x, y, "last", steps=15)


def test_exact_gp_with_mean_readout():
    seqs = random_sequences([3 + i % 4 for i in range(16)], m=1, seed=12)
    y = torch.stack([s.mean() for s in seqs])
    _fit_improves_and_predicts(encode_sequences(seqs), y, "mean", steps=10)
