"""Dual activations by quadrature (``_core.quadrature``): accuracy against a high-order reference
and an independent trapezoidal rule, ReLU and erf against their closed forms, Price's-theorem
derivatives, the options that select them, the engines that run or refuse them, and the kernels
built on them against the per-pair reference loop.

Errors are relative to the scale of each dual, ``sqrt(V(k11) V(k22))`` (the Cauchy-Schwarz bound
on ``|V|``; likewise for ``V'``): a cross dual can be 0 (tanh at ``rho = 0``), its scale not.
"""

from __future__ import annotations

import math

import pytest
import torch
from reference import reference_gram

from gpytorch_rntk import RNNGPKernel, RNTKKernel, encode_sequences
from gpytorch_rntk._core import quadrature
from gpytorch_rntk._core.config import make_config
from gpytorch_rntk._core.duals import ERF, Erf, ReLU, erf_dual, relu_dual
from gpytorch_rntk._core.engines import Problem, select
from gpytorch_rntk.functional import (
    QuadratureDual,
    RecurrentVariances,
    nonlinearity_option,
    recurrent_kernel,
    recurrent_kernel_diag,
)

NAMED = ["tanh", "sigmoid", "gelu", "silu", "softplus"]
TOLERANCE = 1e-8  # float64, relative to the scale, for pre-activation variances up to 30
LARGEST_VARIANCE = 30.0


def _cases(seed: int = 0, n: int = 40, dtype=torch.float64, device="cpu"):
    """``(k12, k11, k22)``: variances log-uniform in [1e-4, 30], correlations uniform with every
    third within 1e-8..1 of +-1, and the edges (rho = +-1 and 0, zero variances, 30 and 1e-4)."""
    gen = torch.Generator().manual_seed(seed)
    span = math.log10(LARGEST_VARIANCE / 1e-4)
    k11 = 10 ** (torch.rand(n, generator=gen, dtype=torch.float64) * span - 4)
    k22 = 10 ** (torch.rand(n, generator=gen, dtype=torch.float64) * span - 4)
    rho = torch.rand(n, generator=gen, dtype=torch.float64) * 2 - 1
    near = torch.arange(n) % 3 == 0
    closeness = 10 ** (-8 * torch.rand(n, generator=gen, dtype=torch.float64))
    rho = torch.where(near, rho.sign() * (1 - closeness), rho)
    edges = torch.tensor(
        [
            (30, 30, 1),
            (30, 30, -1),
            (0, 0, 0),
            (30, 0, 0.3),
            (0, 5, 0.7),
            (1e-4, 30, 0.999),
            (30, 30, 0),
            (10, 30, -0.7),
            (1, 1, 1),
            (1, 1, -1),
            (20, 5, 0.95),
        ],
        dtype=torch.float64,
    )
    k11, k22 = torch.cat([k11, edges[:, 0]]), torch.cat([k22, edges[:, 1]])
    rho = torch.cat([rho, edges[:, 2]])
    k12 = rho * (k11 * k22).sqrt()
    return tuple(t.to(dtype=dtype, device=device) for t in (k12, k11, k22))


def _relative(got, expected, scale):
    """``|got - expected| / scale`` (0 where both are exactly 0 and so is the scale)."""
    error = (got - expected).abs()
    return torch.where(error == 0, 0.0, error / scale).max().item()


def _scales(dual, k11, k22):
    (v1, d1), (v2, d2) = dual.self_pair(k11), dual.self_pair(k22)
    return (v1 * v2).sqrt(), (d1 * d2).sqrt()


# ---------------------------------------------------------------------------------------------
# Accuracy


@pytest.mark.parametrize("name", NAMED)
def test_named_duals_match_a_high_order_reference(name, device):
    """Order 41 (the default) against order 161 in float64 (the rule converges exponentially:
    161 agrees with an independent trapezoidal rule to about 1e-14, below). Measured maxima of
    the default order here and over 400 more such cases: 7e-10 (tanh's V'; its self pairs'
    9e-10), 1e-10 at most for the others."""
    k12, k11, k22 = _cases(device=device)
    reference = QuadratureDual.named(name, order=161)
    v_ref, d_ref = reference(k12, k11, k22)
    scale_v, scale_d = _scales(reference, k11, k22)
    v, d = QuadratureDual.named(name)(k12, k11, k22)
    assert _relative(v, v_ref, scale_v) <= TOLERANCE
    assert _relative(d, d_ref, scale_d) <= TOLERANCE
    self_v, self_d = QuadratureDual.named(name).self_pair(k11)
    ref_v, ref_d = reference.self_pair(k11)
    assert _relative(self_v, ref_v, ref_v.abs()) <= TOLERANCE
    assert _relative(self_d, ref_d, ref_d.abs()) <= TOLERANCE


