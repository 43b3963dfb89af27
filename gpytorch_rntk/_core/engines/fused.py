r"""The fused engine: the cross terms of the recursion with each pair's state kept on chip.

The tensor engine (``tensor.py``) applies one tensor operation per term of the
recursion to whole ``N x N'`` matrices, so every step reads and writes a few dozen full matrices.
Here the work is split in two:

* the *self terms* :math:`S^l(t, t)` of every sequence (``O(N T L)``, plain tensor code), and
* the *cross scan*, which walks each tile of pairs through all its steps and layers at once:
  a Triton kernel on CUDA (state in registers, ``triton_kernels``; for the mean and geometric
  readouts a program per tile and group of diagonals of the time grids), and otherwise a loop
  over chunks of steps, compiled ahead of time on the CPU (``ahead``) and by
  :func:`torch.compile` on CUDA (state in cache; eager if compilation is unavailable), where
  the mean readout's tiles pair sequences with diagonals of the time grids.

Rows and columns are sorted by length (the mean readout's diagonals by their length), so that
a tile of pairs scans only the :math:`\min(T_i, T_j)` steps its longest pair needs: variable
lengths cost what they are.
Memory beyond the output is ``O(N T m + N T L)`` for the inputs and self terms, plus one tile's
state. Gradients are for the variances only, in forward mode (see :func:`fused_gram`);
``engine="auto"`` uses these engines for large matrices whose sequences need no gradient.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

from ..config import (
    DECAY,
    GEOMETRIC,
    LAST,
    MEAN,
    RECURSION_VARIANCES,
    InitialState,
    Readout,
    RecurrentConfig,
    RecurrentVariances,
)
from ..duals import ERF, RELU, side_tables, table_dual
from ..lanes import right_align, row_ids
from ..recursion import cell, on_clock, readout, readout_weights, self_terms
from . import ahead
from .base import Engine, Problem

__all__ = [
    "CachedCompiledEngine",
    "CompiledEngine",
    "NotCachedError",
    "TritonEngine",
    "fused_gram",
    "clock_self_terms",
    "triton_available",
]

# Rows x columns of one tile of the compiled scan at most (the state of one tile stays in a CPU's
# cache; K(x, x) takes square tiles of the rows' size), and the steps unrolled in one compiled
# call.
_TILE = (256, 1024)
_UNROLL = 8
# Cells per compiled call for the mean readout's forward-mode gradients on CUDA, where Inductor's
# kernels for 8 cells were measured slower than for 2 (docs/performance.md; the last readout: 8).
_UNROLL_CUDA_MEAN_FORWARD_MODE = 2
# Cells per compiled call for the mean and geometric readouts on the CPU (a 2-core AVX-512 CPU,
# float64 ReLU, N = 200, T = 100, one thread: values as fast as with 8, forward mode 1.8x faster).
_UNROLL_CPU_MEAN = 4
# The Triton kernel keeps every layer's state in registers; its tiles are chosen to hold up to
# this many layers without spilling (deeper networks use the compiled loop).
TRITON_MAX_LAYERS = 3


def clock_self_terms(
    values: Tensor,
    lengths: Tensor,
    variances: RecurrentVariances,
    *,
    config: RecurrentConfig,
    steps: int,
    align: str = "end",
    triton: bool = False,
    directions: tuple[int, ...] | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""The pre-activation variances :math:`S^l(t, t)` of each sequence on a clock of ``steps``.

    Args:
        values: ``(N, T, m)``, zero past each length.
        lengths: ``(N,)``.
        variances: Scalar variances.
        steps: The clock's length (at least ``T``).
        align: ``"end"``: index ``u`` holds the self term ``steps - u`` steps before the readout
            (the last readout's clock); ``"start"``: index ``u`` holds step ``u``.
        triton: Run the recursion as one Triton kernel (no autograd) rather than a loop of
            tensor operations over the steps, which is launch-bound on a GPU.
        directions: Variances (numbered as in :class:`RecurrentVariances`) to differentiate
            along in forward mode, in the same pass.

    Returns:
        ``(L, steps, N)``, with 1 (a finite placeholder) where the sequence is not running;
        with ``directions`` also their derivatives ``(L, steps, P, N)``, 0 there.
    """
    if triton:
        from .triton_kernels import triton_self_terms

        found = triton_self_terms(values, lengths, variances, config, directions=directions or ())
    else:
        found = _looped_self_terms(values, lengths, variances, directions, config)
    if directions is None:
        return on_clock(found, lengths, steps, align, 1.0).permute(2, 1, 0)
    tables, derivatives = found
    return (
        on_clock(tables, lengths, steps, align, 1.0).permute(2, 1, 0),
        on_clock(derivatives, lengths, steps, align, 0.0).permute(2, 1, 3, 0),
    )


def _looped_self_terms(
    values, lengths, variances, directions, config: RecurrentConfig
) -> Tensor | tuple[Tensor, Tensor]:
    """:func:`clock_self_terms`' tables ``(N, T, L)`` (1 past each length) by the loop of tensor
    operations, and with ``directions`` their derivatives ``(N, T, L, P)`` in the same pass."""
    init = config.initial_state != InitialState.ZERO
    found = self_terms(
        values, lengths, variances, config.dual, config.num_layers, init, tuple(directions or ())
    )
    if directions is None:
        return torch.stack(found, -1)
    tables, derivatives = found
    return torch.stack(tables, -1), torch.stack(derivatives, -2)


def _tables_dual(code: int, eps: float):
    """The dual :func:`~gpytorch_rntk._core.recursion.cell` applies: the table form of
    :func:`~gpytorch_rntk._core.duals.table_dual` (the sides' ``(root, inv)``)."""

    def dual(s, selves, same, tangents):
        return table_dual(s, *selves, same, code, eps, tangents)

    return dual


