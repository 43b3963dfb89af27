"""Engine conformance: every engine against the per-pair reference loop (``tests/reference.py``).

One suite over the axes engine x readout x nonlinearity x depth x initial state x frozen layers x
``K(x, x)`` / ``K(x, z)`` x dtype, plus the diagonal (``recurrent_kernel_diag``), the
bidirectional variant, paired and batched layouts, and gradients (variances: every engine against
the tensor engine's autograd and against a finite difference of the reference; sequences: the
tensor engine against a finite difference of the reference).

The data sets are small (N <= 6 sequences of at most 6 steps, m = 1 and m = 3) and have every
edge the engines special-case: a length-1 sequence, several equal lengths, an exact duplicate
inside ``x`` (an off-diagonal exact self pair of ``K(x, x)``), a sequence that is a piece of
another, a sequence shared by ``x`` and ``z``, and ``x`` and ``z`` padded to different widths.
Their values and the variances are exactly representable in float32, so the float32 runs see the
same inputs as the float64 reference and the comparison measures the engines' arithmetic only.

Which engine computes a call, and which combinations an engine does not support, is decided in
one place: :func:`unsupported` and the ``use_engine`` fixture below. Everything else is
engine-agnostic.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from reference import reference_gram

from gpytorch_rntk._core import engines
from gpytorch_rntk._core.engines import EngineUnsupportedError
from gpytorch_rntk._core.engines.fused import TRITON_MAX_LAYERS, triton_available
from gpytorch_rntk.functional import RecurrentVariances, recurrent_kernel, recurrent_kernel_diag

# ---------------------------------------------------------------------------------------------
# Engines: the one place that maps an engine id to a call.
# ---------------------------------------------------------------------------------------------

ENGINES = ("tensor", "compiled", "triton")
CUDA = torch.cuda.is_available()


@dataclass(frozen=True)
class Problem:
    """What a test asks of an engine (the part of a request that decides support)."""

    readout: str
    num_layers: int
    layout: str = "gram"  # "gram", "diag" (recurrent_kernel_diag), "paired", "batched"
    sequence_grad: bool = False
    compile: bool = False  # the compiled engine through torch.compile for real (else eagerly)


def unsupported(engine: str, problem: Problem) -> str | None:
    """Why ``engine`` is expected not to compute ``problem``, or None if it should.

    Each rule is named in its reason. Where an engine is expected to refuse, the test checks
    that it does (raising its own reason, never routing to another engine) and is then skipped.
    """
    if engine == "tensor":
        return None
    if problem.layout == "diag":
        return f"{engine}: recurrent_kernel_diag runs the tensor engine (no engine option)"
    if problem.layout in ("paired", "batched"):
        return f"{engine}: the fused engines take unbatched inputs without paired=True"
    if problem.sequence_grad:
        return f"{engine}: the fused engines give gradients for the variances only"
    if engine == "triton":
        if problem.num_layers > TRITON_MAX_LAYERS:
            return f"triton: the Triton kernel holds at most {TRITON_MAX_LAYERS} layers"
        if not triton_available(torch.device("cuda" if CUDA else "cpu")):
            return "triton: Triton cannot run here (not installed, or no CUDA nor interpreter)"
    return None


@dataclass
class Engine:
    """Calls ``recurrent_kernel`` / ``recurrent_kernel_diag`` on one engine and checks, after each
    call, that this engine (and no other) ran."""

    name: str
    kwargs: dict
    device: torch.device
    calls: dict[str, int]

    def _run(self, function: Callable, *args, **options) -> torch.Tensor:
        for key in self.calls:
            self.calls[key] = 0
        moved = [a.to(self.device) if isinstance(a, torch.Tensor) else a for a in args]
        out = function(*moved, **options, **self.kwargs)
        ran = {key for key, count in self.calls.items() if count}
        assert ran == {self.name}, f"engine {self.name!r} requested, {sorted(ran)} ran"
        return out.cpu() if self.device.type != "cpu" else out

    def kernel(self, values1, lengths1, values2, lengths2, variances, **options) -> torch.Tensor:
        """``recurrent_kernel``; pass the same tensors twice for ``K(x, x)``."""
        variances = RecurrentVariances(*(v.to(self.device) for v in variances))
        same = values1 is values2
        values1, lengths1 = values1.to(self.device), lengths1.to(self.device)
        values2, lengths2 = (
            (values1, lengths1) if same else (values2.to(self.device), lengths2.to(self.device))
        )
        return self._run(
            recurrent_kernel, values1, lengths1, values2, lengths2, variances, **options
        )

    def diag(self, values, lengths, variances, **options) -> torch.Tensor:
        """``recurrent_kernel_diag``."""
        return self._run(recurrent_kernel_diag, values, lengths, variances, **options)


def _spy(monkeypatch, engine, name: str, calls: dict[str, int], key: str) -> None:
    original = getattr(engine, name)

    @functools.wraps(original)
    def counted(*args, **kwargs):
        calls[key] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(engine, name, counted)


def _refuses(engine: str, problem: Problem) -> None:
    """An engine named for a request it does not compute refuses it with a reason."""
    if problem.layout == "diag" or problem.layout == "batched":
        return  # (no engine option for the diagonal; batched inputs are built by the tests)
    x = torch.zeros(2, 3, 1, dtype=torch.float64)
    lengths = torch.tensor([3, 2])
    variances = RecurrentVariances(*(torch.tensor(v, dtype=torch.float64) for v in (1.0, 1.0, 0.1)))
    if problem.sequence_grad:
        x.requires_grad_()
    options = dict(readout=problem.readout, num_layers=problem.num_layers, engine=engine)
    with pytest.raises(EngineUnsupportedError):
        recurrent_kernel(x, lengths, x, lengths, variances, paired=problem.layout == "paired",
                         **options)  # fmt: skip


@pytest.fixture
def use_engine(monkeypatch):
    """``use_engine(engine, problem)``: skip (after checking the refusal) where ``engine`` does
    not compute ``problem`` (:func:`unsupported`), else the :class:`Engine` that calls it.

    The compiled engine runs its loop eagerly (``GPYTORCH_RNTK_COMPILE=0``) unless
    ``problem.compile``; the Triton kernel runs on CUDA, or on the CPU under Triton's
    interpreter (set for the session by ``conftest.pytest_configure``). Spies on the engines'
    ``gram`` and ``diag`` make sure that the named engine, and no other, ran.
    """

    def use(engine: str, problem: Problem) -> Engine:
        reason = unsupported(engine, problem)
        if reason is not None:
            if engine != "triton" or "cannot run here" not in reason:
                _refuses(engine, problem)
            pytest.skip(reason)
        monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "1" if problem.compile else "0")
        device = torch.device("cuda" if engine == "triton" and CUDA else "cpu")
        calls = dict.fromkeys(ENGINES, 0)
        for name in ENGINES:
            for method in ("gram", "diag"):
                _spy(monkeypatch, engines.ENGINES[name], method, calls, name)
        kwargs = {} if problem.layout == "diag" else {"engine": engine}
        return Engine(engine, kwargs, device, calls)

    return use


# ---------------------------------------------------------------------------------------------
# Tolerances
# ---------------------------------------------------------------------------------------------

FLOAT64_RTOL = 1e-10
# float32, relative to the largest entry: C * eps * T * L. A cell's state is a sum of
# non-negative terms (and, for erf, an arcsine of a ratio of them) carried to the next step with
# a gain of about 1 or below for these variances, so the roundings of each step add up at most
# linearly over the T steps of a sequence and the L layers of the stack (each layer's input is
# the layer below's state); C = 2 allows two roundings per cell and layer that do not cancel.
# Measured on today's code (the float32 Gram matrices and diagonals, all engines): at most
# 3.5e-7 (3 eps), a quarter of this bound or less.
FLOAT32_ROUNDINGS_PER_CELL = 2


def tolerance(dtype: torch.dtype, steps: int, num_layers: int) -> float:
    """Allowed ``max |got - reference| / max |reference|``."""
    if dtype == torch.float64:
        return FLOAT64_RTOL
    return FLOAT32_ROUNDINGS_PER_CELL * torch.finfo(torch.float32).eps * steps * num_layers


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert torch.isfinite(got).all()
    scale = expected.abs().max()
    assert scale > 0
    return ((got.double() - expected).abs().max() / scale).item()


# ---------------------------------------------------------------------------------------------
# Data and the reference, computed once per configuration
# ---------------------------------------------------------------------------------------------

# Exactly representable in float32 (dyadic), so float32 runs see the reference's variances.
VARIANCES = {
    "recurrent_var": 1.5,
    "input_var": 0.75,
    "bias_var": 0.25,
    "init_var": 0.5,
    "readout_decay": 1.0,
}
# The geometric readout's decay in these tests (1 is the mean readout's weighting).
DECAY = 0.625


def hyperparameters(readout: str) -> dict[str, float]:
    """:data:`VARIANCES` and the readout's decay."""
    return VARIANCES | ({"readout_decay": DECAY} if readout == "geometric" else {})