def _trapezoid(phi, k12: float, k11: float, k22: float) -> float:
    """``E[phi(u) phi(v)]`` by the trapezoidal rule on a uniform grid over ``[-8.5, 8.5]^2`` of
    the Cholesky coordinates, spaced finely enough for ``phi`` with features on the scale of 1
    (exponentially convergent; independent of the package's rule)."""
    h = min(0.2, 0.06 / math.sqrt(max(k11, k22, 1e-9)))
    z = torch.arange(-8.5, 8.5 + h / 2, h, dtype=torch.float64)
    w = torch.exp(-z.square() / 2) * h / math.sqrt(2 * math.pi)
    rho = k12 / math.sqrt(k11 * k22) if k11 * k22 > 0 else 0.0
    u = math.sqrt(k11) * z[:, None]
    v = math.sqrt(k22) * (rho * z[:, None] + math.sqrt(max(0.0, 1 - rho * rho)) * z[None, :])
    return float((w[:, None] * w[None, :] * phi(u) * phi(v)).sum())


def _check_against_trapezoid(cases, order):
    worst = 0.0
    for name in NAMED:
        phi, jet = quadrature.ACTIVATIONS[name]
        slope = lambda x, jet=jet: jet(x, 1)[1]  # noqa: E731
        dual = QuadratureDual.named(name, order=order)
        for k11, k22, rho in cases:
            k12 = rho * math.sqrt(k11 * k22)
            v, d = dual(*torch.tensor([k12, k11, k22], dtype=torch.float64))
            for got, f, i in ((v, phi, 0), (d, slope, 1)):
                selves = dual.self_pair(torch.tensor([k11, k22], dtype=torch.float64))[i]
                scale = math.sqrt(selves[0] * selves[1])
                worst = max(worst, abs(float(got) - _trapezoid(f, k12, k11, k22)) / scale)
    return worst


def test_the_reference_agrees_with_an_independent_rule():
    """Order 161 against the trapezoidal rule on a uniform grid, moderate variances (the grid
    needed for variances of 30 is in the slow test)."""
    cases = [(0.7, 2.3, -0.6), (3.0, 0.05, 0.999)]
    assert _check_against_trapezoid(cases, 161) <= 1e-12


@pytest.mark.slow
def test_the_default_order_against_an_independent_rule():
    """The default order against the trapezoidal rule up to variances of 30, every activation,
    V and V' (measured: at most 7e-10)."""
    cases = [(30.0, 30.0, 0.9), (10.0, 30.0, -0.7), (20.0, 5.0, 0.95), (30.0, 30.0, 1.0)]
    cases += [(0.113, 4.96, 0.865), (9.68, 8.37, -0.966), (1e-3, 2.0, 0.3)]
    assert _check_against_trapezoid(cases, quadrature.DEFAULT_ORDER) <= TOLERANCE


def test_erf_by_quadrature_is_its_closed_form(device):
    """The quadrature dual of erf against erf_dual (independent of the rule), 300 random cases
    (measured: at most 1e-10 of the scale for V and V', 2.4e-10 for the self pairs)."""
    k12, k11, k22 = _cases(seed=1, n=300, device=device)
    dual = QuadratureDual.named("erf")
    v, d = dual(k12, k11, k22)
    v_ref, d_ref = erf_dual(k12, k11, k22)
    (s1, t1), (s2, t2) = erf_dual(k11, k11, k11, True), erf_dual(k22, k22, k22, True)
    assert _relative(v, v_ref, (s1 * s2).sqrt()) <= TOLERANCE
    assert _relative(d, d_ref, (t1 * t2).sqrt()) <= TOLERANCE
    self_v, self_d = dual.self_pair(k11)
    assert _relative(self_v, s1, s1) <= TOLERANCE
    assert _relative(self_d, t1, t1) <= TOLERANCE


