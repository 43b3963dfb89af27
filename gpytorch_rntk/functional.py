r"""The RNTK and RNN-NNGP recursions as plain tensor functions (:doc:`/kernels`).

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

from .layout import as_int, check_positive_int

__all__ = [
    "NONLINEARITIES",
    "INITIAL_STATES",
    "READOUTS",
    "RecurrentVariances",
    "check_options",
    "check_sequences",
    "erf_dual",
    "identical_rows",
    "recurrent_kernel",
    "recurrent_kernel_diag",
    "relu_dual",
    "reverse_sequences",
]

INITIAL_STATES = ("zero", "per_input", "shared")
READOUTS = ("last", "mean")

# Scans of at most this many pair-steps-layers keep all their steps for autograd (~200 MiB in
# float64 at the limit) instead of replaying chunks in the backward pass.
_PLAIN_AUTOGRAD_PAIR_STEPS = 2**20

# The mean readout runs several diagonals side by side, up to this many pair-cells per step: enough
# to hide the per-operation overhead of small Gram blocks, small enough to stay in cache.
_LANE_ELEMENTS = 2**16

Mask = Tensor | bool


class RecurrentVariances(NamedTuple):
    r"""The variances of the network (:doc:`/kernels`), each broadcastable against a pair state.

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
        ``(V, V')``. Where a self term is 0 (a zero input with no bias), ``cos = 0``, the limit
        of a vanishing bias: ``V = 0`` (to the smallest normal number), ``V' = 1/4``; gradients
        there leave out the self term's own derivative, which is infinite.
    """
    if same is True:
        return k12 / 2, torch.full_like(k12, 0.5)
    # The square roots of the (small) self terms, then one product; a self term of 0 (a zero step
    # with no bias) counts as the smallest normal number, so that cos = 0 there (the limit of a
    # vanishing bias: V = 0 up to that number, V' = 1/4) with finite gradients.
    tiny = torch.finfo(k12.dtype).tiny
    norm = k11.clamp_min(tiny).sqrt() * k22.clamp_min(tiny).sqrt()
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

    ``same``: where the two inputs are identical sequences (``True`` for all). There the duals
    are those of the self term :math:`k = k_{11}`, :math:`z = 2k / (1 + 2k)` and
    :math:`(1 + 2k)^2 - 4k^2 = 1 + 4k`: no cancellation, and the cross state of a self pair
    cannot drift from its self terms, as the general form lets its rounding grow
    geometrically once :math:`\sigma_w^2 V' > 1` (e.g. ``recurrent_var = 4``: inf or 1e246
    instead of 1e22 after 200 steps). Its derivatives are those of moving both sides
    together, so where a sequence needs a gradient the kernels keep the general form on
    identical pairs (one side may move alone).
    """
    if same is True:
        return _erf_self(k12)
    prod = (1 + 2 * k11) * (1 + 2 * k22)
    eps = torch.finfo(k12.dtype).eps
    z = (2 * k12 / prod.sqrt()).clamp(-1 + eps, 1 - eps)
    v = (2 / math.pi) * torch.arcsin(z)
    vd = (4 / math.pi) / (prod - 4 * k12.square()).clamp_min(eps * prod).sqrt()
    if same is not None and same is not False:
        v_self, vd_self = _erf_self(k11)
        v, vd = torch.where(same, v_self, v), torch.where(same, vd_self, vd)
    return v, vd


def _erf_dual_one_sided(
    k12: Tensor, k11: Tensor, k22: Tensor, same: Mask | None = None
) -> tuple[Tensor, Tensor]:
    """:func:`erf_dual` with its general form on identical sequences too (a mask ``same`` is
    ignored; ``True``, pairs of one sequence with itself, is kept)."""
    return erf_dual(k12, k11, k22, True if same is True else None)


def _dual_for(nonlinearity: str, values1: Tensor, values2: Tensor | None) -> Callable:
    """The dual a scan uses. erf's self-pair form (:func:`erf_dual`) has the derivatives of
    moving both sides together: right for the variances and for ``K(x_i, x_i)``, not for one
    of two identical sequences alone; where a sequence is differentiated (reverse or forward
    mode) erf keeps its general form there. (ReLU's RNTK has a kink at identical sequences,
    ``V'`` linear in the angle; its self-pair form gives the symmetric derivative there, the
    mean of the one-sided ones, as the general form's clamp does.)"""
    if nonlinearity == "erf" and differentiated(values1, values2):
        return _erf_dual_one_sided
    return NONLINEARITIES[nonlinearity]


def differentiated(*tensors: Tensor | None) -> bool:
    """Whether any of ``tensors`` is differentiated: it needs a gradient (reverse mode, grad
    mode on) or carries a forward-mode tangent (``torch.func.jvp``, ``forward_ad``)."""
    return _needs_grad(*tensors) or any(
        isinstance(t, Tensor) and torch.autograd.forward_ad.unpack_dual(t).tangent is not None
        for t in tensors
    )


def _erf_self(k: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`erf_dual` of a self pair with covariance ``k``."""
    return (2 / math.pi) * torch.arcsin(2 * k / (1 + 2 * k)), (4 / math.pi) * (1 + 4 * k).rsqrt()


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
    ids1, ids2 = row_ids(values1, lengths1, values2, lengths2)
    return ids1 == ids2 if paired else ids1.unsqueeze(-1) == ids2.unsqueeze(-2)


def row_ids(
    values1: Tensor, lengths1: Tensor, values2: Tensor, lengths2: Tensor
) -> tuple[Tensor, Tensor]:
    """Integer ids ``(..., N)`` and ``(..., N')``, equal exactly for identical sequences (same
    length, same values within it), numbered by :func:`torch.unique` over both sets."""
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
    return ids[..., :n1], ids[..., n1:]


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
    variances = [torch.as_tensor(v).to(values1) for v in variances]

    def run(*inputs: Tensor) -> tuple[Tensor]:
        variances_ = RecurrentVariances(*inputs[2:])
        return (compute(values1=inputs[0], values2=inputs[1], variances=variances_),)

    return _ReplayedScan.apply(run, values1, values2, *variances)[0]


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
    readout: str = "last",
    block_elements: int = 2**20,
) -> Tensor:
    if readout == "mean":
        return _mean_kernel_block(
            values1,
            lengths1,
            values2,
            lengths2,
            same,
            variances,
            nonlinearity=nonlinearity,
            num_layers=num_layers,
            frozen_layers=frozen_layers,
            initial_state=initial_state,
            paired=paired,
            needs_grad=needs_grad,
            block_elements=block_elements,
        )
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
    dual = _dual_for(nonlinearity, values1, values2)
    static = (sides, same, dual, frozen_layers, (shortest, longest), paired)
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


def _self_terms(
    values: Tensor,
    lengths: Tensor,
    variances: RecurrentVariances,
    dual: Callable[..., tuple[Tensor, Tensor]],
    num_layers: int,
    init: bool,
) -> list[Tensor]:
    """The self terms ``S^l(t, t)`` of each sequence at every step, counted from its start.

    One ``(..., N, T)`` table per layer; past each length it holds 1, a finite positive
    placeholder for the duals of pairs that are not active there. ``variances`` broadcast
    against ``(..., N)``.
    """
    sw2, su2, sb2, init_var = variances
    steps, m = values.shape[-2:]
    data = values.square().sum(-1) / m
    previous = [init_var if init else 0.0] * num_layers  # P^l(t-1, t-1) of the self pair
    columns: list[list[Tensor]] = [[] for _ in range(num_layers)]
    for t in range(steps):
        below = data[..., t]
        for layer in range(num_layers):
            s = sw2 * previous[layer] + su2 * below + sb2
            columns[layer].append(s)
            below = previous[layer] = dual(s, s, s, True)[0]
    inside = torch.arange(steps, device=values.device) < lengths.unsqueeze(-1)
    return [torch.where(inside, torch.stack(c, -1), 1.0) for c in columns]


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
    keep: Tensor  # (cells, G): 0 where a diagonal begins after another, else 1
    restarts: list[bool]  # per cell: whether any diagonal begins there after another
    origin: Tensor | None  # (G,) bool: the lane of d = 0, None if not in this group
    weight: Tensor | None  # (G,) 2 where a diagonal d > 0 stands for d and -d, else None


def _diagonal_length(d: int, longest1: int, longest2: int) -> int:
    """Cells of the diagonal ``t' - t = d`` of a ``longest1 x longest2`` grid."""
    return min(longest1 - max(0, -d), longest2 - max(0, d))


def diagonal_lanes(longest1: int, longest2: int, symmetric: bool = False) -> list[list[int]]:
    """The diagonals ``d = t' - t`` of a ``longest1 x longest2`` grid (only ``d >= 0`` if
    ``symmetric``) packed into lanes of ``min(longest1, longest2)`` cells: longest first, each
    lane topped up with the shortest that still fit."""
    cells = min(longest1, longest2)
    offsets = range(longest1) if symmetric else range(1 - longest1, longest2)
    length = partial(_diagonal_length, longest1=longest1, longest2=longest2)
    order = sorted(offsets, key=length, reverse=True)
    lanes, i, j = [], 0, len(order) - 1
    while i <= j:
        lane, room = [order[i]], cells - length(order[i])
        i += 1
        while i <= j and length(order[j]) <= room:
            lane.append(order[j])
            room -= length(order[j])
            j -= 1
        lanes.append(lane)
    return lanes


def _pack_diagonals(
    longest1: int, longest2: int, symmetric: bool, lanes_per_group: int, device: torch.device
) -> list[_Lanes]:
    """The lanes of :func:`diagonal_lanes` in groups of ``lanes_per_group``: lanes of
    ``min(T1, T2)`` cells cover the grid without gaps (a self grid leaves at most one lane half
    empty)."""
    cells = min(longest1, longest2)
    length = partial(_diagonal_length, longest1=longest1, longest2=longest2)
    lanes = diagonal_lanes(longest1, longest2, symmetric)
    groups = []
    for first in range(0, len(lanes), lanes_per_group):
        group = lanes[first : first + lanes_per_group]
        step1 = [[longest1] * len(group) for _ in range(cells)]
        step2 = [[longest2] * len(group) for _ in range(cells)]
        keep = [[1.0] * len(group) for _ in range(cells)]
        for g, lane in enumerate(group):
            k = 0
            for d in lane:
                keep[k][g] = 0.0 if k > 0 else 1.0
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
                [min(k) == 0.0 for k in keep],
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

    def flat(self) -> list[Tensor]:
        return [self.values1, self.values2, *self.tables1, *self.tables2, *self.variances]

    @classmethod
    def unflat(cls, flat: list[Tensor] | tuple[Tensor, ...], num_layers: int) -> _DiagonalInputs:
        tables = 2 + num_layers
        return cls(
            flat[0],
            flat[1],
            tuple(flat[2:tables]),
            tuple(flat[tables : tables + num_layers]),
            RecurrentVariances(*flat[tables + num_layers :]),
        )


class _DiagonalStatic(NamedTuple):
    lengths1: Tensor  # (..., N)
    lengths2: Tensor
    shortest: tuple[int, int]
    same: Tensor | None  # exact self pairs, on the lane of d = 0 only
    cross_init: Tensor | bool | None  # P(0, 0) / init_var on d = 0 (None: no initial state)
    dual: Callable[..., tuple[Tensor, Tensor]]
    num_layers: int
    frozen_layers: int
    paired: bool
    lane_shape: tuple[int, ...]  # (-1, 1, ..., 1): a (G,) vector against a lane state


def _pair(a: Tensor, b: Tensor, paired: bool) -> tuple[Tensor, Tensor]:
    return (a, b) if paired else (a.unsqueeze(-1), b.unsqueeze(-2))


def _lane_start(variances: RecurrentVariances, lanes: _Lanes, static: _DiagonalStatic) -> list:
    """``(P(0, 0), 0, 0)`` per layer: the initial state on the lane of ``d = 0``, else 0."""
    zero = variances.recurrent_var.new_zeros(())
    start = zero
    if static.cross_init is not None and lanes.origin is not None:
        start = variances.init_var * lanes.origin.view(static.lane_shape).to(zero)
        if isinstance(static.cross_init, Tensor):
            start = start * static.cross_init.to(zero)
    return [
        [(start, zero, zero if layer >= static.frozen_layers else None)]
        for layer in range(static.num_layers)
    ]


def _diagonal_scan(
    cells: range,
    state: list,
    total: Tensor,
    inputs: _DiagonalInputs,
    lanes: _Lanes,
    static: _DiagonalStatic,
) -> tuple[list, Tensor]:
    r"""Advance a group of lanes through ``cells``, adding each cell's readout to ``total``.

    ``state[l][0] = (V, V', Th)`` of layer ``l`` at the previous cell of each lane. Every
    dependency stays on its diagonal, so all lanes start from their boundary and the pairs of
    each lane are active while both steps are within their lengths (then stay inactive).
    """
    sw2, su2, sb2, _ = inputs.variances
    lengths1, lengths2, (shortest1, shortest2), same, _, dual, _, frozen, paired, shape = static
    m = inputs.values1.shape[-1]
    state = list(state)  # a replay in the backward pass runs this on the same arguments
    for k in cells:
        at1 = lanes.step1[k].clamp(max=inputs.values1.shape[-2] - 1)
        at2 = lanes.step2[k].clamp(max=inputs.values2.shape[-2] - 1)
        x = inputs.values1.index_select(-2, at1).movedim(-2, 0)  # (G, ..., N, m)
        y = inputs.values2.index_select(-2, at2).movedim(-2, 0)
        below = (x * y).sum(-1) / m if paired else x @ y.transpose(-1, -2) / m
        active: Mask = True
        if lanes.reach1[k] >= shortest1 or lanes.reach2[k] >= shortest2:
            side = shape if paired else shape[:-1]  # a (G,) vector against (G, ..., N)
            inside1 = lanes.step1[k].view(side) < lengths1
            inside2 = lanes.step2[k].view(side) < lengths2
            active = torch.logical_and(*_pair(inside1, inside2, paired))
        keep = lanes.keep[k].view(shape).to(total) if lanes.restarts[k] else None
        below_vd = below_th = None
        for layer in range(len(state)):
            v_prev, vd_prev, th_prev = state[layer][0]
            if keep is not None:  # a diagonal begins: P = 0 and no recurrent Th term
                v_prev = v_prev * keep
                th_prev = None if th_prev is None else th_prev * keep
            s = sw2 * v_prev + su2 * below + sb2
            s = _where(active, s, 0.0)  # inactive pairs: a finite placeholder (k12 = 0)
            th = None
            if layer >= frozen:
                th = s + sw2 * vd_prev * th_prev
                if below_th is not None:
                    th = th + su2 * below_vd * below_th
                th = _where(active, th, 0.0)
            selves = _pair(
                inputs.tables1[layer].index_select(-1, at1).movedim(-1, 0),
                inputs.tables2[layer].index_select(-1, at2).movedim(-1, 0),
                paired,
            )
            v, vd = dual(s, *selves, same)
            state[layer] = [(v, vd, th)]
            below, below_vd, below_th = v, vd, th
        readout = v if th is None else v + vd * th
        total = total + _where(active, readout, 0.0)
    return state, total


def _mean_kernel_block(
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
    block_elements: int,
) -> Tensor:
    r"""The average-pooled kernel (:doc:`/kernels`, Variants): the readout's mean over all time
    pairs.

    Each diagonal ``t' - t = d`` of the ``T x T'`` grid is a scan of its own from the recursion's
    boundary (start-aligned: no input is shifted, the diagonal just starts later in one
    of them). Diagonals are packed into lanes of ``min(T, T')`` cells and as many lanes as fit
    ``block_elements`` run side by side; the self terms of each input are tabulated once. With
    ``values2 = None`` the pairs are self pairs, whose grid is symmetric: ``d >= 0`` counted
    twice.
    """
    dual = _dual_for(nonlinearity, values1, values2)
    self_pairs = values2 is None
    if self_pairs:
        values2, lengths2, same = values1, lengths1, True
    variances = RecurrentVariances(*(torch.as_tensor(v).to(values1) for v in variances))
    pair_dims = 1 if paired else 2
    batch = torch.broadcast_shapes(
        values1.shape[:-3], values2.shape[:-3], *(v.shape[:-pair_dims] for v in variances)
    )

    def lift(t: Tensor, core: int) -> Tensor:  # explicit batch dimensions, lanes go in front
        return t.reshape((1,) * (len(batch) + core - t.dim()) + t.shape)

    values1, values2 = lift(values1, 3), lift(values2, 3)
    lengths1, lengths2 = lift(lengths1, 1), lift(lengths2, 1)
    init = initial_state != "zero"
    self_variances = variances if paired else _pair_variances(variances)
    tables1 = tuple(
        lift(t, 2) for t in _self_terms(values1, lengths1, self_variances, dual, num_layers, init)
    )
    tables2 = (
        tables1
        if self_pairs
        else tuple(
            lift(t, 2)
            for t in _self_terms(values2, lengths2, self_variances, dual, num_layers, init)
        )
    )
    inputs = _DiagonalInputs(values1, values2, tables1, tables2, variances)
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
        lane_elements = min(lane_elements, _PLAIN_AUTOGRAD_PAIR_STEPS // (cells * num_layers))
    lanes_per_group = max(1, lane_elements // max(1, pairs))
    replay_plainly = lanes_per_group * pairs * cells * num_layers <= _PLAIN_AUTOGRAD_PAIR_STEPS
    groups = _pack_diagonals(*longest, self_pairs, lanes_per_group, values1.device)
    cross_init = None if not init else (same if initial_state == "per_input" else True)
    static = _DiagonalStatic(
        lengths1,
        lengths2,
        (int(lengths1.min()), int(lengths2.min())),
        None,
        cross_init,
        dual,
        num_layers,
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
            start = _lane_start(inputs_.variances, lanes, static)
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
    counts = torch.mul(*_pair(lengths1, lengths2, paired)).to(total)
    return total / counts


def check_options(
    nonlinearity: str,
    initial_state: str,
    num_layers: int,
    frozen_layers: int = 0,
    readout: str = "last",
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
    check_positive_int(num_layers, "num_layers")
    frozen = as_int(frozen_layers)
    if frozen is None or not 0 <= frozen <= num_layers:
        raise ValueError(
            f"frozen_layers must be an integer in [0, num_layers={num_layers}], got "
            f"{frozen_layers!r}."
        )
    if readout not in READOUTS:
        raise ValueError(f"Unknown readout {readout!r}; choose one of {list(READOUTS)}.")


def check_sequences(
    values1: Tensor,
    lengths1: Tensor,
    values2: Tensor | None = None,
    lengths2: Tensor | None = None,
    variances: RecurrentVariances | None = None,
    *,
    paired: bool = False,
) -> None:
    """Raise a ``TypeError`` or ``ValueError`` naming what is wrong with a kernel function's
    sequences (``(..., N, T, m)`` floating values, ``(..., N)`` integer lengths in ``[1, T]``,
    finite; both sides of one dtype, device and ``m``) or variances (finite, non-negative).
    Checks the values with one synchronisation."""
    sides = {"values1": (values1, lengths1)}
    if values2 is not None:
        sides["values2"] = (values2, lengths2)
    flags, messages = [], []
    for name, (values, lengths) in sides.items():
        if not isinstance(values, Tensor) or not values.is_floating_point():
            found = values.dtype if isinstance(values, Tensor) else type(values).__name__
            raise TypeError(f"{name} must be a floating-point tensor, got {found}.")
        if values.dim() < 3 or 0 in values.shape[-2:]:
            raise ValueError(
                f"{name} must have shape (..., N, T, m) with T, m >= 1, got {tuple(values.shape)}."
            )
        if not isinstance(lengths, Tensor) or lengths.is_floating_point() or lengths.is_complex():
            found = lengths.dtype if isinstance(lengths, Tensor) else type(lengths).__name__
            raise TypeError(f"The lengths of {name} must be an integer tensor, got {found}.")
        if lengths.device != values.device:
            raise ValueError(
                f"The lengths of {name} are on {lengths.device}, {name} on {values.device}."
            )
        if lengths.shape != values.shape[:-2]:
            raise ValueError(
                f"The lengths of {name} have shape {tuple(lengths.shape)}; {name} "
                f"{tuple(values.shape)} needs {tuple(values.shape[:-2])}."
            )
        steps = values.shape[-2]
        flags += [((lengths < 1) | (lengths > steps)).any(), ~torch.isfinite(values).all()]
        messages += [f"The lengths of {name} must be in [1, T = {steps}].", f"{name} has NaN/inf."]
    if values2 is not None:
        if values2.dtype != values1.dtype or values2.device != values1.device:
            raise ValueError(
                f"values1 ({values1.dtype}, {values1.device}) and values2 ({values2.dtype}, "
                f"{values2.device}) must share a dtype and a device."
            )
        if values2.shape[-1] != values1.shape[-1]:
            raise ValueError(
                f"values1 has m = {values1.shape[-1]} values per step and values2 "
                f"{values2.shape[-1]}; they must agree."
            )
        if paired and values2.shape[-3] != values1.shape[-3]:
            raise ValueError(
                f"paired needs as many sequences on both sides, got {values1.shape[-3]} and "
                f"{values2.shape[-3]}."
            )
    for name, v in zip(RecurrentVariances._fields, variances or (), strict=False):
        v = torch.as_tensor(v, device=values1.device).detach()
        flags.append(~(torch.isfinite(v) & (v >= 0)).all())
        messages.append(f"{name} must be finite and non-negative.")
    for bad, message in zip(torch.stack(flags).tolist(), messages, strict=True):
        if bad:
            raise ValueError(message)


def _empty_gram(values1, values2, variances, paired: bool) -> Tensor | None:
    """The ``(..., N, N')`` (``(..., N)`` if ``paired``) result when a side has no sequences."""
    n1, n2 = values1.shape[-3], values2.shape[-3]
    if n1 and n2:
        return None
    batch = _batch_shape(values1, values2, variances)
    return values1.new_zeros(*batch, n1) if paired else values1.new_zeros(*batch, n1, n2)


def _batch_shape(values1: Tensor, values2: Tensor, variances: RecurrentVariances) -> torch.Size:
    return torch.broadcast_shapes(
        values1.shape[:-3],
        values2.shape[:-3],
        *(v.shape[:-2] for v in variances if isinstance(v, Tensor) and v.dim() >= 2),
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


ENGINES = ("auto", "tensor", "fused")


def _use_fused(
    engine, values1, values2, lengths1, lengths2, variances, readout, paired, num_layers
) -> bool:
    """Whether :func:`recurrent_kernel` hands the call to the fused engine."""
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}; choose one of {list(ENGINES)}.")
    if engine == "tensor":
        return False
    # Gradients: for the variances only, in forward mode.
    applies = (
        not paired
        and values1.dim() == values2.dim() == 3
        and all(not isinstance(v, Tensor) or v.numel() == 1 for v in variances)
        and not _needs_grad(values1, values2)
    )
    if engine == "fused":
        if not applies:
            raise ValueError(
                "engine='fused' computes Gram matrices of unbatched inputs with scalar "
                "variances, without 'paired', and gradients for the variances only, not for "
                "the sequences."
            )
        return True
    from .fused import TRITON_MAX_LAYERS, worth_fusing

    # On CUDA the variance gradients of a network deeper than the Triton kernel handles stay on
    # the tensor path: the compiled forward mode was measured at 18x the value there
    # (docs/performance.md).
    cuda_deep_gradients = (
        values1.device.type == "cuda"
        and num_layers > TRITON_MAX_LAYERS
        and readout == "last"
        and _needs_grad(*variances)
    )
    return (
        applies
        and not cuda_deep_gradients
        and worth_fusing(values1, lengths1, values2, lengths2, readout)
    )


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
    readout: str = "last",
    block_elements: int | None = None,
    engine: str = "auto",
    _validated: bool = False,
) -> Tensor:
    r"""The RNTK (or, with ``frozen_layers = num_layers``, the RNN-NNGP kernel) between sequences.

    Computes the recursions of :doc:`/kernels` for all pairs in one scan over time, sequences
    aligned at their last elements. Cost :math:`O(L\,T_{max} N N')` elementwise work; memory
    :math:`O(L N N')` in row blocks of about ``block_elements`` pairs, never an ``N x N' x T``
    tensor. When gradients are needed the scan is checkpointed in chunks of :math:`\sqrt{T}`
    steps.

    ``readout="mean"`` (:doc:`/kernels`, Variants) scans every diagonal :math:`t' - t` of the
    time grid from its boundary instead: :math:`O(L\,T_{max}^2 N N')` work in the same memory,
    gradients replaying groups of diagonals that are themselves checkpointed every
    :math:`\sqrt{T}` cells.

    Args:
        values1: ``(..., N, T1, m)`` step values, zero past each length.
        lengths1: ``(..., N)`` integer lengths in ``[1, T1]``.
        values2: ``(..., N', T2, m)``.
        lengths2: ``(..., N')``.
        variances: Each broadcastable against ``(..., N, N')`` (e.g. shaped ``(*batch, 1, 1)``).
        nonlinearity: ``"relu"`` or ``"erf"``.
        num_layers: Depth ``L``.
        frozen_layers: Number of untrained bottom layers (:doc:`/kernels`, Variants);
            ``num_layers`` gives the NNGP kernel.
        initial_state: ``"zero"``, ``"per_input"`` (the paper's) or ``"shared"``.
        paired: Compute only ``K(x1_i, x2_i)``, giving ``(..., N)`` (needs ``N == N'``).
        bidirectional: Add the kernel of the time-reversed sequences (:doc:`/kernels`, Variants: two
            independent stacks, readouts summed), which compares sequences aligned at their
            first elements.
        readout: ``"last"`` (the state at the last step) or ``"mean"`` (average pooling over
            time: the mean of the readout over all ``T1 x T2`` time pairs of each pair).
        block_elements: Pairs per row block; default :math:`2^{20}`, or :math:`2^{18}` when
            gradients are needed (each block then replays one chunk of steps at a time).
        engine: ``"tensor"`` (this module's scan, the reference), ``"fused"``
            (:mod:`gpytorch_rntk.fused`: for the last readout a Triton kernel on CUDA, a
            compiled loop elsewhere and for the mean readout; unbatched inputs, scalar
            variances, gradients for the variances only) or
            ``"auto"``: fused where it applies and the problem is large enough to repay
            compiling it (:func:`gpytorch_rntk.fused.worth_fusing`).

    Returns:
        ``(..., N, N')``, or ``(..., N)`` if ``paired``.
    """
    if not _validated:  # (internal calls pass on what their caller checked)
        check_options(nonlinearity, initial_state, num_layers, frozen_layers, readout)
        check_sequences(values1, lengths1, values2, lengths2, variances, paired=paired)
    empty = _empty_gram(values1, values2, variances, paired)
    if empty is not None:
        return empty
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
                readout=readout,
                block_elements=block_elements,
                engine=engine,
                _validated=True,
            ),
            values1,
            lengths1,
            values2,
            lengths2,
        )
    if _use_fused(
        engine, values1, values2, lengths1, lengths2, variances, readout, paired, num_layers
    ):
        from .fused import fused_kernel

        return fused_kernel(
            values1,
            lengths1,
            values2,
            lengths2,
            variances,
            nonlinearity=nonlinearity,
            num_layers=num_layers,
            frozen_layers=frozen_layers,
            initial_state=initial_state,
            readout=readout,
            _validated=True,
        )
    same = identical_rows(values1, lengths1, values2, lengths2, paired)
    options = dict(
        nonlinearity=nonlinearity,
        num_layers=num_layers,
        frozen_layers=frozen_layers,
        initial_state=initial_state,
        paired=paired,
        needs_grad=_needs_grad(values1, values2, *variances),
        readout=readout,
    )
    if block_elements is None:
        block_elements = 2**18 if options["needs_grad"] else 2**20
    options["block_elements"] = block_elements
    if paired:
        return _kernel_block(
            values1, lengths1, values2, lengths2, same, _pair_variances(variances), **options
        )
    n1, n2 = values1.shape[-3], values2.shape[-3]
    batch = _batch_shape(values1, values2, variances)
    rows = max(1, block_elements // max(1, math.prod(batch) * n2))
    symmetric = values1 is values2 and lengths1 is lengths2
    if symmetric:  # K(x, x): compute the blocks on and above the diagonal, mirror the rest
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
        # (The mean readout's groups of diagonals keep only their inputs already.)
        if options["needs_grad"] and n1 > rows and readout == "last":
            block = _recomputed(compute, *block_inputs)  # memory flat in the number of blocks
        else:
            block = compute(values1=block_inputs[0], values2=block_inputs[1], variances=variances)
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
    readout: str = "last",
    _validated: bool = False,
) -> Tensor:
    r"""``K(x_i, x_i)`` for each sequence without an ``N x N`` matrix.

    With ``readout="last"`` this is the self-term recursion alone, :math:`O(L\,T N)`; with
    ``"mean"`` every diagonal of each sequence's grid with itself, :math:`O(L\,T^2 N)` (half of
    it, by symmetry).

    Args are as for :func:`recurrent_kernel`; returns ``(..., N)``.
    """
    if not _validated:
        check_options(nonlinearity, initial_state, num_layers, frozen_layers, readout)
        check_sequences(values, lengths, variances=variances)
    empty = _empty_gram(values, values, variances, paired=True)
    if empty is not None:
        return empty
    if bidirectional:
        return _plus_reversed(
            partial(
                recurrent_kernel_diag,
                variances=variances,
                nonlinearity=nonlinearity,
                num_layers=num_layers,
                frozen_layers=frozen_layers,
                initial_state=initial_state,
                readout=readout,
                _validated=True,
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
        readout=readout,
        block_elements=2**18 if _needs_grad(values, *variances) else 2**20,
    )