def variances(
    dtype: torch.dtype, requires_grad: bool = False, readout: str = "last", **changes
) -> RecurrentVariances:
    values = hyperparameters(readout) | changes
    return RecurrentVariances(
        *(
            torch.tensor(values[name], dtype=dtype, requires_grad=requires_grad)
            for name in RecurrentVariances._fields
        )
    )


@dataclass(frozen=True)
class Sequences:
    """Padded values (zero past each length) and the list of the sequences themselves."""

    values: torch.Tensor  # (N, T, m) float64, every value exact in float32
    lengths: torch.Tensor  # (N,)

    @property
    def steps(self) -> int:
        return self.values.shape[-2]

    def list(self, values: torch.Tensor | None = None) -> list[torch.Tensor]:
        values = self.values if values is None else values
        return [values[i, :t] for i, t in enumerate(self.lengths.tolist())]


def _pad(rows: list[torch.Tensor], steps: int) -> Sequences:
    values = torch.zeros(len(rows), steps, rows[0].shape[-1], dtype=torch.float64)
    for i, row in enumerate(rows):
        values[i, : len(row)] = row
    return Sequences(values, torch.tensor([len(r) for r in rows]))


@functools.cache
def data(name: str) -> tuple[Sequences, Sequences]:
    """``(x, z)`` for a data set ``"xx-m<m>"`` (``K(x, x)``: z is x) or ``"xz-m<m>"``.

    x: lengths 1, 6, 4, 6, 2, 4 (padded to 6); x[3] duplicates x[1], x[4] is steps 2-3 of x[2],
    x[5] has x[2]'s length. z: lengths 5, 1, 4, 2 (padded to 5); z[2] is x[2]. No two distinct
    sequences share a prefix or a suffix (reversed by ``bidirectional``, a suffix is a prefix):
    see :func:`test_common_prefix`.
    """
    kind, m = name.split("-m")
    gen = torch.Generator().manual_seed(int(m))

    def draw(t: int) -> torch.Tensor:
        return torch.randn(t, int(m), generator=gen, dtype=torch.float32).double()

    x = [draw(1), draw(6), draw(4)]
    x += [x[1].clone(), x[2][1:3].clone(), draw(4)]
    xs = _pad(x, 6)
    if kind == "xx":
        return xs, xs
    z = [draw(5), draw(1), x[2].clone(), draw(2)]
    return xs, _pad(z, 5)