def test_relu_by_quadrature_converges_slowly_to_its_closed_form(device):
    """ReLU's kink (and V's jump in ReLU') defeats any fixed smooth rule: measured against
    relu_dual, V is off by 1.6e-3 of its scale at order 41, 7.7e-4 at 81, 3.7e-4 at 161 (error
    ~ 1/order, so 1e-8 would need about 10^7 nodes per dimension), V' by 7e-2, 5e-2, 4e-2
    (~ 1/sqrt(order)). That is why relu keeps its closed form; here the bounds are those
    measurements plus a third. (Zero variances are left out: there relu_dual takes the limit of a
    vanishing bias, V' = 1/4, where ReLU'(0) = 0 gives 0.) The self pair's V = k / 2 is exact:
    the rule integrates z^2 exactly and is symmetric."""
    k12, k11, k22 = _cases(device=device)
    keep = (k11 > 0) & (k22 > 0)
    k12, k11, k22 = k12[keep], k11[keep], k22[keep]
    v_ref, d_ref = relu_dual(k12, k11, k22)
    scale = (k11 * k22).sqrt() / 2
    errors = []
    for order in (41, 161):
        v, d = QuadratureDual.named("relu", order=order)(k12, k11, k22)
        errors.append((_relative(v, v_ref, scale), _relative(d, d_ref, 0.5)))
    assert errors[0][0] <= 2.1e-3 and errors[0][1] <= 0.095
    assert errors[1][0] <= 5e-4 and errors[1][1] <= 0.048
    assert errors[1][0] < errors[0][0] / 3  # converging, about as 1/order
    self_v, _ = QuadratureDual.named("relu").self_pair(k11)
    torch.testing.assert_close(self_v, k11 / 2, rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", NAMED + ["erf"])
def test_float32_agrees_with_float64(name, device):
    """float32 keeps about 6e-6 of the scale (measured); every value finite."""
    k12, k11, k22 = _cases(seed=2, device=device)
    dual = QuadratureDual.named(name)
    v, d = dual(k12, k11, k22)
    scale_v, scale_d = _scales(dual, k11, k22)
    v32, d32 = dual(k12.float(), k11.float(), k22.float())
    assert v32.dtype == torch.float32 and torch.isfinite(v32).all() and torch.isfinite(d32).all()
    assert _relative(v32.double(), v, scale_v) <= 2e-5
    assert _relative(d32.double(), d, scale_d) <= 2e-5


def test_chunks_do_not_change_the_result(monkeypatch):
    """Pairs are computed in chunks of CHUNK_ELEMENTS values (memory); the chunk boundaries do
    not matter, and empty inputs give empty results."""
    k12, k11, k22 = _cases()
    dual = QuadratureDual.named("tanh", order=11)
    whole = dual(k12, k11, k22)
    monkeypatch.setattr(quadrature, "CHUNK_ELEMENTS", 7 * 11 * 11)
    chunked = dual(k12, k11, k22)
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    empty = dual(k12[:0], k11[:0], k22[:0])
    assert [t.shape for t in empty] == [(0,), (0,)]


def test_broadcast_pair_states():
    """Self terms ``(N, 1)`` and ``(1, N')`` against a ``(N, N')`` state, as the tensor engine
    passes them; the same as the flat pairs."""
    k11 = torch.tensor([[0.5], [2.0], [7.0]], dtype=torch.float64)
    k22 = torch.tensor([[1.0, 0.2]], dtype=torch.float64)
    k12 = 0.3 * (k11 * k22).sqrt()
    dual = QuadratureDual.named("gelu", order=15)
    v, d = dual(k12, k11, k22)
    assert v.shape == d.shape == (3, 2)
    flat = dual(k12.reshape(-1), k11.expand(3, 2).reshape(-1), k22.expand(3, 2).reshape(-1))
    torch.testing.assert_close(v.reshape(-1), flat[0], rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------
# Derivatives


def test_derivatives_are_prices_theorem():
    """First and second derivatives of V, V' (cross and self) against finite differences (a
    lower order and moderate variances keep the nested derivatives cheap and accurate); the
    derivative in k12 is V' itself."""
    dual = QuadratureDual.named("tanh", order=25)
    k11 = torch.tensor([0.5, 1.2], dtype=torch.float64, requires_grad=True)
    k22 = torch.tensor([1.5, 0.3], dtype=torch.float64, requires_grad=True)
    k12 = (torch.tensor([0.4, -0.99], dtype=torch.float64) * (k11 * k22).sqrt()).detach()
    k12.requires_grad_(True)
    assert torch.autograd.gradcheck(dual, (k12, k11, k22))
    assert torch.autograd.gradgradcheck(dual, (k12, k11, k22))
    k = torch.tensor([1e-3, 0.3, 2.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dual.self_pair, (k,))
    assert torch.autograd.gradgradcheck(dual.self_pair, (k,))
    v, slope = dual(k12, k11, k22)
    (dv,) = torch.autograd.grad(v.sum(), k12)
    torch.testing.assert_close(dv, slope, rtol=0, atol=0)


def test_forward_mode_matches_reverse_mode():
    dual = QuadratureDual.named("silu", order=21)
    k = torch.tensor([0.7, 3.0], dtype=torch.float64)
    args = (0.5 * k, k, k.flip(0))
    tangents = tuple(torch.rand(2, dtype=torch.float64) for _ in args)
    _, (tv, td) = torch.func.jvp(lambda *a: dual(*a), args, tangents)
    leaves = [a.clone().requires_grad_(True) for a in args]
    v, d = dual(*leaves)
    for out, tangent in ((v, tv), (d, td)):
        grads = torch.autograd.grad(out.sum(), leaves, retain_graph=True)
        expected = sum(g * t for g, t in zip(grads, tangents, strict=True))  # diagonal Jacobian
        torch.testing.assert_close(tangent, expected, rtol=1e-12, atol=1e-14)


def test_torch_func_transforms():
    """vmap, and torch.func.hessian of a kernel against autograd's double backward (the duals'
    derivatives are forward-mode, so they compose with the transforms); a user's function too."""
    dual = QuadratureDual.named("gelu", order=21)
    k = torch.rand(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.1
    torch.testing.assert_close(torch.func.vmap(dual.self_pair)(k)[0], dual.self_pair(k)[0])
    values, lengths = VALUES[:2, :2], torch.tensor([2, 1])
    for nonlinearity in (QuadratureDual.named("tanh", order=15), QuadratureDual(_sine, order=15)):

        def loss(recurrent_var, nonlinearity=nonlinearity):
            variances = RecurrentVariances(recurrent_var, 1.0, 0.1)
            options = dict(nonlinearity=nonlinearity, num_layers=1)
            return recurrent_kernel(values, lengths, values, lengths, variances, **options).sum()

        at = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(loss(at), at, create_graph=True)
        (second,) = torch.autograd.grad(grad, at)
        hessian = torch.func.hessian(loss)(at.detach())
        torch.testing.assert_close(hessian, second, rtol=1e-10, atol=0)


def test_finite_at_the_boundary():
    """rho = +-1, zero variances, a non-positive-semidefinite rounding: finite values and
    gradients; rho = 1 with equal variances gives the self pair."""
    dual = QuadratureDual.named("softplus")
    k = torch.tensor([2.0, 2.0, 0.0, 0.0, 3.0], dtype=torch.float64, requires_grad=True)
    k12 = torch.stack([k[0], -k[1], k[2], k[3], k[4] * (1 + 1e-12)])
    other = torch.stack([k[0], k[1], k[2], k[3] + 1, k[4]])
    v, d = dual(k12, k, other)
    (v.sum() + d.sum()).backward()
    assert torch.isfinite(v).all() and torch.isfinite(d).all() and torch.isfinite(k.grad).all()
    self_v, self_d = dual.self_pair(k.detach()[:1])
    torch.testing.assert_close(v[:1], self_v, rtol=1e-12, atol=0)
    torch.testing.assert_close(d[:1], self_d, rtol=1e-12, atol=0)


def test_identical_sequences_use_the_self_pair_form():
    """Where ``same``: V, V' of the self term (as erf's duals); the form for differentiated
    sequences ignores the mask (one of two identical sequences may move alone)."""
    dual = QuadratureDual.named("tanh", order=21)
    k11 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    k12 = k11 * (1 - 1e-9)
    same = torch.tensor([True, False])
    v, d = dual(k12, k11, k11, same)
    self_v, self_d = dual.self_pair(k11)
    assert v[0] == self_v[0] and d[0] == self_d[0]
    general = dual(k12, k11, k11)
    assert v[1] == general[0][1]
    one_sided = dual.differentiable_in_sequences()
    assert one_sided is not dual and one_sided != dual
    assert one_sided(k12, k11, k11, same)[0][0] == general[0][0]
    assert one_sided.differentiable_in_sequences() is one_sided


# ---------------------------------------------------------------------------------------------
# Options


def test_names_functions_and_instances_select_duals():
    assert isinstance(make_config("relu").dual, ReLU) and isinstance(make_config("erf").dual, Erf)
    assert make_config(torch.relu).dual.code is not None  # a built-in: its closed form
    assert make_config(torch.erf).dual.code == ERF
    tanh = make_config("tanh").dual
    assert isinstance(tanh, QuadratureDual) and tanh.code is None and tanh.name == "tanh"
    assert make_config(torch.tanh).dual == tanh and hash(make_config("tanh").dual) == hash(tanh)
    assert make_config(torch.nn.functional.gelu).dual == make_config("gelu").dual

    def my_activation(x):
        return torch.sin(x) + 0.5 * x

    mine = make_config(my_activation).dual
    assert mine.name == "my_activation" and mine == make_config(my_activation).dual
    assert mine != make_config(lambda x: torch.sin(x) + 0.5 * x).dual
    finer = QuadratureDual(my_activation, order=61, name="sine")
    assert make_config(finer).dual is finer and repr(finer) == "QuadratureDual('sine', order=61)"
    assert nonlinearity_option(torch.tanh) == "tanh" and nonlinearity_option("erf") == "erf"
    assert nonlinearity_option(my_activation) == mine
    assert nonlinearity_option(QuadratureDual.named("tanh", order=61)).order == 61


@pytest.mark.parametrize(
    "nonlinearity,error,message",
    [
        ("elu", ValueError, r"Unknown nonlinearity 'elu'; choose one of \['relu', 'erf', 'tanh'"),
        (3, TypeError, "nonlinearity must be a name .* got int 3"),
        (None, TypeError, "got NoneType None"),
        (lambda x: x.sum(), TypeError, "same shape .* got shape \\(\\), torch.float64"),
        (lambda x: x.numpy(), TypeError, "got ndarray"),
        (lambda x: x > 0, TypeError, "torch.bool"),
        (lambda x: x.cumsum(0), TypeError, "must be elementwise"),
        (lambda x: torch.sin(x.detach()), TypeError, "differentiable by torch.autograd"),
        (lambda x: 1 / x, TypeError, "not finite"),
        (lambda x: torch.tanh(x, 2), TypeError, "failed on a float64 tensor"),
    ],
)
def test_bad_nonlinearities_are_refused_clearly(nonlinearity, error, message):
    with pytest.raises(error, match=message):
        make_config(nonlinearity)
    with pytest.raises(error, match=message):
        RNTKKernel(1, nonlinearity=nonlinearity)


def test_bad_orders_are_refused():
    for order in (1, 2.5, True, "41"):
        with pytest.raises(ValueError, match="order must be an integer of at least 2"):
            QuadratureDual(torch.tanh, order=order)


# ---------------------------------------------------------------------------------------------
# Engines and kernels

X = [torch.randn(t, 2, generator=torch.Generator().manual_seed(t)) for t in (3, 1, 4)]
VALUES, LENGTHS = torch.zeros(3, 4, 2, dtype=torch.float64), torch.tensor([3, 1, 4])
for _i, _x in enumerate(X):
    VALUES[_i, : len(_x)] = _x
VARIANCES = RecurrentVariances(1.2, 0.8, 0.1)


@pytest.mark.parametrize("engine", ["compiled", "triton", "fused"])
def test_fused_engines_refuse_quadrature_duals_with_a_reason(engine, monkeypatch):
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    with pytest.raises(ValueError, match="relu and erf in closed form, not 'tanh'") as caught:
        recurrent_kernel(VALUES, LENGTHS, VALUES, LENGTHS, VARIANCES, nonlinearity="tanh",
                         engine=engine)  # fmt: skip
    assert type(caught.value).__name__ == "EngineUnsupportedError"


def test_auto_runs_quadrature_duals_on_the_tensor_engine():
    """Even where a fused engine would be worth it (a large Gram matrix without gradients)."""
    big = dict(device=torch.device("cuda"), dtype=torch.float32, n1=4096, n2=4096, steps1=200)
    flags = dict(batched=False, scalar_variances=True, paired=False, diag=False)
    grads = dict(sequence_grad=False, variance_grad=False, variance_tangent=False)
    problem = Problem(**big, steps2=200, **flags, **grads)
    assert select(make_config("tanh"), problem).name == "tensor"
    assert select(make_config(lambda x: x.sin()), problem).name == "tensor"
    assert select(make_config("relu"), problem).name != "tensor"


def _reference(nonlinearity, ntk, readout, num_layers):
    return reference_gram(
        X,
        X,
        num_layers=num_layers,
        nonlinearity=nonlinearity,
        recurrent_var=VARIANCES.recurrent_var,
        input_var=VARIANCES.input_var,
        bias_var=VARIANCES.bias_var,
        ntk=ntk,
        frozen_layers=0 if ntk else num_layers,
        readout=readout,
    )


def _sine(x):
    return torch.sin(x) + 0.5 * x


@pytest.mark.parametrize(
    "nonlinearity,readout,num_layers",
    [("tanh", "last", 2), ("gelu", "mean", 1), (_sine, "last", 1), ("softplus", "mean", 2)],
    ids=["tanh-last-2", "gelu-mean-1", "sine-last-1", "softplus-mean-2"],
)
def test_kernels_match_the_reference_loop(nonlinearity, readout, num_layers, device):
    """The tensor engine's scan with a quadrature dual against the per-pair loop of
    tests/reference.py (which calls the same dual one pair at a time): the NTK and the NNGP,
    Gram matrices and their diagonals."""
    values, lengths = VALUES.to(device), LENGTHS.to(device)
    for ntk in (True, False):
        expected = _reference(nonlinearity, ntk, readout, num_layers).to(device)
        options = dict(nonlinearity=nonlinearity, num_layers=num_layers, readout=readout)
        options["frozen_layers"] = 0 if ntk else num_layers
        got = recurrent_kernel(values, lengths, values, lengths, VARIANCES, **options)
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
        diag = recurrent_kernel_diag(values, lengths, VARIANCES, **options)
        torch.testing.assert_close(diag, expected.diagonal(), rtol=1e-10, atol=1e-12)


def test_gradients_of_a_quadrature_kernel():
    """gradcheck of the variances through a two-layer tanh RNTK, and of a sequence (identical to
    one of the other side's, where the general form is kept) through a one-layer one."""
    values, lengths = VALUES[:2, :3], torch.tensor([3, 1])
    variances = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in VARIANCES[:3]]

    def by_variances(*v):
        options = dict(nonlinearity="tanh", num_layers=2)
        return recurrent_kernel(values, lengths, values, lengths, RecurrentVariances(*v), **options)

    assert torch.autograd.gradcheck(by_variances, variances)

    def by_sequences(x):
        return recurrent_kernel(x, lengths[:1], values, lengths, VARIANCES, nonlinearity="tanh")

    assert torch.autograd.gradcheck(by_sequences, (values[:1].clone().requires_grad_(True),))


def test_kernel_classes_take_a_function():
    x = encode_sequences(X).double()
    by_name = RNTKKernel(2, nonlinearity="tanh").double()
    by_function = RNTKKernel(2, nonlinearity=torch.tanh).double()
    assert by_function.nonlinearity == "tanh"
    torch.testing.assert_close(by_function(x).to_dense(), by_name(x).to_dense(), rtol=0, atol=0)
    custom = RNNGPKernel(2, nonlinearity=_sine).double()
    assert isinstance(custom.nonlinearity, QuadratureDual)
    assert "nonlinearity=QuadratureDual('_sine', order=41)" in repr(custom)
    gram = custom(x).to_dense()
    assert torch.isfinite(gram).all() and (torch.linalg.eigvalsh(gram) > -1e-12).all()
    assert by_name.recurrent_var.item() == 1.0  # erf's defaults
    with pytest.warns(RuntimeWarning, match="the _sine NTK grows once recurrent_var"):
        custom._warn_non_finite(5, torch.float64)


def test_sequence_gp_learns_every_variance_of_a_quadrature_kernel():
    pytest.importorskip("botorch")
    from gpytorch_rntk.botorch import recurrent_var_bound, sequence_gp

    x = encode_sequences(X).double()
    y = torch.randn(3, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for nonlinearity in ("tanh", _sine):
        model = sequence_gp(x, y, input_dim=2, nonlinearity=nonlinearity)
        kernel = model.covar_module.base_kernel
        assert kernel.raw_input_var.requires_grad
        assert {name for name, *_ in kernel.named_priors()} >= {"input_var_prior"}
        bound = kernel.raw_recurrent_var_constraint.upper_bound.item()
        assert bound == pytest.approx(recurrent_var_bound(4, nonlinearity))
    growth = 100 ** (1 / 99)  # max_len 100: V' <= 1 for tanh (at k = 0), 1/16 for sigmoid
    assert recurrent_var_bound(100, "tanh") == pytest.approx(growth, rel=1e-8)
    assert recurrent_var_bound(100, torch.sigmoid) == pytest.approx(16 * growth, rel=1e-8)
