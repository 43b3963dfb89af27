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