@dataclass(frozen=True)
class Case:
    """One configuration of the recursion."""

    readout: str
    nonlinearity: str
    num_layers: int
    frozen_layers: int
    initial_state: str

    @property
    def options(self) -> dict:
        return {
            "readout": self.readout,
            "nonlinearity": self.nonlinearity,
            "num_layers": self.num_layers,
            "frozen_layers": self.frozen_layers,
            "initial_state": self.initial_state,
        }

    def __str__(self) -> str:
        kernel = "nngp" if self.frozen_layers == self.num_layers else f"f{self.frozen_layers}"
        return (
            f"{self.readout}-{self.nonlinearity}-L{self.num_layers}-{kernel}-{self.initial_state}"
        )


READOUTS = ("last", "mean")
NONLINEARITIES = ("relu", "erf")
INITIAL_STATES = ("zero", "per_input", "shared")
DEPTHS = (1, 2, 3)


def _frozen(num_layers: int) -> list[int]:
    return sorted({0, 1, num_layers})


CASES = [
    Case(readout, nl, depth, frozen, init)
    for readout, nl, depth, init in itertools.product(
        READOUTS, NONLINEARITIES, DEPTHS, INITIAL_STATES
    )
    for frozen in _frozen(depth)
]
# The geometric readout shares the mean readout's scan and differs only in the cells' weights:
# each nonlinearity and initial state once, one and two layers (one frozen).
CASES += [
    Case("geometric", nl, depth, depth - 1, init)
    for nl, init in itertools.product(NONLINEARITIES, INITIAL_STATES)
    for depth in (1, 2)
]


