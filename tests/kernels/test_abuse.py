"""Faults and abuse: every public entry point, given garbage, either returns a correct finite
result or raises a ValueError/TypeError at a ``raise`` of the package (never an error from inside
torch, GPyTorch or BoTorch); the problems a new user met (issue 17) stay fixed; fits resume from
a state_dict mid-way; the kernels give the same values in every GPyTorch and autograd context.

The property-based tests draw widths, shapes, dtypes, devices, lengths, options and non-finite
values with hypothesis and check each result against the per-pair reference implementation.
"""

from __future__ import annotations

import collections
import io
import re
import traceback
import warnings
from pathlib import Path

import gpytorch
import numpy as np
import pytest
import torch
from conftest import DEVICES
from gpytorch.mlls import ExactMarginalLogLikelihood
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import reference_kernel

import gpytorch_rntk
from gpytorch_rntk import (
    RNNGPKernel,
    RNTKKernel,
    encode_sequences,
    gram_matrix,
    recurrent_kernel,
    recurrent_kernel_diag,
)
from gpytorch_rntk.functional import RecurrentVariances
from gpytorch_rntk.layout import split_layout
from gpytorch_rntk.models import SequenceInputsMixin, SequenceVariationalGP, inducing_sequences

botorch = pytest.importorskip("botorch")
from botorch.exceptions.errors import InputDataError  # noqa: E402
from botorch.models import SingleTaskGP  # noqa: E402

from gpytorch_rntk.botorch import (  # noqa: E402
    canonicalize_sequences,
    sequence_bounds,
    sequence_gp,
)

PACKAGE = Path(gpytorch_rntk.__file__).resolve().parent
CALLS: collections.Counter = collections.Counter()  # outcomes of the calls made through _clean
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
# The documented accuracy (docs/kernels.md, Numerical precision): near-parallel ReLU pairs (every
# pair of univariate sequences of one step, or of steps along one direction without bias, is
# parallel) lose about sqrt(eps) of the largest entry per step, through arccos near 1. The draws
# have at most 4 steps, 2 layers and 2 directions: 16 sqrt(eps) (5.5e-3 in float32, 2.4e-7 in
# float64).
TOLERANCE = {dtype: 16 * torch.finfo(dtype).eps ** 0.5 for dtype in (torch.float32, torch.float64)}
FLOATS = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
GARBAGE_DTYPES = [torch.int64, torch.bool, torch.complex64]


def _raised_by_package(err: BaseException) -> bool:
    """Whether ``err`` was raised by a ``raise`` statement in the package's own source."""
    frame = traceback.extract_tb(err.__traceback__)[-1]
    inside = Path(frame.filename).resolve().is_relative_to(PACKAGE)
    return inside and (frame.line or "").startswith("raise")