def _below(xs: Tensor, ys: Tensor) -> Tensor:
    """The input term ``x . y / m`` of every pair (elementwise for few channels, so that the
    compiler fuses it into the step)."""
    if xs.shape[-1] <= 16:
        return (xs.unsqueeze(-2) * ys.unsqueeze(-3)).mean(-1)
    return xs @ ys.transpose(-1, -2) / xs.shape[-1]


def _cross_steps(
    state: tuple[Tensor, ...],
    xs: Tensor,
    ys: Tensor,
    sxs: Tensor,
    sys_: Tensor,
    lengths1: Tensor,
    lengths2: Tensor,
    ids1: Tensor,
    ids2: Tensor,
    top: Tensor,
    variances: tuple[Tensor, ...],
    code: int,
    frozen_layers: int,
    init_mode: int,
    eps: float,
    directions: tuple[int, ...] = (),
    dsxs: Tensor | None = None,
    dsys: Tensor | None = None,
) -> tuple[Tensor, ...]:
    """``xs.shape[0]`` steps of the last readout's cross scan of one tile, ``top`` steps
    before the readout at the first of them (sequences aligned at their ends). ``state`` is
    as for :func:`~gpytorch_rntk._core.recursion.cell`, each tensor ``(n1, n2)``; ``sxs``: the
    self terms' tables ``(K, L, 2, n1, 1)`` (:func:`side_tables`).

    Forward mode, along the variances numbered ``directions``: ``dsxs`` ``(K, L, P, n1, 1)``
    and ``dsys`` ``(K, L, P, 1, n2)`` are the self terms' ``h``.
    """
    exact = ids1.unsqueeze(-1) == ids2.unsqueeze(-2)
    shorter = torch.minimum(lengths1.unsqueeze(-1), lengths2.unsqueeze(-2))
    state = list(state)
    for k in range(xs.shape[0]):
        remaining = top - k
        cont = shorter > remaining
        start = None
        if init_mode:  # (pairs ahead of their start are overwritten before it)
            start = (lengths1.unsqueeze(-1) == remaining) & (lengths2.unsqueeze(-2) == remaining)
            start = start & exact if init_mode == 1 else start
        cell(
            state,
            _below(xs[k], ys[k]),
            cont,
            start,
            list(zip(sxs[k], sys_[k], strict=True)),
            exact,
            variances,
            _tables_dual(code, eps),
            frozen_layers,
            directions,
            _per_direction(dsxs, dsys, k, len(directions)),
        )
    return tuple(state)


def _per_direction(dsxs, dsys, k: int, directions: int):
    """``[layer][p] = (h, h')`` (:func:`side_tables`) at step ``k``, or ``None`` without
    directions."""
    if not directions:
        return None
    return [
        [(dsxs[k, layer, p], dsys[k, layer, p]) for p in range(directions)]
        for layer in range(dsxs.shape[1])
    ]


def _shifted_steps(
    state: tuple[Tensor, ...],
    xs: Tensor,
    ys: Tensor,
    sxs: Tensor,
    sys_: Tensor,
    lengths1: Tensor,
    lengths2: Tensor,
    ids1: Tensor,
    ids2: Tensor,
    first: Tensor,
    variances: tuple[Tensor, ...],
    code: int,
    frozen_layers: int,
    eps: float,
    directions: tuple[int, ...] = (),
    dsxs: Tensor | None = None,
    dsys: Tensor | None = None,
    *,
    weights1: tuple[Tensor, ...] = (),
    weights2: tuple[Tensor, ...] = (),
) -> tuple[Tensor, ...]:
    """``xs.shape[0]`` cells of one tile of diagonals (the mean and geometric readouts): row
    ``a`` is a sequence from its start, column ``b`` a sequence from some step on (one diagonal
    of its time grid with every row's), all aligned at step 0 of the tile; ``first`` is the
    tile's step at the first cell. ``lengths2`` are the columns' steps left: a pair is active
    while its step is below both lengths, and its state starts as ``state`` holds it (the
    boundary) and restarts from 0 once either sequence has ended (its readout is not summed).
    ``ids`` equal where the pair is an exact self pair on its diagonal ``t = t'``.

    ``state`` is as for :func:`~gpytorch_rntk._core.recursion.cell`, each tensor ``(n1, n2)``,
    followed by the sums of the readout over the active cells so far and their derivatives;
    the other arguments as for :func:`_cross_steps`. ``weights1`` (``(K, n1, 1)``) and
    ``weights2`` (``(K, 1, n2)``), the geometric readout: the steps' weights by which each
    cell's readout is multiplied, and optionally their derivatives along the decay, for one
    more sum (the readout times the derivative of the weights' product).
    """
    exact = ids1.unsqueeze(-1) == ids2.unsqueeze(-2)
    shorter = torch.minimum(lengths1.unsqueeze(-1), lengths2.unsqueeze(-2))
    sums = 1 + len(directions) + (len(weights1) == 2)
    totals = list(state[-sums:])
    state = list(state[:-sums])
    for k in range(xs.shape[0]):
        active = shorter > first + k
        cell(
            state,
            _below(xs[k], ys[k]),
            active,
            None,
            list(zip(sxs[k], sys_[k], strict=True)),
            exact,
            variances,
            _tables_dual(code, eps),
            frozen_layers,
            directions,
            _per_direction(dsxs, dsys, k, len(directions)),
        )
        value, d_value = readout(state, len(directions), frozen_layers)
        terms = [value, *d_value]
        if weights1:
            both = weights1[0][k] * weights2[0][k]
            terms = [r * both for r in terms]
            if len(weights1) == 2:  # d(w w') = dw w' + w dw' along the decay
                terms.append(
                    value * (weights1[1][k] * weights2[0][k] + weights1[0][k] * weights2[1][k])
                )
        for i, r in enumerate(terms):
            totals[i] = totals[i] + torch.where(active, r, 0.0)
    return (*state, *totals)


_compiled_steps: dict = {}
# Why torch.compile failed in this process, once it has: the compiled engine then runs its loop
# eagerly where it is named, and engine="auto" no longer picks it.
_compile_failure: list[str] = []