def _reference_options(case: Case, **changes) -> dict:
    return case.options | hyperparameters(case.readout) | {"ntk": True} | changes


@functools.cache
def reference(data_name: str, case: Case, bidirectional: bool = False) -> torch.Tensor:
    """The reference Gram matrix ``K(x, z)`` (float64), once per configuration."""
    x, z = data(data_name)
    options = _reference_options(case, bidirectional=bidirectional)
    return reference_gram(x.list(), z.list(), **options)


def _cast(seqs: Sequences, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    return seqs.values.to(dtype), seqs.lengths


def _gram(engine: Engine, data_name: str, dtype: torch.dtype, options: dict) -> torch.Tensor:
    x, z = data(data_name)
    values1, lengths1 = _cast(x, dtype)
    values2, lengths2 = (values1, lengths1) if z is x else _cast(z, dtype)
    v = variances(dtype, readout=options["readout"])
    return engine.kernel(values1, lengths1, values2, lengths2, v, **options)


# ---------------------------------------------------------------------------------------------
# Parametrisation
# ---------------------------------------------------------------------------------------------

DTYPES = {"float64": torch.float64, "float32": torch.float32}
DATA = ("xx-m1", "xx-m3", "xz-m1", "xz-m3")


def _in_budget(engine: str, dtype: str, data_name: str, case: Case) -> bool:
    """Which combinations run (CI cost; the others are not generated, not skipped).

    float32 runs on two data sets, ``xx-m1`` and ``xz-m3`` (both kinds of Gram matrix, both
    m), float64 on all four. Under Triton's interpreter (no CUDA) a Triton call takes about
    0.3 s, 30x the others, so there the Triton engine covers the axes pairwise instead of
    their full product: every configuration once in float64, on ``xx-m3`` or ``xz-m1``
    alternately (so that each value of every axis meets both), and float32 on the
    configurations with a shared initial state and no frozen layer."""
    if dtype == "float32" and data_name not in ("xx-m1", "xz-m3"):
        return False
    if engine != "triton" or CUDA:
        return True
    if dtype == "float32":
        return case.initial_state == "shared" and case.frozen_layers == 0
    parity = (INITIAL_STATES.index(case.initial_state) + case.num_layers + case.frozen_layers) % 2
    return data_name == ("xx-m3", "xz-m1")[parity]


def _params(*axes: tuple[str, ...] | list) -> list:
    """``pytest.param(engine, dtype, data_name, case)`` over the product of the axes, in
    budget (:func:`_in_budget`), with readable ids."""
    return [
        pytest.param(engine, dtype, data_name, case, id=f"{engine}-{dtype}-{data_name}-{case}")
        for engine, dtype, data_name, case in itertools.product(*axes)
        if _in_budget(engine, dtype, data_name, case)
    ]


@pytest.mark.parametrize("engine,dtype,data_name,case", _params(ENGINES, DTYPES, DATA, CASES))
def test_gram(engine, dtype, data_name, case, monkeypatch, use_engine):
    """``K(x, x)`` and ``K(x, z)`` equal the reference loop's."""
    kernel = use_engine(engine, Problem(case.readout, case.num_layers))
    dtype = DTYPES[dtype]
    got = _gram(kernel, data_name, dtype, case.options)
    x, z = data(data_name)
    tol = tolerance(dtype, max(x.steps, z.steps), case.num_layers)
    assert relative_error(got, reference(data_name, case)) < tol


@pytest.mark.parametrize(
    "engine,dtype,data_name,case", _params(ENGINES, DTYPES, ["xx-m1", "xx-m3"], CASES)
)
def test_diag(engine, dtype, data_name, case, monkeypatch, use_engine):
    """``recurrent_kernel_diag`` equals the reference's ``K(x_i, x_i)``."""
    kernel = use_engine(engine, Problem(case.readout, case.num_layers, "diag"))
    dtype = DTYPES[dtype]
    x, _ = data(data_name)
    got = kernel.diag(*_cast(x, dtype), variances(dtype, readout=case.readout), **case.options)
    tol = tolerance(dtype, x.steps, case.num_layers)
    assert relative_error(got, reference(data_name, case).diagonal()) < tol


# The subset for the variants: every readout, nonlinearity and initial state, two layers with
# the bottom one frozen (both kinds of layer in one stack).
SUBSET = [c for c in CASES if c.num_layers == 2 and c.frozen_layers == 1]


@pytest.mark.parametrize(
    "engine,dtype,data_name,case",
    _params(ENGINES, DTYPES, ["xx-m1", "xz-m3", "xx-m3", "xz-m1"], SUBSET),
)
def test_bidirectional(engine, dtype, data_name, case, monkeypatch, use_engine):
    """``bidirectional=True``: the Gram matrix and its diagonal equal the reference's."""
    dtype = DTYPES[dtype]
    kernel = use_engine(engine, Problem(case.readout, case.num_layers))
    options = case.options | {"bidirectional": True}
    got = _gram(kernel, data_name, dtype, options)
    x, z = data(data_name)
    tol = tolerance(dtype, max(x.steps, z.steps), case.num_layers)
    assert relative_error(got, reference(data_name, case, True)) < tol
    if z is x and engine == "tensor":  # (the diagonal has no engine option: tensor only)
        kernel = use_engine(engine, Problem(case.readout, case.num_layers, "diag"))
        got = kernel.diag(*_cast(x, dtype), variances(dtype, readout=case.readout), **options)
        assert relative_error(got, reference(data_name, case, True).diagonal()) < tol


@pytest.mark.parametrize("layout", ["paired", "batched"])
@pytest.mark.parametrize("data_name", ["xx-m3", "xz-m1"])
@pytest.mark.parametrize("case", SUBSET, ids=str)
@pytest.mark.parametrize("engine", ENGINES)
def test_layouts(engine, case, data_name, layout, monkeypatch, use_engine):
    """``paired=True`` gives the reference's ``K(x_i, z_i)``; a batch of two sets (the second
    with its rows reversed) gives the reference's Gram matrix of each (float64)."""
    kernel = use_engine(engine, Problem(case.readout, case.num_layers, layout))
    x, z = data(data_name)
    expected = reference(data_name, case)
    v = variances(torch.float64, readout=case.readout)
    if layout == "paired":
        n = min(len(x.lengths), len(z.lengths))
        got = kernel.kernel(
            x.values[:n], x.lengths[:n], z.values[:n], z.lengths[:n], v, paired=True, **case.options
        )
        expected = expected[:n, :n].diagonal()
    else:
        flip = torch.arange(len(x.lengths) - 1, -1, -1)
        values1 = torch.stack([x.values, x.values[flip]])
        lengths1 = torch.stack([x.lengths, x.lengths[flip]])
        got = kernel.kernel(values1, lengths1, z.values, z.lengths, v, **case.options)
        expected = torch.stack([expected, expected[flip]])
    assert relative_error(got, expected) < FLOAT64_RTOL


PREFIX_CASES = [
    Case(readout, nl, depth, frozen, init)
    for readout, nl, init in itertools.product(READOUTS, NONLINEARITIES, ("zero", "per_input"))
    for depth, frozen in ((1, 0), (2, 2))
]


@functools.cache
def prefix_data() -> Sequences:
    """x[1] is a prefix of x[0] (lengths 5 and 3: the mean readout's start-aligned cells of the
    pair see identical states), x[2] shares the first two steps of x[0] at the same length (the
    last readout's aligned cells see identical states), x[3] is unrelated."""
    gen = torch.Generator().manual_seed(11)

    def draw(t: int) -> torch.Tensor:
        return torch.randn(t, 2, generator=gen, dtype=torch.float32).double()

    a = draw(5)
    return _pad([a, a[:3].clone(), torch.cat([a[:2], draw(3)]), draw(2)], 5)


@pytest.mark.parametrize(
    "engine,case",
    [
        pytest.param(engine, case, id=f"{engine}-{case}")
        for engine, case in itertools.product(ENGINES, PREFIX_CASES)
    ],
)
def test_common_prefix(engine, case, monkeypatch, use_engine):
    """Different sequences with a common prefix, in float64 to 1e-10: where two different
    sequences' states are exactly equal (ReLU NTK, zero initial state), the dual's cosine is
    exactly 1 and V' must be exactly 1/2 (it was (pi - sqrt(2 eps)) / (2 pi) behind the clamp
    that keeps arccos' slope finite, 5.5e-10 and 2.5e-9 relative off in these cases)."""
    kernel = use_engine(engine, Problem(case.readout, case.num_layers))
    x = prefix_data()
    got = kernel.kernel(
        x.values,
        x.lengths,
        x.values,
        x.lengths,
        variances(torch.float64, readout=case.readout),
        **case.options,
    )
    expected = reference_gram(x.list(), x.list(), **_reference_options(case))
    assert relative_error(got, expected) < FLOAT64_RTOL


# ---------------------------------------------------------------------------------------------
# Gradients (float64)
# ---------------------------------------------------------------------------------------------

# A fourth-order central difference of the reference, f'(a) = (f(a - 2h) - 8 f(a - h) +
# 8 f(a + h) - f(a + 2h)) / (12 h) + O(h^4 f^(5)), with error O(eps |f| / h) from rounding: with
# h = 1e-3 both are about 1e-12 relative; the tolerance leaves a factor of 100.
DIFFERENCE_STEP = 1e-3
DIFFERENCE_RTOL = 1e-10


def _difference(f: Callable[[float], float]) -> float:
    h = DIFFERENCE_STEP
    return (f(-2 * h) - 8 * f(-h) + 8 * f(h) - f(2 * h)) / (12 * h)


def _weights(shape) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))


