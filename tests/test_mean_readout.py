"""``readout="mean"`` (average pooling over time, docs/kernels.md *Variants*) against the per-pair
reference loop, finite-width networks, gradcheck, and the kernel contracts."""

from __future__ import annotations

import gpytorch
import pytest
import test_kernels
import torch
from finite_width import assert_agrees, empirical_kernel_statistics
from helpers import random_batch, random_sequences
from reference import reference_gram

import gpytorch_rntk._core.engines.tensor as F
from gpytorch_rntk import RNNGPKernel, RNTKKernel, encode_sequences
from gpytorch_rntk.functional import RecurrentVariances, recurrent_kernel, recurrent_kernel_diag
from gpytorch_rntk.layout import split_layout

KERNELS = {"ntk": RNTKKernel, "nngp": RNNGPKernel}
HYPER = dict(recurrent_var=1.7, input_var=0.8, bias_var=0.05)


def make_kernel(kind, device, dtype, **kw):
    variances = {
        k: kw.pop(k) for k in ("recurrent_var", "input_var", "bias_var", "init_var") if k in kw
    }
    kernel = KERNELS[kind](readout="mean", **kw).to(device=device, dtype=dtype)
    kernel.initialize(**variances)
    return kernel


def mixed_batches(dtype=torch.float64):
    """Different lengths on both sides, a row of x1 repeated in x2 and a duplicated row in x1
    (exact self pairs, per-input initial states)."""
    seqs1, _ = random_batch([4, 1, 6, 3], m=2, seed=1, dtype=dtype)
    seqs2, _ = random_batch([2, 6, 5], m=2, seed=2, dtype=dtype)
    seqs2.append(seqs1[2].clone())
    seqs1.append(seqs1[0].clone())
    return seqs1, seqs2


VARIANTS = [
    {},
    {"initial_state": "per_input"},
    {"initial_state": "shared"},
    {"frozen_layers": 1},
    {"bidirectional": True},
    {"bidirectional": True, "frozen_layers": 1, "initial_state": "per_input"},
]


def variant_id(variant):
    return "-".join(f"{k}={v}" for k, v in variant.items()) or "plain"


KIND_VARIANTS = [
    (kind, variant)
    for kind in ("ntk", "nngp")
    for variant in VARIANTS
    if kind == "ntk" or "frozen_layers" not in variant  # RNNGPKernel freezes every layer
]