def compile_enabled() -> bool:
    """Whether the compiled engine compiles its loop: unless ``GPYTORCH_RNTK_COMPILE=0`` or
    compilation has failed in this process."""
    return os.environ.get("GPYTORCH_RNTK_COMPILE", "1") != "0" and not _compile_failure


def _check_cpu_compiler() -> None:
    """Raise :class:`CompilationFailedError` (once; then compilation stays off) where Inductor
    finds no working C++ compiler, before tracing anything: compiling on the CPU needs one."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as error:  # InvalidCxxCompiler, or an Inductor without this function
        raise _compilation_failed(error) from error


def _compilation_failed(error: Exception) -> CompilationFailedError:
    """Record why compiling failed (compilation then stays off in this process), as the error
    the dispatcher turns into one warning and a fallback."""
    _compile_failure.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
    return CompilationFailedError(_compile_failure[0])


class CompilationFailedError(RuntimeError):
    """The compiled engine's loop could not be built (e.g. no C++ compiler)."""


def _steps_function(readout: Readout, compiled: bool, cold_ok: bool = True):
    """:func:`_cross_steps` (last readout) or :func:`_shifted_steps` (mean and geometric),
    compiled where ``compiled`` (through a :class:`_CompiledSteps` per Gram matrix, whose first
    call finds or builds its loop)."""
    steps = _cross_steps if readout == LAST else _shifted_steps
    return _CompiledSteps(steps, cold_ok) if compiled else steps


def _compiled(steps):
    """``torch.compile(steps)``, once per process (CUDA; the CPU's loop is built ahead of time,
    :func:`_ahead_of_time`)."""
    if steps not in _compiled_steps:
        # One specialisation per configuration (depth, nonlinearity, directions, ...) and tile
        # shape: more than the default 8, after which Dynamo would silently run it eagerly.
        config = torch._dynamo.config
        name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
        setattr(config, name, max(getattr(config, name), 64))
        _compiled_steps[steps] = torch.compile(steps, dynamic=False)
        warnings.warn(
            "gpytorch_rntk: compiling the fused engine's loop with torch.compile on CUDA; the "
            "first calls of each configuration take seconds (less once Inductor's on-disk "
            "cache has it). Set GPYTORCH_RNTK_COMPILE=0 to skip compiling.",
            CompilationWarning,
            stacklevel=4,
        )
    return _compiled_steps[steps]


class NotCachedError(RuntimeError):
    """The compiled loop's package for this request is not on this machine, and the request
    was not worth building it (``engine="auto"`` then uses the tensor engine)."""


class _CompiledSteps:
    """The compiled loop for the chunks of one Gram matrix (each of the same shapes), found on
    its first call: on the CPU the package built ahead of time for its configuration
    (:func:`_ahead_of_time`), on CUDA ``torch.compile``."""

    def __init__(self, steps, cold_ok: bool):
        self.steps, self.cold_ok, self.compiled = steps, cold_ok, None

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            if args[1].device.type == "cpu":
                self.compiled = _ahead_of_time(self.steps, args, kwargs, self.cold_ok)
            else:
                self.compiled = _compiled(self.steps)
        return self.compiled(*args, **kwargs)


# The packages loaded in this process, and the requests (config, problem) whose package was not
# on disk when the cached compiled engine last tried them.
_loaded: dict = {}
_not_cached: set = set()


def _ahead_of_time(steps, args, kwargs, cold_ok: bool):
    """The CPU loop's package for this call's configuration (:mod:`.ahead`), loaded once per
    process; one not on disk is built first, with a :class:`CompilationWarning`, or refused
    with :class:`NotCachedError` where not ``cold_ok``."""
    path = ahead.package_path(ahead.package_key(steps, args, kwargs))
    if path not in _loaded:
        if not path.exists():
            if not cold_ok:
                raise NotCachedError(f"the compiled loop's package {path.name} is not built")
            _check_cpu_compiler()
            warnings.warn(
                "gpytorch_rntk: compiling the fused engine's loop ahead of time for a new "
                "configuration (15-100 s on a CPU, once per machine: later calls and processes "
                f"load it from {ahead.cache_dir()}; python -m gpytorch_rntk.warmup builds the "
                "common ones ahead). Set GPYTORCH_RNTK_COMPILE=0 to skip compiling.",
                CompilationWarning,
                stacklevel=4,
            )
            try:
                ahead.build(steps, args, kwargs, path)
            except Exception as error:  # export or Inductor: the dispatcher falls back
                raise _compilation_failed(error) from error
            _not_cached.clear()
        _loaded[path] = ahead.load(steps, path)
    return _loaded[path]


class CompilationWarning(UserWarning):
    """The compiled engine is compiling (slow once), or could not compile and fell back."""


def triton_available(device: torch.device) -> bool:
    """Whether the Triton kernel can run on ``device`` (CUDA, or Triton's interpreter)."""
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return False
    try:
        from . import triton_kernels  # noqa: F401
    except ImportError:
        return False
    return True


def _fused_unsupported(config: RecurrentConfig, problem: Problem, engine: str) -> str | None:
    """What neither fused engine (compiled or Triton) computes."""
    if config.dual.code not in (RELU, ERF):
        return (
            f"the {engine} engine implements the nonlinearities relu and erf in closed form, "
            f"not {config.dual.name!r}; use engine='tensor'"
        )
    if config.readout not in (LAST, MEAN, GEOMETRIC):
        return (
            f"the {engine} engine computes the readouts last, mean and geometric, not "
            f"{config.readout}"
        )
    if problem.diag:
        return f"the {engine} engine computes Gram matrices, not their diagonals"
    if problem.paired:
        return f"the {engine} engine computes Gram matrices, not paired rows (paired=True)"
    if problem.batched:
        return f"the {engine} engine takes unbatched (N, T, m) sequences"
    if not problem.scalar_variances:
        return f"the {engine} engine takes scalar variances"
    if problem.sequence_grad:
        return f"the {engine} engine gives gradients for the variances only, not the sequences"
    if problem.variance_tangent:
        return (
            f"the {engine} engine gives reverse-mode gradients only; forward-mode tangents "
            "(torch.func.jvp, forward_ad) need engine='tensor'"
        )
    return None


