r"""The tensor engine: the recursions as one tensor operation per term on whole blocks of pairs.

The reference engine: any batch shape, paired rows, per-batch variances, any nonlinearity with
a tensor-form dual, gradients of any order for the sequences and the variances (reverse and
forward mode). A *pair state* is a tensor of any broadcastable shape, ``(..., N, N')`` for a Gram
matrix or ``(..., N)`` for paired rows. The self terms of each input are tabulated once
(:func:`~gpytorch_rntk._core.recursion.self_terms`); the cross terms then run through
:func:`~gpytorch_rntk._core.recursion.cell`, the step the compiled engine runs too.

For the last readout sequences are compared aligned at their last elements: the scan runs over
the number of steps ``r`` that remain until the readout, from the longest length down to 1, and
sequence ``i`` is active while ``T_i >= r``. The mean and geometric readouts scan every
diagonal of the time grid instead, weighting each cell's readout by its steps' weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor

from ..autodiff import differentiated, needs_grad
from ..config import (
    GEOMETRIC,
    LAST,
    MEAN,
    InitialState,
    RecurrentConfig,
    RecurrentVariances,
)
from ..duals import Dual
from ..lanes import diagonal_lanes, diagonal_length, identical_rows, right_align
from ..recursion import cell, on_clock, readout, readout_weights, self_terms, where
from .base import Engine, Problem

__all__ = ["TensorEngine"]

# Scans of at most this many pair-steps-layers keep all their steps for autograd (~200 MiB in
# float64 at the limit) instead of replaying chunks in the backward pass.
PLAIN_AUTOGRAD_PAIR_STEPS = 2**20

# Gram matrices of at most this many pairs are computed in one block.
_SMALL_PAIRS = 2**14

# The mean readout runs several diagonals side by side, up to this many pair-cells per step: enough
# to hide the per-operation overhead of small Gram blocks, small enough to stay in cache.
_LANE_ELEMENTS = 2**16

Mask = Tensor | bool


class _ReplayedScan(torch.autograd.Function):
    """A chunk of the scan that stores nothing but its inputs and replays itself in backward.

    The forward runs without building a graph, so neither the steps' tensors nor the graph's
    many small objects stay alive between the chunks (the latter fragment the CPU heap badly).
    The backward recomputes the chunk with autograd on and differentiates it with
    :func:`torch.autograd.grad`, which keeps an outer ``torch.autograd.grad`` working. Under
    ``create_graph=True`` it replays the saved inputs themselves and keeps the graph, so that
    its gradients are differentiable again (second derivatives, at the memory of plain
    autograd).
    """

    @staticmethod
    def forward(ctx, run: Callable[..., tuple[Tensor, ...]], *inputs: Tensor):
        ctx.run = run
        ctx.save_for_backward(*inputs)
        with torch.no_grad():
            return run(*inputs)

    @staticmethod
    def backward(ctx, *grad_outputs: Tensor):
        needs = ctx.needs_input_grad[1:]
        higher = torch.is_grad_enabled()  # create_graph=True
        # one node per input slot (an input may fill several): under create_graph a view of
        # it, still attached; else a detached leaf
        inputs = [
            (t.view_as(t) if n else t) if higher else t.detach().requires_grad_(n)
            for t, n in zip(ctx.saved_tensors, needs, strict=True)
        ]
        with torch.enable_grad():
            outputs = ctx.run(*inputs)
        used = [
            (o, g)
            for o, g in zip(outputs, grad_outputs, strict=True)
            if g is not None and o.requires_grad
        ]
        wanted = [t for t, n in zip(inputs, needs, strict=True) if n]
        grads = iter(
            torch.autograd.grad(
                [o for o, _ in used],
                wanted,
                [g for _, g in used],
                allow_unused=True,
                create_graph=higher,
            )
        )
        return (None, *(next(grads) if n else None for n in needs))


def _recomputed(
    compute: Callable[..., Tensor], values1: Tensor, values2: Tensor, variances: RecurrentVariances
) -> Tensor:
    """``compute(values1, values2, variances)`` keeping only its inputs for the backward pass,
    which recomputes it (its own scan then checkpoints chunks of steps as usual)."""
    variances = list(variances.like(values1))

    def run(*inputs: Tensor) -> tuple[Tensor]:
        variances_ = RecurrentVariances(*inputs[2:])
        return (compute(values1=inputs[0], values2=inputs[1], variances=variances_),)

    return _ReplayedScan.apply(run, values1, values2, *variances)[0]


def _zero_state(like: Tensor, num_layers: int, frozen_layers: int) -> list:
    """The state of :func:`~gpytorch_rntk._core.recursion.cell` at the boundary: ``(V, V',
    Th)`` per layer, 0 each (``Th`` ``None`` in frozen layers, which have none)."""
    zero = like.new_zeros(())
    state = []
    for layer in range(num_layers):
        state += [zero, zero, zero if layer >= frozen_layers else None]
    return state


def _flatten_state(state: list) -> list[Tensor]:
    """The tensors of a :func:`~gpytorch_rntk._core.recursion.cell` state (frozen layers hold
    ``None`` for ``Th``)."""
    return [t for t in state if t is not None]


def _unflatten_state(flat: list[Tensor], like: list) -> list:
    tensors = iter(flat)
    return [None if t is None else next(tensors) for t in like]


class _Clock(NamedTuple):
    """The inputs of the last readout's scan, on a clock that ends at the readout."""

    aligned1: Tensor  # (..., N, steps, m): the sequences right-aligned
    aligned2: Tensor
    selves1: Tensor  # (..., N, steps, L): the self terms S^l(t, t) on the clock, 1 before start
    selves2: Tensor


