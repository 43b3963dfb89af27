"""The tensor engine's internals, for both readouts: row blocks, lanes of diagonals side by side
(the mean readout), and gradients through the replays in the backward pass (groups replayed with
plain autograd, checkpointed chunks), by monkeypatching the engine's size limits."""

from __future__ import annotations

import pytest
import torch
from helpers import random_batch

import gpytorch_rntk._core.engines.tensor as F
from gpytorch_rntk import RNTKKernel
from gpytorch_rntk.functional import RecurrentVariances, recurrent_kernel, recurrent_kernel_diag
from gpytorch_rntk.layout import split_layout

READOUTS = ["last", "mean"]


@pytest.mark.parametrize("readout", READOUTS)
def test_row_blocks_equal_one_block(readout, device):
    _, x = random_batch([3, 7, 2, 5, 7, 1, 4], m=2, seed=6)
    values, lengths = split_layout(x.to(device), 2)
    variances = RecurrentVariances(
        *(torch.tensor(v, dtype=torch.float64, device=device) for v in (1.9, 1.0, 0.1))
    )
    options = dict(num_layers=2, readout=readout)
    one = recurrent_kernel(values, lengths, values, lengths, variances, **options)
    blocked = recurrent_kernel(
        values, lengths, values, lengths, variances, block_elements=8, **options
    )
    torch.testing.assert_close(blocked, one, rtol=1e-14, atol=0)  # blocks take other mask paths
    # K(x, x) computes the blocks on and above the diagonal and mirrors them; a copy of x as the
    # second argument takes the general path through every block.
    general = recurrent_kernel(
        values, lengths, values.clone(), lengths.clone(), variances, block_elements=8, **options
    )
    torch.testing.assert_close(blocked, general, rtol=1e-14, atol=0)
    torch.testing.assert_close(blocked, blocked.transpose(-1, -2), rtol=0, atol=0)