def _pair_steps(config: RecurrentConfig, problem: Problem) -> int:
    """Pair-steps of a Gram matrix (time pairs for the mean readout)."""
    steps = (problem.steps1, problem.steps2)
    cells = max(steps) if config.readout == LAST else steps[0] * steps[1]  # per pair
    return problem.n1 * problem.n2 * cells


class CompiledEngine(Engine):
    """Each tile of pairs through all its steps and layers in a loop of chunks of steps
    compiled (ahead of time on the CPU, by :func:`torch.compile` on CUDA; eagerly where
    compilation is switched off or failed);
    the mean and geometric readouts pair sequences with diagonals of the time grids. Gram
    matrices of unbatched inputs with scalar variances, first derivatives for the variances
    (forward mode inside)."""

    name = "compiled"
    # Requests from this many pair-steps build a loop not yet built (15-100 s on the CPU, once
    # per machine; a CUDA process compiles its own in seconds): where the tensor engine takes
    # seconds itself (timings: docs/performance.md).
    threshold = 2**28
    # With variance gradients on the CPU (a fit evaluates the same shapes a hundred times or
    # more), scans of this many steps repay compiling at any size: the tensor engine's cost is
    # then its overhead per step (fits at T = 100 and 300 ran 2-5x faster; docs/performance.md).
    grad_steps = 100

    def unsupported(self, config: RecurrentConfig, problem: Problem) -> str | None:
        return _fused_unsupported(config, problem, "compiled")

    def worth(self, config: RecurrentConfig, problem: Problem) -> bool:
        if not compile_enabled():
            return False
        # On CUDA the variance gradients of a network deeper than the Triton kernel handles
        # stay on the tensor engine: the compiled forward mode is slow there
        # (docs/performance.md).
        cuda_deep = problem.device.type == "cuda" and config.num_layers > TRITON_MAX_LAYERS
        if cuda_deep and config.readout == LAST and problem.variance_grad:
            return False
        fitting = problem.device.type == "cpu" and problem.variance_grad
        if fitting and max(problem.steps1, problem.steps2) >= self.grad_steps:
            return True
        return _pair_steps(config, problem) >= self.threshold

    def gram(self, config, values1, lengths1, values2, lengths2, variances, **_) -> Tensor:
        return fused_gram(config, values1, lengths1, values2, lengths2, variances, "compiled")


class CachedCompiledEngine(CompiledEngine):
    """The compiled engine for CPU requests too small to repay building its loop, where the
    loop's package is already built on this machine: ``engine="auto"`` considers it after
    :class:`CompiledEngine`, at every size (loaded in milliseconds, the package ran 1.6-11x the
    tensor engine from 8 sequences of 20 steps up; ``benchmarks/small_sizes.py``). Its
    ``gram`` raises :class:`NotCachedError` where the package is not built, and the dispatcher
    computes the request on the tensor engine instead."""

    def worth(self, config: RecurrentConfig, problem: Problem) -> bool:
        if not compile_enabled() or problem.device.type != "cpu":
            return False
        return (config, problem) not in _not_cached  # (refused before: not tried each call)

    def gram(self, config, values1, lengths1, values2, lengths2, variances, **_) -> Tensor:
        return fused_gram(
            config, values1, lengths1, values2, lengths2, variances, "compiled", cold_ok=False
        )

    @staticmethod
    def not_cached(config: RecurrentConfig, problem: Problem) -> None:
        """Remember that this request's package is not built: until a package is next built in
        this process, :meth:`worth` declines it at once (a fit repeats it hundreds of times)."""
        _not_cached.add((config, problem))


class TritonEngine(Engine):
    """The cross scan as one Triton kernel, a program per tile of pairs with every layer's
    state in registers (CUDA, or Triton's interpreter on the CPU); for the mean and geometric
    readouts a program per tile of pairs and group of diagonals of their time grids."""

    name = "triton"
    threshold = 2**22  # a Triton kernel compiles in about a second

    def unsupported(self, config: RecurrentConfig, problem: Problem) -> str | None:
        reason = _fused_unsupported(config, problem, "triton")
        if reason is not None:
            return reason
        if config.num_layers > TRITON_MAX_LAYERS:
            return f"the triton engine keeps at most {TRITON_MAX_LAYERS} layers in registers"
        if not triton_available(problem.device):
            return "the triton engine needs CUDA (or TRITON_INTERPRET=1) and Triton installed"
        return None

    def worth(self, config: RecurrentConfig, problem: Problem) -> bool:
        # (on the CPU it runs under Triton's interpreter: a test vehicle, never worth it)
        return problem.device.type == "cuda" and _pair_steps(config, problem) >= self.threshold

    def gram(self, config, values1, lengths1, values2, lengths2, variances, **_) -> Tensor:
        return fused_gram(config, values1, lengths1, values2, lengths2, variances, "triton")


