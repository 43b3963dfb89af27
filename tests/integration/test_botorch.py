"""Bayesian optimisation over sequences with BoTorch (gpytorch_rntk.botorch)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

botorch = pytest.importorskip("botorch")

from botorch.acquisition import LogExpectedImprovement, qLogExpectedImprovement  # noqa: E402
from botorch.acquisition.multi_objective import (  # noqa: E402
    qLogExpectedHypervolumeImprovement,
)
from botorch.exceptions import InputDataError, InputDataWarning  # noqa: E402
from botorch.fit import fit_gpytorch_mll  # noqa: E402
from botorch.models import ModelListGP  # noqa: E402
from botorch.models.transforms.outcome import Standardize  # noqa: E402
from botorch.optim import optimize_acqf, optimize_acqf_discrete  # noqa: E402
from botorch.utils.multi_objective.box_decompositions import (  # noqa: E402
    FastNondominatedPartitioning,
)
from gpytorch.kernels import ScaleKernel  # noqa: E402
from gpytorch.mlls import ExactMarginalLogLikelihood  # noqa: E402

from gpytorch_rntk import RNNGPKernel, RNTKKernel, decode_sequences, encode_sequences  # noqa: E402
from gpytorch_rntk.botorch import (  # noqa: E402
    canonicalize_sequences,
    optimize_acqf_variable_length,
    sequence_bounds,
    sequence_gp,
)

DTYPE = torch.float64
MAX_LEN = 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These tests run many small tensor operations, where intra-op threads only add overhead
    # (and on a shared machine a lot of it).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # BoTorch's raw samples and MC samplers draw from the global generator


def end_score(seqs: list[torch.Tensor]) -> torch.Tensor:
    """A smooth objective of the last two steps (sequences aligned at their ends), ``(N, 1)``."""
    return torch.stack(
        [
            -((s[-1, 0] - 0.5) ** 2) - 0.5 * (s[-2, 0] + 0.3 if len(s) > 1 else 0.3) ** 2
            for s in seqs
        ]
    ).unsqueeze(-1)


def variable_length_data(n: int, seed: int, device: torch.device | str = "cpu", m: int = 1):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, MAX_LEN + 1, (n,), generator=gen).tolist()
    seqs = [(2 * torch.rand(t, m, generator=gen, dtype=DTYPE) - 1).to(device) for t in lengths]
    return seqs, encode_sequences(seqs, max_len=MAX_LEN)


def fitted_model(n: int = 16, seed: int = 0, device: torch.device | str = "cpu", **kw):
    seqs, x = variable_length_data(n, seed, device)
    model = sequence_gp(x, end_score(seqs), input_dim=1, **kw)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model


@pytest.fixture(scope="module")
def model():
    return fitted_model()


def test_sequence_gp_fits_and_passes_input_validation(device):
    seqs, x = variable_length_data(20, seed=1, device=device)
    y = end_score(seqs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputDataWarning)  # no scaling or dtype complaints
        model = sequence_gp(x, y, input_dim=1)
    assert isinstance(model.covar_module, ScaleKernel)
    assert isinstance(model.covar_module.base_kernel, RNTKKernel)
    assert isinstance(model.outcome_transform, Standardize)
    assert not hasattr(model, "input_transform")
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    before = mll(model(x), model.train_targets).item()
    fit_gpytorch_mll(mll)
    model.train()
    after = mll(model(x), model.train_targets).item()
    assert after > before + 0.1
    model.eval()
    # the fitted GP interpolates its (noise-free) training data closely
    mean = model.posterior(x).mean
    assert torch.corrcoef(torch.stack([mean.squeeze(-1), y.squeeze(-1)]))[0, 1] > 0.95
    # BoTorch rejects NaN inputs; the layout never needs one.
    x_nan = x.clone()
    x_nan[0, -1] = float("nan")
    with pytest.raises(InputDataError):
        sequence_gp(x_nan, y, input_dim=1)


def test_sequence_gp_options():
    seqs, x = variable_length_data(6, seed=2, m=2)
    y = torch.cat([end_score(seqs), end_score(seqs) ** 2], -1)
    model = sequence_gp(x, y, input_dim=2, kernel="nngp", num_layers=2)
    assert isinstance(model.covar_module.base_kernel, RNNGPKernel)
    assert model.covar_module.base_kernel.num_layers == 2
    # one set of hyperparameters per outcome, as BoTorch's default kernel
    assert model.covar_module.base_kernel.raw_recurrent_var.shape == (2, 1, 1)
    assert model.covar_module.raw_outputscale.shape == (2,)
    assert model.posterior(x[:3]).mean.shape == (3, 2)
    fixed = sequence_gp(x[:, 1:], y[:, :1], input_dim=2, variable_length=False)
    assert fixed.covar_module.base_kernel.variable_length is False
    with pytest.raises(ValueError, match="Unknown kernel"):
        sequence_gp(x, y, input_dim=2, kernel="rbf")
    with pytest.raises(ValueError, match="train_y must be"):
        sequence_gp(x, y[:3], input_dim=2)
    with pytest.raises(ValueError, match="does not fit input_dim=2"):
        sequence_gp(x[:, :-1], y, input_dim=2)  # 1 + 2 T_max - 1 columns
    # SingleTaskGP's own arguments pass through
    plain = sequence_gp(
        x, y, input_dim=2, outcome_transform=None, train_Yvar=torch.full_like(y, 0.01)
    )
    assert not hasattr(plain, "outcome_transform")
    torch.testing.assert_close(plain.likelihood.noise, torch.full_like(y, 0.01).T)


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_sequence_gp_scales_input_var_to_the_steps(nonlinearity):
    """input_var starts at 1 / mean <x_t, x_t> / m over the training steps (fixed there for
    ReLU, the centre of its prior for erf): steps given in other units, a x, give the same
    prior kernel (and for ReLU the same model), and one-hot steps are not drowned by the bias."""
    seqs, x = variable_length_data(8, seed=5, m=2)
    lengths = x[:, 0].long()
    inside = torch.arange(MAX_LEN) < lengths.unsqueeze(-1)
    steps = x[:, 1:].reshape(len(x), MAX_LEN, 2)
    scale = float((steps.square().sum(-1) / 2)[inside].mean())
    y = end_score(seqs)
    models = {}
    for a in (1.0, 7.0):
        scaled = torch.cat([x[:, :1], a * x[:, 1:]], -1)
        models[a] = sequence_gp(scaled, y, input_dim=2, nonlinearity=nonlinearity)
        kernel = models[a].covar_module.base_kernel
        torch.testing.assert_close(kernel.input_var.item(), 1 / (a * a * scale), rtol=1e-12, atol=0)
        if nonlinearity == "erf":
            torch.testing.assert_close(  # (a prior's parameters are float32 buffers)
                kernel.input_var_prior.loc.item(), -math.log(a * a * scale), rtol=1e-6, atol=0
            )
        else:
            assert not kernel.raw_input_var.requires_grad
    grams = [
        m.covar_module.base_kernel(m.train_inputs[0]).to_dense().detach() for m in models.values()
    ]
    torch.testing.assert_close(grams[0], grams[1], rtol=1e-10, atol=0)


@pytest.mark.parametrize("fixed_noise", [False, True])
def test_subset_output(fixed_noise):
    """Each outcome of a multi-output model alone: the same posterior as in the full model."""
    seqs, x = variable_length_data(8, seed=3)
    y = torch.cat([end_score(seqs), end_score(seqs).exp()], -1)
    noise = {"train_Yvar": torch.full_like(y, 1e-3)} if fixed_noise else {}
    model = sequence_gp(x, y, input_dim=1, **noise)
    with torch.no_grad():  # give the outcomes different hyperparameters
        for p in [*model.covar_module.parameters(), *model.mean_module.parameters()]:
            p.add_(torch.randn_like(p) * 0.3)
    model.eval()
    _, test_x = variable_length_data(5, seed=4)
    full = model.posterior(test_x)
    for k in range(2):
        one = model.subset_output([k])
        assert one.num_outputs == 1
        part = one.posterior(test_x)
        torch.testing.assert_close(part.mean, full.mean[:, k : k + 1])
        torch.testing.assert_close(part.variance, full.variance[:, k : k + 1])


def test_sequence_bounds():
    bounds = sequence_bounds(3, 2, -1.0, torch.tensor([1.0, 2.0]), min_len=2)
    assert bounds.tolist() == [[2, -1, -1, -1, -1, -1, -1], [3, 1, 2, 1, 2, 1, 2]]
    per_step = torch.tensor([0.5, 1.0, 1.5], dtype=DTYPE)
    bounds = sequence_bounds(3, 1, -per_step, per_step, variable_length=False)
    assert bounds.dtype == DTYPE
    assert bounds.tolist() == [[-0.5, -1.0, -1.5], [0.5, 1.0, 1.5]]
    assert sequence_bounds(2, 1, 0.0, 1.0, dtype=DTYPE).tolist() == [[1, 0, 0], [2, 1, 1]]
    with pytest.raises(ValueError, match="broadcast"):
        sequence_bounds(3, 2, torch.zeros(4), 1.0)
    with pytest.raises(ValueError, match="min_len"):
        sequence_bounds(3, 1, 0.0, 1.0, min_len=4)
    with pytest.raises(ValueError, match="lower bound"):
        sequence_bounds(3, 1, 1.0, 0.0)
    with pytest.raises(ValueError, match="input_dim must be a positive integer"):
        sequence_bounds(3, 0, 0.0, 1.0)
    with pytest.raises(ValueError, match="max_len must be a positive integer"):
        sequence_bounds(2.0, 1, 0.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        sequence_bounds(3, 1, float("nan"), 1.0)


def test_canonicalize_sequences_keeps_kernel_values():
    seqs, x = variable_length_data(5, seed=3, m=2)
    messy = x.clone()
    messy[:, 0] += torch.tensor([0.3, -0.4, 0.2, 0.0, 0.49], dtype=DTYPE)
    messy[:, 1:] += (messy[:, 1:] == 0) * 7.0  # junk past every length
    canonical = canonicalize_sequences(messy, input_dim=2)
    torch.testing.assert_close(canonical, x, rtol=0, atol=0)
    kernel = RNTKKernel(input_dim=2)
    torch.testing.assert_close(kernel(messy).to_dense(), kernel(x).to_dense())
    assert decode_sequences(canonical, 2)[1].tolist() == [len(s) for s in seqs]


@pytest.mark.parametrize("q", [1, 2])
def test_fixed_length_continuous_optimisation(q, device):
    gen = torch.Generator().manual_seed(4)
    steps = 6
    x = (2 * torch.rand(12, steps, generator=gen, dtype=DTYPE) - 1).to(device)
    y = -((x[:, -1:] - 0.4) ** 2) - 0.3 * x[:, -2:-1] ** 2
    model = sequence_gp(x, y, input_dim=1, variable_length=False)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    acqf = qLogExpectedImprovement(model, best_f=model.train_targets.max())
    # per-step bounds: later steps may move further
    scale = torch.linspace(0.25, 1.0, steps, dtype=DTYPE, device=device)
    bounds = sequence_bounds(steps, 1, -scale, scale, variable_length=False)
    # the acquisition is differentiable in every step value
    x_test = (torch.rand(4, q, steps, generator=gen, dtype=DTYPE).to(device) * 2 - 1) * scale
    x_test.requires_grad_(True)
    acqf(x_test).sum().backward()
    assert torch.isfinite(x_test.grad).all()
    assert (x_test.grad.abs().sum(-1) > 0).all()
    candidates, value = optimize_acqf(
        acqf, bounds, q=q, num_restarts=2, raw_samples=32, options={"maxiter": 50}
    )
    assert candidates.shape == (q, steps)
    assert ((candidates >= bounds[0]) & (candidates <= bounds[1])).all()
    assert torch.isfinite(value).all()
    # the optimiser improves on the best raw sample it started from
    assert value.item() >= acqf(x_test.detach()).max().item() - 1e-6


@pytest.mark.parametrize("q", [1, 2])
def test_discrete_pool_in_chunks(model, q, monkeypatch):
    _, pool = variable_length_data(3000, seed=5)
    acqf = LogExpectedImprovement(model, best_f=model.train_targets.max())
    if q > 1:
        acqf = qLogExpectedImprovement(model, best_f=model.train_targets.max())
    kernel = model.covar_module.base_kernel
    forward = kernel.forward
    batches = []

    def recording_forward(x1, x2, **kwargs):
        batches.append(x1.shape[:-2].numel())
        return forward(x1, x2, **kwargs)

    monkeypatch.setattr(kernel, "forward", recording_forward)
    candidates, _ = optimize_acqf_discrete(acqf, q=q, choices=pool, max_batch_size=256)
    assert candidates.shape == (q, pool.shape[-1])
    assert max(batches) <= 256  # never more than one chunk at a time
    index = (candidates.unsqueeze(-2) == pool).all(-1).nonzero()[:, 1]
    assert len(set(index.tolist())) == q  # distinct members of the pool
    if q == 1:  # chunking does not change the choice
        with torch.no_grad():
            best = acqf(pool.unsqueeze(-2)).argmax()
        assert index.item() == best.item()


@pytest.mark.parametrize(
    ("method", "q", "lengths", "options"),
    [
        ("alternating", 2, None, {"maxiter_alternating": 4}),
        ("enumerate", 1, [2, 5, 8], {"maxiter": 30}),
    ],
)
def test_variable_length_design(model, method, q, lengths, options):
    acqf = qLogExpectedImprovement(model, best_f=model.train_targets.max())
    bounds = sequence_bounds(MAX_LEN, 1, -1.0, 1.0, min_len=2, dtype=DTYPE)
    candidates, value = optimize_acqf_variable_length(
        acqf,
        bounds,
        1,
        q=q,
        lengths=lengths,
        method=method,
        options=options,
        num_restarts=2,
        raw_samples=16,
    )
    assert candidates.shape == (q, 1 + MAX_LEN)
    lengths_out = candidates[:, 0]
    assert (lengths_out == lengths_out.round()).all()
    allowed = range(2, MAX_LEN + 1) if lengths is None else lengths
    assert set(lengths_out.long().tolist()) <= set(allowed)
    torch.testing.assert_close(canonicalize_sequences(candidates, 1), candidates)
    assert (candidates[:, 1:].abs() <= 1).all()
    assert torch.isfinite(value).all()


def test_variable_length_design_errors(model):
    acqf = LogExpectedImprovement(model, best_f=model.train_targets.max())
    bounds = sequence_bounds(MAX_LEN, 1, -1.0, 1.0, dtype=DTYPE)
    with pytest.raises(ValueError, match="method"):
        optimize_acqf_variable_length(acqf, bounds, 1, method="grid")
    with pytest.raises(ValueError, match="lengths"):
        optimize_acqf_variable_length(acqf, bounds, 1, lengths=[MAX_LEN + 1])
    with pytest.raises(ValueError, match="layout"):
        optimize_acqf_variable_length(acqf, bounds, 3)
    with pytest.raises(ValueError, match="lengths must be integers"):
        optimize_acqf_variable_length(acqf, bounds, 1, lengths=[2.7])
    with pytest.raises(ValueError, match="input_dim must be a positive integer"):
        optimize_acqf_variable_length(acqf, bounds, 0)
    with pytest.raises(ValueError, match="bounds are torch.float32 but the model is torch.float64"):
        optimize_acqf_variable_length(acqf, bounds.float(), 1)


def test_model_list_multi_objective(device):
    seqs, x = variable_length_data(12, seed=6, device=device)
    y1 = end_score(seqs)
    y2 = torch.stack([s.mean() for s in seqs]).unsqueeze(-1)  # every step counts
    models = [sequence_gp(x, y, input_dim=1) for y in (y1, y2)]
    for m in models:
        fit_gpytorch_mll(ExactMarginalLogLikelihood(m.likelihood, m))
    model = ModelListGP(*models)
    _, pool = variable_length_data(200, seed=7, device=device)
    posterior = model.posterior(pool[:5])
    assert posterior.mean.shape == (5, 2)
    assert (posterior.variance > 0).all()
    y = torch.cat([y1, y2], -1)
    ref_point = y.min(0).values - 0.1
    acqf = qLogExpectedHypervolumeImprovement(
        model, ref_point=ref_point, partitioning=FastNondominatedPartitioning(ref_point, Y=y)
    )
    candidate, value = optimize_acqf_discrete(acqf, q=1, choices=pool, max_batch_size=64)
    assert candidate.shape == (1, 1 + MAX_LEN)
    assert torch.isfinite(value).all()


def test_docstring_examples():
    import doctest

    import gpytorch_rntk.botorch

    result = doctest.testmod(gpytorch_rntk.botorch, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
