"""gpytorch_rntk.selection.select_kernel: it picks a configuration that can see the signal, on
training data only, for regression and Dirichlet classification, and refuses bad input."""

from __future__ import annotations

import inspect
import math

import gpytorch
import pytest
import torch

from gpytorch_rntk import RNTKKernel, encode_sequences
from gpytorch_rntk.selection import (
    CandidateResult,
    Selection,
    adam_fit,
    candidate_grid,
    gaussian_model,
    select_kernel,
)


def first_step_problem(dtype, n=40, steps=30, seed=0):
    """Targets that are the first step of 30-step sequences: a unidirectional kernel read out at
    the last step has forgotten it (ReLU, recurrent_var 1.8: a memory of about ten steps); the
    backward direction reads it last."""
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randn(steps, 1, generator=g) for _ in range(n)]
    x = encode_sequences(seqs).to(dtype)
    y = torch.stack([s[0, 0] for s in seqs]).to(dtype)
    return x, y


def first_half_mean_problem(dtype, n=30, steps=24, seed=0):
    """Targets that are the mean of the first half of each sequence: the mean readout reads
    every step, the last readout mostly the second half."""
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randn(steps, 1, generator=g) for _ in range(n)]
    x = encode_sequences(seqs).to(dtype)
    y = torch.stack([s[: steps // 2, 0].mean() for s in seqs]).to(dtype)
    return x, y / y.std()


def quick_fit(model):
    adam_fit(model, iters=15)


def test_bidirectional_chosen_when_the_target_is_the_first_step(dtype):
    x, y = first_step_problem(dtype)
    candidates = [{"bidirectional": False}, {"bidirectional": True}]
    selection = select_kernel(x, y, candidates, input_dim=1, fit=quick_fit)
    assert selection.options == {"bidirectional": True}
    uni, bi = selection.results
    assert selection.best is bi and bi.score == bi.mll
    # Not a close call: the backward direction explains the targets, the forward one cannot.
    assert bi.mll > uni.mll + 0.3, selection.summary()
    # The chosen model is fitted, in the data's dtype, in eval mode, and predicts.
    model = selection.model
    assert not model.training
    assert model.covar_module.base_kernel.bidirectional
    assert model.covar_module.outputscale.dtype == dtype
    with torch.no_grad(), gpytorch.settings.skip_posterior_variances():
        prediction = model(x[:5]).mean
    assert torch.isfinite(prediction).all()


def test_mean_readout_chosen_when_the_target_is_the_early_average(dtype):
    x, y = first_half_mean_problem(dtype)
    selection = select_kernel(
        x, y, [{"readout": "last"}, {"readout": "mean"}], input_dim=1, fit=quick_fit
    )
    assert selection.options == {"readout": "mean"}, selection.summary()
    assert selection.best.mll > selection.results[0].mll + 0.1


def test_leave_one_out_criterion_agrees_on_the_first_step_problem():
    x, y = first_step_problem(torch.float64)
    selection = select_kernel(
        x,
        y,
        [{"bidirectional": False}, {"bidirectional": True}],
        input_dim=1,
        fit=quick_fit,
        criterion="loo",
    )
    assert selection.criterion == "loo"
    assert selection.options == {"bidirectional": True}
    for result in selection.results:
        assert result.score == result.loo and math.isfinite(result.mll)


def test_dirichlet_classification_with_a_model_factory():
    """The benchmark's use: a batch of per-class GPs, built from class labels by make_model."""
    x, first = first_step_problem(torch.float64, n=40)
    labels = (first > 0).long()

    class ClassifierGP(gpytorch.models.ExactGP):
        def __init__(self, kernel, train_x, targets, likelihood):
            super().__init__(train_x, targets, likelihood)
            self.mean_module = gpytorch.means.ConstantMean(batch_shape=targets.shape[:-1])
            self.covar_module = gpytorch.kernels.ScaleKernel(kernel)

        def forward(self, z):
            covar = self.covar_module(z).evaluate_kernel()
            return gpytorch.distributions.MultivariateNormal(self.mean_module(z), covar)

    def make_model(kernel, train_x, train_y):
        likelihood = gpytorch.likelihoods.DirichletClassificationLikelihood(
            train_y, learn_additional_noise=True, dtype=torch.float64
        )
        model = ClassifierGP(kernel, train_x, likelihood.transformed_targets, likelihood)
        return model.double()

    selection = select_kernel(
        x,
        labels,
        [{"bidirectional": False}, {"bidirectional": True}],
        input_dim=1,
        make_model=make_model,
        fit=quick_fit,
        criterion="loo",
    )
    assert selection.options == {"bidirectional": True}, selection.summary()
    assert all(math.isfinite(r.mll) and math.isfinite(r.loo) for r in selection.results)
    test_x, test_first = first_step_problem(torch.float64, n=30, seed=1)
    with torch.no_grad(), gpytorch.settings.skip_posterior_variances():
        mean = selection.model(test_x).mean  # (classes, N)
    assert mean.shape == (2, 30)
    assert (mean.argmax(0) == (test_first > 0).long()).double().mean() > 0.8


def test_candidate_grid():
    grid = candidate_grid()
    assert len(grid) == 8
    assert {tuple(sorted(c)) for c in grid} == {("bidirectional", "num_layers", "readout")}
    assert {(c["readout"], c["bidirectional"], c["num_layers"]) for c in grid} == {
        (r, b, n) for r in ("last", "mean") for b in (False, True) for n in (1, 2)
    }
    # Options are data: another readout name, another option, another kernel class.
    grid = candidate_grid(readout=("geometric",), kernel=("rntk", "nngp"), num_layers=(1,))
    assert len(grid) == 4 and all(c["readout"] == "geometric" for c in grid)
    with pytest.raises(TypeError, match="readout must be a sequence"):
        candidate_grid(readout="mean")


class Recorder:
    """A fit that records its calls (and fits nothing)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model):
        self.calls += 1


@pytest.mark.parametrize(
    ("candidates", "kwargs", "error", "match"),
    [
        ([], {}, ValueError, "candidates is empty"),
        ([{"readout": "last"}, {"readout": "sideways"}], {}, ValueError, "candidate 1 .*readout"),
        ([{"num_layers": 0}], {}, ValueError, "candidate 0"),
        ([{"readuot": "mean"}], {}, TypeError, "candidate 0 .*readuot"),
        ([{"kernel": "lstm"}], {}, ValueError, "Unknown kernel 'lstm'"),
        ([{"readout": "mean"}, {"readout": "mean"}], {}, ValueError, "repeats"),
        (["mean"], {}, TypeError, "mapping"),
        ([{"input_dim": 2}], {}, ValueError, "input_dim is an argument"),
        ([{}], {"criterion": "accuracy"}, ValueError, "Unknown criterion"),
        ([{}], {"criterion": 3}, TypeError, "criterion must be"),
    ],
)
def test_refuses_bad_input_before_fitting(candidates, kwargs, error, match):
    x, y = first_step_problem(torch.float64, n=6, steps=4)
    fit = Recorder()
    with pytest.raises(error, match=match):
        select_kernel(x, y, candidates, input_dim=1, fit=fit, **kwargs)
    assert fit.calls == 0


def test_refuses_inputs_that_are_not_a_training_set():
    x, y = first_step_problem(torch.float64, n=6, steps=4)
    with pytest.raises(ValueError, match="train_x must be an"):
        select_kernel(x[0], y, [{}], input_dim=1)
    with pytest.raises(ValueError, match="train_y must be a tensor with N = 6"):
        select_kernel(x, y[:5], [{}], input_dim=1)


def test_a_failed_candidate_is_recorded_and_the_others_go_on():
    x, y = first_step_problem(torch.float64, n=8, steps=5)

    def fit(model):
        if model.covar_module.base_kernel.bidirectional:
            raise RuntimeError("not positive definite")

    selection = select_kernel(
        x, y, [{"bidirectional": True}, {"bidirectional": False}], input_dim=1, fit=fit
    )
    failed, ok = selection.results
    assert failed.error == "RuntimeError: not positive definite" and failed.score == -math.inf
    assert math.isnan(failed.mll)
    assert selection.best is ok and "failed" in selection.summary()

    def always(model):
        raise RuntimeError("no")

    with pytest.raises(RuntimeError, match="Every candidate failed"):
        select_kernel(x, y, [{}], input_dim=1, fit=always)


def test_uses_the_training_data_only():
    """The selector takes no test data: its parameters are the training set and how to build,
    fit and score a model, and every model it builds, fits and scores holds exactly the
    training set."""
    parameters = set(inspect.signature(select_kernel).parameters)
    assert {"train_x", "train_y"} <= parameters
    assert not any("test" in name or "valid" in name for name in parameters)

    x, y = first_step_problem(torch.float64, n=8, steps=5)
    seen = []

    def make_model(kernel, train_x, train_y):
        seen.append(("make_model", train_x, train_y))
        return gaussian_model(kernel, train_x, train_y)

    def fit(model):
        seen.append(("fit", model.train_inputs[0], model.train_targets))

    def score(model):
        seen.append(("score", model.train_inputs[0], model.train_targets))
        return 0.0

    selection = select_kernel(
        x,
        y,
        candidate_grid(num_layers=(1,)),
        input_dim=1,
        make_model=make_model,
        fit=fit,
        criterion=score,
    )
    assert len(seen) == 3 * 4
    assert all(torch.equal(sx, x) and torch.equal(sy, y) for _, sx, sy in seen)
    # Equal scores: the first candidate wins; the criterion's name is recorded.
    assert selection.best is selection.results[0] and selection.criterion == "score"
    assert isinstance(selection, Selection) and isinstance(selection.best, CandidateResult)


def test_shared_kernel_options_and_hyperparameters():
    x, y = first_step_problem(torch.float64, n=8, steps=5)
    selection = select_kernel(
        x,
        y,
        [{"readout": "last"}],
        input_dim=1,
        kernel="nngp",
        kernel_options={"nonlinearity": "erf"},
        fit=lambda model: adam_fit(model, iters=2),
    )
    kernel = selection.model.covar_module.base_kernel
    assert kernel.nonlinearity == "erf" and not isinstance(kernel, RNTKKernel)
    hypers = selection.best.hyperparameters
    assert {"covar_module.base_kernel.recurrent_var", "likelihood.noise_covar.noise"} <= set(hypers)
    assert hypers["covar_module.base_kernel.recurrent_var"] == pytest.approx(
        kernel.recurrent_var.item()
    )