def fused_gram(
    config: RecurrentConfig,
    values1: Tensor,
    lengths1: Tensor,
    values2: Tensor,
    lengths2: Tensor,
    variances: RecurrentVariances,
    backend: str,
    cold_ok: bool = True,
) -> Tensor:
    r"""The RNTK / NNGP Gram matrix ``(N, N')`` by a fused engine, ``backend`` ``"triton"`` or
    ``"compiled"``: unbatched inputs, scalar variances (checked by the engines' ``unsupported``).

    ``readout="mean"`` runs the diagonals of the time grids (each the last readout's recursion
    from its own boundary, sequences aligned at their starts) in tiles of sequences against
    diagonals through the compiled loop, summing the readout of every active cell: :math:`O(L T T')`
    work per pair, memory as for the last readout. ``readout="geometric"`` weights each cell's
    readout by its steps' weights (and differentiates the weights along the decay).

    Gradients: first derivatives for the variances only (a backward pass with
    ``create_graph=True`` raises), in forward mode by the same backend. When a variance requires
    a gradient, the scan carries the derivatives of every pair's state along each such variance
    next to the values (the same elementwise pass, so the values are computed once), and keeps
    the derivative of the Gram matrix along each: ``P`` more ``N x N'`` matrices and nothing of
    the scan; the backward pass contracts them with the incoming gradient.
    """
    if not (len(lengths1) and len(lengths2)):
        return values1.new_zeros(len(lengths1), len(lengths2))
    setup = dict(
        config=config,
        backend=backend,
        symmetric=values1 is values2 and lengths1 is lengths2,
        cold_ok=cold_ok,
    )
    # Five 0-d tensors of the inputs' dtype (init_var 0 where not given).
    variances = [v.reshape(()) for v in RecurrentVariances(*variances).like(values1)]
    if torch.is_grad_enabled() and any(v.requires_grad for v in variances):
        return _FusedGram.apply(setup, values1, lengths1, values2, lengths2, *variances)
    with torch.no_grad():
        return _fused(values1, lengths1, values2, lengths2, variances, **setup)


class _FusedGram(torch.autograd.Function):
    """The fused Gram matrix with forward-mode gradients for the variances."""

    @staticmethod
    def forward(ctx, setup, values1, lengths1, values2, lengths2, *variances):
        # (the decay is read by the geometric readout only; the others do not depend on it)
        geometric = setup["config"].readout == GEOMETRIC
        needs = ctx.needs_input_grad[5:]
        ctx.wanted = [i for i, need in enumerate(needs) if need and (i != DECAY or geometric)]
        out, *derivatives = _fused(
            values1,
            lengths1,
            values2,
            lengths2,
            variances,
            directions=ctx.wanted,
            **setup,
        )
        ctx.save_for_backward(*derivatives)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():  # create_graph=True: this backward is not differentiable
            raise RuntimeError(
                "The fused engines give first derivatives only; for higher ones "
                "(create_graph=True) use engine='tensor'."
            )
        per_variance = [None] * len(RecurrentVariances._fields)
        for i, derivative in zip(ctx.wanted, ctx.saved_tensors, strict=True):
            per_variance[i] = (grad_out * derivative).sum()
        return (None, None, None, None, None, *per_variance)


def _fused(
    values1,
    lengths1,
    values2,
    lengths2,
    variances,
    *,
    config: RecurrentConfig,
    backend: str,
    symmetric: bool,
    cold_ok: bool = True,
    directions=None,
):
    """The Gram matrix, or with ``directions`` the list of it and its derivatives along the
    variances they number (:data:`~.config.DECAY` last: the readout's decay, whose derivative
    only weights the readout)."""
    variances = RecurrentVariances(*variances)
    listed = directions is not None
    along_decay = listed and DECAY in directions
    if directions is not None:  # the forward-mode directions of the recursion
        directions = [i for i in directions if i < RECURSION_VARIANCES] or None
    lengths1, lengths2 = lengths1.long(), lengths2.long()
    ids1, ids2 = row_ids(values1, lengths1, values2, lengths2)  # exact self pairs
    # Sort by length so that each tile scans only what its pairs need.
    order1 = torch.argsort(lengths1, stable=True)
    order2 = order1 if symmetric else torch.argsort(lengths2, stable=True)
    longest = int(max(lengths1.max(), lengths2.max()))
    # The last readout's clock ends at the readout; the mean's starts at step 0, with one idle
    # step (zero data, placeholder self terms) that diagonals past their end read.
    align, steps = ("end", longest) if config.readout == LAST else ("start", longest + 1)
    sides = []
    for values, lengths, ids, order in (
        (values1, lengths1, ids1, order1),
        (values2, lengths2, ids2, order2),
    ):
        values, lengths, ids = values[order], lengths[order], ids[order]
        # the self terms and, with directions, their derivatives (L, steps, P, N), as the
        # scan reads them
        found = clock_self_terms(
            values,
            lengths,
            variances,
            config=config,
            steps=steps,
            align=align,
            triton=backend == "triton",
            directions=directions,
        )
        selves, tangents = found if directions is not None else (found, None)
        tables, h = side_tables(selves, tangents, config.dual.code)
        side = [None, lengths, ids, tables, *([] if h is None else [h])]
        if align == "end":
            side[0] = right_align(values, lengths, steps)
        else:
            side[0] = torch.nn.functional.pad(values, (0, 0, 0, steps - values.shape[-2]))
        sides.append(side)
        if symmetric:
            sides.append(side)
            break
    weights = []
    if config.readout == GEOMETRIC:  # each side's steps' weights (and d/d decay) on the clock
        for lengths, order in ((lengths1, order1), (lengths2, order2))[: 2 - symmetric]:

            def table(decay: Tensor, lengths: Tensor = lengths[order]) -> Tensor:
                return readout_weights(lengths, steps, decay, values1.dtype)

            decay = variances.readout_decay
            if along_decay:
                weights.append(torch.func.jvp(table, (decay,), (torch.ones_like(decay),)))
            else:
                weights.append((table(decay),))
        weights *= 3 - len(weights)  # (K(x, x): one side's for both)
    # Each backend writes pair (a, b) of the sorted sets to out[order1[a], order2[b]]
    # (and, for K(x, x), computes a <= b only and writes both halves).
    planes = values1.new_empty(
        1 + len(directions or ()) + along_decay, len(lengths1), len(lengths2)
    )
    directions = tuple(directions or ())
    if backend == "triton":
        from .triton_kernels import triton_cross

        triton_cross(
            *sides, variances, planes, order1, order2, config, symmetric, directions, weights
        )
        return list(planes) if listed else planes[0]
    options = dict(
        config=config, symmetric=symmetric, directions=directions, weights=weights, cold_ok=cold_ok
    )
    try:
        _compiled_cross(*sides, variances, list(planes), order1, order2, **options)
    # (these two can come before Dynamo is imported, which naming its exceptions would do)
    except (NotCachedError, CompilationFailedError):
        raise
    except torch._dynamo.exc.TorchDynamoException as error:
        if not compile_enabled():
            raise
        raise _compilation_failed(error) from error
    return list(planes) if listed else planes[0]