def _wanted(case: Case) -> list[str]:
    """The variances that the kernel depends on (init_var not with a zero initial state), and
    the geometric readout's decay."""
    names = ["recurrent_var", "input_var", "bias_var"]
    names += ["init_var"] if case.initial_state != "zero" else []
    return names + (["readout_decay"] if case.readout == "geometric" else [])


@functools.cache
def reference_variance_gradient(data_name: str, case: Case) -> torch.Tensor:
    x, z = data(data_name)
    weights = _weights((len(x.lengths), len(z.lengths)))

    def loss(name: str, step: float) -> float:
        options = _reference_options(case, **{name: hyperparameters(case.readout)[name] + step})
        return float((reference_gram(x.list(), z.list(), **options) * weights).sum())

    gradient = [_difference(functools.partial(loss, n)) for n in _wanted(case)]
    return torch.tensor(gradient, dtype=torch.float64)


def _variance_gradient(engine: Engine, data_name: str, case: Case) -> torch.Tensor:
    x, z = data(data_name)
    v = variances(torch.float64, requires_grad=True, readout=case.readout)
    values1, lengths1 = _cast(x, torch.float64)
    values2, lengths2 = (values1, lengths1) if z is x else _cast(z, torch.float64)
    gram = engine.kernel(values1, lengths1, values2, lengths2, v, **case.options)
    loss = (gram * _weights(gram.shape)).sum()
    return torch.stack(torch.autograd.grad(loss, [getattr(v, n) for n in _wanted(case)]))


