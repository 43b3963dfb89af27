"""SequenceVariationalGP: learnable inducing sequences with fixed lengths, mini-batch ELBO."""

from __future__ import annotations

import gpytorch
import pytest
import torch

from gpytorch_rntk import encode_sequences
from gpytorch_rntk.models import SequenceVariationalGP, inducing_sequences

aeon_datasets = pytest.importorskip("aeon.datasets")


def gunpoint(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    series, labels = aeon_datasets.load_gunpoint(split=split)
    series = torch.as_tensor(series[:, 0, ::6], dtype=torch.float64)  # 25 steps
    series = (series - series.mean()) / series.std()
    lengths = torch.arange(len(series)) % 11 + 15  # keep the last 15-25 steps
    x = encode_sequences([s[-t:] for s, t in zip(series, lengths, strict=True)])
    return x, torch.as_tensor(labels.astype(float), dtype=torch.float64) * 2 - 3


def test_inducing_sequences_span_the_lengths():
    x, _ = gunpoint("train")
    z = inducing_sequences(x, 5)
    assert z[:, 0].tolist() == sorted(z[:, 0].tolist())
    assert z[0, 0] == x[:, 0].min() and z[-1, 0] == x[:, 0].max()
    with pytest.raises(ValueError, match="num_inducing"):
        inducing_sequences(x, 0)


def test_minibatch_training_improves_elbo_and_keeps_inducing_lengths():
    torch.manual_seed(0)
    x, y = gunpoint("train")
    x_test, y_test = gunpoint("test")
    inducing = inducing_sequences(x, 12)
    model = SequenceVariationalGP(inducing, input_dim=1).double()
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    mll = gpytorch.mlls.VariationalELBO(likelihood, model, num_data=len(y))
    optimizer = torch.optim.Adam([*model.parameters(), *likelihood.parameters()], lr=0.05)

    def held_out_rmse():
        model.eval()
        with torch.no_grad():
            rmse = (likelihood(model(x_test)).mean - y_test).square().mean().sqrt().item()
        model.train()
        return rmse

    rmse_before = held_out_rmse()
    epoch_losses = []
    for _ in range(4):
        losses = []
        for batch in torch.randperm(len(y)).split(10):
            optimizer.zero_grad()
            loss = -mll(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        epoch_losses.append(sum(losses) / len(losses))
    learned = model.variational_strategy.inducing_points
    assert epoch_losses[-1] < epoch_losses[0]
    assert held_out_rmse() < rmse_before
    torch.testing.assert_close(learned[:, 0], inducing[:, 0], rtol=0, atol=0)  # lengths fixed
    assert not torch.equal(learned[:, 1:], inducing[:, 1:])  # values learned


def test_inducing_lengths_survive_weight_decay():
    """AdamW shrinks every parameter, zero gradient or not; the lengths are written back."""
    torch.manual_seed(0)
    x = encode_sequences([torch.randn(t, 1) for t in (3, 5, 4, 9, 12, 7, 6, 10)]).double()
    y = torch.randn(len(x), dtype=torch.float64)
    inducing = inducing_sequences(x, 4)
    model = SequenceVariationalGP(inducing, input_dim=1).double()
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    mll = gpytorch.mlls.VariationalELBO(likelihood, model, num_data=len(y))
    params = [*model.parameters(), *likelihood.parameters()]
    optimizer = torch.optim.AdamW(params, lr=0.05, weight_decay=0.5)
    for _ in range(20):
        optimizer.zero_grad()
        (-mll(model(x), y)).backward()
        optimizer.step()
        learned = model.variational_strategy.inducing_points
        assert (learned[:, 0] - inducing[:, 0]).abs().max() < 0.5  # never a whole step off
    model(x)  # every evaluation starts from the initial lengths
    torch.testing.assert_close(learned[:, 0], inducing[:, 0], rtol=0, atol=0)
    assert not torch.equal(learned[:, 1:], inducing[:, 1:])


def test_natural_gradient_training_improves_elbo():
    torch.manual_seed(0)
    x, y = gunpoint("train")
    inducing = inducing_sequences(x, 12)
    model = SequenceVariationalGP(
        inducing,
        input_dim=1,
        variational_distribution=gpytorch.variational.NaturalVariationalDistribution,
    ).double()
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    mll = gpytorch.mlls.VariationalELBO(likelihood, model, num_data=len(y))
    ngd = gpytorch.optim.NGD(model.variational_parameters(), num_data=len(y), lr=0.1)
    adam = torch.optim.Adam([*model.hyperparameters(), *likelihood.parameters()], lr=0.05)
    losses = []
    for _ in range(3):
        for batch in torch.randperm(len(y)).split(10):
            ngd.zero_grad()
            adam.zero_grad()
            loss = -mll(model(x[batch]), y[batch])
            loss.backward()
            ngd.step()
            adam.step()
            losses.append(loss.item())
    assert sum(losses[-5:]) < sum(losses[:5])
    learned = model.variational_strategy.inducing_points
    torch.testing.assert_close(learned[:, 0], inducing[:, 0], rtol=0, atol=0)
    assert not torch.equal(learned[:, 1:], inducing[:, 1:])