def _last_scan(
    remaining: range,
    state: list,
    clock: _Clock,
    variances: RecurrentVariances,
    static: tuple,
) -> list:
    """Advance the state through the steps ``remaining`` before the readout (counting down)."""
    lengths1, lengths2, same, dual, frozen_layers, init, paired, (shortest, longest) = static
    steps, m = clock.aligned1.shape[-2:]
    shorter = longer = None
    if shortest < longest:
        pair = _pair(lengths1, lengths2, paired)
        shorter, longer = torch.minimum(*pair), torch.maximum(*pair)
    state = list(state)  # a replay in the backward pass runs this on the same arguments
    if not remaining:
        return state
    # The steps' inputs sliced once (one gradient to scatter back per chunk, not one per step).
    first = steps - remaining[0]
    window = slice(first, first + len(remaining))
    xs, ys, selves1, selves2 = (
        t[..., window, :].unbind(-2)
        for t in (clock.aligned1, clock.aligned2, clock.selves1, clock.selves2)
    )
    for i, r in enumerate(remaining):
        x, y = xs[i], ys[i]
        below = (x * y).sum(-1) / m if paired else x @ y.transpose(-1, -2) / m
        # Plain booleans where a mask holds for every pair (the common case).
        if r < shortest:
            cont, start = True, False
        elif shorter is None:  # every pair starts at r == longest
            cont, start = False, True
        else:
            cont, start = shorter > r, (shorter == r) & (longer == r)
        if init is None:
            start = None
        elif init is not True and start is not False:  # per_input: x = x' only
            start = init if start is True else start & init
        selves = [
            _pair(selves1[i][..., layer], selves2[i][..., layer], paired)
            for layer in range(len(state) // 3)
        ]
        cell(state, below, cont, start, selves, same, variances, dual, frozen_layers)
    return state


def _replayed_scan(
    steps: range, state: list, clock: _Clock, variances: RecurrentVariances, static: tuple
) -> list:
    """:func:`_last_scan` through :class:`_ReplayedScan`, which takes and returns flat
    tensors."""
    n_clock, n_variances = len(clock), len(variances)

    def run(*inputs: Tensor) -> tuple[Tensor, ...]:
        start = _unflatten_state(list(inputs[n_clock + n_variances :]), state)
        clock_ = _Clock(*inputs[:n_clock])
        variances_ = RecurrentVariances(*inputs[n_clock : n_clock + n_variances])
        return tuple(_flatten_state(_last_scan(steps, start, clock_, variances_, static)))

    flat = _ReplayedScan.apply(run, *clock, *variances, *_flatten_state(state))
    return _unflatten_state(list(flat), state)


def _tensor_dual(dual: Dual):
    """The dual :func:`~gpytorch_rntk._core.recursion.cell` applies: the tensor form, from the
    pair's two self terms."""

    def apply(s: Tensor, selves: tuple[Tensor, Tensor], same, tangents) -> tuple:
        return (*dual(s, *selves, same), [])

    return apply


def _kernel_block(
    values1: Tensor,
    lengths1: Tensor,
    values2: Tensor | None,
    lengths2: Tensor | None,
    same: Tensor | None,
    variances: RecurrentVariances,
    *,
    config: RecurrentConfig,
    paired: bool,
    needs_grad: bool,
    block_elements: int = 2**20,
) -> Tensor:
    """One block of pairs (``values2 = None``: self pairs) through the readout's scan: the
    self terms of each input tabulated once, then the cross terms by
    :func:`~gpytorch_rntk._core.recursion.cell`, step by step."""
    if config.readout != LAST:
        return _mean_kernel_block(
            values1,
            lengths1,
            values2,
            lengths2,
            same,
            variances,
            config=config,
            paired=paired,
            needs_grad=needs_grad,
            block_elements=block_elements,
        )
    num_layers, frozen_layers = config.num_layers, config.frozen_layers
    dual = _scan_dual(config.dual, values1, values2)
    self_pairs = values2 is None
    if self_pairs:
        values2, lengths2, same, paired = values1, lengths1, True, True
    both = [lengths1] if self_pairs else [lengths1, lengths2]
    shortest = min(int(t.min()) for t in both)
    longest = max(int(t.max()) for t in both)
    variances = variances.like(values1)
    init = config.initial_state != InitialState.ZERO
    self_variances = variances if paired else _pair_variances(variances)

    def on_the_clock(values: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        tables = torch.stack(
            self_terms(values, lengths, self_variances, dual, num_layers, init), -1
        )
        selves = on_clock(tables, lengths.expand(tables.shape[:-2]), longest, "end", 1.0)
        return right_align(values, lengths, longest), selves

    aligned1, selves1 = on_the_clock(values1, lengths1)
    aligned2, selves2 = (aligned1, selves1) if self_pairs else on_the_clock(values2, lengths2)
    clock = _Clock(aligned1, aligned2, selves1, selves2)
    initial = None
    if init:  # per_input: correlated initial states for x = x' only
        initial = same if config.initial_state == InitialState.PER_INPUT else True
    static = (
        lengths1,
        lengths2,
        same,
        _tensor_dual(dual),
        frozen_layers,
        initial,
        paired,
        (shortest, longest),
    )
    state = _zero_state(values1, num_layers, frozen_layers)
    # Plain autograd keeps every step of the scan alive (a few dozen pair states per step and
    # layer). Small scans afford that and run faster so; larger ones keep only the state at
    # the boundaries of chunks of about sqrt(T) steps and replay each chunk in the backward pass.
    pairs = torch.broadcast_shapes(*(t.shape for t in _pair(lengths1, lengths2, paired))).numel()
    if not needs_grad or pairs * longest * num_layers <= PLAIN_AUTOGRAD_PAIR_STEPS:
        state = _last_scan(range(longest, 0, -1), state, clock, variances, static)
    else:
        chunk = max(1, math.isqrt(longest))
        for top in range(longest, 0, -chunk):
            steps = range(top, max(top - chunk, 0), -1)
            state = _replayed_scan(steps, state, clock, variances, static)
    return readout(state, 0, frozen_layers)[0]


def _scan_dual(dual: Dual, values1: Tensor, values2: Tensor | None) -> Dual:
    """The dual a scan uses: :meth:`~.duals.Dual.differentiable_in_sequences` where a sequence
    of a cross pair is differentiated (reverse or forward mode). Self pairs (``values2 is
    None``, ``K(x_i, x_i)``) keep the self-pair form: both sides move together there, which
    is the derivative that form has."""
    if values2 is None or not differentiated(values1, values2):
        return dual
    return dual.differentiable_in_sequences()


def _pair_variances(variances: RecurrentVariances) -> RecurrentVariances:
    """Variances shaped ``(..., 1, 1)`` for Gram matrices, reshaped for ``(..., N)`` pair states."""
    return RecurrentVariances(
        *(v[..., 0] if isinstance(v, Tensor) and v.dim() >= 2 else v for v in variances)
    )


class _Lanes(NamedTuple):
    """Diagonals ``t' - t = d`` of the time grid packed into lanes that are scanned side by side.

    A lane runs ``min(T1, T2)`` cells: one diagonal, or a long one followed by short ones, each
    starting from the recursion's boundary (:doc:`/kernels`). The diagonal ``d = 0``, the only
    one whose boundary holds the initial state, has a lane of its own and starts at the first
    cell.
    """

    step1: Tensor  # (cells, G): the first input's step at each cell (its longest when idle)
    step2: Tensor  # (cells, G): the second input's step
    reach1: list[int]  # per cell: the largest step1, to skip length masks where all are inside
    reach2: list[int]
    keep: Tensor  # (cells, G) bool: False where a diagonal begins (its boundary), else True
    restarts: list[bool]  # per cell: whether any diagonal begins there
    origin: Tensor | None  # (G,) bool: the lane of d = 0, None if not in this group
    weight: Tensor | None  # (G,) 2 where a diagonal d > 0 stands for d and -d, else None


def _pack_diagonals(
    longest1: int, longest2: int, symmetric: bool, lanes_per_group: int, device: torch.device
) -> list[_Lanes]:
    """The lanes of :func:`diagonal_lanes` in groups of ``lanes_per_group``: lanes of
    ``min(T1, T2)`` cells cover the grid without gaps (a self grid leaves at most one lane half
    empty)."""
    cells = min(longest1, longest2)
    length = partial(diagonal_length, longest1=longest1, longest2=longest2)
    lanes = diagonal_lanes(longest1, longest2, symmetric)
    groups = []
    for first in range(0, len(lanes), lanes_per_group):
        group = lanes[first : first + lanes_per_group]
        step1 = [[longest1] * len(group) for _ in range(cells)]
        step2 = [[longest2] * len(group) for _ in range(cells)]
        keep = [[True] * len(group) for _ in range(cells)]
        for g, lane in enumerate(group):
            k = 0
            for d in lane:
                keep[k][g] = False
                for c in range(length(d)):
                    step1[k + c][g], step2[k + c][g] = max(0, -d) + c, max(0, d) + c
                k += length(d)
        origin = [lane[0] == 0 for lane in group]
        groups.append(
            _Lanes(
                torch.tensor(step1, device=device),
                torch.tensor(step2, device=device),
                [max(s) for s in step1],
                [max(s) for s in step2],
                torch.tensor(keep, device=device),
                [not all(k) for k in keep],
                torch.tensor(origin, device=device) if any(origin) else None,
                torch.tensor([1.0 if o else 2.0 for o in origin], device=device)
                if symmetric
                else None,
            )
        )
    return groups


class _DiagonalInputs(NamedTuple):
    """What a scan over diagonals is differentiated with respect to (flattened for replays)."""

    values1: Tensor  # (..., N, T1, m), batch dimensions made explicit
    values2: Tensor
    tables1: tuple[Tensor, ...]  # S^l(t, t) of the first input per layer, (..., N, T1)
    tables2: tuple[Tensor, ...]
    variances: RecurrentVariances
    weights: tuple[Tensor, ...]  # the readout's weights (..., N, T) of each side, or () (mean)

    def flat(self) -> list[Tensor]:
        return [
            self.values1,
            self.values2,
            *self.tables1,
            *self.tables2,
            *self.weights,
            *self.variances,
        ]

    @classmethod
    def unflat(cls, flat: list[Tensor] | tuple[Tensor, ...], num_layers: int) -> _DiagonalInputs:
        tables = 2 + 2 * num_layers
        weights = len(flat) - tables - len(RecurrentVariances._fields)
        return cls(
            flat[0],
            flat[1],
            tuple(flat[2 : 2 + num_layers]),
            tuple(flat[2 + num_layers : tables]),
            RecurrentVariances(*flat[tables + weights :]),
            tuple(flat[tables : tables + weights]),
        )


class _DiagonalStatic(NamedTuple):
    lengths1: Tensor  # (..., N)
    lengths2: Tensor
    shortest: tuple[int, int]
    same: Tensor | bool  # exact self pairs, on the lane of d = 0 only
    init: Tensor | bool | None  # where P(0, 0) = init_var on d = 0 (None: no initial state)
    dual: Callable
    frozen_layers: int
    paired: bool
    lane_shape: tuple[int, ...]  # (-1, 1, ..., 1): a (G,) vector against a lane state


def _pair(a: Tensor, b: Tensor, paired: bool) -> tuple[Tensor, Tensor]:
    return (a, b) if paired else (a.unsqueeze(-1), b.unsqueeze(-2))


def _per_cell(t: Tensor, at: Tensor, dim: int) -> tuple[Tensor, ...]:
    """``t.index_select(dim, at[k]).movedim(dim, 0)`` for each row ``k`` of ``at`` ``(cells,
    G)``, gathered in one operation (one scatter in the backward pass, not one per cell).
    ``dim`` is ``-1`` or ``-2``."""
    gathered = t.index_select(dim, at.flatten()).unflatten(dim, at.shape)
    return gathered.movedim(dim - 1, 0).movedim(dim, 1).unbind(0)


def _diagonal_scan(
    cells: range,
    state: list,
    total: Tensor,
    inputs: _DiagonalInputs,
    lanes: _Lanes,
    static: _DiagonalStatic,
) -> tuple[list, Tensor]:
    r"""Advance a group of lanes through ``cells``, adding each cell's readout to ``total``.

    ``state`` is as for :func:`~gpytorch_rntk._core.recursion.cell` at the previous cell of
    each lane. Every dependency stays on its diagonal, so all lanes start from their boundary
    and the pairs of each lane are active while both steps are within their lengths; inactive
    pairs restart from the boundary at every cell, so their (unused) state stays finite.
    """
    lengths1, lengths2, (shortest1, shortest2), same, init, dual, frozen, paired, shape = static
    m = inputs.values1.shape[-1]
    state = list(state)  # a replay in the backward pass runs this on the same arguments
    # Each cell's inputs (G lanes first), gathered once for all the cells.
    at1 = lanes.step1[cells.start : cells.stop].clamp(max=inputs.values1.shape[-2] - 1)
    at2 = lanes.step2[cells.start : cells.stop].clamp(max=inputs.values2.shape[-2] - 1)
    xs, ys = _per_cell(inputs.values1, at1, -2), _per_cell(inputs.values2, at2, -2)
    tables1 = [_per_cell(t, at1, -1) for t in inputs.tables1]
    tables2 = [_per_cell(t, at2, -1) for t in inputs.tables2]
    weights = []
    if inputs.weights:
        weights = [_per_cell(inputs.weights[0], at1, -1), _per_cell(inputs.weights[1], at2, -1)]
    for i, k in enumerate(cells):
        x, y = xs[i], ys[i]  # (G, ..., N, m)
        below = (x * y).sum(-1) / m if paired else x @ y.transpose(-1, -2) / m
        active: Mask = True
        if lanes.reach1[k] >= shortest1 or lanes.reach2[k] >= shortest2:
            side = shape if paired else shape[:-1]  # a (G,) vector against (G, ..., N)
            inside1 = lanes.step1[k].view(side) < lengths1
            inside2 = lanes.step2[k].view(side) < lengths2
            active = torch.logical_and(*_pair(inside1, inside2, paired))
        cont: Mask = active
        start: Mask | None = None
        if lanes.restarts[k]:  # a diagonal begins on some lane: its boundary
            keep = lanes.keep[k].view(shape)
            cont = keep if active is True else keep & active
            if init is not None and lanes.origin is not None:  # d = 0 holds the initial state
                start = lanes.origin.view(shape) & ~keep
                start = start if init is True else start & init
        selves = [
            _pair(tables1[layer][i], tables2[layer][i], paired) for layer in range(len(state) // 3)
        ]
        cell(state, below, cont, start, selves, same, inputs.variances, dual, frozen)
        value = readout(state, 0, frozen)[0]
        if weights:
            value = value * torch.mul(*_pair(weights[0][i], weights[1][i], paired))
        total = total + where(active, value, 0.0)
    return state, total


def _mean_kernel_block(
    values1: Tensor,
    lengths1: Tensor,
    values2: Tensor | None,
    lengths2: Tensor | None,
    same: Tensor | None,
    variances: RecurrentVariances,
    *,
    config: RecurrentConfig,
    paired: bool,
    needs_grad: bool,
    block_elements: int,
) -> Tensor:
    r"""The average-pooled kernel (:doc:`/kernels`, Variants): the readout's mean over all time
    pairs, or for the geometric readout its sum weighted by both steps' weights
    (:func:`~gpytorch_rntk._core.recursion.readout_weights`).

    Each diagonal ``t' - t = d`` of the ``T x T'`` grid is a scan of its own from the recursion's
    boundary (start-aligned: no input is shifted, the diagonal just starts later in one
    of them). Diagonals are packed into lanes of ``min(T, T')`` cells and as many lanes as fit
    ``block_elements`` run side by side; the self terms of each input are tabulated once. With
    ``values2 = None`` the pairs are self pairs, whose grid is symmetric: ``d >= 0`` counted
    twice.
    """
    num_layers, frozen_layers = config.num_layers, config.frozen_layers
    dual = _scan_dual(config.dual, values1, values2)
    self_pairs = values2 is None
    if self_pairs:
        values2, lengths2, same = values1, lengths1, True
    variances = variances.like(values1)
    pair_dims = 1 if paired else 2
    batch = torch.broadcast_shapes(
        values1.shape[:-3], values2.shape[:-3], *(v.shape[:-pair_dims] for v in variances)
    )

    def lift(t: Tensor, core: int) -> Tensor:  # explicit batch dimensions, lanes go in front
        return t.reshape((1,) * (len(batch) + core - t.dim()) + t.shape)

    values1, values2 = lift(values1, 3), lift(values2, 3)
    lengths1, lengths2 = lift(lengths1, 1), lift(lengths2, 1)
    init = config.initial_state != InitialState.ZERO
    self_variances = variances if paired else _pair_variances(variances)
    tables1 = tuple(
        lift(t, 2) for t in self_terms(values1, lengths1, self_variances, dual, num_layers, init)
    )
    tables2 = (
        tables1
        if self_pairs
        else tuple(
            lift(t, 2)
            for t in self_terms(values2, lengths2, self_variances, dual, num_layers, init)
        )
    )
    weights = ()
    if config.readout == GEOMETRIC:
        decay = self_variances.readout_decay
        weights = tuple(
            lift(readout_weights(lengths, values.shape[-2], decay, values.dtype), 2)
            for lengths, values in ((lengths1, values1), (lengths2, values2))
        )
    inputs = _DiagonalInputs(values1, values2, tables1, tables2, variances, weights)
    longest = (int(lengths1.max()), int(lengths2.max()))
    pairs = math.prod(batch) * values1.shape[-3] * (1 if paired else values2.shape[-3])
    cells = min(longest)
    # With gradients each group of lanes keeps only its inputs and is replayed in the backward
    # pass, so memory stays flat in T and in the number of row blocks. Groups are made small
    # enough to be replayed with plain autograd where one lane allows it; else each group is
    # itself checkpointed every sqrt(cells) cells.
    plain = not needs_grad
    lane_elements = min(block_elements, _LANE_ELEMENTS)
    if not plain:
        lane_elements = min(lane_elements, PLAIN_AUTOGRAD_PAIR_STEPS // (cells * num_layers))
    lanes_per_group = max(1, lane_elements // max(1, pairs))
    replay_plainly = lanes_per_group * pairs * cells * num_layers <= PLAIN_AUTOGRAD_PAIR_STEPS
    groups = _pack_diagonals(*longest, self_pairs, lanes_per_group, values1.device)
    cross_init = (
        None if not init else (same if config.initial_state == InitialState.PER_INPUT else True)
    )
    static = _DiagonalStatic(
        lengths1,
        lengths2,
        (int(lengths1.min()), int(lengths2.min())),
        False,
        cross_init,
        _tensor_dual(dual),
        frozen_layers,
        paired,
        (-1,) + (1,) * (len(batch) + pair_dims),
    )
    total = values1.new_zeros(())
    for lanes in groups:
        group_static = static
        if lanes.origin is not None and same is not None:  # exact self pairs lie on d = 0
            origin = lanes.origin.view(static.lane_shape)
            group_static = static._replace(same=origin & same if same is not True else origin)

        def lane_sum(
            *flat: Tensor, lanes: _Lanes = lanes, static: _DiagonalStatic = group_static
        ) -> tuple[Tensor]:
            inputs_ = _DiagonalInputs.unflat(flat, num_layers)
            start = _zero_state(flat[0], num_layers, frozen_layers)
            state, lane_total = start, flat[0].new_zeros(())
            chunk = cells if plain or replay_plainly else max(1, math.isqrt(cells))
            for top in range(0, cells, chunk):
                steps = range(top, min(top + chunk, cells))
                if plain or replay_plainly:
                    state, lane_total = _diagonal_scan(
                        steps, state, lane_total, inputs_, lanes, static
                    )
                    continue

                def run(*args: Tensor, steps: range = steps) -> tuple[Tensor, ...]:
                    n = len(flat)
                    state_ = _unflatten_state(list(args[n:-1]), start)
                    inputs__ = _DiagonalInputs.unflat(args[:n], num_layers)
                    state_, total_ = _diagonal_scan(
                        steps, state_, args[-1], inputs__, lanes, static
                    )
                    return (*_flatten_state(state_), total_)

                out = _ReplayedScan.apply(run, *flat, *_flatten_state(state), lane_total)
                state, lane_total = _unflatten_state(list(out[:-1]), start), out[-1]
            if lanes.weight is not None:
                lane_total = lane_total * lanes.weight.view(static.lane_shape).to(lane_total)
            return (lane_total.sum(0),)

        if plain:
            (contribution,) = lane_sum(*inputs.flat())
        else:
            (contribution,) = _ReplayedScan.apply(lane_sum, *inputs.flat())
        total = total + contribution
    if weights:
        return total
    counts = torch.mul(*_pair(lengths1, lengths2, paired)).to(total)
    return total / counts


class TensorEngine(Engine):
    """The reference engine (see the module docstring); the fallback of ``engine="auto"``."""

    name = "tensor"
    readouts = (LAST, MEAN, GEOMETRIC)

    def unsupported(self, config: RecurrentConfig, problem: Problem) -> str | None:
        if config.readout not in self.readouts:
            return (
                f"the tensor engine computes the readouts {[r.name for r in self.readouts]}, "
                f"not {config.readout.name!r}"
            )
        if type(config.dual).__call__ is Dual.__call__:
            return f"the nonlinearity {config.dual.name!r} has no tensor-form dual"
        return None

    def gram(
        self,
        config: RecurrentConfig,
        values1: Tensor,
        lengths1: Tensor,
        values2: Tensor,
        lengths2: Tensor,
        variances: RecurrentVariances,
        *,
        paired: bool = False,
        block_elements: int | None = None,
    ) -> Tensor:
        same = identical_rows(values1, lengths1, values2, lengths2, paired)
        grad = needs_grad(values1, values2, *variances)
        if block_elements is None:
            block_elements = 2**18 if grad else 2**20
        options = dict(config=config, paired=paired, needs_grad=grad, block_elements=block_elements)
        if paired:
            return _kernel_block(
                values1, lengths1, values2, lengths2, same, _pair_variances(variances), **options
            )
        n1, n2 = values1.shape[-3], values2.shape[-3]
        batch = batch_shape(values1, values2, variances)
        rows = max(1, block_elements // max(1, math.prod(batch) * n2))
        symmetric = values1 is values2 and lengths1 is lengths2
        # Row blocks that keep only their inputs and are recomputed in the backward pass (memory
        # flat in the number of blocks), where plain autograd's memory would exceed its limit.
        # (The mean readout's groups of diagonals keep only their inputs already.)
        steps = max(values1.shape[-2], values2.shape[-2]) * config.num_layers
        recompute = (
            grad
            and config.readout == LAST
            and math.prod(batch) * n1 * n2 * steps > PLAIN_AUTOGRAD_PAIR_STEPS
        )
        if symmetric and n1 * n2 > _SMALL_PAIRS:
            # K(x, x): compute the blocks on and above the diagonal, mirror the rest (for small
            # sets one block's fewer operations are worth more than the pairs saved)
            rows = min(rows, max(16, -(-n1 // 4)))
        blocks = []
        for i in range(0, n1, rows):
            cols = slice(i if symmetric else 0, None)
            compute = partial(
                _kernel_block,
                lengths1=lengths1[..., i : i + rows],
                lengths2=lengths2[..., cols],
                same=None if same is None else same[..., i : i + rows, cols],
                **options,
            )
            block_inputs = (values1[..., i : i + rows, :, :], values2[..., cols, :, :], variances)
            if recompute and n1 > rows:
                block = _recomputed(compute, *block_inputs)
            else:
                block = compute(
                    values1=block_inputs[0], values2=block_inputs[1], variances=variances
                )
            if symmetric:  # the columns left of the diagonal block are earlier blocks' rows
                mirrored = [b[..., :, i : i + rows].transpose(-1, -2) for b in blocks]
                block = torch.cat([*mirrored, block], dim=-1)
            blocks.append(block)
        return torch.cat(blocks, dim=-2) if len(blocks) > 1 else blocks[0]

    def diag(self, config: RecurrentConfig, values: Tensor, lengths: Tensor, variances) -> Tensor:
        grad = needs_grad(values, *variances)
        return _kernel_block(
            values,
            lengths,
            None,
            None,
            None,
            _pair_variances(variances),
            config=config,
            paired=True,
            needs_grad=grad,
            block_elements=2**18 if grad else 2**20,
        )


def batch_shape(values1: Tensor, values2: Tensor, variances: RecurrentVariances) -> torch.Size:
    """The batch shape of a Gram matrix between ``values1`` and ``values2``."""
    return torch.broadcast_shapes(
        values1.shape[:-3],
        values2.shape[:-3],
        *(v.shape[:-2] for v in variances if isinstance(v, Tensor) and v.dim() >= 2),
    )