def _clean(call):
    """``call()``, or ``None`` if it raised a ValueError or TypeError of the package; any other
    error (a traceback from inside torch, GPyTorch or BoTorch) fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overflow and layout warnings are tested below
            result = call()
    except (ValueError, TypeError) as err:
        assert _raised_by_package(err), "".join(traceback.format_exception(err))
        CALLS[f"{type(err).__name__} of the package"] += 1
        return None
    CALLS["results"] += 1
    return result


@pytest.fixture(scope="module", autouse=True)
def _report_calls():
    """Print how many garbage calls the module made (``pytest -s`` shows it)."""
    yield
    print(f"\ntest_abuse.py: {sum(CALLS.values())} calls of public entry points: {dict(CALLS)}")


def _oracle(values1, lengths1, values2, lengths2, paired, **options) -> torch.Tensor:
    """The reference kernel for every pair (or paired row) of decoded batches, in float64."""
    batch = torch.broadcast_shapes(values1.shape[:-3], values2.shape[:-3])

    def rows(values, lengths):  # one (N, T, m) batch member after another
        values = values.expand(*batch, *values.shape[-3:]).reshape(
            batch.numel(), *values.shape[-3:]
        )
        return values.double(), lengths.expand(*batch, -1).reshape(batch.numel(), -1)

    (v1, l1), (v2, l2) = rows(values1, lengths1), rows(values2, lengths2)
    out = []
    for a, la, b, lb in zip(v1, l1, v2, l2, strict=True):
        seqs1 = [a[i, : la[i]] for i in range(a.shape[0])]
        seqs2 = [b[j, : lb[j]] for j in range(b.shape[0])]
        if paired:
            out.append(
                [reference_kernel(s, t, **options) for s, t in zip(seqs1, seqs2, strict=True)]
            )
        else:
            out.append([[reference_kernel(s, t, **options) for t in seqs2] for s in seqs1])
    shape = (*batch, v1.shape[-3]) if paired else (*batch, v1.shape[-3], v2.shape[-3])
    return torch.tensor(out, dtype=torch.float64).reshape(shape)


def _assert_matches(result: torch.Tensor, expected: torch.Tensor) -> None:
    assert torch.isfinite(result).all()
    assert result.shape == expected.shape
    scale = max(expected.abs().max().item(), 1.0) if expected.numel() else 1.0
    error = (result.double().cpu() - expected).abs().max().item() if expected.numel() else 0.0
    assert error <= TOLERANCE[result.dtype] * scale, (error, scale)


# --- property-based: every public entry point --------------------------------------------------
# Each test draws a valid call and breaks it in at most one way (the fault, parametrised so every
# fault is tried); without a fault the result must match the reference, with one the package
# must refuse it clearly.


def _examples(fault) -> settings:
    return settings(SETTINGS, max_examples=40 if fault is None else 4)


def _layout_tensor(data, name, input_dim, variable_length, batch, n, t_max) -> torch.Tensor:
    """A valid layout tensor with garbage lengths (the kernels round and clamp them) and
    garbage past them (ignored), of a float dtype."""
    n = data.draw(st.integers(0, 3), f"N of {name}") if n is None else n
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16), f"seed of {name}"))
    width = (1 if variable_length else 0) + t_max * input_dim
    x = torch.randn(*batch, n, width, generator=gen, dtype=torch.float64)
    x = x * data.draw(st.sampled_from([1e-3, 1.0, 10.0]), f"scale of {name}")
    if variable_length:
        lengths = torch.empty(x.shape[:-1], dtype=torch.float64).uniform_(-1.0, t_max + 2.0)
        x[..., 0] = lengths
    return x.to(data.draw(st.sampled_from(FLOATS), f"dtype of {name}"))


def _poke(value: float):
    def poke(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x.view(-1)[-1] = value
        return x

    return poke


KERNEL_FAULTS = {
    "width one short": lambda x: x[..., :-1],
    "width one long": lambda x: torch.cat([x, x[..., -1:]], -1),
    "no columns": lambda x: x[..., :0],
    "integer dtype": lambda x: x.to(torch.int64),
    "boolean dtype": lambda x: x.to(torch.bool),
    "complex dtype": lambda x: x.to(torch.complex64),
    "a NaN": _poke(float("nan")),
    "an inf": _poke(float("inf")),
    "a NumPy array": lambda x: x.double().numpy(),
}
# and faults of the pair: "x2" (x2 of another width), "diag" (diag with another N), "device"


PAIR_FAULTS = ["x2", "diag"] + (["device"] if len(DEVICES) > 1 else [])  # x2 on another one


@pytest.mark.parametrize("fault", [None, *KERNEL_FAULTS, *PAIR_FAULTS])
def test_kernels_on_garbage_inputs(fault):
    @_examples(fault)
    @given(data=st.data())
    def run(data):
        input_dim = data.draw(st.integers(1, 3), "input_dim")
        variable_length = data.draw(st.booleans(), "variable_length")
        batch = tuple(data.draw(st.lists(st.integers(1, 2), max_size=1), "batch"))
        device = data.draw(st.sampled_from(DEVICES), "device")
        diag = fault == "diag" or data.draw(st.booleans(), "diag")
        n = data.draw(st.integers(1 if fault in ("diag", "a NaN", "an inf") else 0, 3), "N")
        t_max = data.draw(st.integers(1, 4), "T_max")
        x1 = _layout_tensor(data, "x1", input_dim, variable_length, batch, n, t_max)
        if fault not in PAIR_FAULTS and data.draw(st.booleans(), "x2 is x1"):
            x2 = x1
        else:
            n2 = n + 1 if fault == "diag" else n if diag else None
            x2 = _layout_tensor(data, "x2", input_dim, variable_length, batch, n2, t_max)
        if fault == "x2":
            x2 = torch.cat([x2, x2[..., :input_dim]], -1)
        elif fault is not None and fault != "diag":
            x1 = KERNEL_FAULTS[fault](x1)
        if not isinstance(x1, np.ndarray):
            x1 = x1.to(device)
        x2 = x2.to(next(d for d in DEVICES if d != device) if fault == "device" else device)
        cls = data.draw(st.sampled_from([RNTKKernel, RNNGPKernel]), "kernel")
        options = dict(
            num_layers=data.draw(st.integers(1, 2), "num_layers"),
            nonlinearity=data.draw(st.sampled_from(["relu", "erf"]), "nonlinearity"),
            readout=data.draw(st.sampled_from(["last", "mean"]), "readout"),
            bidirectional=data.draw(st.booleans(), "bidirectional"),
        )
        kernel = cls(input_dim, variable_length=variable_length, **options)
        kernel_dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), "kernel dtype")
        kernel = kernel.to(device=device, dtype=kernel_dtype)

        result = _clean(lambda: kernel(x1, x2, diag=diag).to_dense())
        assert (result is None) == (fault is not None)
        if result is None:
            return
        dtype = torch.promote_types(torch.promote_types(x1.dtype, x2.dtype), kernel_dtype)
        assert result.dtype == dtype  # promoted as GPyTorch's kernels promote
        decoded = [split_layout(x.to(dtype), input_dim, variable_length) for x in (x1, x2)]
        expected = _oracle(
            *decoded[0],
            *decoded[1],
            paired=diag,
            recurrent_var=kernel.recurrent_var.item(),
            input_var=kernel.input_var.item(),
            bias_var=kernel.bias_var.item(),
            frozen_layers=kernel.frozen_layers,
            **options,
        )
        _assert_matches(result, expected)

    run()


FUNCTIONAL_FAULTS = {
    "values dtype": lambda a: a.update(values1=a["values1"].to(torch.int64)),
    "complex values": lambda a: a.update(values1=a["values1"].to(torch.complex64)),
    "values of two dtypes": lambda a: a.update(values2=a["values2"].to(torch.float16)),
    "a dimension short": lambda a: a.update(values1=a["values1"].flatten(-2)),
    "no steps": lambda a: a.update(values1=a["values1"][..., :0, :]),
    "float lengths": lambda a: a.update(lengths1=a["lengths1"].double()),
    "length 0": lambda a: a["lengths1"].view(-1)[:1].zero_(),
    "length past T": lambda a: a["lengths2"].view(-1)[:1].add_(9),
    "lengths of another shape": lambda a: a.update(lengths1=a["lengths1"][..., :-1]),
    "NaN value": lambda a: a["values1"].view(-1)[:1].fill_(float("nan")),
    "negative variance": lambda a: a.update(variances=a["variances"]._replace(bias_var=-0.1)),
    "NaN variance": lambda a: a.update(variances=a["variances"]._replace(input_var=float("nan"))),
    "num_layers 0": lambda a: a.update(num_layers=0),
    "num_layers 1.5": lambda a: a.update(num_layers=1.5),
    "frozen_layers past num_layers": lambda a: a.update(frozen_layers=3),
    "unknown nonlinearity": lambda a: a.update(nonlinearity="elu"),
    "unknown initial_state": lambda a: a.update(initial_state="random"),
    "unknown readout": lambda a: a.update(readout="max"),
    "paired rows differ": lambda a: a.update(
        values2=a["values2"][..., :-1, :, :], lengths2=a["lengths2"][..., :-1]
    ),
}


@pytest.mark.parametrize("fault", [None, *FUNCTIONAL_FAULTS])
def test_functional_interface_on_garbage(fault):
    """recurrent_kernel and recurrent_kernel_diag."""
    _examples(fault)(given(data=st.data())(lambda data: _functional_case(data, fault)))()


def _functional_case(data, fault):
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16), "seed"))
    batch = tuple(data.draw(st.lists(st.integers(1, 2), max_size=1), "batch"))
    t, m = data.draw(st.integers(1, 3), "T"), data.draw(st.integers(1, 2), "m")
    dtype = data.draw(st.sampled_from([torch.float32, torch.float64]), "dtype")

    def side(n):
        values = torch.randn(*batch, n, t, m, generator=gen, dtype=torch.float64).to(dtype)
        return values, torch.randint(1, t + 1, values.shape[:-2], generator=gen)

    n1, n2 = data.draw(st.integers(1, 3), "N"), data.draw(st.integers(1, 3), "N'")
    diag = fault == "paired rows differ" or data.draw(st.booleans(), "diag")
    (values1, lengths1), (values2, lengths2) = side(n1), side(n1 if diag else n2)
    initial_state = data.draw(st.sampled_from(["zero", "shared", "per_input"]), "initial_state")
    raw = [1.8, 1.0, 0.1] + ([] if initial_state == "zero" else [0.5])
    num_layers = data.draw(st.integers(1, 2), "num_layers")
    args = dict(
        values1=values1,
        lengths1=lengths1,
        values2=values2,
        lengths2=lengths2,
        variances=RecurrentVariances(*torch.tensor(raw, dtype=dtype)),
        num_layers=num_layers,
        frozen_layers=data.draw(st.integers(0, num_layers), "frozen_layers"),
        nonlinearity=data.draw(st.sampled_from(["relu", "erf"]), "nonlinearity"),
        initial_state=initial_state,
        readout=data.draw(st.sampled_from(["last", "mean"]), "readout"),
        bidirectional=data.draw(st.booleans(), "bidirectional"),
    )
    if fault is not None:
        FUNCTIONAL_FAULTS[fault](args)
    sides = {k: args.pop(k) for k in ("values1", "lengths1", "values2", "lengths2")}
    if diag:
        result = _clean(
            lambda: recurrent_kernel(*sides.values(), args.pop("variances"), paired=True, **args)
        )
    else:
        result = _clean(lambda: recurrent_kernel(*sides.values(), args.pop("variances"), **args))
    same = _clean(
        lambda: recurrent_kernel_diag(
            sides["values1"],
            sides["lengths1"],
            RecurrentVariances(*torch.tensor(raw, dtype=dtype)),
            **args,
        )
    )
    assert (result is None) == (fault is not None)
    if result is None:
        return
    names = ["recurrent_var", "input_var", "bias_var", "init_var"][: len(raw)]
    options = dict(args, **dict(zip(names, raw, strict=True)))
    _assert_matches(result, _oracle(*sides.values(), paired=diag, **options))
    expected_same = _oracle(
        sides["values1"],
        sides["lengths1"],
        sides["values1"],
        sides["lengths1"],
        paired=True,
        **options,
    )
    _assert_matches(same, expected_same)


GRAM_FAULTS = [
    "a sequence of another m",
    "an empty sequence",
    "a NaN sequence",
    "strings",
    "a complex sequence",
    "one array instead of a list",
    "variable_length",
    "batch_shape",
    "a misspelt option",
    "frozen_layers of nngp",
    "a string variance",
    "a negative variance",
    "an infinite variance",
    "an unknown kernel",
    "an unknown readout",
]


@pytest.mark.parametrize("fault", [None, *GRAM_FAULTS])
def test_gram_matrix_on_garbage(fault):
    _examples(fault)(given(data=st.data())(lambda data: _gram_case(data, fault)))()


def _gram_case(data, fault):
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16), "seed"))
    m = data.draw(st.integers(1, 2), "m")
    dtype = data.draw(st.sampled_from([np.float64, np.float32, np.int64]), "dtype")

    def sequences(n):
        lengths = torch.randint(1, 4, (n,), generator=gen).tolist()
        seqs = [torch.randn(t, m, generator=gen, dtype=torch.float64).numpy() for t in lengths]
        return [(s * 3).astype(dtype) if m > 1 else s[:, 0].astype(dtype) for s in seqs]

    seqs1 = sequences(data.draw(st.integers(0 if fault is None else 1, 3), "N"))
    seqs2 = data.draw(st.sampled_from([None, "list"]), "seqs2")
    seqs2 = sequences(data.draw(st.integers(0, 2), "N'")) if seqs2 else None
    keywords = dict(
        kernel=data.draw(st.sampled_from(["rntk", "nngp"]), "kernel"),
        num_layers=data.draw(st.integers(1, 2), "num_layers"),
        nonlinearity=data.draw(st.sampled_from(["relu", "erf"]), "nonlinearity"),
        readout=data.draw(st.sampled_from(["last", "mean"]), "readout"),
        bidirectional=data.draw(st.booleans(), "bidirectional"),
        recurrent_var=data.draw(st.sampled_from([0.5, 1.8, 2.0]), "recurrent_var"),
        bias_var=data.draw(st.sampled_from([0.0, 0.1]), "bias_var"),
    )
    faults = {
        "a sequence of another m": lambda: seqs1.append(np.zeros((2, m + 1))),
        "an empty sequence": lambda: seqs1.append(np.zeros((0, m))),
        "a NaN sequence": lambda: seqs1.append(np.full((2, m), np.nan)),
        "strings": lambda: seqs1.append([["a"] * m] * 2),
        "a complex sequence": lambda: seqs1.append(np.ones((2, m)) * 1j),
        "one array instead of a list": lambda: keywords.update(seqs2=np.zeros((2, m))),
        "variable_length": lambda: keywords.update(variable_length=False),
        "batch_shape": lambda: keywords.update(batch_shape=torch.Size([2])),
        "a misspelt option": lambda: keywords.update(num_layer=2),
        "frozen_layers of nngp": lambda: keywords.update(kernel="nngp", frozen_layers=1),
        "a string variance": lambda: keywords.update(input_var="1"),
        "a negative variance": lambda: keywords.update(bias_var=-1.0),
        "an infinite variance": lambda: keywords.update(recurrent_var=float("inf")),
        "an unknown kernel": lambda: keywords.update(kernel="rbf"),
        "an unknown readout": lambda: keywords.update(readout="max"),
    }
    assert list(faults) == GRAM_FAULTS
    if fault is not None:
        faults[fault]()
    seqs2 = keywords.pop("seqs2", seqs2)
    result = _clean(lambda: gram_matrix(seqs1, seqs2, **keywords))
    assert (result is None) == (fault is not None)
    if result is None:
        return
    others = seqs1 if seqs2 is None else seqs2
    assert isinstance(result, np.ndarray) and result.dtype == np.float64
    assert result.shape == (len(seqs1), len(others))
    to_tensor = lambda s: torch.as_tensor(s, dtype=torch.float64).reshape(len(s), m)  # noqa: E731
    kernel = keywords.pop("kernel")
    frozen = keywords["num_layers"] if kernel == "nngp" else 0
    defaults = RNTKKernel(1, nonlinearity=keywords["nonlinearity"]).double()
    keywords.setdefault("input_var", defaults.input_var.item())
    expected = torch.tensor(
        [
            [
                reference_kernel(to_tensor(a), to_tensor(b), frozen_layers=frozen, **keywords)
                for b in others
            ]
            for a in seqs1
        ],
        dtype=torch.float64,
    ).reshape(result.shape)
    _assert_matches(torch.as_tensor(result), expected)


@SETTINGS
@given(data=st.data())
def test_layout_functions_on_garbage(data):
    """encode_sequences, split_layout and canonicalize_sequences: valid input round-trips."""
    lengths = data.draw(st.lists(st.integers(0, 4), max_size=3), "lengths")
    m = data.draw(st.integers(0, 2), "m")
    dtype = data.draw(st.sampled_from(FLOATS + GARBAGE_DTYPES), "dtype")
    seqs = [torch.arange(t * m, dtype=torch.float64).reshape(t, m).to(dtype) for t in lengths]
    max_len = data.draw(st.sampled_from([None, 0, 2, 5, 3.0]), "max_len")
    x = _clean(lambda: encode_sequences(seqs, max_len=max_len))
    if x is not None:
        input_dim = data.draw(st.sampled_from([m, 1, 3, 0]), "input_dim")
        decoded = _clean(lambda: split_layout(x, input_dim))
        if decoded is not None and input_dim == m:
            values, out_lengths = decoded
            assert out_lengths.tolist() == lengths
            for seq, v, t in zip(seqs, values, lengths, strict=True):
                assert torch.equal(v[:t], seq.to(v)) and not v[t:].any()
        canonical = _clean(lambda: canonicalize_sequences(x, input_dim))
        if canonical is not None and input_dim == m:
            assert torch.equal(canonical, x)
    garbage = data.draw(
        st.sampled_from([np.zeros(3), torch.zeros(2, 3, dtype=torch.long), "x", None]), "x"
    )
    _clean(lambda: split_layout(garbage, 1))
    _clean(lambda: canonicalize_sequences(garbage, 1))


@SETTINGS
@given(data=st.data())
def test_botorch_helpers_on_garbage(data):
    """sequence_bounds and sequence_gp: a correct result or a clear error."""
    max_len = data.draw(st.sampled_from([3, 0, 2.0, -1]), "max_len")
    input_dim = data.draw(st.sampled_from([1, 2, 0]), "input_dim")
    lower = data.draw(st.sampled_from([-1.0, torch.zeros(2), torch.zeros(3, 1), float("nan")]))
    upper = data.draw(st.sampled_from([1.0, torch.ones(3), -2.0]), "upper")
    min_len = data.draw(st.sampled_from([1, 3, 4, 0]), "min_len")
    variable_length = data.draw(st.booleans(), "variable_length")
    bounds = _clean(
        lambda: sequence_bounds(max_len, input_dim, lower, upper, min_len, variable_length)
    )
    if bounds is not None:
        assert bounds.shape == (2, (1 if variable_length else 0) + max_len * input_dim)
        assert torch.isfinite(bounds).all() and (bounds[0] <= bounds[1]).all()

    n = data.draw(st.integers(1, 4), "n")
    gen = torch.Generator().manual_seed(n)
    train_x = encode_sequences([torch.randn(t, 2, generator=gen) for t in range(1, n + 1)])
    train_x = train_x.to(data.draw(st.sampled_from([torch.float64, torch.float32, torch.int64])))
    shape = data.draw(st.sampled_from([(n, 1), (n,), (n + 1, 1), (n, 2)]), "y shape")
    # (X and Y of different float dtypes get BoTorch's InputDataError, not the package's)
    y_dtype = train_x.dtype if train_x.is_floating_point() else torch.float64
    train_y = torch.randn(*shape, generator=gen, dtype=torch.float64).to(y_dtype)
    input_dim = data.draw(st.sampled_from([2, 3]), "input_dim of the model")
    try:
        model = _clean(lambda: sequence_gp(train_x, train_y, input_dim=input_dim))
    except InputDataError as err:  # BoTorch's own validation of a SingleTaskGP's data
        assert "Expected all inputs to share the same dtype" in str(err)
        return
    if model is not None:
        mean = model.posterior(train_x).mean
        assert torch.isfinite(mean).all()


# --- the list --------------------------------------------------------------------------


def test_gram_matrix_refuses_variable_length_and_batch_shape():
    """gram_matrix read the length column as the first step (12.227 instead of 5.585 for [1, 2])
    and returned (2, 2, 2) for batch_shape=[2]; both are now refused."""
    for option in ({"variable_length": False}, {"batch_shape": torch.Size([2])}):
        with pytest.raises(TypeError, match="gram_matrix encodes the sequences itself"):
            gram_matrix([np.array([1.0, 2.0]), np.ones(2)], **option)


class _ExactSequenceGP(SequenceInputsMixin, gpytorch.models.ExactGP):
    def __init__(self, x, y):
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.covar_module = gpytorch.kernels.ScaleKernel(RNTKKernel(1))

    def forward(self, x):
        mean = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
        return gpytorch.distributions.MultivariateNormal(mean, self.covar_module(x))


class _SequenceSingleTaskGP(SequenceInputsMixin, SingleTaskGP):
    pass


def _short_sequences(dtype=torch.float64):
    gen = torch.Generator().manual_seed(7)
    return encode_sequences([torch.randn(t, 1, generator=gen, dtype=dtype) for t in (3, 5, 4, 2)])


def test_width_mismatch_in_posteriors_names_the_widths():
    x = _short_sequences()
    y = torch.sin(x[:, 1:].sum(-1))
    message = "Inputs of width 4, training sequences of width 6: encode both with the same max_len"
    with pytest.raises(ValueError, match=re.escape(message)):
        _ExactSequenceGP(x, y).eval()(x[:, :4])
    kernel = gpytorch.kernels.ScaleKernel(RNTKKernel(1)).double()
    model = _SequenceSingleTaskGP(x, y[:, None], covar_module=kernel, input_transform=None)
    with pytest.raises(ValueError, match=re.escape(message)):
        model.posterior(x[:, :4])
    assert torch.isfinite(model.posterior(x[:2]).mean).all()  # the right width still works


def test_width_mismatch_in_sequence_gp_posterior_names_the_widths():
    x = _short_sequences()
    model = sequence_gp(x, torch.sin(x[:, 1:].sum(-1, keepdim=True)), input_dim=1)
    with pytest.raises(ValueError, match="Inputs of width 4, training sequences of width 6"):
        model.posterior(x[:, :4])


@pytest.mark.parametrize("cls", [RNTKKernel, RNNGPKernel])
def test_dtypes_are_promoted_as_gpytorchs_kernels_promote(cls):
    x64 = _short_sequences()
    x32 = x64.float()
    kernel = cls(1).double()
    for x1, x2 in ((x32, x32), (x32, x64), (x64, x32)):
        result = kernel(x1, x2).to_dense()
        reference = gpytorch.kernels.RBFKernel().double()(x1, x2).to_dense()
        assert result.dtype == reference.dtype == torch.float64
        expected = kernel(x1.double(), x2.double()).to_dense()
        torch.testing.assert_close(result, expected, rtol=0, atol=0)
    mixed = cls(1)(x32, x64).to_dense()  # a float32 kernel on float32 and float64 inputs
    assert mixed.dtype == torch.float64


def test_input_dim_one_on_two_values_per_step_warns_when_fitting():
    gen = torch.Generator().manual_seed(3)
    seqs = [torch.randn(t, 2, generator=gen, dtype=torch.float64) for t in (3, 5, 4, 2)]
    x = encode_sequences(seqs)
    model = sequence_gp(x, torch.stack([s.sum() for s in seqs])[:, None], input_dim=1)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with pytest.warns(UserWarning, match="encoded with more than input_dim=1 values per step"):
        mll(model(x), model.train_targets)


@pytest.mark.parametrize(
    "dtype,recurrent_var,steps", [(torch.float32, 4.0, 300), (torch.float64, 8.0, 600)]
)
def test_overflowing_kernel_warns_naming_recurrent_var_and_length(dtype, recurrent_var, steps):
    """ReLU with recurrent_var above 2 grows about (recurrent_var / 2)^T: float32 overflows
    after about 128 steps at 4, float64 after about 512 at 8."""
    gen = torch.Generator().manual_seed(0)
    x = encode_sequences([torch.randn(steps, 1, generator=gen, dtype=dtype) for _ in range(2)])
    kernel = RNTKKernel(1).to(dtype)
    kernel.initialize(recurrent_var=recurrent_var)
    with pytest.warns(RuntimeWarning, match=rf"recurrent_var = {recurrent_var:g}.*T = {steps}"):
        values = kernel(x).to_dense()
    assert not torch.isfinite(values).all()


@pytest.mark.parametrize("cls", [RNTKKernel, RNNGPKernel])
def test_erf_inputs_that_overflow_are_refused_in_float32_and_exact_in_float64(cls):
    """erf with inputs near 1e10 gave 0 (NNGP) and NaN (RNTK) in float32."""
    x = encode_sequences([torch.full((3, 1), 1e10), torch.full((2, 1), -1e10)])
    with pytest.raises(ValueError, match="erf's dual activations overflow torch.float32"):
        cls(1, nonlinearity="erf")(x).to_dense()
    nngp = RNNGPKernel(1, nonlinearity="erf").double()(x.double()).to_dense()
    # erf saturates: the two sequences' last states are -1 and +1 up to 1e-10
    torch.testing.assert_close(
        nngp[0, 1], torch.tensor(-1.0, dtype=torch.float64), rtol=0, atol=1e-4
    )


def test_erf_ntk_warns_where_float32_loses_accuracy():
    gen = torch.Generator().manual_seed(1)
    x = encode_sequences([1e3 * torch.randn(4, 2, generator=gen) for _ in range(3)])
    with pytest.warns(RuntimeWarning, match="keeps a relative accuracy of only about"):
        RNTKKernel(2, nonlinearity="erf")(x).to_dense()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RNNGPKernel(2, nonlinearity="erf")(x).to_dense()  # NNGP: no difference of products
        RNTKKernel(2, nonlinearity="erf").double()(x.double()).to_dense()


def test_readme_snippets_run_in_sequence():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    assert len(blocks) == 2
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fitting three points warns about its optimiser
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["candidate"].shape == (2, 1 + 8 * 2)
    assert torch.isfinite(namespace["prediction"].mean).all()


# --- interrupted and resumed fits --------------------------------------------------------------


def _adam_fit(model, loss_fn, steps, state=None):
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    if state is not None:
        optimizer.load_state_dict(state)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn().backward()
        optimizer.step()
    return optimizer.state_dict()


def _resumed_equals_uninterrupted(build, loss_of):
    uninterrupted = build()
    _adam_fit(uninterrupted, lambda: loss_of(uninterrupted), 6)
    first = build()
    optimizer_state = _adam_fit(first, lambda: loss_of(first), 3)
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": optimizer_state}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = build()
    resumed.load_state_dict(saved["model"])
    _adam_fit(resumed, lambda: loss_of(resumed), 3, saved["optimizer"])
    for (name, a), (_, b) in zip(
        uninterrupted.named_parameters(), resumed.named_parameters(), strict=True
    ):
        assert torch.equal(a, b), name


def test_interrupted_exact_fit_resumes_to_the_same_result():
    x = _short_sequences()
    y = torch.sin(x[:, 1:].sum(-1, keepdim=True))

    def build():  # a softplus noise constraint: BoTorch's default has no transform for Adam
        likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
        return sequence_gp(x, y, input_dim=1, likelihood=likelihood)

    def loss_of(model):
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        return -mll(model(x), model.train_targets).sum()

    _resumed_equals_uninterrupted(build, loss_of)


def test_interrupted_variational_fit_resumes_to_the_same_result():
    x = _short_sequences()
    y = torch.sin(x[:, 1:].sum(-1))

    def build():
        torch.manual_seed(0)  # GPyTorch draws the initial variational mean at random
        model = SequenceVariationalGP(inducing_sequences(x, 2), input_dim=1).double()
        model.likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
        return model

    def loss_of(model):
        elbo = gpytorch.mlls.VariationalELBO(model.likelihood, model, num_data=len(y))
        return -elbo(model(x), y)

    _resumed_equals_uninterrupted(build, loss_of)


# --- contexts ----------------------------------------------------------------------------------

CONTEXTS = {
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
    "fast_computations": gpytorch.settings.fast_computations,
    "fast_pred_var": gpytorch.settings.fast_pred_var,
}


@pytest.mark.parametrize("context", CONTEXTS, ids=list(CONTEXTS))
@pytest.mark.parametrize("cls", [RNTKKernel, RNNGPKernel])
def test_kernels_and_posteriors_agree_in_every_context(context, cls, device, dtype):
    x = _short_sequences(dtype).to(device)
    kernel = cls(1, num_layers=2).to(device=device, dtype=dtype)
    plain = (kernel(x).to_dense(), kernel(x, diag=True), kernel(x[:2], x).to_dense())
    model = _ExactSequenceGP(x, torch.sin(x[:, 1:].sum(-1))).to(device=device, dtype=dtype)
    model.eval()
    mean = model(x[:2]).mean.detach()
    with CONTEXTS[context]():
        inside = (kernel(x).to_dense(), kernel(x, diag=True), kernel(x[:2], x).to_dense())
        inside_mean = model(x[:2]).mean
    for a, b in zip(plain, inside, strict=True):
        torch.testing.assert_close(b, a.detach(), rtol=0, atol=0)
    torch.testing.assert_close(inside_mean, mean)
