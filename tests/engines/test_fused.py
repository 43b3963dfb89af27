"""The fused engines (compiled loop, Triton kernel) against the tensor path and golden values.

The Triton kernel runs on CUDA where there is one and under Triton's interpreter otherwise (set
for the session by ``conftest.pytest_configure``), so CI without a GPU checks the same kernel
source; without Triton installed its tests skip and the compiled loop's still run.
The compiled CPU loop is checked eagerly over many configurations (``GPYTORCH_RNTK_COMPILE=0``)
and compiled for real once.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from gpytorch_rntk._core.config import make_config
from gpytorch_rntk._core.engines import fused as fused_engines
from gpytorch_rntk._core.engines.fused import triton_available as fused_available
from gpytorch_rntk.functional import (
    ENGINES,
    RecurrentVariances,
    recurrent_kernel,
    recurrent_kernel_diag,
)


def fused_kernel(*args, backend: str = "fused", **options):
    """The Gram matrix by a fused engine: ``backend`` ``"triton"``, ``"compiled"`` or
    ``"fused"`` (Triton where it computes the request, else compiled). Skips the test where
    Triton cannot run."""
    if backend == "triton" and not fused_available(args[0].device):
        pytest.skip("Triton cannot run on this device")
    return recurrent_kernel(*args, engine=backend, **options)


def self_terms(values, lengths, variances, *, nonlinearity, num_layers, initial_state, **clock):
    config = make_config(nonlinearity, num_layers, 0, initial_state)
    return fused_engines.clock_self_terms(values, lengths, variances, config=config, **clock)


G2_X = [[0.5, -0.2, 0.1, 0.3], [-0.4, 0.4, 0.2, -0.1], [0.1, 0.1, -0.6, 0.2]]
G2_L1_RNTK = [
    [0.2724876771, 0.0665002389, 0.0826285475],
    [0.0665002389, 0.2674883963, 0.0569493751],
    [0.0826285475, 0.0569493751, 0.2262443659],
]
G2_L2_NNGP = [
    [0.0454669579, 0.0357974164, 0.0347560472],
    [0.0357974164, 0.0451545478, 0.0331677376],
    [0.0347560472, 0.0331677376, 0.0392176651],
]


def _batch(n: int, steps: int, m: int, seed: int, dtype, device):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, steps + 1, (n,), generator=gen)
    values = torch.randn(n, steps, m, generator=gen, dtype=dtype)
    values = values * (torch.arange(steps) < lengths.unsqueeze(-1)).unsqueeze(-1)
    return values.to(device), lengths.to(device)


def _pair_sets(dtype, device, n1=23, n2=17):
    """Two variable-length sets whose first three sequences coincide (exact self pairs)."""
    x1, l1 = _batch(n1, 7, 2, 0, dtype, device)
    x2, l2 = _batch(n2, 6, 2, 1, dtype, device)
    l2[:3] = l1[:3].clamp(max=6)
    x2[:3] = x1[:3, :6] * (torch.arange(6, device=device) < l2[:3, None]).unsqueeze(-1)
    return x1, l1, x2, l2


def _variances(dtype, device):
    return RecurrentVariances(
        *(torch.tensor(v, dtype=dtype, device=device) for v in (1.7, 0.9, 0.2, 0.4))
    )


def _tolerance(dtype) -> float:
    return 1e-12 if dtype == torch.float64 else 2e-5


def _scale_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _check(backend, dtype, device, symmetric, **options):
    x1, l1, x2, l2 = _pair_sets(dtype, device)
    if symmetric:
        x2, l2 = x1, l1
    variances = _variances(dtype, device)
    expected = recurrent_kernel(x1, l1, x2, l2, variances, engine="tensor", **options)
    got = fused_kernel(x1, l1, x2, l2, variances, backend=backend, **options)
    assert got.shape == expected.shape
    assert _scale_error(got, expected) < _tolerance(dtype)
    if symmetric:
        assert torch.equal(got, got.T)


CONFIGS = [
    dict(nonlinearity=nl, num_layers=layers, frozen_layers=frozen, initial_state=init)
    for nl, layers, init in itertools.product(
        ["relu", "erf"], [1, 2, 3], ["zero", "per_input", "shared"]
    )
    for frozen in range(layers + 1)
]


@pytest.mark.parametrize("readout", ["last", "mean"])
@pytest.mark.parametrize("symmetric", [False, True], ids=["cross", "symmetric"])
def test_compiled_loop_matches_tensor_path(dtype, device, symmetric, readout, monkeypatch):
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")  # the same loop, eagerly, every variant
    for options in CONFIGS:
        _check("compiled", dtype, device, symmetric, readout=readout, **options)


@pytest.mark.parametrize("symmetric", [False, True], ids=["cross", "symmetric"])
def test_compiled_tiles_of_half_the_largest(dtype, symmetric, monkeypatch):
    """A side longer than the largest tile takes tiles of half of it where that pads less (23
    and 17 sequences with largest tiles of 16: tiles of 8): the same values."""
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    monkeypatch.setattr(fused_engines, "_TILE", (16, 16))
    assert [fused_engines._tile_size(n, 16, 16) for n in (23, 17, 16, 9)] == [8, 8, 16, 16]
    for options in CONFIGS[:: len(CONFIGS) // 6]:
        _check("compiled", dtype, torch.device("cpu"), symmetric, readout="last", **options)


@pytest.mark.parametrize("readout", ["last", "mean"])
def test_compiled_loop_compiles(dtype, readout):
    """One configuration through torch.compile for real (the CPU engine's production path)."""
    options = dict(nonlinearity="relu", num_layers=2, initial_state="shared")
    _check("compiled", dtype, torch.device("cpu"), False, readout=readout, **options)


@pytest.mark.parametrize("tile", [(2, 4), (4, 16), (32, 1024)])
def test_mean_readout_tiles(tile, monkeypatch):
    """The mean readout in tiles of 2 x 4 (rows x diagonals: many tiles, padded rows and
    columns, short diagonals beside long ones), 4 x 16 and one tile a side gives the tensor
    path's Gram matrix for two sets (with exact copies across them) and for one set against
    itself, exactly symmetric there, and its variance gradients."""
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    monkeypatch.setattr(fused_engines, "_MEAN_TILE", tile)
    monkeypatch.setattr(fused_engines, "_MEAN_TILE_FORWARD_MODE", tile)
    x1, l1, x2, l2 = _pair_sets(torch.float64, "cpu")
    variances = _variances(torch.float64, "cpu")
    for init in ("per_input", "shared"):
        options = dict(nonlinearity="erf", num_layers=2, initial_state=init, readout="mean")
        for y, ly in ((x2, l2), (x1, l1)):
            expected = recurrent_kernel(x1, l1, y, ly, variances, engine="tensor", **options)
            got = fused_kernel(x1, l1, y, ly, variances, backend="compiled", **options)
            assert _scale_error(got, expected) < 1e-12
            if y is x1:
                assert torch.equal(got, got.T)
    # the forward-mode derivatives in the same tiles, against the tensor path's reverse mode
    learned = RecurrentVariances(*(v.clone().requires_grad_() for v in variances[:4]))
    weights = torch.randn(len(l1), len(l2), dtype=torch.float64)
    options = dict(nonlinearity="relu", initial_state="shared", readout="mean")
    grads = [
        torch.autograd.grad(
            (weights * recurrent_kernel(x1, l1, x2, l2, learned, engine=engine, **options)).sum(),
            learned[:4],
        )
        for engine in ("tensor", "compiled")
    ]
    for expected, got in zip(*grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-11, atol=0)


TRITON_CONFIGS = [
    dict(nonlinearity="relu", num_layers=1),
    dict(nonlinearity="relu", num_layers=2, initial_state="per_input"),
    dict(nonlinearity="erf", num_layers=2, frozen_layers=1, initial_state="shared"),
    dict(nonlinearity="relu", num_layers=3, frozen_layers=3),
]


@pytest.mark.parametrize("options", TRITON_CONFIGS, ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("symmetric", [False, True], ids=["cross", "symmetric"])
def test_triton_kernel_matches_tensor_path(dtype, device, symmetric, options):
    if not fused_available(device):
        pytest.skip("Triton cannot run on this device")
    _check("triton", dtype, device, symmetric, **options)


@pytest.mark.parametrize("symmetric", [False, True], ids=["cross", "symmetric"])
def test_triton_kernel_tiles(dtype, device, symmetric, monkeypatch):
    """On tiles smaller than the sets (ragged edges; for K(x, x) tiles below the diagonal
    skipped and mirrored), the Triton kernel's values and forward-mode gradients still equal
    the tensor path's."""
    if not fused_available(device):
        pytest.skip("Triton cannot run on this device")
    from gpytorch_rntk._core.engines import triton_kernels as _triton

    monkeypatch.setitem(_triton.TILES, (dtype, False), (8, 16, 4))
    monkeypatch.setitem(_triton.TILES, (dtype, True), (16, 8, 4))
    options = dict(nonlinearity="erf", num_layers=2, initial_state="per_input")
    _check("triton", dtype, device, symmetric, **options)
    _check_triton_forward_mode(dtype, device, symmetric, frozen_layers=0, **options)


@pytest.mark.parametrize(
    "readout,symmetric,programs",
    [("mean", False, 1), ("mean", True, 64), ("geometric", False, 64), ("geometric", True, 1)],
)
def test_triton_grid_kernel(dtype, device, symmetric, readout, programs, monkeypatch):
    """The mean and geometric readouts' Triton kernel on tiles smaller than the sets (ragged
    edges; K(x, x)'s tiles below the diagonal mirrored), with the diagonals of the time grids
    in one group or dealt to as many as there are diagonals (partial sums added after):
    values and forward-mode gradients (the decay's included) equal the tensor path's."""
    if not fused_available(device):
        pytest.skip("Triton cannot run on this device")
    from gpytorch_rntk._core.engines import triton_kernels as _triton

    monkeypatch.setitem(_triton.GRID_TILES, (dtype, False), (8, 16, 4))
    monkeypatch.setitem(_triton.GRID_TILES, (dtype, True), (16, 8, 4))
    monkeypatch.setattr(_triton, "_INTERPRETED_PROGRAMS", programs)
    monkeypatch.setattr(_triton, "_PROGRAMS_PER_SM", programs)
    options = dict(nonlinearity="relu", num_layers=2, initial_state="per_input")
    _check("triton", dtype, device, symmetric, readout=readout, **options)
    x1, l1, x2, l2 = _pair_sets(dtype, device)
    args = (x1, l1, x1, l1) if symmetric else (x1, l1, x2, l2)
    weights = torch.randn(23, 23, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    expected = _variance_gradients("tensor", args, weights, options, readout, dtype)
    got = _variance_gradients("triton", args, weights, options, readout, dtype)
    assert _scale_error(got, expected) < _tolerance(dtype)


@pytest.mark.parametrize("longest", [1, 2, 7])
@pytest.mark.parametrize("groups", [1, 3, 13])
def test_diagonals_dealt_once(longest, groups):
    """The time grid's diagonals are dealt to the groups once each (the rest padding past
    every grid), and the groups' cells differ by at most two diagonals' worth."""
    from gpytorch_rntk._core.engines.triton_kernels import _diagonals

    dealt, per_group = _diagonals(longest, groups, "cpu")
    assert dealt.shape == (groups, per_group)
    real = dealt[dealt.abs() < longest]
    assert sorted(real.tolist()) == list(range(1 - longest, longest))
    assert (dealt[dealt.abs() >= longest] == longest + 1).all()
    cells = ((longest - dealt.abs()).clamp(min=0)).sum(1)
    assert cells.sum() == longest**2
    assert cells.max() - cells.min() <= 2 * longest


@pytest.mark.parametrize("options", TRITON_CONFIGS, ids=lambda o: "-".join(map(str, o.values())))
def test_triton_self_terms(dtype, device, options):
    """The self-term recursion as one Triton kernel equals the loop of tensor operations, on
    both clocks (end-aligned for the last readout, start-aligned for the mean)."""
    if not fused_available(device):
        pytest.skip("Triton cannot run on this device")
    x, lengths = _batch(13, 8, 3, 5, dtype, device)
    options = {"initial_state": "zero"} | {k: v for k, v in options.items() if k != "frozen_layers"}
    for align, steps in (("end", 8), ("start", 9)):
        setup = dict(steps=steps, align=align, **options)
        expected = self_terms(x, lengths, _variances(dtype, device), **setup)
        got = self_terms(x, lengths, _variances(dtype, device), triton=True, **setup)
        assert _scale_error(got, expected) < _tolerance(dtype)


@pytest.mark.parametrize("backend", ["triton", "compiled"])
def test_golden_g2(backend, device, monkeypatch):
    """G2 (docs/kernels.md, *Golden values*; s_w = 1.4142 literally), through the fused engine."""
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    if backend == "triton" and not fused_available(device):
        pytest.skip("Triton cannot run on this device")
    x = torch.tensor(G2_X, dtype=torch.float64, device=device).unsqueeze(-1)
    lengths = torch.full((3,), 4, device=device)
    variances = RecurrentVariances(
        *(torch.tensor(v, dtype=torch.float64, device=device) for v in (1.4142**2, 0.25, 0.01))
    )
    rntk = fused_kernel(x, lengths, x, lengths, variances, backend=backend)
    nngp = fused_kernel(
        x, lengths, x, lengths, variances, backend=backend, num_layers=2, frozen_layers=2
    )
    expected = torch.tensor(G2_L1_RNTK, dtype=torch.float64, device=device)
    torch.testing.assert_close(rntk, expected, rtol=0, atol=1e-10)
    expected = torch.tensor(G2_L2_NNGP, dtype=torch.float64, device=device)
    torch.testing.assert_close(nngp, expected, rtol=0, atol=1e-10)


def test_engine_dispatch(monkeypatch):
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    x, lengths = _batch(6, 5, 1, 0, torch.float64, "cpu")
    variances = _variances(torch.float64, "cpu")
    fused = recurrent_kernel(x, lengths, x, lengths, variances, engine="fused")
    tensor = recurrent_kernel(x, lengths, x, lengths, variances, engine="tensor")
    torch.testing.assert_close(fused, tensor, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="Unknown engine"):
        recurrent_kernel(x, lengths, x, lengths, variances, engine="cuda")
    with pytest.raises(ValueError, match="not the sequences"):
        recurrent_kernel(x.requires_grad_(), lengths, x, lengths, variances, engine="fused")
    with pytest.raises(ValueError, match="not paired rows"):
        recurrent_kernel(x, lengths, x, lengths, variances, engine="fused", paired=True)


def test_kernel_engine_option(monkeypatch):
    """``RNTKKernel(engine=...)``: the fused engine gives the tensor path's predictions-time
    Gram matrix; the option is validated."""
    from gpytorch_rntk import RNTKKernel, encode_sequences

    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    gen = torch.Generator().manual_seed(3)
    x = encode_sequences([torch.randn(t, 2, generator=gen) for t in (3, 5, 2, 5, 4)]).double()
    engines = [e for e in ENGINES if e != "triton" or fused_available(x.device)]
    kernels = {e: RNTKKernel(input_dim=2, num_layers=2, engine=e).double() for e in engines}
    with torch.no_grad():
        dense = {e: k(x, x[:3]).to_dense() for e, k in kernels.items()}
    torch.testing.assert_close(dense["fused"], dense["tensor"], rtol=1e-12, atol=0)
    torch.testing.assert_close(dense["auto"], dense["tensor"], rtol=0, atol=0)  # small: tensor
    with pytest.raises(ValueError, match="Unknown engine"):
        RNTKKernel(input_dim=2, engine="gpu")


def _variance_gradients(backend, args, weights, options, readout, dtype=torch.float64):
    """The gradients of ``sum(K * weights)`` for the variances (and the geometric readout's
    decay) by the tensor path's reverse mode (``backend="tensor"``) or by a fused backend's
    forward mode."""
    geometric = readout == "geometric"
    variances = [
        torch.tensor(v, dtype=dtype, device=args[0].device, requires_grad=True)
        for v in (1.7, 0.9, 0.2, 0.4, 0.7 if geometric else 1.0)
    ]
    options = dict(options, readout=readout)
    if backend == "tensor":
        k = recurrent_kernel(*args, RecurrentVariances(*variances), engine="tensor", **options)
    else:
        k = fused_kernel(*args, RecurrentVariances(*variances), backend=backend, **options)
    wanted = variances[:4] if options["initial_state"] != "zero" else variances[:3]
    wanted += variances[4:] if geometric else []
    loss = (k * weights[: k.shape[0], : k.shape[1]].to(k)).sum()
    return torch.stack(torch.autograd.grad(loss, wanted))


@pytest.mark.parametrize(
    "readout,backend",
    [("last", "compiled"), ("last", "triton"), ("mean", "compiled"), ("geometric", "compiled")],
)
@pytest.mark.parametrize("symmetric", [False, True], ids=["cross", "symmetric"])
def test_forward_mode_variance_gradients(symmetric, readout, backend, monkeypatch):
    """The fused engine's forward-mode gradients for the variances (the compiled loop, run
    eagerly, and the Triton kernel with its self terms' derivatives) equal reverse-mode
    autograd through the tensor path (float64, every nonlinearity, depth, initial state,
    frozen)."""
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    x1, l1, x2, l2 = _pair_sets(torch.float64, "cpu", 13, 9)
    args = (x1, l1, x1, l1) if symmetric else (x1, l1, x2, l2)
    weights = torch.randn(13, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for options in CONFIGS:
        if options["num_layers"] == 3:
            continue
        expected = _variance_gradients("tensor", args, weights, options, readout)
        got = _variance_gradients(backend, args, weights, options, readout)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("options", TRITON_CONFIGS, ids=lambda o: "-".join(map(str, o.values())))
def test_triton_forward_mode(dtype, device, options):
    """The Triton kernel's forward-mode gradients (three layers, both dtypes, on CUDA where
    there is one) equal the tensor path's reverse mode."""
    if not fused_available(device):
        pytest.skip("Triton cannot run on this device")
    options = {"initial_state": "zero", "frozen_layers": 0} | options
    for symmetric in (False, True):
        _check_triton_forward_mode(dtype, device, symmetric, **options)


def _check_triton_forward_mode(dtype, device, symmetric, **options):
    """The Triton kernel's variance gradients (last readout) equal the tensor path's."""
    x1, l1, x2, l2 = _pair_sets(dtype, device)
    args = (x1, l1, x1, l1) if symmetric else (x1, l1, x2, l2)
    weights = torch.randn(23, 23, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    expected = _variance_gradients("tensor", args, weights, options, "last", dtype)
    got = _variance_gradients("triton", args, weights, options, "last", dtype)
    assert _scale_error(got, expected) < _tolerance(dtype)


@pytest.mark.parametrize("readout", ["last", "mean", "geometric"])
def test_forward_mode_gradients_compile(readout):
    """The forward-mode loop through torch.compile for real, in an exact GP's marginal
    likelihood: the same loss and hyperparameter gradients as the tensor path."""
    import gpytorch

    from gpytorch_rntk import RNTKKernel, encode_sequences

    gen = torch.Generator().manual_seed(4)
    x = encode_sequences([torch.randn(t, 1, generator=gen) for t in (4, 7, 5, 7, 3, 6)]).double()
    y = torch.randn(6, dtype=torch.float64, generator=gen)
    results = []
    for engine in ("tensor", "compiled"):  # (not "fused": Triton's interpreter in these tests)
        kernel = gpytorch.kernels.ScaleKernel(
            RNTKKernel(input_dim=1, engine=engine, readout=readout)
        ).double()
        likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
        covariance = kernel(x).to_dense() + likelihood.noise * torch.eye(6, dtype=torch.float64)
        loss = -torch.distributions.MultivariateNormal(
            torch.zeros(6, dtype=torch.float64), covariance
        ).log_prob(y)
        parameters = [p for _, p in sorted(kernel.named_parameters())]
        results.append((loss, torch.autograd.grad(loss, parameters)))
    (loss_t, grads_t), (loss_f, grads_f) = results
    torch.testing.assert_close(loss_f, loss_t, rtol=1e-12, atol=0)
    for a, b in zip(grads_f, grads_t, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_deeper_than_the_triton_kernel_uses_the_compiled_loop(monkeypatch):
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    x, lengths = _batch(5, 4, 1, 0, torch.float64, "cpu")
    variances = _variances(torch.float64, "cpu")
    options = dict(nonlinearity="erf", num_layers=4)
    expected = recurrent_kernel(x, lengths, x, lengths, variances, engine="tensor", **options)
    got = fused_kernel(x, lengths, x, lengths, variances, **options)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_second_derivatives_raise(monkeypatch):
    """The forward-mode backward gives first derivatives only: create_graph=True raises
    instead of dropping the terms of the derivatives' own dependence."""
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    x1, l1, _, _ = _pair_sets(torch.float64, "cpu", 5, 3)
    variances = _variances(torch.float64, "cpu")
    variances[0].requires_grad_()
    gram = fused_kernel(x1, l1, x1, l1, variances, initial_state="shared", backend="compiled")
    (first,) = torch.autograd.grad(gram.sum(), variances[0])
    assert first != 0
    with pytest.raises(RuntimeError, match="first derivatives only"):
        torch.autograd.grad(gram.sum(), variances[0], create_graph=True)


@pytest.mark.parametrize("backend", ["tensor", "compiled", "triton"])
def test_erf_self_pairs_stay_on_their_self_terms(backend, dtype, device, monkeypatch):
    """erf with recurrent_var = 4: sigma_w^2 V' > 1 on self pairs, where the general dual
    amplified the rounding gap between a self pair's cross state and its self terms every step
    (inf or 1e246 after 200 steps, float32 and float64). The self-pair form keeps K(x, x)'s
    diagonal equal to the self-term scan's."""
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    x, lengths = _batch(6, 200, 1, 4, dtype, device)
    lengths[0] = 200
    variances = RecurrentVariances(
        *(torch.tensor(v, dtype=dtype, device=device) for v in (4.0, 1.0, 0.1))
    )
    if backend == "tensor":
        gram = recurrent_kernel(x, lengths, x, lengths, variances, nonlinearity="erf")
    else:
        gram = fused_kernel(x, lengths, x, lengths, variances, nonlinearity="erf", backend=backend)
    double = RecurrentVariances(*(torch.as_tensor(v).double() for v in variances))
    diagonal = recurrent_kernel_diag(x.double(), lengths, double, nonlinearity="erf")
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(gram.diagonal().double(), diagonal, rtol=tol, atol=0)


@pytest.mark.parametrize("backend", ["tensor", "compiled", "triton"])
def test_relu_zero_self_term_is_finite(backend, dtype, device, monkeypatch):
    """ReLU with bias_var = 0 and a zero step: a self term of 0 gives cos = 0 (the limit of a
    vanishing bias), not 0 / 0: the zero sequence's kernel is 0, the others unchanged."""
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    x, lengths = _batch(4, 5, 2, 5, dtype, device)
    x[1] = 0.0
    x[2, :2] = 0.0  # zero steps first, then data
    lengths[1:3] = 5
    variances = RecurrentVariances(
        *(torch.tensor(v, dtype=dtype, device=device) for v in (1.8, 1.0, 0.0))
    )
    if backend == "tensor":
        gram = recurrent_kernel(x, lengths, x, lengths, variances)
    else:
        gram = fused_kernel(x, lengths, x, lengths, variances, backend=backend)
    assert torch.isfinite(gram).all()
    scale = gram.abs().max()
    assert gram[1].abs().max() <= 1e-15 * scale and gram[:, 1].abs().max() <= 1e-15 * scale
    tiny = variances._replace(bias_var=torch.tensor(1e-30, dtype=dtype, device=device))
    limit = recurrent_kernel(x, lengths, x, lengths, tiny)
    torch.testing.assert_close(gram, limit, rtol=1e-5, atol=1e-6)
    if backend == "tensor":  # finite variance gradients, the vanishing-bias limit's
        grads = []
        for v in (variances, tiny):
            wanted = [
                v.recurrent_var.clone().requires_grad_(),
                v.input_var.clone().requires_grad_(),
            ]
            gram = recurrent_kernel(
                x, lengths, x, lengths, v._replace(recurrent_var=wanted[0], input_var=wanted[1])
            )
            grads.append(torch.stack(torch.autograd.grad(gram.sum(), wanted)))
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)
