r"""The RNTK and RNN-NNGP recursions as plain tensor functions (SPEC sections 2-4).

Everything here works on batches of pairs in one pass through time. A *pair state* is a tensor
of any broadcastable shape, ``(..., N, N')`` for a Gram matrix or ``(..., N)`` for paired rows;
the same update is applied to the triple (cross term, self terms of the first input, self terms
of the second input), so the self terms live beside the cross term at every step.

Sequences are compared aligned at their last elements: the scan runs over the number of steps
``r`` that remain until the readout, from the longest length down to 1, and sequence ``i`` is
active while ``T_i >= r``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "NONLINEARITIES",
    "INITIAL_STATES",
    "RecurrentVariances",
    "check_options",
    "erf_dual",
    "identical_rows",
    "recurrent_kernel",
    "recurrent_kernel_diag",
    "relu_dual",
    "reverse_sequences",
]

INITIAL_STATES = ("zero", "per_input", "shared")

# Scans of at most this many pair-steps-layers keep all their steps for autograd (~200 MiB in
# float64 at the limit) instead of replaying chunks in the backward pass.
_PLAIN_AUTOGRAD_PAIR_STEPS = 2**20

Mask = Tensor | bool


class RecurrentVariances(NamedTuple):
    r"""The variances of SPEC section 1, each broadcastable against a pair state.

    ``recurrent_var`` is :math:`\sigma_w^2`, ``input_var`` :math:`\sigma_u^2`, ``bias_var``
    :math:`\sigma_b^2` and ``init_var`` :math:`\sigma_h^2` (0 for ``initial_state="zero"``).
    """

    recurrent_var: Tensor
    input_var: Tensor
    bias_var: Tensor
    init_var: Tensor | float = 0.0


def relu_dual(
    k12: Tensor, k11: Tensor, k22: Tensor, same: Mask | None = None
) -> tuple[Tensor, Tensor]:
    r"""Dual activation of ReLU: :math:`V = E[\phi(u)\phi(v)]`, :math:`V' = E[\phi'(u)\phi'(v)]`.

    .. math::
        V = \frac{\sqrt{k_{11} k_{22}}}{2\pi}\left(\sin\theta + (\pi - \theta)\cos\theta\right),
        \quad V' = \frac{\pi - \theta}{2\pi}, \quad \cos\theta = \frac{k_{12}}{\sqrt{k_{11}k_{22}}}.

    Args:
        k12, k11, k22: The covariance entries, broadcastable against each other.
        same: Where the two inputs are identical sequences (``True`` for all). There ``V = k/2``
            and ``V' = 1/2`` exactly, since arccos has infinite slope at 1.

    Returns:
        ``(V, V')``.
    """
    if same is True:
        return k12 / 2, torch.full_like(k12, 0.5)
    norm = k11.sqrt() * k22.sqrt()  # the square roots of the (small) self terms, then one product
    eps = torch.finfo(k12.dtype).eps
    # Clamping one ulp inside [-1, 1] keeps arccos' slope finite for exactly (anti)parallel
    # states that are not self pairs; the value moves by O(sqrt(eps)) in theta, which is the
    # rounding noise such correlations carry anyway.
    cos = (k12 / norm).clamp(-1 + eps, 1 - eps)
    vd = (math.pi - torch.arccos(cos)) / (2 * math.pi)
    sin = ((1 - cos) * (1 + cos)).sqrt()
    v = norm * (sin / (2 * math.pi) + vd * cos)
    if same is not None and same is not False:
        v = torch.where(same, k12 / 2, v)
        vd = torch.where(same, 0.5, vd)
    return v, vd


def erf_dual(
    k12: Tensor, k11: Tensor, k22: Tensor, same: Mask | None = None
) -> tuple[Tensor, Tensor]:
    r"""Dual activation of erf.

    .. math::
        V = \frac{2}{\pi}\arcsin\frac{2k_{12}}{\sqrt{(1 + 2k_{11})(1 + 2k_{22})}},\quad
        V' = \frac{4}{\pi}\frac{1}{\sqrt{(1 + 2k_{11})(1 + 2k_{22}) - 4k_{12}^2}}.

    ``same`` is accepted for a common signature; erf needs no special case on self pairs.
    """
    prod = (1 + 2 * k11) * (1 + 2 * k22)
    eps = torch.finfo(k12.dtype).eps
    z = (2 * k12 / prod.sqrt()).clamp(-1 + eps, 1 - eps)
    v = (2 / math.pi) * torch.arcsin(z)
    vd = (4 / math.pi) / (prod - 4 * k12.square()).clamp_min(eps * prod).sqrt()
    return v, vd


NONLINEARITIES: dict[str, Callable[..., tuple[Tensor, Tensor]]] = {
    "relu": relu_dual,
    "erf": erf_dual,
}


def identical_rows(
    values1: Tensor, lengths1: Tensor, values2: Tensor, lengths2: Tensor, paired: bool = False
) -> Tensor:
    r"""Which pairs are the same sequence: same length and the same values within it.

    Exact (no tolerance) and without an ``N x N' x T`` tensor: rows are numbered by
    :func:`torch.unique` and the numbers compared.

    Args:
        values1, lengths1: ``(..., N, T, m)`` values, zero past each length, and ``(..., N)``.
        values2, lengths2: The same for the second input.
        paired: Compare row ``i`` with row ``i`` only, giving ``(..., N)``.

    Returns:
        A bool tensor ``(..., N, N')`` (or ``(..., N)`` if ``paired``).
    """
    batch = torch.broadcast_shapes(values1.shape[:-3], values2.shape[:-3])
    n1 = values1.shape[-3]

    steps = max(values1.shape[-2], values2.shape[-2])

    def rows(values: Tensor, lengths: Tensor) -> Tensor:
        values = torch.nn.functional.pad(values, (0, 0, 0, steps - values.shape[-2]))
        flat = torch.cat([lengths.unsqueeze(-1).to(values), values.flatten(-2)], dim=-1)
        return flat.detach().expand(*batch, *flat.shape[-2:])

    both = torch.cat([rows(values1, lengths1), rows(values2, lengths2)], dim=-2)
    n_batch = math.prod(batch)
    tag = torch.arange(n_batch, device=both.device, dtype=both.dtype)
    tag = tag.repeat_interleave(both.shape[-2]).unsqueeze(-1)
    _, ids = torch.unique(
        torch.cat([tag, both.reshape(-1, both.shape[-1])], -1), dim=0, return_inverse=True
    )
    ids = ids.reshape(*batch, both.shape[-2])
    ids1, ids2 = ids[..., :n1], ids[..., n1:]
    return ids1 == ids2 if paired else ids1.unsqueeze(-1) == ids2.unsqueeze(-2)


def reverse_sequences(values: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence within its length, keeping the zero padding at the end.

    Args:
        values: ``(..., N, T, m)``, zero past each length.
        lengths: ``(..., N)``.

    Returns:
        ``(..., N, T, m)`` with ``out[..., i, t, :] = values[..., i, T_i - 1 - t, :]`` for
        ``t < T_i`` and zero after.
    """
    steps = values.shape[-2]
    index = lengths.unsqueeze(-1) - 1 - torch.arange(steps, device=values.device)
    inside = (index >= 0).unsqueeze(-1).to(values)
    index = index.clamp(min=0).unsqueeze(-1).expand(*index.shape, values.shape[-1])
    return values.gather(-2, index) * inside


def _right_align(values: Tensor, lengths: Tensor, steps: int) -> Tensor:
    """``(..., N, steps, m)`` with the sequences' last elements at the last position."""
    offset = torch.arange(steps, device=values.device) - steps + lengths.unsqueeze(-1)
    index = offset.clamp(min=0).unsqueeze(-1).expand(*offset.shape, values.shape[-1])
    return values.gather(-2, index) * (offset >= 0).unsqueeze(-1).to(values)


def _where(mask: Mask, a: Tensor, b: Tensor | float) -> Tensor | float:
    if mask is True:
        return a
    if mask is False:
        return b
    return torch.where(mask, a, b)


class _Side(NamedTuple):
    """One member of the triple (cross, self 1, self 2) and the lengths that gate its pairs."""

    shorter: Tensor  # the pair is active while min(T, T') >= r
    longer: Tensor  # both start at r iff min(T, T') == max(T, T') == r
    # P(0, 0) = init_var * init when both start together: True (always), a bool mask (per
    # pair) or None (no initial state)
    init: Tensor | bool | None


def _step_masks(sides: list[_Side], r: int, shortest: int, longest: int) -> list[tuple[Mask, ...]]:
    """``(active, continuing, starting)`` for each side at ``r`` steps before the readout.

    Plain booleans where they hold for every pair (the common case), so no mask is applied.
    Only self terms need ``active`` (a positive placeholder keeps the cross duals finite) and only
    sides with an initial state need ``starting``.
    """
    if r < shortest:
        return [(True, True, False)] * len(sides)
    if shortest == longest:  # the scan starts at r == longest: everything starts here
        return [(True, False, True)] * len(sides)
    return [
        (
            s.shorter >= r if k > 0 or len(sides) == 1 else True,
            s.shorter > r,
            False if s.init is None else (s.shorter == r) & (s.longer == r),
        )
        for k, s in enumerate(sides)
    ]


def _scan(
    remaining: range,
    state: list[list[tuple[Tensor, Tensor, Tensor | None]]],
    aligned: tuple[Tensor, ...],
    variances: RecurrentVariances,
    sides: list[_Side],
    same: Mask | None,
    dual: Callable[..., tuple[Tensor, Tensor]],
    frozen_layers: int,
    length_range: tuple[int, int],
    paired: bool,
) -> list[list[tuple[Tensor, Tensor, Tensor | None]]]:
    r"""Advance every layer of the triple through the steps ``remaining`` (counting down).

    ``state[l][k] = (V, V', Th)`` of layer ``l`` and side ``k`` at the last step taken. With a
    single side the pairs are self pairs (``K(x_i, x_i)``). ``aligned`` holds the right-aligned
    step values of the first (and second) input.
    """
    sw2, su2, sb2, init_var = variances
    state = list(state)  # a replay in the backward pass runs this on the same arguments
    for r in remaining:
        masks = _step_masks(sides, r, *length_range)
        inputs = _data_terms(aligned, r, paired)  # then V of the layer below
        below = None  # (V, V', Th) of the layer below at this step
        for layer in range(len(state)):
            pre = []
            for k, (side, (active, cont, start)) in enumerate(zip(sides, masks, strict=True)):
                v_prev, vd_prev, th_prev = state[layer][k]
                boundary = 0.0
                if side.init is not None and start is not False:
                    init = init_var if side.init is True else init_var * side.init.to(sw2)
                    boundary = _where(start, init, 0.0)
                s = sw2 * _where(cont, v_prev, boundary) + su2 * inputs[k] + sb2
                s = _where(active, s, 1.0)  # inactive sequences: a finite positive placeholder
                th = None
                if layer >= frozen_layers:
                    th = s + sw2 * _where(cont, vd_prev * th_prev, 0.0)
                    if below is not None and below[k][2] is not None:
                        th = th + su2 * below[k][1] * below[k][2]
                pre.append((s, th))
            selves = [s for s, _ in pre[1:]] or [pre[0][0]] * 2
            below = [
                (*dual(pre[0][0], *selves, same if len(pre) == 3 else True), pre[0][1]),
                *((*dual(s, s, s, True), th) for s, th in pre[1:]),
            ]
            state[layer] = below
            inputs = [v for v, _, _ in below]
    return state


def _sides(
    lengths1: Tensor,
    lengths2: Tensor | None,
    init_cross: Tensor | bool | None,
    init_self: bool | None,
    paired: bool,
) -> list[_Side]:
    """The triple's sides: cross pairs, then the self terms of each input (one side if no x2)."""
    if lengths2 is None:  # self pairs only
        return [_Side(lengths1, lengths1, init_self)]
    if not paired:
        lengths1, lengths2 = lengths1.unsqueeze(-1), lengths2.unsqueeze(-2)
    return [
        _Side(torch.minimum(lengths1, lengths2), torch.maximum(lengths1, lengths2), init_cross),
        _Side(lengths1, lengths1, init_self),
        _Side(lengths2, lengths2, init_self),
    ]


def _data_terms(aligned: tuple[Tensor, ...], r: int, paired: bool) -> list[Tensor]:
    """The first layer's input covariances ``<x_t, x'_t'> / m`` of each side, ``r`` steps before
    the readout."""
    steps, m = aligned[0].shape[-2:]
    x = aligned[0][..., steps - r, :]
    if len(aligned) == 1:
        return [x.square().sum(-1) / m]
    y = aligned[1][..., steps - r, :]
    if paired:
        return [(x * y).sum(-1) / m, x.square().sum(-1) / m, y.square().sum(-1) / m]
    return [
        x @ y.transpose(-1, -2) / m,
        x.square().sum(-1, keepdim=True) / m,
        y.square().sum(-1).unsqueeze(-2) / m,
    ]


class _ReplayedScan(torch.autograd.Function):
    """A chunk of the scan that stores nothing but its inputs and replays itself in backward.

    The forward runs without building a graph, so neither the steps' tensors nor the graph's
    many small objects stay alive between the chunks (the latter fragment the CPU heap badly).
    The backward recomputes the chunk with autograd on and differentiates it with
    :func:`torch.autograd.grad`, which keeps an outer ``torch.autograd.grad`` working.
    """

    @staticmethod
    def forward(ctx, run: Callable[..., tuple[Tensor, ...]], *inputs: Tensor):
        ctx.run = run
        ctx.save_for_backward(*inputs)
        with torch.no_grad():
            return run(*inputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grad_outputs: Tensor):
        needs = ctx.needs_input_grad[1:]
        inputs = [
            t.detach().requires_grad_(n) for t, n in zip(ctx.saved_tensors, needs, strict=True)
        ]
        with torch.enable_grad():
            outputs = ctx.run(*inputs)
        used = [
            (o, g)
            for o, g in zip(outputs, grad_outputs, strict=True)
            if g is not None and o.requires_grad
        ]
        wanted = [t for t in inputs if t.requires_grad]
        grads = iter(
            torch.autograd.grad(
                [o for o, _ in used], wanted, [g for _, g in used], allow_unused=True
            )
        )
        return (None, *(next(grads) if t.requires_grad else None for t in inputs))


def _flatten_state(state: list) -> list[Tensor]:
    return [t for layer in state for side in layer for t in side if t is not None]


def _unflatten_state(flat: list[Tensor], like: list) -> list:
    tensors = iter(flat)
    return [
        [tuple(None if t is None else next(tensors) for t in side) for side in layer]
        for layer in like
    ]


def _replayed_scan(
    steps: range,
    state: list,
    aligned: tuple[Tensor, ...],
    variances: RecurrentVariances,
    static: tuple,
) -> list:
    """:func:`_scan` through :class:`_ReplayedScan`, which takes and returns flat tensors."""
    n_aligned, n_variances = len(aligned), len(variances)

    def run(*inputs: Tensor) -> tuple[Tensor, ...]:
        start = _unflatten_state(list(inputs[n_aligned + n_variances :]), state)
        variances_ = RecurrentVariances(*inputs[n_aligned : n_aligned + n_variances])
        return tuple(_flatten_state(_scan(steps, start, inputs[:n_aligned], variances_, *static)))

    flat = _ReplayedScan.apply(run, *aligned, *variances, *_flatten_state(state))
    return _unflatten_state(list(flat), state)


def _kernel_block(
    values1: Tensor,
    lengths1: Tensor,
    values2: Tensor | None,
    lengths2: Tensor | None,
    same: Tensor | None,
    variances: RecurrentVariances,
    *,
    nonlinearity: str,
    num_layers: int,
    frozen_layers: int,
    initial_state: str,
    paired: bool,
    needs_grad: bool,
) -> Tensor:
    both = [lengths1] if lengths2 is None else [lengths1, lengths2]
    shortest = min(int(t.min()) for t in both)
    longest = max(int(t.max()) for t in both)
    init_self = None if initial_state == "zero" else True
    init_cross = same if initial_state == "per_input" else init_self  # per_input: x = x' only
    sides = _sides(lengths1, lengths2, init_cross, init_self, paired)
    aligned = tuple(
        _right_align(v, n, longest)
        for v, n in ((values1, lengths1), (values2, lengths2))
        if v is not None
    )
    variances = RecurrentVariances(*(torch.as_tensor(v).to(values1) for v in variances))
    zero = values1.new_zeros(())
    state = [
        [(zero, zero, zero if layer >= frozen_layers else None)] * len(sides)
        for layer in range(num_layers)
    ]
    static = (sides, same, NONLINEARITIES[nonlinearity], frozen_layers, (shortest, longest), paired)
    # Plain autograd keeps every step of the scan alive (a few dozen pair states per step and
    # layer). Small scans afford that and run 3-4x faster so; larger ones keep only the state at
    # the boundaries of chunks of about sqrt(T) steps and replay each chunk in the backward pass.
    pair_steps = sides[0].shorter.numel() * longest * num_layers
    if not needs_grad or pair_steps <= _PLAIN_AUTOGRAD_PAIR_STEPS:
        state = _scan(range(longest, 0, -1), state, aligned, variances, *static)
    else:
        chunk = max(1, math.isqrt(longest))
        for top in range(longest, 0, -chunk):
            steps = range(top, max(top - chunk, 0), -1)
            state = _replayed_scan(steps, state, aligned, variances, static)
    v, vd, th = state[-1][0]
    return v if th is None else v + vd * th


def _needs_grad(*tensors: Tensor | float) -> bool:
    return torch.is_grad_enabled() and any(
        isinstance(t, Tensor) and t.requires_grad for t in tensors
    )


def _pair_variances(variances: RecurrentVariances) -> RecurrentVariances:
    """Variances shaped ``(..., 1, 1)`` for Gram matrices, reshaped for ``(..., N)`` pair states."""
    return RecurrentVariances(
        *(v[..., 0] if isinstance(v, Tensor) and v.dim() >= 2 else v for v in variances)
    )


def check_options(
    nonlinearity: str, initial_state: str, num_layers: int, frozen_layers: int = 0
) -> None:
    """Raise a ``ValueError`` naming the first option that is not understood."""
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(
            f"Unknown nonlinearity {nonlinearity!r}; choose one of {sorted(NONLINEARITIES)}."
        )
    if initial_state not in INITIAL_STATES:
        raise ValueError(
            f"Unknown initial_state {initial_state!r}; choose one of {list(INITIAL_STATES)}."
        )
    if int(num_layers) != num_layers or num_layers < 1:
        raise ValueError(f"num_layers must be a positive integer, got {num_layers!r}.")
    if not 0 <= frozen_layers <= num_layers:
        raise ValueError(
            f"frozen_layers must be in [0, num_layers={num_layers}], got {frozen_layers}."
        )


def _plus_reversed(kernel_fn: Callable[..., Tensor], *sequences: Tensor) -> Tensor:
    """``kernel_fn(*sequences)`` plus the same on every sequence reversed within its length.

    ``sequences`` alternates values and lengths, as the kernel functions take them.
    """
    reversed_sequences = list(sequences)
    for k in range(0, len(sequences), 2):
        same_as_first = k > 0 and sequences[k] is sequences[0] and sequences[k + 1] is sequences[1]
        reversed_sequences[k] = (
            reversed_sequences[0]  # keep K(x, x) recognisable as symmetric
            if same_as_first
            else reverse_sequences(sequences[k], sequences[k + 1])
        )
    return kernel_fn(*sequences) + kernel_fn(*reversed_sequences)


def recurrent_kernel(
    values1: Tensor,
    lengths1: Tensor,
    values2: Tensor,
    lengths2: Tensor,
    variances: RecurrentVariances,
    *,
    nonlinearity: str = "relu",
    num_layers: int = 1,
    frozen_layers: int = 0,
    initial_state: str = "zero",
    paired: bool = False,
    bidirectional: bool = False,
    block_elements: int | None = None,
) -> Tensor:
    r"""The RNTK (or, with ``frozen_layers = num_layers``, the RNN-NNGP kernel) between sequences.

    Computes SPEC section 2 for all pairs in one scan over time, sequences aligned at their last
    elements. Cost :math:`O(L\,T_{max} N N')` elementwise work; memory :math:`O(L N N')` in row
    blocks of about ``block_elements`` pairs, never an ``N x N' x T`` tensor. When gradients are
    needed the scan is checkpointed in chunks of :math:`\sqrt{T}` steps.

    Args:
        values1: ``(..., N, T1, m)`` step values, zero past each length.
        lengths1: ``(..., N)`` integer lengths in ``[1, T1]``.
        values2: ``(..., N', T2, m)``.
        lengths2: ``(..., N')``.
        variances: Each broadcastable against ``(..., N, N')`` (e.g. shaped ``(*batch, 1, 1)``).
        nonlinearity: ``"relu"`` or ``"erf"``.
        num_layers: Depth ``L``.
        frozen_layers: Number of untrained bottom layers (SPEC section 4); ``num_layers`` gives
            the NNGP kernel.
        initial_state: ``"zero"``, ``"per_input"`` (the paper's) or ``"shared"``.
        paired: Compute only ``K(x1_i, x2_i)``, giving ``(..., N)`` (needs ``N == N'``).
        bidirectional: Add the kernel of the time-reversed sequences (SPEC section 4: two
            independent stacks, readouts summed), which compares sequences aligned at their
            first elements.
        block_elements: Pairs per row block; default :math:`2^{20}`, or :math:`2^{18}` when
            gradients are needed (each block then replays one chunk of steps at a time).

    Returns:
        ``(..., N, N')``, or ``(..., N)`` if ``paired``.
    """
    check_options(nonlinearity, initial_state, num_layers, frozen_layers)
    if bidirectional:
        return _plus_reversed(
            partial(
                recurrent_kernel,
                variances=variances,
                nonlinearity=nonlinearity,
                num_layers=num_layers,
                frozen_layers=frozen_layers,
                initial_state=initial_state,
                paired=paired,
                block_elements=block_elements,
            ),
            values1,
            lengths1,
            values2,
            lengths2,
        )
    need_same = nonlinearity == "relu" or initial_state == "per_input"
    same = identical_rows(values1, lengths1, values2, lengths2, paired) if need_same else None
    options = dict(
        nonlinearity=nonlinearity,
        num_layers=num_layers,
        frozen_layers=frozen_layers,
        initial_state=initial_state,
        paired=paired,
        needs_grad=_needs_grad(values1, values2, *variances),
    )
    if block_elements is None:
        block_elements = 2**18 if options["needs_grad"] else 2**20
    if paired:
        return _kernel_block(
            values1, lengths1, values2, lengths2, same, _pair_variances(variances), **options
        )
    n1, n2 = values1.shape[-3], values2.shape[-3]
    batch = torch.broadcast_shapes(
        values1.shape[:-3],
        values2.shape[:-3],
        *(v.shape[:-2] for v in variances if isinstance(v, Tensor) and v.dim() >= 2),
    )
    rows = max(1, block_elements // max(1, math.prod(batch) * n2))
    symmetric = values1 is values2 and lengths1 is lengths2
    if symmetric:  # K(x, x): compute the blocks on and above the diagonal, mirror the rest
        rows = min(rows, max(16, -(-n1 // 4)))
    blocks = []
    for i in range(0, n1, rows):
        cols = slice(i if symmetric else 0, None)
        block = _kernel_block(
            values1[..., i : i + rows, :, :],
            lengths1[..., i : i + rows],
            values2[..., cols, :, :],
            lengths2[..., cols],
            None if same is None else same[..., i : i + rows, cols],
            variances,
            **options,
        )
        if symmetric:  # the columns left of the diagonal block are earlier blocks' rows
            mirrored = [b[..., :, i : i + rows].transpose(-1, -2) for b in blocks]
            block = torch.cat([*mirrored, block], dim=-1)
        blocks.append(block)
    return torch.cat(blocks, dim=-2) if len(blocks) > 1 else blocks[0]


def recurrent_kernel_diag(
    values: Tensor,
    lengths: Tensor,
    variances: RecurrentVariances,
    *,
    nonlinearity: str = "relu",
    num_layers: int = 1,
    frozen_layers: int = 0,
    initial_state: str = "zero",
    bidirectional: bool = False,
) -> Tensor:
    r"""``K(x_i, x_i)`` for each sequence: the self-term recursion alone, :math:`O(N T L)`.

    Args are as for :func:`recurrent_kernel`; returns ``(..., N)``.
    """
    check_options(nonlinearity, initial_state, num_layers, frozen_layers)
    if bidirectional:
        return _plus_reversed(
            partial(
                recurrent_kernel_diag,
                variances=variances,
                nonlinearity=nonlinearity,
                num_layers=num_layers,
                frozen_layers=frozen_layers,
                initial_state=initial_state,
            ),
            values,
            lengths,
        )
    return _kernel_block(
        values,
        lengths,
        None,
        None,
        None,
        _pair_variances(variances),
        nonlinearity=nonlinearity,
        num_layers=num_layers,
        frozen_layers=frozen_layers,
        initial_state=initial_state,
        paired=True,
        needs_grad=_needs_grad(values, *variances),
    )