@pytest.mark.parametrize("readout", READOUTS)
def test_row_blocks_and_lane_groups_equal_one_block(readout, device, monkeypatch):
    """Row blocks, one diagonal at a time, and many side by side give the same numbers (lanes
    exist for the mean readout; the last readout takes the same calls through row blocks)."""
    _, x = random_batch([3, 7, 2, 5, 7, 1, 4], m=2, seed=6)
    _, x2 = random_batch([6, 2, 3], m=2, seed=7)
    (values, lengths), (values2, lengths2) = (
        split_layout(x.to(device), 2),
        split_layout(x2.to(device), 2),
    )
    variances = RecurrentVariances(
        *(torch.tensor(v, dtype=torch.float64, device=device) for v in (1.9, 1.0, 0.1, 0.4))
    )
    options = dict(num_layers=2, readout=readout, initial_state="shared")
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


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("readout", READOUTS)
def test_row_blocks_recomputed_in_backward_give_the_same_gradients(
    readout, symmetric, device, monkeypatch
):
    """With gradients, each row block keeps only its inputs and is recomputed in the backward
    pass (memory flat in N; for the last readout where plain autograd would exceed its limit,
    set to 0 here so that these small sets take that path); the gradients must be those of one
    block."""
    _, x = random_batch([3, 7, 2, 5, 7, 1, 4], m=2, seed=8)
    values, lengths = split_layout(x.to(device), 2)
    weights = torch.randn(7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def gradients(block_elements):
        v1 = values.clone().requires_grad_()
        v2 = v1 if symmetric else values.clone().requires_grad_()
        variances = [
            torch.tensor(v, dtype=torch.float64, device=device, requires_grad=True)
            for v in (1.9, 1.0, 0.1, 0.3)
        ]
        k = recurrent_kernel(
            v1,
            lengths,
            v2,
            lengths,
            RecurrentVariances(*variances),
            num_layers=2,
            initial_state="shared",
            readout=readout,
            block_elements=block_elements,
        )
        inputs = [v1, *variances] if symmetric else [v1, v2, *variances]
        return k, torch.autograd.grad((k * weights.to(device)).sum(), inputs)

    one, one_grads = gradients(None)
    monkeypatch.setattr(F, "PLAIN_AUTOGRAD_PAIR_STEPS", 0)
    blocked, blocked_grads = gradients(8)
    torch.testing.assert_close(blocked, one, rtol=1e-14, atol=0)
    for a, b in zip(blocked_grads, one_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# Each readout's replay paths: the last readout's scan replayed in checkpointed chunks even when
# small (frozen layers, per-input initial states); the mean readout's groups of diagonals
# replayed with plain autograd and in checkpointed chunks (a shared initial state).
GRADCHECK_CASES = [
    ("last", initial_state, frozen_layers, True)
    for initial_state in ("zero", "per_input")
    for frozen_layers in (0, 2)
] + [
    ("mean", initial_state, 0, chunked)
    for initial_state in ("zero", "shared")
    for chunked in (False, True)
]


@pytest.mark.parametrize(
    "readout,initial_state,frozen_layers,chunked",
    GRADCHECK_CASES,
    ids=[
        f"{r}-{s}-frozen{f}-{'chunked' if c else 'group'}-replay" for r, s, f, c in GRADCHECK_CASES
    ],
)
@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_gradcheck(readout, nonlinearity, initial_state, frozen_layers, chunked, monkeypatch):
    """float64 gradcheck for every variance and both inputs, of the Gram matrix and its
    diagonal, through the replays in the backward pass."""
    if chunked:
        monkeypatch.setattr(F, "PLAIN_AUTOGRAD_PAIR_STEPS", 0)  # replay chunks even when small
    _, x1 = random_batch([3, 2, 3], m=2, seed=8)
    _, x2 = random_batch([1, 3], m=2, seed=9, max_len=3)
    (v1, l1), (v2, l2) = split_layout(x1, 2), split_layout(x2, 2)
    options = dict(
        nonlinearity=nonlinearity,
        num_layers=2,
        frozen_layers=frozen_layers,
        initial_state=initial_state,
        readout=readout,
    )

    def by_variances(*variances):
        return recurrent_kernel(v1, l1, v2, l2, RecurrentVariances(*variances), **options)

    def diag_by_variances(*variances):
        return recurrent_kernel_diag(v1, l1, RecurrentVariances(*variances), **options)

    start = (1.6, 0.9, 0.2, 0.4) if initial_state != "zero" else (1.6, 0.9, 0.2)
    variances = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in start]
    assert torch.autograd.gradcheck(by_variances, variances)
    assert torch.autograd.gradcheck(diag_by_variances, variances)

    kernel = RNTKKernel(input_dim=2, **options).double()
    inputs = (x1.clone().requires_grad_(True), x2.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(kernel.forward, inputs)
    assert torch.autograd.gradcheck(lambda a: kernel.forward(a, a, diag=True), inputs[:1])


@pytest.mark.parametrize("readout", READOUTS)
def test_checkpointed_gradient_equals_plain_autograd(readout, monkeypatch):
    """The chunked replay in backward gives the gradient of the unchunked scan (the last
    readout) or of the groups replayed with plain autograd (the mean readout), for the Gram
    matrix alone and with its diagonal."""
    _, x = random_batch([9, 4, 9, 6, 1], m=1, seed=11)
    kernel = RNTKKernel(input_dim=1, num_layers=2, readout=readout).double()
    weights = torch.randn(5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def grads(plain_limit, with_diag):
        monkeypatch.setattr(F, "PLAIN_AUTOGRAD_PAIR_STEPS", plain_limit)
        kernel.zero_grad()
        loss = (kernel(x).to_dense() * weights).sum()
        if with_diag:
            loss = loss + kernel(x, diag=True).sum()
        loss.backward()
        return [p.grad.clone() for p in kernel.parameters()]

    for with_diag in (False, True):
        chunked, plain = grads(0, with_diag), grads(2**62, with_diag)
        for a, b in zip(chunked, plain, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


@pytest.mark.parametrize("readout", READOUTS)
def test_checkpointed_second_derivatives_equal_plain_autograd(readout, monkeypatch):
    """Under create_graph=True the chunked replay keeps its graph: second derivatives for the
    variances and the inputs (a Hessian-vector product) equal plain autograd's."""
    _, x = random_batch([9, 4, 9, 6, 1], m=1, seed=12)
    x = x.double()
    gen = torch.Generator().manual_seed(1)
    weights = torch.randn(5, 5, dtype=torch.float64, generator=gen)

    def hessian_vector(plain_limit):
        monkeypatch.setattr(F, "PLAIN_AUTOGRAD_PAIR_STEPS", plain_limit)
        kernel = RNTKKernel(input_dim=1, num_layers=2, readout=readout).double()
        z = x.clone().requires_grad_()
        wrt = [kernel.raw_recurrent_var, kernel.raw_input_var, z]
        loss = (kernel(z, x).to_dense() * weights).sum()
        grads = torch.autograd.grad(loss, wrt, create_graph=True)
        directions = [torch.randn(g.shape, dtype=g.dtype, generator=gen) for g in grads]
        product = sum((g * d).sum() for g, d in zip(grads, directions, strict=True))
        return torch.autograd.grad(product, wrt)

    gen.manual_seed(2)
    chunked = hessian_vector(0)
    gen.manual_seed(2)
    plain = hessian_vector(2**62)
    for a, b in zip(chunked, plain, strict=True):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