GRADIENT_CASES = [
    Case("last", "relu", 1, 0, "zero"),
    Case("last", "erf", 2, 1, "per_input"),
    Case("last", "relu", 3, 0, "shared"),
    Case("last", "erf", 2, 2, "shared"),
    Case("mean", "erf", 1, 0, "shared"),
    Case("mean", "relu", 2, 1, "zero"),
    Case("mean", "erf", 3, 0, "per_input"),
    Case("mean", "relu", 2, 2, "per_input"),
    Case("geometric", "relu", 1, 0, "zero"),
    Case("geometric", "erf", 2, 1, "shared"),
]


@pytest.mark.parametrize(
    "engine,dtype,data_name,case", _params(ENGINES, ["float64"], ["xx-m3", "xz-m1"], GRADIENT_CASES)
)
def test_variance_gradients(engine, dtype, data_name, case, monkeypatch, use_engine):
    """The gradients of ``sum(W * K)`` for the variances (the fused engines: forward mode) equal
    the tensor engine's reverse mode to 1e-10 and a difference quotient of the reference."""
    kernel = use_engine(engine, Problem(case.readout, case.num_layers))
    got = _variance_gradient(kernel, data_name, case)
    expected = reference_variance_gradient(data_name, case)
    assert relative_error(got, expected) < DIFFERENCE_RTOL
    if engine != "tensor":
        tensor = use_engine("tensor", Problem(case.readout, case.num_layers))
        assert relative_error(got, _variance_gradient(tensor, data_name, case)) < FLOAT64_RTOL