def _compiled_cross(
    side1,
    side2,
    variances,
    outs: list[Tensor],
    order1: Tensor,
    order2: Tensor,
    *,
    config: RecurrentConfig,
    symmetric: bool,
    directions=(),
    weights=(),
    cold_ok: bool = True,
):
    """The cross scan through :func:`_cross_steps` (last readout, tile by tile) or
    :func:`_diagonal_steps` (mean and geometric readouts, see :func:`_compiled_mean`, with each
    side's ``weights``) on sorted inputs,
    writing the Gram matrix to ``outs[0]`` and, in forward mode (the sides carry their self
    terms' derivatives), its derivatives along the variances numbered ``directions`` to
    ``outs[1:]``. Every call of the compiled function has the same shapes (the inputs are
    padded with sequences of length 0), so it is specialised once per configuration.
    """
    tile = dict(
        variances=tuple(variances),
        code=config.dual.code,
        num_layers=config.num_layers,
        frozen_layers=config.frozen_layers,
        init_mode=int(config.initial_state),
        eps=torch.finfo(side1[0].dtype).eps,
        steps_fn=_steps_function(config.readout, compile_enabled(), cold_ok),
        directions=directions,
    )
    if config.readout != LAST:
        _compiled_mean(side1, side2, outs, order1, order2, weights, symmetric=symmetric, tile=tile)
        return
    n1, n2 = len(side1[1]), len(side2[1])
    # K(x, x): square tiles, so that more of them lie below the diagonal and are skipped
    # (N = 1000, T = 150, float32: 0.19 s against 0.27 s with 256 x 1024; docs/performance.md)
    largest = (_TILE[0], _TILE[0]) if symmetric else _TILE
    rows, cols = (
        _tile_size(n, most, low) for most, n, low in zip(largest, (n1, n2), (16, 64), strict=True)
    )
    side1 = _pad_side(side1, -(-n1 // rows) * rows, -1)
    side2 = _pad_side(side2, -(-n2 // cols) * cols, -2)
    device = side1[0].device
    for i in range(0, n1, rows):
        for j in range(i // cols * cols if symmetric else 0, n2, cols):
            value, derivatives = _scan_tile_last(
                _part(side1, i, rows), _part(side2, j, cols), **tile
            )
            a = torch.arange(i, min(i + rows, n1), device=device).unsqueeze(-1)
            b = torch.arange(j, min(j + cols, n2), device=device).unsqueeze(-2)
            a, b = torch.broadcast_tensors(a, b)
            crop = (slice(0, a.shape[0]), slice(0, a.shape[1]))
            upper = a <= b
            if symmetric:  # K(x, x): pairs a <= b
                a, b = a[upper], b[upper]
            for out, block in zip(outs, [value, *derivatives], strict=True):
                block = block[crop]
                _write(out, block[upper] if symmetric else block, order1[a], order2[b], symmetric)


def _write(out: Tensor, block: Tensor, rows: Tensor, cols: Tensor, symmetric: bool) -> None:
    """``out[rows, cols] = block``, and for K(x, x) (pairs ``a <= b``) the other half too."""
    if symmetric:
        out[cols, rows] = block
    out[rows, cols] = block


# Rows (sequences from their start) x columns (sequences from a step on: diagonals of the time
# grids) of one tile of the mean and geometric readouts' scan at most; with forward-mode
# derivatives (a state 1 + P times larger) fewer columns. On 2 cores (N = 200, T = 100, float64,
# 16 or 32 rows) 2048 columns ran values 1.04-1.1x faster than 1024; with three variances' forward
# mode 16 x 1024 ran 1.4-1.6x faster than 16 x 512 or 32 x 2048.
_MEAN_TILE = (32, 2048)
_MEAN_TILE_FORWARD_MODE = (32, 1024)


def _compiled_mean(
    side1, side2, outs: list[Tensor], order1: Tensor, order2: Tensor, weights, *, symmetric, tile
) -> None:
    """The mean readout through :func:`_shifted_steps`; the geometric readout the same with
    each side's ``weights`` ``[(w, dw/d decay)]`` (the latter where the decay is
    differentiated), ``(N, steps)``.

    The diagonal ``t - t' = d >= 0`` of a pair's time grid is the recursion of the pair
    ``(x[d:], x')`` from its boundary (with ``x``'s self terms from step ``d`` on), so the
    diagonals are scanned like the last readout's tiles: rows ``x'`` against columns ``x[d:]``
    (one per sequence and step ``d`` below its length), all aligned at their starts, each cell
    adding its readout to its pair's sum (:func:`_diagonal_sums`). With ``A`` side 2 against
    side 1's diagonals ``d >= 0`` and ``B`` side 1 against side 2's ``d >= 1``, the Gram matrix
    is ``A^T + B``; for K(x, x), with ``D`` the sums over ``d = 0`` and ``B`` over ``d > 0``,
    ``D + B + B^T`` (its upper half, mirrored, so that it is exactly symmetric).
    """
    weights1, weights2 = weights or ((), ())
    if symmetric:
        n = len(side1[1])
        found = _diagonal_sums(side1, side1, weights1, weights1, 0, split=True, tile=tile)
        planes = [f[:, :n] + f[:, n:] + f[:, n:].T for f in found]
    else:
        found = _diagonal_sums(side2, side1, weights2, weights1, 0, tile=tile)
        planes = [
            a.T + b
            for a, b in zip(
                found, _diagonal_sums(side1, side2, weights1, weights2, 1, tile=tile), strict=True
            )
        ]
    # (the geometric readout's weights are normalised already)
    counts = 1 if weights else (side1[1].unsqueeze(-1) * side2[1]).clamp(min=1)
    for out, plane in zip(outs, planes, strict=True):
        plane = plane / counts
        if symmetric:
            plane = plane.triu() + plane.triu(1).T
        out[order1.unsqueeze(-1), order2] = plane


def _diagonal_sums(
    rows, cols, weights1, weights2, least: int, *, split: bool = False, tile
) -> list[Tensor]:
    """The sums of the readout (weighted by each side's ``weights``, if any) over the
    diagonals ``t - t' = d >= least`` of the time grids of every pair (column sequence at
    ``t``, row sequence at ``t'``), and their derivatives along the directions (and the decay,
    where the weights carry their derivatives): each ``(n1, n2)``, or with ``split`` ``(n1, 2
    n2)``, the sums over ``d = 0`` and over ``d > 0`` side by side. Both sides sorted by length,
    their data and tables on the clock aligned at the starts (its last step idle: zero data,
    placeholder self terms)."""
    x1, lengths1, ids1, selves1, *tangent1 = rows
    x2, lengths2, ids2, selves2, *tangent2 = cols
    device, dtype, directions = x1.device, x1.dtype, tile["directions"]
    n1, n2, idle = len(lengths1), len(lengths2), x1.shape[-2] - 1
    unroll = _unroll(device, directions, MEAN)
    sums = [
        x1.new_zeros(n1, n2 * (1 + split))
        for _ in range(1 + len(directions) + (len(weights1) == 2))
    ]
    # The columns: each sequence from each step d >= least below its length, by steps left.
    counts = (lengths2 - least).clamp(min=0)
    seq = torch.repeat_interleave(torch.arange(n2, device=device), counts)
    shift = torch.arange(len(seq), device=device) - (counts.cumsum(0) - counts)[seq] + least
    left = lengths2[seq] - shift
    order = torch.argsort(left, stable=True)
    seq, shift, left = seq[order], shift[order], left[order]
    if len(seq) == 0:
        return sums
    ids = torch.where(shift == 0, ids2[seq], -3)  # exact self pairs only on d = 0
    target = seq + n2 * (shift > 0) if split else seq
    largest = _MEAN_TILE_FORWARD_MODE if directions else _MEAN_TILE
    rows_per_tile = _tile_size(n1, largest[0], 8)
    cols_per_tile = _tile_size(len(seq), largest[1], 64)
    rows = _pad_side(rows, -(-n1 // rows_per_tile) * rows_per_tile, -1)
    pad = -len(seq) % cols_per_tile
    seq, shift, left, target = (
        torch.nn.functional.pad(t, (0, pad)) for t in (seq, shift, left, target)
    )
    ids = torch.nn.functional.pad(ids, (0, pad), value=-2)
    # The rows' data and tables by tile of rows, steps first, with ``unroll`` idle steps more (a
    # tile's steps are rounded up to whole calls): each call's slice is contiguous, in the
    # standard strides the loop is specialised on.
    x1, lengths1, ids1, selves1, *tangent1 = rows
    tiles = len(lengths1) // rows_per_tile

    def by_tile(t: Tensor, fill: float) -> Tensor:
        idle_steps = t.new_full((t.shape[0], unroll, *t.shape[2:]), fill)
        return torch.cat([t, idle_steps], 1)

    x1 = by_tile(x1.unflatten(0, (tiles, -1)).transpose(1, 2), 0.0)  # (tiles, steps, n1, m)
    # (tiles, steps, L, 2, n1, 1) and (tiles, steps, L, P, n1, 1)
    selves1, *tangent1 = (
        by_tile(t.unflatten(-1, (tiles, -1)).permute(3, 1, 0, 2, 4), fill).unsqueeze(-1)
        for t, fill in ((selves1, 1.0), *((t, 0.0) for t in tangent1))
    )
    weights1 = [  # (tiles, steps, n1, 1)
        by_tile(
            torch.nn.functional.pad(w, (0, 0, 0, len(lengths1) - len(w)))
            .unflatten(0, (tiles, -1))
            .transpose(1, 2),
            0.0,
        ).unsqueeze(-1)
        for w in weights1
    ]
    firsts = [torch.tensor(s, device=device) for s in range(0, x1.shape[1], unroll)]
    variances, init_mode = tile["variances"], tile["init_mode"]
    init_var = torch.as_tensor(variances[3], dtype=dtype, device=device)
    width = 3 + 3 * len(directions)
    for c in range(0, len(seq), cols_per_tile):
        cs = slice(c, c + cols_per_tile)
        longest = int(left[cs].max())
        if longest == 0:
            continue
        # The columns' data and tables at each of the tile's steps (idle past each end).
        steps = torch.arange(-(-longest // unroll) * unroll, device=device).unsqueeze(-1)
        at = torch.where(steps < left[cs], shift[cs] + steps, idle)
        which = seq[cs]
        y = x2[which, at]  # (steps, n2, m)
        # (steps, L, 2, 1, n2) and (steps, L, P, 1, n2)
        y_selves, *y_tangents = (
            t[:, at, :, which].permute(0, 2, 3, 1).unsqueeze(-2).contiguous()
            for t in (selves2, *tangent2)
        )
        y_weights = [w[which, at].unsqueeze(-2) for w in weights2]  # (steps, 1, n2)
        origin = (shift[cs] == 0).unsqueeze(-2)
        for tile_of_rows, r in enumerate(range(0, n1, rows_per_tile)):
            rs = slice(r, r + rows_per_tile)
            top = min(int(lengths1[rs].max()), longest)
            if top == 0:
                continue
            # The boundary (the initial state on d = 0) as each layer's previous cell of step
            # 0: a tensor of its own per layer (one tensor passed as several of the AOT
            # package's inputs gave wrong values).
            if init_mode:
                start = origin & (ids1[rs].unsqueeze(-1) == ids[cs].unsqueeze(-2))
                start = start if init_mode == 1 else origin.expand_as(start)
            state = []
            for _ in range(tile["num_layers"]):
                layer = [x1.new_zeros(rows_per_tile, cols_per_tile) for _ in range(width)]
                if init_mode:
                    layer[0] = torch.where(start, init_var, 0.0)
                    for p, i in enumerate(directions):
                        if i == 3:
                            layer[3 + 3 * p] = start.to(dtype)
                state += layer
            state += [x1.new_zeros(rows_per_tile, cols_per_tile) for _ in sums]
            row_x, row_selves, *row_tangents = (t[tile_of_rows] for t in (x1, selves1, *tangent1))
            row_weights = [w[tile_of_rows] for w in weights1]
            for s in range(0, top, unroll):
                u = slice(s, s + unroll)
                derivatives = ()
                if directions:  # (K, L, P, n1, 1), (K, L, P, 1, n2)
                    derivatives = (row_tangents[0][u], y_tangents[0][u])
                state = tile["steps_fn"](
                    tuple(state),
                    row_x[u],
                    y[u],
                    row_selves[u],
                    y_selves[u],
                    lengths1[rs],
                    left[cs],
                    ids1[rs],
                    ids[cs],
                    firsts[s // unroll],
                    variances,
                    tile["code"],
                    tile["frozen_layers"],
                    tile["eps"],
                    directions,
                    *derivatives,
                    weights1=tuple(w[u] for w in row_weights),
                    weights2=tuple(w[u] for w in y_weights),
                )
            for total, found in zip(sums, state[-len(sums) :], strict=True):
                total[rs].index_add_(1, target[cs], found[: n1 - r])
    return sums


def _unroll(device: torch.device, directions: tuple[int, ...], readout: Readout) -> int:
    """Steps (or cells) per compiled call."""
    if readout == LAST:
        return _UNROLL
    if device.type == "cuda":
        return _UNROLL_CUDA_MEAN_FORWARD_MODE if directions else _UNROLL
    return _UNROLL_CPU_MEAN


def _tile_size(n: int, largest: int, smallest: int) -> int:
    """The side of a tile of the compiled scan for ``n`` sequences: a power of two, so that a
    handful of shapes serve every size and the compiled function is specialised only a few
    times. Small sets get the next power of two (at least ``smallest``); larger ones the largest
    tile, or half of it where that pads less (1420 columns: 1536 in tiles of 512 instead of 2048
    in tiles of 1024; in ``K(x, x)`` narrower tiles also skip more pairs below the diagonal)."""
    if n <= largest:
        return min(largest, max(smallest, _power_of_two(n)))
    return min((largest, largest // 2), key=lambda size: (-(-n // size) * size, -size))


def _power_of_two(n: int) -> int:
    """The smallest power of two at least ``n``."""
    return 1 << (n - 1).bit_length()


def _part(side, start: int, size: int) -> list[Tensor]:
    """Sequences ``start : start + size`` of a padded side (the self terms and their
    derivatives keep the sequences last; the data, lengths and ids first)."""
    return [
        t[..., start : start + size] if k >= 3 else t[start : start + size]
        for k, t in enumerate(side)
    ]


def _scan_tile_last(
    side1,
    side2,
    *,
    variances,
    code,
    num_layers,
    frozen_layers,
    init_mode,
    eps,
    steps_fn,
    directions=(),
) -> tuple[Tensor, list[Tensor]]:
    """The last readout of one tile and its derivatives along ``directions``."""
    x1, lengths1, ids1, selves1, *tangent1 = side1
    x2, lengths2, ids2, selves2, *tangent2 = side2
    clock = x1.shape[-2]
    # Lengths are sorted: the tile's longest pair needs min(max T_i, max T_j) steps, rounded
    # up to whole chunks (steps before a pair starts are harmless).
    need = min(int(lengths1.max()), int(lengths2.max()))
    unroll = _unroll(x1.device, directions, LAST)
    top = -(-need // unroll) * unroll
    width = 3 + 3 * len(directions)
    state = tuple(x1.new_zeros(len(lengths1), len(lengths2)) for _ in range(num_layers * width))
    for start in range(clock - top, clock, unroll):
        u = slice(max(start, 0), start + unroll)
        pad = max(0, -start)  # steps before the clock began: zero data, placeholder 1
        derivatives = ()
        if directions:  # (K, L, P, n1, 1), (K, L, P, 1, n2)
            derivatives = (
                _pad_front(tangent1[0][:, u].transpose(0, 1), pad, 0.0)[..., None],
                _pad_front(tangent2[0][:, u].transpose(0, 1), pad, 0.0)[..., None, :],
            )
        state = steps_fn(
            state,
            _pad_front(x1[:, u].transpose(0, 1), pad, 0.0),
            _pad_front(x2[:, u].transpose(0, 1), pad, 0.0),
            _pad_front(selves1[:, u].transpose(0, 1), pad, 1.0)[..., None],
            _pad_front(selves2[:, u].transpose(0, 1), pad, 1.0)[..., None, :],
            lengths1.clone(),
            lengths2.clone(),
            ids1.clone(),
            ids2.clone(),
            torch.tensor(clock - start, device=x1.device),
            variances,
            code,
            frozen_layers,
            init_mode,
            eps,
            directions,
            *derivatives,
        )
    return readout(state, len(directions), frozen_layers)


def _pad_side(side, n: int, dummy_id: int):
    """Pad a sorted side to ``n`` sequences of length 0 (never active)."""
    values, lengths, ids, selves, *tangents = side
    extra = n - len(lengths)
    if extra == 0:
        return side
    return (
        torch.nn.functional.pad(values, (0, 0, 0, 0, 0, extra)),
        torch.nn.functional.pad(lengths, (0, extra)),
        torch.nn.functional.pad(ids, (0, extra), value=dummy_id),
        torch.nn.functional.pad(selves, (0, extra), value=1.0),
        *(torch.nn.functional.pad(t, (0, extra)) for t in tangents),
    )


def _pad_front(t: Tensor, pad: int, value: float) -> Tensor:
    """``pad`` steps of ``value`` before ``t``, in a fresh tensor with the standard strides
    (the compiled function is specialised on them)."""
    out = t.new_empty(pad + t.shape[0], *t.shape[1:])
    out[:pad] = value
    out[pad:] = t
    return out