@pytest.mark.parametrize(
    "kind,variant", KIND_VARIANTS, ids=[f"{k}-{variant_id(v)}" for k, v in KIND_VARIANTS]
)
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_matches_reference_loop(kind, nonlinearity, num_layers, variant, device):
    """Cross Gram, symmetric Gram and diag against the loop over the full (t, t') grid, 1e-8."""
    hyper = dict(HYPER, init_var=0.3) if "initial_state" in variant else dict(HYPER)
    seqs1, seqs2 = mixed_batches()
    x1, x2 = encode_sequences(seqs1).to(device), encode_sequences(seqs2).to(device)
    kernel = make_kernel(
        kind,
        device,
        torch.float64,
        input_dim=2,
        num_layers=num_layers,
        nonlinearity=nonlinearity,
        **variant,
        **hyper,
    )
    options = dict(
        num_layers=num_layers,
        nonlinearity=nonlinearity,
        readout="mean",
        ntk=kind == "ntk",
        **variant,
        **hyper,
    )
    expected = reference_gram(seqs1, seqs2, **options)
    expected_self = reference_gram(seqs1, seqs1, **options)
    with torch.no_grad():
        torch.testing.assert_close(kernel(x1, x2).to_dense().cpu(), expected, rtol=1e-8, atol=0)
        torch.testing.assert_close(kernel(x1).to_dense().cpu(), expected_self, rtol=1e-8, atol=0)
        torch.testing.assert_close(
            kernel(x1, diag=True).cpu(), expected_self.diagonal(), rtol=1e-8, atol=0
        )


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_float32_close_to_float64_reference(nonlinearity, device):
    seqs1, seqs2 = mixed_batches()
    kernel = make_kernel(
        "ntk",
        device,
        torch.float32,
        input_dim=2,
        num_layers=2,
        nonlinearity=nonlinearity,
        initial_state="per_input",
        init_var=0.3,
        **HYPER,
    )
    options = dict(HYPER, init_var=0.3, initial_state="per_input", readout="mean")
    expected = reference_gram(seqs1, seqs2, num_layers=2, nonlinearity=nonlinearity, **options)
    x1, x2 = (encode_sequences(s).float().to(device) for s in (seqs1, seqs2))
    with torch.no_grad():
        actual = kernel(x1, x2).to_dense().cpu().double()
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_identities(nonlinearity, device):
    """Length 1 everywhere: mean = last. Every layer frozen: the NNGP kernel."""
    ones = encode_sequences(random_sequences([1, 1, 1], m=2, seed=3)).to(device)
    _, x = random_batch([3, 5, 2, 5], m=2, seed=4)
    x = x.to(device)
    options = dict(input_dim=2, num_layers=2, nonlinearity=nonlinearity)
    mean = RNTKKernel(readout="mean", **options).to(device, torch.float64)
    last = RNTKKernel(**options).to(device, torch.float64)
    frozen = RNTKKernel(readout="mean", frozen_layers=2, **options).to(device, torch.float64)
    nngp = RNNGPKernel(readout="mean", **options).to(device, torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(mean(ones).to_dense(), last(ones).to_dense(), rtol=0, atol=0)
        torch.testing.assert_close(frozen(x).to_dense(), nngp(x).to_dense(), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_diag_paired_and_batched(kind, device, dtype):
    """Model batch dimensions, BoTorch-style (b, q, D) against (b, n, D), unbatched x2, and
    diag (self pairs and paired rows) equal to the diagonal of the full matrix."""
    kernel = make_kernel(
        kind, device, dtype, input_dim=2, num_layers=2, batch_shape=torch.Size([3])
    )
    kernel.initialize(recurrent_var=torch.tensor([1.0, 1.5, 2.0]).view(3, 1, 1))
    gen = torch.Generator().manual_seed(5)
    lengths = torch.randint(1, 6, (2, 3, 4), generator=gen)
    x = torch.cat([lengths.unsqueeze(-1), torch.randn(2, 3, 4, 10, generator=gen)], -1)
    x = x.to(device, dtype)
    xq = x[..., :2, :] + 0.1
    with torch.no_grad():
        full = kernel(x).to_dense()
        assert full.shape == (2, 3, 4, 4)
        for b in range(2):
            for j in range(3):
                single = make_kernel(kind, device, dtype, input_dim=2, num_layers=2)
                single.initialize(recurrent_var=[1.0, 1.5, 2.0][j])
                torch.testing.assert_close(full[b, j], single(x[b, j]).to_dense())
        cross = kernel(xq, x).to_dense()
        assert cross.shape == (2, 3, 2, 4)
        torch.testing.assert_close(
            kernel(xq, x[..., :2, :], diag=True), cross[..., :2].diagonal(dim1=-2, dim2=-1)
        )
        torch.testing.assert_close(kernel(x, diag=True), full.diagonal(dim1=-2, dim2=-1))
        unbatched = x[0, 0]
        torch.testing.assert_close(
            kernel(xq, unbatched).to_dense(), kernel(xq, unbatched.expand(2, 3, 4, 11)).to_dense()
        )


def test_row_blocks_and_lane_groups_equal_one_block(device, monkeypatch):
    """Row blocks, one diagonal at a time, and many side by side give the same numbers."""
    _, x = random_batch([3, 7, 2, 5, 7, 1, 4], m=2, seed=6)
    _, x2 = random_batch([6, 2, 3], m=2, seed=7)
    (values, lengths), (values2, lengths2) = (
        split_layout(x.to(device), 2),
        split_layout(x2.to(device), 2),
    )
    variances = RecurrentVariances(
        *(torch.tensor(v, dtype=torch.float64, device=device) for v in (1.9, 1.0, 0.1, 0.4))
    )
    options = dict(num_layers=2, readout="mean", initial_state="shared")
    one = recurrent_kernel(values, lengths, values2, lengths2, variances, **options)
    monkeypatch.setattr(F, "_LANE_ELEMENTS", 1)
    blocked = recurrent_kernel(
        values, lengths, values2, lengths2, variances, block_elements=5, **options
    )
    torch.testing.assert_close(blocked, one, rtol=1e-13, atol=0)
    symmetric = recurrent_kernel(values, lengths, values, lengths, variances, **options)
    general = recurrent_kernel(
        values, lengths, values.clone(), lengths.clone(), variances, block_elements=8, **options
    )
    torch.testing.assert_close(symmetric, general, rtol=1e-13, atol=0)
    diag = recurrent_kernel_diag(values, lengths, variances, **options)
    torch.testing.assert_close(diag, general.diagonal(), rtol=1e-13, atol=0)


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
@pytest.mark.parametrize("initial_state", ["zero", "shared"])
@pytest.mark.parametrize("chunked", [False, True], ids=["group-replay", "chunked-replay"])
def test_gradcheck(nonlinearity, initial_state, chunked, monkeypatch):
    """float64 gradcheck for every variance and both inputs, through groups of diagonals
    replayed with plain autograd and through groups replayed in checkpointed chunks."""
    if chunked:
        monkeypatch.setattr(F, "PLAIN_AUTOGRAD_PAIR_STEPS", 0)
    _, x1 = random_batch([3, 2, 3], m=2, seed=8)
    _, x2 = random_batch([1, 3], m=2, seed=9, max_len=3)
    (v1, l1), (v2, l2) = split_layout(x1, 2), split_layout(x2, 2)
    options = dict(
        nonlinearity=nonlinearity, num_layers=2, initial_state=initial_state, readout="mean"
    )

    def by_variances(*variances):
        return recurrent_kernel(v1, l1, v2, l2, RecurrentVariances(*variances), **options)

    def diag_by_variances(*variances):
        return recurrent_kernel_diag(v1, l1, RecurrentVariances(*variances), **options)

    start = (1.6, 0.9, 0.2, 0.4) if initial_state != "zero" else (1.6, 0.9, 0.2)
    variances = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in start]
    assert torch.autograd.gradcheck(by_variances, variances)
    assert torch.autograd.gradcheck(diag_by_variances, variances)
    kernel = RNTKKernel(
        input_dim=2,
        num_layers=2,
        nonlinearity=nonlinearity,
        initial_state=initial_state,
        readout="mean",
    ).double()
    inputs = (x1.clone().requires_grad_(True), x2.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(kernel.forward, inputs)


def test_chunked_replay_gradient_equals_group_replay(monkeypatch):
    _, x = random_batch([9, 4, 9, 6, 1], m=1, seed=11)
    kernel = RNTKKernel(input_dim=1, num_layers=2, readout="mean").double()
    weights = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def grads(plain_limit):
        monkeypatch.setattr(F, "PLAIN_AUTOGRAD_PAIR_STEPS", plain_limit)
        kernel.zero_grad()
        loss = (kernel(x).to_dense() * weights).sum() + kernel(x, diag=True).sum()
        loss.backward()
        return [p.grad.clone() for p in kernel.parameters()]

    for a, b in zip(grads(0), grads(2**62), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_gradients_finite_on_identical_duplicated_and_zero_inputs(nonlinearity, device, dtype):
    seqs, _ = random_batch([3, 3, 2], m=2, seed=10, dtype=dtype)
    seqs += [seqs[0].clone(), torch.zeros(3, 2, dtype=dtype), 2 * seqs[1], -seqs[1]]
    x = encode_sequences(seqs).to(device).requires_grad_(True)
    kernel = make_kernel(
        "ntk",
        device,
        dtype,
        input_dim=2,
        num_layers=2,
        nonlinearity=nonlinearity,
        initial_state="per_input",
    )
    kernel.initialize(bias_var=1e-3)
    (kernel(x, x).to_dense().sum() + kernel(x, diag=True).sum()).backward()
    assert torch.isfinite(x.grad).all()
    for name, p in kernel.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_unknown_readout_raises():
    with pytest.raises(ValueError, match="Unknown readout 'max'"):
        RNTKKernel(1, readout="max")
    with pytest.raises(ValueError, match="Unknown readout 'sum'"):
        RNNGPKernel(1, readout="sum")
    values, lengths = torch.zeros(2, 3, 1), torch.tensor([3, 2])
    variances = RecurrentVariances(*(torch.tensor(1.0) for _ in range(3)))
    with pytest.raises(ValueError, match="Unknown readout 'first'"):
        recurrent_kernel(values, lengths, values, lengths, variances, readout="first")
    with pytest.raises(ValueError, match="Unknown readout 'first'"):
        recurrent_kernel_diag(values, lengths, variances, readout="first")


def test_repr_names_the_readout():
    assert "readout='mean'" in repr(RNTKKernel(1, readout="mean"))
    assert "readout='last'" in repr(RNNGPKernel(1))


class TestRNTKKernelMeanReadout(
    test_kernels._SequenceKernelTestCase, test_kernels.unittest.TestCase
):
    kernel_class = RNTKKernel

    def create_kernel_no_ard(self, **kwargs):
        return self.kernel_class(input_dim=1, num_layers=2, readout="mean", **kwargs)


class TestRNNGPKernelMeanReadout(TestRNTKKernelMeanReadout):
    kernel_class = RNNGPKernel


def test_exact_gp_with_mean_readout():
    """An exact GP with ScaleKernel(RNTKKernel(readout="mean")) fits variable-length sequences
    whose target is their mean: the marginal likelihood improves and predictions are finite."""
    seqs = random_sequences([3 + i % 4 for i in range(16)], m=1, seed=12)
    x = encode_sequences(seqs)
    y = torch.stack([s.mean() for s in seqs])

    class SequenceGP(gpytorch.models.ExactGP):
        def __init__(self, x, y, likelihood):
            super().__init__(x, y, likelihood)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(
                RNTKKernel(input_dim=1, readout="mean")
            )

        def forward(self, x):
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(x), self.covar_module(x)
            )

    likelihood = gpytorch.likelihoods.GaussianLikelihood()
    model = SequenceGP(x, y, likelihood).double()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model.train()
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = -mll(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    model.eval()
    with torch.no_grad():
        pred = likelihood(model(x[:5]))
    assert torch.isfinite(pred.mean).all() and (pred.variance > 0).all()


# ------------------------------------------------ Monte Carlo (docs/kernels.md, finite networks)
MC_HYPER = dict(recurrent_var=1.5, input_var=1.0, bias_var=0.1)


def mc_check(lengths, num_layers, nonlinearity, width, seeds, seed=22, **variant):
    """The seed-averaged empirical (NTK, NNGP) of average-pooled networks against RNTKKernel /
    RNNGPKernel with readout="mean" (``assert_agrees``)."""
    seqs = random_sequences(lengths, m=3, seed=seed)
    init = {"init_var": variant.pop("init_var")} if "init_var" in variant else {}
    emp_ntk, emp_nngp = empirical_kernel_statistics(
        seqs,
        seeds=range(seeds),
        width=width,
        num_layers=num_layers,
        nonlinearity=nonlinearity,
        readout="mean",
        **variant,
        **init,
        **MC_HYPER,
    )
    frozen = variant.pop("frozen_layers", 0)
    kernels = [
        RNTKKernel(3, num_layers, nonlinearity, frozen_layers=frozen, readout="mean", **variant),
        RNNGPKernel(3, num_layers, nonlinearity, readout="mean", **variant),
    ]
    x = encode_sequences(seqs)
    for kernel, emp, name in zip(kernels, (emp_ntk, emp_nngp), ("NTK", "NNGP"), strict=True):
        kernel = kernel.double()
        kernel.initialize(**MC_HYPER, **init)
        with torch.no_grad():
            assert_agrees(*emp, kernel(x).to_dense(), name)


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_finite_width_mean_pooled_network(nonlinearity):
    """Width 512, 64 seeds, L = 2, lengths 1-3 (a wrong boundary or a missing diagonal moves
    the kernel by tens of percent)."""
    mc_check([1, 2, 3, 3], 2, nonlinearity, width=512, seeds=64)


def test_finite_width_shared_initial_state_different_lengths():
    """A shared initial state enters the d = 0 diagonal of every pair, equal lengths or not
    (leaving it out for T != T' moves this kernel by 14-16 %)."""
    mc_check([2, 3, 4, 3], 1, "erf", width=512, seeds=64, init_var=0.5, initial_state="shared")


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant",
    [
        {"bidirectional": True, "frozen_layers": 1, "init_var": 0.3, "initial_state": "per_input"},
        {"init_var": 0.5, "initial_state": "shared"},
    ],
    ids=variant_id,
)
@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_finite_width_mean_pooled_network_wide(nonlinearity, variant):
    """Width 2048, 32 seeds, L = 2, lengths 2-6."""
    mc_check([2, 6, 4, 5, 3, 6], 2, nonlinearity, 2048, 32, **variant)