def _direction(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """A direction for the sequences that is a function of their values (identical sequences
    stay identical along it: exact self pairs stay exact), zero past each length."""
    mask = torch.arange(values.shape[-2]) < lengths.unsqueeze(-1)
    return (torch.sin(3 * values) + 0.5) * mask.unsqueeze(-1)


@functools.cache
def reference_sequence_derivative(data_name: str, case: Case) -> float:
    x, z = data(data_name)
    weights = _weights((len(x.lengths), len(z.lengths)))
    dx, dz = _direction(x.values, x.lengths), _direction(z.values, z.lengths)

    def loss(step: float) -> float:
        xs, zs = x.list(x.values + step * dx), z.list(z.values + step * dz)
        return float((reference_gram(xs, zs, **_reference_options(case)) * weights).sum())

    return _difference(loss)


@pytest.mark.parametrize("data_name", ["xx-m3", "xz-m1"])
@pytest.mark.parametrize("case", GRADIENT_CASES, ids=str)
@pytest.mark.parametrize("engine", ENGINES)
def test_sequence_gradients(engine, case, data_name, monkeypatch, use_engine):
    """The derivative of ``sum(W * K)`` along a direction of the sequences equals a difference
    quotient of the reference."""
    problem = Problem(case.readout, case.num_layers, sequence_grad=True)
    kernel = use_engine(engine, problem)
    x, z = data(data_name)
    values1 = x.values.clone().requires_grad_()
    values2 = values1 if z is x else z.values.clone().requires_grad_()
    gram = kernel.kernel(
        values1,
        x.lengths,
        values2,
        z.lengths,
        variances(torch.float64, readout=case.readout),
        **case.options,
    )
    loss = (gram * _weights(gram.shape)).sum()
    leaves = [values1] if z is x else [values1, values2]
    grads = torch.autograd.grad(loss, leaves)
    directions = [_direction(x.values, x.lengths), _direction(z.values, z.lengths)]
    got = sum((g * d).sum() for g, d in zip(grads, directions, strict=False))
    expected = reference_sequence_derivative(data_name, case)
    assert math.isfinite(expected)
    assert abs(got.item() - expected) <= DIFFERENCE_RTOL * abs(expected)


@pytest.mark.slow
def test_compiled_for_real(monkeypatch, use_engine):
    """The compiled engine through ``torch.compile`` (its production path on the CPU), on one
    configuration (compiling costs 10-40 s; ``tests/engines/test_fused.py`` compiles in the default
    run); the other tests run the same loop eagerly."""
    case = Case("last", "relu", 1, 0, "zero")
    kernel = use_engine("compiled", Problem("last", 1, compile=True))
    got = _gram(kernel, "xz-m3", torch.float64, case.options)
    assert relative_error(got, reference("xz-m3", case)) < FLOAT64_RTOL
