"""Marginal-likelihood fits of sequence_gp converge, to hyperparameters with a meaning.

The ReLU kernels are homogeneous of degree one in (input_var, bias_var, init_var), so a learned
outputscale on top of all three leaves a direction along which the likelihood is flat; and an
unbounded recurrent_var lets the kernel grow like (recurrent_var / 2) ** T. Together they let
fits wander to outputscales of 1e-286 and recurrent_var of 1e5 (or fail after minutes).
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

pytest.importorskip("botorch")

from botorch.fit import fit_gpytorch_mll  # noqa: E402
from botorch.models.transforms.input import Normalize  # noqa: E402
from gpytorch.mlls import ExactMarginalLogLikelihood  # noqa: E402

from gpytorch_rntk import RNNGPKernel, RNTKKernel, encode_sequences  # noqa: E402
from gpytorch_rntk.botorch import recurrent_var_bound, sequence_gp  # noqa: E402

DTYPES = [torch.float32, torch.float64]


def _sequences(n: int, length: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, length, 1, generator=generator).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel_cls", [RNTKKernel, RNNGPKernel])
def test_relu_kernels_are_homogeneous_in_the_variances(kernel_cls, dtype, device):
    # The reason sequence_gp fixes input_var: scaling input, bias and initial-state variances by c
    # scales the ReLU kernel by c, which is what the outputscale does.
    x = encode_sequences(list(_sequences(5, 6, dtype))).to(device)
    kernel = kernel_cls(1, initial_state="per_input").to(device=device, dtype=dtype)
    gram = kernel(x).to_dense()
    kernel.initialize(input_var=5.0, bias_var=0.5, init_var=2.5)
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(kernel(x).to_dense(), 5 * gram, rtol=rtol, atol=0)


def _trainable_jacobian(model) -> torch.Tensor:
    """d K(x_i, x_j) / d (every trainable raw kernel hyperparameter), one column each."""
    params = [p for p in model.covar_module.parameters() if p.requires_grad]
    gram = model.covar_module(model.train_inputs[0]).to_dense().flatten()
    rows = [torch.autograd.grad(k, params, retain_graph=True) for k in gram]
    return torch.stack([torch.cat([g.flatten() for g in row]) for row in rows])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_sequence_gp_has_no_flat_direction(nonlinearity, dtype, device):
    # Every trainable kernel hyperparameter moves K in its own direction: the Jacobian of the
    # Gram matrix has full column rank. With a learned outputscale and a learned input_var the
    # ReLU columns are linearly dependent (the smallest singular value is round-off).
    x = _sequences(8, 5, dtype).to(device)
    model = sequence_gp(
        encode_sequences(list(x)),
        x[:, 0],
        input_dim=1,
        nonlinearity=nonlinearity,
        initial_state="per_input",
    )
    singular = torch.linalg.svdvals(_trainable_jacobian(model))
    assert singular.numel() == (4 if nonlinearity == "relu" else 5)
    assert singular[-1] > 1e-3 * singular[0]
    assert model.covar_module.base_kernel.raw_input_var.requires_grad == (nonlinearity == "erf")


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
@pytest.mark.parametrize("length", [1, 2, 8, 30, 100, 300])
def test_recurrent_var_bound(length, nonlinearity):
    bound = recurrent_var_bound(length, nonlinearity)
    # The recurrent path's largest gain per step, recurrent_var * max V' (V' <= 1/2 for ReLU,
    # 4/pi for erf): more than 1, at most 2, and at most 100 over the longest sequence.
    gain = bound * (0.5 if nonlinearity == "relu" else 4 / math.pi)
    assert 1 < gain <= 2
    assert gain ** max(length - 1, 1) <= 100 * (1 + 1e-12)
    x = _sequences(3, length, torch.float64)
    model = sequence_gp(encode_sequences(list(x)), x[:, -1], input_dim=1, nonlinearity=nonlinearity)
    kernel = model.covar_module.base_kernel
    constraint = kernel.raw_recurrent_var_constraint
    assert (constraint.lower_bound.item(), constraint.upper_bound.item()) == pytest.approx(
        (0.0, bound), rel=1e-6
    )
    # the default where the bound allows it, else half the bound (erf from length 21)
    default = 1.8 if nonlinearity == "relu" else 1.0
    expected = default if default < bound else bound / 2
    assert kernel.recurrent_var.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("target", ["first", "last"])
def test_fit_converges_to_explainable_hyperparameters(target, device):
    # The reproducer (y = a step's value) at a size that fits in seconds. float64, as
    # BoTorch recommends for fitting. Before the fix the first-step fit "succeeded" with
    # recurrent_var ~ 1e5, outputscale ~ 1e-286 and noise ~ 1e-37.
    x = _sequences(12, 8, torch.float64).to(device)
    y = x[:, 0] if target == "first" else x[:, -1]
    model = sequence_gp(encode_sequences(list(x)), y, input_dim=1, nonlinearity="relu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no OptimizationWarning, no retry
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    scale, kernel = model.covar_module, model.covar_module.base_kernel
    recurrent_var = kernel.recurrent_var.item()
    assert 0 <= recurrent_var <= recurrent_var_bound(8) * (1 + 1e-6)
    if target == "first":
        assert recurrent_var > 2  # early steps must outweigh late ones
    else:
        assert recurrent_var < 1  # only the last step matters: the memory fades within a step
    # The fitted prior variance of f is of the order of the standardised targets' variance (1).
    with torch.no_grad():
        prior_var = scale(model.train_inputs[0], diag=True).mean().item()
    assert 0.1 < prior_var < 10
    assert model.likelihood.noise.item() < 0.1  # y is a deterministic function of x


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_prior_terms_stay_finite_where_the_optimiser_goes(nonlinearity, device):
    # L-BFGS can step a raw variance to -1000, where softplus is exactly 0 and a log-normal prior
    # raised (bidirectional fit, T = 100). The floor 1e-6 keeps every prior term finite.
    x = _sequences(6, 4, torch.float64).to(device)
    model = sequence_gp(
        encode_sequences(list(x)),
        x[:, 0],
        input_dim=1,
        nonlinearity=nonlinearity,
        initial_state="shared",
    )
    kernel = model.covar_module.base_kernel
    priors = list(kernel.named_priors())
    assert len(priors) == (3 if nonlinearity == "erf" else 2)
    with torch.no_grad():
        for name, *_ in priors:
            getattr(kernel, "raw_" + name.removesuffix("_prior")).fill_(-1000.0)
    for name, module, prior, closure, _ in priors:
        value = closure(module)
        assert value.min().item() == pytest.approx(1e-6, rel=1e-6)  # the floor (float32 1e-6)
        assert torch.isfinite(prior.log_prob(value)).all(), name
    model.train()
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    assert torch.isfinite(mll(model(*model.train_inputs), model.train_targets))


@pytest.mark.parametrize("dtype", DTYPES)
def test_outputscale_starts_at_the_targets_variance(dtype, device):
    x = _sequences(6, 4, dtype).to(device)
    model = sequence_gp(encode_sequences(list(x)), 3 * x[:, 1], input_dim=1, outcome_transform=None)
    with torch.no_grad():
        prior_var = model.covar_module(model.train_inputs[0], diag=True).mean()
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(prior_var, model.train_targets.var(), rtol=rtol, atol=0)


def test_sequence_gp_refuses_input_transforms():
    x = encode_sequences(list(_sequences(4, 3, torch.float64)))
    with pytest.raises(ValueError, match="Normalize.*affine map"):
        sequence_gp(x, x[:, 1:2], input_dim=1, input_transform=Normalize(d=x.shape[-1]))


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
@pytest.mark.parametrize("initial_state", ["zero", "shared"])
def test_float64_defaults_are_not_float32_rounded(nonlinearity, initial_state, device):
    # Parameters are created in the default dtype (float32); .double() must give 1.8, not
    # 1.7999999450995001. Up to a few float64 ulps of the constraint's round trip.
    kernel = RNTKKernel(1, nonlinearity=nonlinearity, initial_state=initial_state)
    kernel = kernel.to(device=device, dtype=torch.float64)
    from gpytorch_rntk.kernels import DEFAULT_VARIANCES

    for name in ("recurrent_var", "input_var", "bias_var", "init_var")[
        : 3 if initial_state == "zero" else 4
    ]:
        value = getattr(kernel, name)
        assert value.dtype == torch.float64
        assert value.item() == pytest.approx(
            DEFAULT_VARIANCES[nonlinearity][name], rel=4e-16, abs=0
        )


def test_float64_conversion_keeps_values_that_were_changed(device):
    kernel = RNTKKernel(1, batch_shape=torch.Size([2]))
    kernel.recurrent_var = torch.tensor([1.3, 1.8]).view(2, 1, 1)
    changed = kernel.raw_recurrent_var[0].detach().to(device=device, dtype=torch.float64)
    kernel = kernel.to(device=device, dtype=torch.float64)
    # The changed entry converts its float32 raw value as every parameter does (1.2999999732);
    # the untouched 1.8 is set again exactly.
    expected = [kernel.raw_recurrent_var_constraint.transform(changed).item(), 1.8]
    assert kernel.recurrent_var.flatten().tolist() == pytest.approx(expected, rel=4e-16, abs=0)
    # sequence_gp's float64 models get exact defaults and bounds through BoTorch's .to(train_x)
    x = _sequences(3, 4, torch.float64).to(device)
    model = sequence_gp(encode_sequences(list(x)), x[:, 0], input_dim=1, nonlinearity="relu")
    assert model.covar_module.base_kernel.recurrent_var.item() == pytest.approx(1.8, rel=4e-16)
