r"""The recursion of :doc:`/kernels`, written once for torch: the tensor and compiled engines run
these functions and differ only in how they drive them over pairs and time.

Per layer :math:`l` and time pair :math:`(t, t')`, with :math:`P` the state of the previous
cell (the recursion's boundary where a pair starts):

.. math::
    S^l &= \sigma_w^2 P^l + \sigma_u^2 I^l + \sigma_b^2, \qquad
    (V^l, V'^l) = \text{dual}(S^l; S^l(t, t), S^l(t', t')),\\
    \Theta^l &= S^l + \sigma_w^2 V'^l_{prev} \Theta^l_{prev} + \sigma_u^2 V'^{l-1} \Theta^{l-1},

the readout :math:`V^L + V'^L \Theta^L` (:math:`V^L` if every layer is frozen), read at the
last cell, or summed over the time grid with the weights of :func:`readout_weights`. A *pair state*
is a tensor of any broadcastable shape. :func:`cell` also carries, for each forward-mode
direction along a variance, the derivatives of every term beside its value (the compiled
engine's variance gradients); its hand-written tangents are checked against
:func:`torch.func.jvp` by the tests.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .config import RECURSION_VARIANCES, RecurrentVariances
from .duals import Dual
from .lanes import right_align

__all__ = ["cell", "on_clock", "readout", "readout_weights", "self_terms", "where"]

Mask = Tensor | bool


def where(mask: Mask, a: Tensor | float, b: Tensor | float) -> Tensor | float:
    """``torch.where`` that takes ``True``/``False`` for a mask that holds for every pair."""
    if mask is True:
        return a
    if mask is False:
        return b
    return torch.where(mask, a, b)


def cell(
    state: list[Tensor],
    below: Tensor,
    cont: Mask,
    start: Mask | None,
    selves: list,
    same: Mask,
    variances: tuple[Tensor, ...],
    dual: Callable,
    frozen_layers: int,
    directions: tuple[int, ...] = (),
    d_selves: list | None = None,
) -> None:
    """One cell of the recursion through every layer, updating ``state`` in place.

    ``state`` holds per layer ``(V, V', Th)`` and then, for each forward-mode direction (the
    variances numbered ``directions``, as in :class:`~.config.RecurrentVariances`), ``(dV,
    dV', dTh)``: every tensor the same shape, so that a compiler computes the values once and
    their derivatives in the same loop. ``below`` is the first layer's input term ``<x_t,
    x'_t'> / m``. Where ``cont`` is false the previous cell is the boundary: no recurrent ``Th``
    term, and ``P = init_var`` where ``start`` is true, else 0. ``selves[layer]`` is what
    ``dual`` reads of the pair's self terms at this cell, ``d_selves[layer][p]`` their
    derivatives along direction ``p``; ``dual(s, selves[layer], same, tangents)`` returns
    ``(V, V', [(dV, dV') per direction])`` (see :func:`~.duals.table_dual`).
    """
    sw2, su2, sb2, init_var = variances[:RECURSION_VARIANCES]
    width = 3 + 3 * len(directions)
    boundary = d_boundary = 0.0
    if start is not None and start is not False:
        boundary, d_boundary = where(start, init_var, 0.0), where(start, 1.0, 0.0)
    below_th = None
    d_below = d_below_th = [None] * len(directions)
    for layer in range(len(state) // width):
        v, vd, th, *tangent = state[width * layer : width * (layer + 1)]
        previous = where(cont, v, boundary)
        s = sw2 * previous + su2 * below + sb2
        ds = []
        for p, i in enumerate(directions):  # d(variance i) along direction p is 1
            d = sw2 * where(cont, tangent[3 * p], d_boundary if i == 3 else 0.0)
            d = d + (previous, below, 1.0, 0.0)[i]
            ds.append(d if d_below[p] is None else d + su2 * d_below[p])
        dth = [tangent[3 * p + 2] for p in range(len(directions))]
        if layer >= frozen_layers:
            recurrent = where(cont, vd * th, 0.0)
            new_th = s + sw2 * recurrent
            if below_th is not None:
                new_th = new_th + su2 * below_th
            for p, i in enumerate(directions):
                d_rec = where(cont, tangent[3 * p + 1] * th + vd * tangent[3 * p + 2], 0.0)
                d = ds[p] + sw2 * d_rec + (recurrent if i == 0 else 0.0)
                if below_th is not None:
                    d = d + su2 * d_below_th[p] + (below_th if i == 1 else 0.0)
                dth[p] = d
            th = new_th
        tangents = (
            [(ds[p], ha + hb) for p, (ha, hb) in enumerate(d_selves[layer])] if directions else []
        )
        v, vd, duals = dual(s, selves[layer], same, tangents)
        state[width * layer : width * (layer + 1)] = [
            v,
            vd,
            th,
            *(t for (dv, dvd), d in zip(duals, dth, strict=True) for t in (dv, dvd, d)),
        ]
        below, below_th = v, (vd * th if layer >= frozen_layers else None)
        d_below = [dv for dv, _ in duals]
        if layer >= frozen_layers:
            d_below_th = [dvd * th + vd * d for (_, dvd), d in zip(duals, dth, strict=True)]
        else:
            d_below_th = [None] * len(directions)


def readout(
    state: list[Tensor] | tuple[Tensor, ...], directions: int, frozen_layers: int
) -> tuple[Tensor, list[Tensor]]:
    """The top layer's readout ``V + V' Th`` (``V`` if no layer is trained) and its
    derivatives along each of the ``directions``."""
    width = 3 + 3 * directions
    v, vd, th, *tangent = state[-width:]
    if frozen_layers >= len(state) // width:
        return v, tangent[::3]
    return v + vd * th, [
        dv + dvd * th + vd * dth
        for dv, dvd, dth in zip(tangent[::3], tangent[1::3], tangent[2::3], strict=True)
    ]


def on_clock(tables: Tensor, lengths: Tensor, steps: int, align: str, fill: float) -> Tensor:
    """Per-sequence tables ``(..., N, T, ...)`` counted from each start, on a clock of
    ``steps`` (at least ``T``): ``align="end"``, index ``u`` holds the entry ``steps - u``
    steps before the sequence's end; ``"start"``, index ``u`` holds step ``u``. ``fill`` where
    the sequence is not running."""
    lead = lengths.dim()  # the dimensions before T
    head, length, rest = tables.shape[:lead], tables.shape[lead], tables.shape[lead + 1 :]
    flat = tables.reshape(*head, length, -1)
    if align == "start":
        flat = torch.nn.functional.pad(flat, (0, 0, 0, steps - length), value=fill)
    else:
        started = torch.arange(steps, device=tables.device) >= steps - lengths.unsqueeze(-1)
        flat = torch.where(started.unsqueeze(-1), right_align(flat, lengths, steps), fill)
    return flat.view(*head, steps, *rest)


def self_terms(
    values: Tensor,
    lengths: Tensor,
    variances: RecurrentVariances,
    dual: Dual,
    num_layers: int,
    init: bool,
    directions: tuple[int, ...] = (),
) -> list[Tensor] | tuple[list[Tensor], list[Tensor]]:
    """The self terms ``S^l(t, t)`` of each sequence at every step, counted from its start.

    One ``(..., N, T)`` table per layer; past each length it holds 1, a finite positive
    placeholder for the duals of pairs that are not active there. ``variances`` broadcast
    against ``(..., N)``.

    With ``directions`` (variances numbered as in :class:`~.config.RecurrentVariances`), also
    their derivatives along each, one ``(..., N, T, P)`` table per layer (0 past each length),
    in forward mode in the same pass: ``dS = sigma_w^2 dP + sigma_u^2 dV_{below} + e_i``
    (``e_i`` the term that variance multiplies) and ``dV = V_self'(S) dS``
    (:meth:`~.duals.Dual.self_slope`).
    """
    sw2, su2, sb2, init_var = variances[:RECURSION_VARIANCES]
    steps, m = values.shape[-2:]
    data = values.square().sum(-1) / m
    previous = [init_var if init else 0.0] * num_layers  # P^l(t-1, t-1) of the self pair
    columns: list[list[Tensor]] = [[] for _ in range(num_layers)]
    d_columns: list[list[Tensor]] = [[] for _ in range(num_layers)]
    if directions:  # tangents (P, ..., N); units[i]: which directions move variance i
        units = torch.eye(RECURSION_VARIANCES, dtype=values.dtype, device=values.device)
        units = units[list(directions)].T.reshape(
            RECURSION_VARIANCES, len(directions), *[1] * data[..., 0].dim()
        )
        d_previous = [units[3] if init else 0.0] * num_layers
    for below in data.unbind(-1):  # (one gradient per input, not one per step)
        d_below = 0.0
        for layer in range(num_layers):
            s = sw2 * previous[layer] + su2 * below + sb2  # (cell's S on a self pair)
            columns[layer].append(s)
            if directions:
                ds = sw2 * d_previous[layer] + su2 * d_below
                ds = ds + units[0] * previous[layer] + units[1] * below + units[2]
                d_columns[layer].append(ds)
                d_below = d_previous[layer] = dual.self_slope(s) * ds
            below = previous[layer] = dual.self_pair(s)[0]
    inside = torch.arange(steps, device=values.device) < lengths.unsqueeze(-1)
    tables = [torch.where(inside, torch.stack(c, -1), 1.0) for c in columns]
    if not directions:
        return tables
    inside = inside.unsqueeze(-1)
    return tables, [torch.where(inside, torch.stack(c, -1).movedim(0, -1), 0.0) for c in d_columns]


def readout_weights(
    lengths: Tensor, steps: int, decay: Tensor | float, dtype: torch.dtype
) -> Tensor:
    r"""The geometric readout's weights of each step, ``(..., N, steps)``: step :math:`t` (from
    0) of a sequence of length :math:`T` weighs :math:`\lambda^{T-1-t} / \sum_{s<T}
    \lambda^s` (the last step most; :math:`\lambda = 1` the mean), 0 past the length.
    ``decay`` broadcasts against ``(..., N)``; differentiable in it."""
    ages = lengths.unsqueeze(-1) - 1 - torch.arange(steps, device=lengths.device)
    decay = torch.as_tensor(decay, dtype=dtype, device=lengths.device)
    powers = decay.unsqueeze(-1) ** ages.clamp(min=0).to(dtype)
    powers = torch.where(ages >= 0, powers, 0.0)
    return powers / powers.sum(-1, keepdim=True)
