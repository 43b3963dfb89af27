"""The cross scan as one Triton kernel: a program per tile of pairs, state in registers.

Runs on CUDA, and on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``), which is
how the tests check it without a GPU. Every layer's state, and in forward mode each direction's
derivatives beside it, are tuples of tiles held in registers; :func:`tiles` keeps them from
spilling for up to ``fused.TRITON_MAX_LAYERS`` layers, and deeper networks use the compiled
engine. The last readout's kernel (:func:`_cross_kernel`) walks each tile through the steps of
its sequences aligned at their ends; the mean and geometric readouts' (:func:`_grid_kernel`)
walks the diagonals of the tile's time grids, summing the readout of every cell.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice

from ..config import LAST, RECURSION_VARIANCES, InitialState, RecurrentConfig
from ..duals import RELU as RELU_CODE

# Whether the kernels below run under Triton's interpreter (decided when this module is imported).
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
if INTERPRETED:
    # Triton's interpreter runs the kernel on NumPy arrays and has no libdevice: give it NumPy's
    # arccos, arcsin and reciprocal square root on the same tensors.
    from triton.runtime.interpreter import TensorHandle

    def _numpy_function(function):
        def apply(x):
            return tl.core.tensor(TensorHandle(function(x.handle.data), x.handle.dtype), x.type)

        return apply

    class _math:
        acos = staticmethod(_numpy_function(np.arccos))
        asin = staticmethod(_numpy_function(np.arcsin))
        rsqrt = staticmethod(_numpy_function(lambda x: 1 / np.sqrt(x)))

else:
    _math = libdevice


@triton.jit
def _dual(s, root_a, inv_a, root_b, inv_b, same, pi, half_over_pi, eps, RELU: tl.constexpr):
    """``(V, V', reuse)``: the dual, and what :func:`_tangent` reuses of it. The sides come as
    their tables ``(root, inv)`` (``fused.side_tables``), so that no pair divides but once
    (``dV'`` of ReLU, in forward mode): ``fused._dual``'s formulas."""
    inv_norm = inv_a * inv_b
    if RELU:
        raw = s * inv_norm
        cos = tl.minimum(tl.maximum(raw, eps - 1), 1 - eps)
        sin = tl.sqrt((1 - cos) * (1 + cos))
        vd = (pi - _math.acos(cos)) * half_over_pi
        v = (root_a * root_b) * (sin * half_over_pi + vd * cos)
        # exactly (anti)parallel states of different sequences: 0, or the self-pair form
        # (applied with ``same`` by the caller and _tangent)
        v, vd = tl.where(raw <= -1, 0.0, v), tl.where(raw <= -1, 0.0, vd)
        slope = half_over_pi * inv_norm / sin  # dV' / (norm dcos)
        return v, vd, (raw == cos, slope, raw >= 1)
    else:
        prod = root_a * root_b
        raw = 2 * s * inv_norm
        gap = prod - 4 * s * s
        # self pairs from their self terms, c = 1 + 2S: z = 1 - 1/c, q = 2c - 1 (erf_dual)
        z = tl.where(same, 1 - inv_norm, tl.minimum(tl.maximum(raw, eps - 1), 1 - eps))
        q = tl.where(same, root_a + root_b - 1, tl.maximum(gap, eps * prod))
        v = (4 * half_over_pi) * _math.asin(z)
        inv_root_q = _math.rsqrt(q)
        vd = (8 * half_over_pi) * inv_root_q
        arcsine = (4 * half_over_pi) * _math.rsqrt((1 - z) * (1 + z))
        dvd_dq = -0.5 * vd * inv_root_q * inv_root_q
        return v, vd, (raw == z, raw, inv_norm, arcsine, gap == q, prod, dvd_dq, root_a + root_b)


@triton.jit
def _tangent(ds, h, s, same, v, vd, reuse, eps, RELU: tl.constexpr):
    """``(dV, dV')`` along one direction from ``dS`` and ``h = h(t, t) + h(t', t')``, the
    sides' ``d log sqrt(c)`` (``fused.side_tables``), with :func:`_dual`'s values:
    ``fused._dual``'s formulas, clamps included (0 where clamped)."""
    if RELU:  # h = d log(norm)
        inside, slope, parallel = reuse
        dcos_norm = tl.where(inside, ds - s * h, 0.0)  # norm * d(cos)
        dv = v * h + vd * dcos_norm
        same = same | parallel
        return tl.where(same, 0.5 * ds, dv), tl.where(same, 0.0, dcos_norm * slope)
    else:  # h = d log(prod) / 2
        inside, raw, inv_norm, arcsine, unclamped, prod, dvd_dq, c_sum = reuse
        dz = tl.where(same, h * inv_norm, tl.where(inside, 2 * ds * inv_norm - raw * h, 0.0))
        dq = tl.where(unclamped, 2 * prod * h - 8 * s * ds, 2 * eps * prod * h)
        dq = tl.where(same, c_sum * h, dq)
        return dz * arcsine, dvd_dq * dq


@triton.jit
def _plus_own(ds, previous, below, KIND: tl.constexpr):
    """``ds`` (what ``dS`` carries from the state) plus ``S = sw2 previous + su2 below +
    sb2``'s own derivative along variance ``KIND`` (0 sw2, 1 su2, 2 sb2, 3 init_var: none)."""
    if KIND == 0:
        ds += previous
    if KIND == 1:
        ds += below
    if KIND == 2:
        ds += 1.0
    return ds


@triton.jit
def _layer(
    v,
    vd,
    th,
    below,
    below_th,
    sa,
    sb,
    cont,
    boundary,
    same,
    sw2,
    su2,
    sb2,
    pi,
    half_over_pi,
    eps,
    TRAINED: tl.constexpr,
    BELOW_TRAINED: tl.constexpr,
    BELOW_DATA: tl.constexpr,
    RELU: tl.constexpr,
    KINDS: tl.constexpr,
    dv,
    dvd,
    dth,
    d_below,
    d_below_th,
    ha,
    hb,
    d_boundary,
):
    """One layer of one step: the new ``(V, V', Th)`` and their derivatives ``(dV, dV', dTh)``:
    tuples of tiles, one per direction, ``KINDS[i]`` the variance direction ``i`` is along
    (0 sw2, 1 su2, 2 sb2, 3 init_var, which enters through the boundary). ``sa``, ``sb``:
    the sides' ``(root, inv)``; ``ha``, ``hb``: their ``h`` per direction
    (``fused.side_tables``); ``BELOW_DATA``: the layer reads the data (no derivative)."""
    previous = tl.where(cont, v, boundary)
    s = sw2 * previous + su2 * below + sb2
    new_th = th
    if TRAINED:
        recurrent = tl.where(cont, vd * th, 0.0)
        new_th = s + sw2 * recurrent
        if BELOW_TRAINED:
            new_th = new_th + su2 * below_th
    new_v, new_vd, reuse = _dual(s, sa[0], sa[1], sb[0], sb[1], same, pi, half_over_pi, eps, RELU)
    new_dv, new_dvd, new_dth = (), (), ()
    for i in tl.static_range(len(KINDS)):
        if KINDS[i] == 3:
            ds = sw2 * tl.where(cont, dv[i], d_boundary)
        else:
            ds = sw2 * tl.where(cont, dv[i], 0.0)
        if not BELOW_DATA:
            ds += su2 * d_below[i]
        ds = _plus_own(ds, previous, below, KINDS[i])
        dt = dth[i]
        if TRAINED:
            dt = ds + sw2 * tl.where(cont, dvd[i] * th + vd * dth[i], 0.0)
            if KINDS[i] == 0:
                dt += recurrent
            if BELOW_TRAINED:
                dt += su2 * d_below_th[i]
                if KINDS[i] == 1:
                    dt += below_th
        dv_i, dvd_i = _tangent(ds, ha[i] + hb[i], s, same, new_v, new_vd, reuse, eps, RELU)
        new_dv, new_dvd, new_dth = new_dv + (dv_i,), new_dvd + (dvd_i,), new_dth + (dt,)
    if RELU:  # identical sequences, or exactly parallel states: the self-pair form
        same = same | reuse[2]
        new_v, new_vd = tl.where(same, 0.5 * s, new_v), tl.where(same, 0.5, new_vd)
    return new_v, new_vd, new_th, new_dv, new_dvd, new_dth


@triton.jit
def _handed_up(dv, dvd, dth, vd, th, TRAINED: tl.constexpr):
    """A layer's ``d(V' Th)`` along each direction (what the layer above, or the readout,
    adds to ``dV``; 0 for an untrained layer)."""
    up = ()
    for i in tl.static_range(len(dv)):
        up = up + (dvd[i] * th + vd * dth[i] if TRAINED else dv[i] * 0.0,)
    return up


@triton.jit
def _selves(S, DS, layer, u, clock, n, idx, ok, ND: tl.constexpr, ROWS: tl.constexpr):
    """The tables of ``S^layer(u, u)`` (``fused.side_tables``) of sequences ``idx`` as
    columns (``ROWS``) or rows of the tile: ``(root, inv)`` and the tuple of ``h`` along the
    ``ND`` directions."""
    tables = ()
    for j in tl.static_range(2):
        t = tl.load(S + ((layer * clock + u) * 2 + j) * n + idx, mask=ok, other=1.0)
        tables = tables + (t[:, None] if ROWS else t[None, :],)
    hs = ()
    for i in tl.static_range(ND):
        h = tl.load(DS + ((layer * clock + u) * ND + i) * n + idx, mask=ok, other=0.0)
        hs = hs + (h[:, None] if ROWS else h[None, :],)
    return tables, hs


@triton.jit
def _step(
    X,
    Y,
    SX,
    SY,
    DSX,
    DSY,
    u1,
    u2,
    n1,
    n2,
    clock,
    rows,
    cols,
    in_r,
    in_c,
    cont,
    boundary,
    d_boundary,
    same,
    sw2,
    su2,
    sb2,
    pi,
    half_over_pi,
    eps,
    zero,
    zeros,
    M: tl.constexpr,
    L: tl.constexpr,
    FROZEN: tl.constexpr,
    RELU: tl.constexpr,
    KINDS: tl.constexpr,
    vs,
    vds,
    ths,
    dvs,
    dvds,
    dths,
):
    """One cell of the scan: the rows at step ``u1`` and the columns at step ``u2`` of the
    clock through every layer. Per layer ``V, V', Th`` and their derivatives (a tuple of
    directions each) in, the new ones out; ``cont`` where a pair continues its previous cell
    (else it starts from ``boundary``, whose derivative ``d_boundary`` is along init_var)."""
    ND: tl.constexpr = len(KINDS)
    below = zero
    for c in tl.static_range(M):
        xa = tl.load(X + (u1 * M + c) * n1 + rows, mask=in_r, other=0.0)
        yb = tl.load(Y + (u2 * M + c) * n2 + cols, mask=in_c, other=0.0)
        below += xa[:, None] * yb[None, :]
    below = below * (1.0 / M)
    below_th, d_below, d_below_th = zero, zeros, zeros  # the data: no Th, no derivative
    new_vs, new_vds, new_ths, new_dvs, new_dvds, new_dths = (), (), (), (), (), ()
    for layer in tl.static_range(L):
        sa, dsa = _selves(SX, DSX, layer, u1, clock, n1, rows, in_r, ND, True)
        sb, dsb = _selves(SY, DSY, layer, u2, clock, n2, cols, in_c, ND, False)
        v, vd, th, dv, dvd, dth = _layer(
            vs[layer], vds[layer], ths[layer], below, below_th, sa, sb, cont, boundary,
            same, sw2, su2, sb2, pi, half_over_pi, eps, layer >= FROZEN, layer > FROZEN,
            layer == 0, RELU, KINDS, dvs[layer], dvds[layer], dths[layer], d_below,
            d_below_th, dsa, dsb, d_boundary,
        )  # fmt: skip
        below, below_th = v, vd * th  # what the layer above reads
        d_below, d_below_th = dv, _handed_up(dv, dvd, dth, vd, th, layer >= FROZEN)
        new_vs, new_vds, new_ths = new_vs + (v,), new_vds + (vd,), new_ths + (th,)
        new_dvs, new_dvds, new_dths = new_dvs + (dv,), new_dvds + (dvd,), new_dths + (dth,)
    return new_vs, new_vds, new_ths, new_dvs, new_dvds, new_dths


@triton.jit
def _readout(vs, vds, ths, dvs, dvds, dths, L: tl.constexpr, FROZEN: tl.constexpr):
    """The kernel of the top layer's state, then its derivatives along each direction: the
    NNGP's ``V`` plus, for a trained top layer, the NTK's ``V' Th``."""
    v, vd, th = vs[L - 1], vds[L - 1], ths[L - 1]
    dv, dvd, dth = dvs[L - 1], dvds[L - 1], dths[L - 1]
    up = _handed_up(dv, dvd, dth, vd, th, FROZEN < L)
    planes = (v + vd * th if FROZEN < L else v,)
    for i in tl.static_range(len(dv)):
        planes = planes + (dv[i] + up[i],)
    return planes


@triton.jit
def _program(
    P, LX, LY, IX, IY, n1, n2, BM: tl.constexpr, BN: tl.constexpr, SYMMETRIC: tl.constexpr
):  # fmt: skip
    """What a program of either cross kernel starts from: the parameters ``(sw2, su2, sb2,
    init_var, pi, 1 / (2 pi), eps)``, its tile's rows and columns (and which are in range),
    their lengths, ``same`` (identical sequences), ``keep`` (the pairs it stores: in K(x, x)
    each unordered pair once) and whether the tile lies wholly below K(x, x)'s diagonal
    (mirrored from above it: nothing to compute)."""
    pi = tl.load(P + 4)
    params = (
        tl.load(P + 0), tl.load(P + 1), tl.load(P + 2), tl.load(P + 3), pi, 0.5 / pi,
        tl.load(P + 5),
    )  # fmt: skip
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rows = pid_m * BM + tl.arange(0, BM)
    cols = pid_n * BN + tl.arange(0, BN)
    in_r = rows < n1
    in_c = cols < n2
    tx = tl.load(LX + rows, mask=in_r, other=0)
    ty = tl.load(LY + cols, mask=in_c, other=0)
    same = (
        tl.load(IX + rows, mask=in_r, other=-1)[:, None]
        == tl.load(IY + cols, mask=in_c, other=-2)[None, :]
    )
    keep = in_r[:, None] & in_c[None, :]
    below_diagonal = False
    if SYMMETRIC:
        below_diagonal = (pid_n + 1) * BN <= pid_m * BM
        keep = keep & (rows[:, None] <= cols[None, :])
    return params, rows, cols, in_r, in_c, tx, ty, same, keep, below_diagonal


@triton.jit
def _zero_state(zero, ND: tl.constexpr, L: tl.constexpr):
    """Every layer's ``V, V', Th`` and their derivatives along ``ND`` directions, all 0."""
    zeros = ()
    for _ in tl.static_range(ND):
        zeros = zeros + (zero,)
    vs, vds, ths, dvs, dvds, dths = (), (), (), (), (), ()
    for _ in tl.static_range(L):
        vs, vds, ths = vs + (zero,), vds + (zero,), ths + (zero,)
        dvs, dvds, dths = dvs + (zeros,), dvds + (zeros,), dths + (zeros,)
    return zeros, vs, vds, ths, dvs, dvds, dths


@triton.jit
def _store(OUT, O1, O2, rows, cols, in_r, in_c, n1, n2, planes, keep, SYMMETRIC: tl.constexpr):
    """``planes[i]`` of pair (a, b) of the sorted sets to ``OUT[i, O1[a], O2[b]]`` (and for
    K(x, x), where ``n1 = n2``, to ``OUT[i, O2[b], O1[a]]`` too)."""
    a = tl.load(O1 + rows, mask=in_r, other=0).to(tl.int64)
    b = tl.load(O2 + cols, mask=in_c, other=0).to(tl.int64)
    for i in tl.static_range(len(planes)):
        tl.store(OUT + (i * n1 + a[:, None]) * n2 + b[None, :], planes[i], mask=keep)
        if SYMMETRIC:
            tl.store(OUT + (i * n2 + b[None, :]) * n1 + a[:, None], planes[i], mask=keep)


@triton.jit
def _cross_kernel(
    X,
    Y,
    SX,
    SY,
    DSX,
    DSY,
    LX,
    LY,
    IX,
    IY,
    P,
    OUT,
    O1,
    O2,
    n1,
    n2,
    clock,
    M: tl.constexpr,
    L: tl.constexpr,
    FROZEN: tl.constexpr,
    RELU: tl.constexpr,
    INIT_MODE: tl.constexpr,
    SYMMETRIC: tl.constexpr,
    KINDS: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
):
    """The last readout. X: (clock, M, n1) right-aligned values; SX: (L, clock, 2, n1) the
    self terms' tables (``fused.side_tables``); LX lengths (sorted); IX ids of identical rows;
    P: (sw2, su2, sb2, init_var, pi, eps) in the working dtype. OUT: (1 + P, n1, n2), pair (a,
    b) of the sorted sets going to OUT[:, O1[a], O2[b]]: the Gram matrix and (forward mode) its
    derivatives along the ``P = len(KINDS)`` variances ``KINDS`` numbers (0 sw2, 1 su2, 2 sb2,
    3 init_var), with DSX (L, clock, P, n1) the self terms' ``h``. Each direction's state is
    its own tiles (a tuple), in registers like the values'."""
    ND: tl.constexpr = len(KINDS)
    params, rows, cols, in_r, in_c, tx, ty, same, keep, below_diagonal = _program(
        P, LX, LY, IX, IY, n1, n2, BM, BN, SYMMETRIC
    )
    sw2, su2, sb2, init_var, pi, half_over_pi, eps = params
    shorter = tl.minimum(tx[:, None], ty[None, :])
    need = tl.max(tl.max(shorter, axis=1), axis=0)  # steps the tile's longest pair needs
    need = tl.where(below_diagonal, 0, need)
    zero = tl.zeros((BM, BN), dtype=OUT.dtype.element_ty)
    zeros, vs, vds, ths, dvs, dvds, dths = _zero_state(zero, ND, L)
    for k in range(0, need):
        remaining = need - k
        u = clock - remaining
        boundary = zero
        d_boundary = zero
        if INIT_MODE > 0:
            start = (tx[:, None] == remaining) & (ty[None, :] == remaining)
            if INIT_MODE == 1:
                start = start & same
            boundary = tl.where(start, init_var, zero)
            d_boundary = tl.where(start, 1.0, zero)
        vs, vds, ths, dvs, dvds, dths = _step(
            X, Y, SX, SY, DSX, DSY, u, u, n1, n2, clock, rows, cols, in_r, in_c,
            shorter > remaining, boundary, d_boundary, same, sw2, su2, sb2, pi, half_over_pi,
            eps, zero, zeros, M, L, FROZEN, RELU, KINDS, vs, vds, ths, dvs, dvds, dths,
        )  # fmt: skip
    planes = _readout(vs, vds, ths, dvs, dvds, dths, L, FROZEN)
    _store(OUT, O1, O2, rows, cols, in_r, in_c, n1, n2, planes, keep, SYMMETRIC)


@triton.jit
def _grid_kernel(
    X,
    Y,
    SX,
    SY,
    DSX,
    DSY,
    LX,
    LY,
    IX,
    IY,
    WX,
    WY,
    DIAG,
    P,
    OUT,
    O1,
    O2,
    n1,
    n2,
    clock,
    per_group,
    M: tl.constexpr,
    L: tl.constexpr,
    FROZEN: tl.constexpr,
    RELU: tl.constexpr,
    INIT_MODE: tl.constexpr,
    SYMMETRIC: tl.constexpr,
    KINDS: tl.constexpr,
    WEIGHTS: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
):
    """The mean and geometric readouts: the sum over each pair's ``T_a x T_b`` time grid of
    the readout of every cell (each diagonal ``d = t' - t`` of the grid the last readout's
    recursion from its own boundary, sequences aligned at their starts). Program ``(i, j,
    g)`` runs tile ``(i, j)`` of pairs through the diagonals ``DIAG[g, :per_group]`` (the
    clock's length past the last: none) and writes its sums to ``OUT[g]``, ``(G, planes, n1,
    n2)``. X, SX, DSX, LX, IX, P, O1 and KINDS as for :func:`_cross_kernel`, on a clock of
    steps from the start; WEIGHTS 1: each cell's readout weighted by ``WX[t, a] WY[t', b]``
    (``(clock, n1)``, the steps' weights), 2: also one more plane, the value weighted by
    their derivative along the decay (``WX[clock + t, a]``)."""
    ND: tl.constexpr = len(KINDS)
    params, rows, cols, in_r, in_c, tx, ty, same, keep, below_diagonal = _program(
        P, LX, LY, IX, IY, n1, n2, BM, BN, SYMMETRIC
    )
    sw2, su2, sb2, init_var, pi, half_over_pi, eps = params
    group = tl.program_id(2)
    zero = tl.zeros((BM, BN), dtype=OUT.dtype.element_ty)
    sums = (zero,)
    for _ in tl.static_range(ND + (WEIGHTS == 2)):
        sums = sums + (zero,)
    for j in range(0, per_group):
        d = tl.load(DIAG + group * per_group + j)
        off1 = tl.maximum(-d, 0)  # the diagonal's first cell: (off1, off2)
        off2 = tl.maximum(d, 0)
        cells = tl.minimum(tx[:, None] - off1, ty[None, :] - off2)  # each pair's, on it
        need = tl.max(tl.max(cells, axis=1), axis=0)
        need = tl.where(below_diagonal, 0, need)
        on_origin = d == 0  # where exact self pairs meet themselves, and the initial state
        zeros, vs, vds, ths, dvs, dvds, dths = _zero_state(zero, ND, L)
        for k in range(0, need):
            active = cells > k
            boundary = zero
            d_boundary = zero
            if INIT_MODE > 0:
                start = (on_origin & (k == 0)) & active
                if INIT_MODE == 1:
                    start = start & same
                boundary = tl.where(start, init_var, zero)
                d_boundary = tl.where(start, 1.0, zero)
            u1 = off1 + k
            u2 = off2 + k
            vs, vds, ths, dvs, dvds, dths = _step(
                X, Y, SX, SY, DSX, DSY, u1, u2, n1, n2, clock, rows, cols, in_r, in_c,
                active & (k > 0), boundary, d_boundary, same & on_origin, sw2, su2, sb2, pi,
                half_over_pi, eps, zero, zeros, M, L, FROZEN, RELU, KINDS, vs, vds, ths, dvs,
                dvds, dths,
            )  # fmt: skip
            planes = _readout(vs, vds, ths, dvs, dvds, dths, L, FROZEN)
            if WEIGHTS > 0:
                wa = tl.load(WX + u1 * n1 + rows, mask=in_r, other=0.0)[:, None]
                wb = tl.load(WY + u2 * n2 + cols, mask=in_c, other=0.0)[None, :]
                weighted = ()
                for i in tl.static_range(len(planes)):
                    weighted = weighted + (planes[i] * (wa * wb),)
                if WEIGHTS == 2:  # d(w w') = dw w' + w dw' along the decay
                    dwa = tl.load(WX + (clock + u1) * n1 + rows, mask=in_r, other=0.0)[:, None]
                    dwb = tl.load(WY + (clock + u2) * n2 + cols, mask=in_c, other=0.0)[None, :]
                    weighted = weighted + (planes[0] * (dwa * wb + wa * dwb),)
                planes = weighted
            new_sums = ()
            for i in tl.static_range(len(sums)):
                new_sums = new_sums + (sums[i] + tl.where(active, planes[i], 0.0),)
            sums = new_sums
    mine = OUT + group.to(tl.int64) * len(sums) * n1 * n2  # this group's planes
    _store(mine, O1, O2, rows, cols, in_r, in_c, n1, n2, sums, keep, SYMMETRIC)


# One program's tile (rows x columns) and warps, for values only and for forward mode (whose
# state per pair is 1 + P times larger), by dtype: tiles that ptxas compiles for sm_90 without
# spilling registers up to three layers and four directions (benchmarks/triton_registers.py).
# Float32 values take the 32 x 64 pairs measured fastest on an H100 on 4 warps up to two
# layers, and on 8 warps at three layers (4 warps spill 320 bytes there). The mean and
# geometric readouts' kernel holds each pair's sums too: float32 values there take 8 warps
# (no spill up to three layers); forward mode spills 28 (float32) and 48 bytes (float64) at
# three layers, four directions and the decay.
TILES = {
    (torch.float32, False): (32, 64, 4),
    (torch.float64, False): (32, 32, 8),
    (torch.float32, True): (16, 32, 8),
    (torch.float64, True): (16, 16, 8),
}
GRID_TILES = TILES | {(torch.float32, False): (32, 64, 8)}


def tiles(
    dtype: torch.dtype, forward_mode: bool, readout: str = "last", num_layers: int = 1
) -> tuple[int, int, int]:
    """``(rows, columns, warps)`` of one program's tile for ``readout`` and depth."""
    if readout != "last" or (num_layers > 2 and (dtype, forward_mode) == (torch.float32, False)):
        return GRID_TILES[dtype, forward_mode]
    return TILES[dtype, forward_mode]


def _params(variances, like: torch.Tensor) -> torch.Tensor:
    """``(sw2, su2, sb2, init_var, pi, eps)`` in ``like``'s dtype, the kernels' ``P``."""
    constants = like.new_tensor([math.pi, torch.finfo(like.dtype).eps])
    return torch.stack([*variances[:RECURSION_VARIANCES], *constants])


@triton.jit
def _self_layer(
    previous,
    below,
    length,
    t,
    OUT,
    DOUT,
    seq,
    ok,
    n,
    T,
    layer,
    sw2,
    su2,
    sb2,
    pi,
    eps,
    RELU: tl.constexpr,
    KINDS: tl.constexpr,
    d_previous,
    d_below,
):
    """One layer of the self-term recursion at step ``t``: stores ``S(t, t)`` (1 past the
    length) and its derivatives along the variances ``KINDS`` numbers (0 past the length);
    returns the layer's ``V(t, t)`` and the tuple of its derivatives."""
    s = sw2 * previous + su2 * below + sb2
    inside = t < length
    tl.store(OUT + (layer * T + t) * n + seq, tl.where(inside, s, 1.0), mask=ok)
    if RELU:
        v = 0.5 * s
    else:
        prod = (1 + 2 * s) * (1 + 2 * s)
        root = tl.sqrt(prod)
        raw = 2 * s / root
        z = tl.minimum(tl.maximum(raw, eps - 1), 1 - eps)
        v = (2 / pi) * _math.asin(z)
    dv = ()
    for i in tl.static_range(len(KINDS)):
        ds = _plus_own(sw2 * d_previous[i] + su2 * d_below[i], previous, below, KINDS[i])
        offset = ((layer * T + t) * len(KINDS) + i) * n + seq
        tl.store(DOUT + offset, tl.where(inside, ds, 0.0), mask=ok)
        if RELU:
            dv = dv + (0.5 * ds,)
        else:
            d_raw = 2 * ds / root - (raw / (2 * prod)) * (4 * (1 + 2 * s)) * ds
            d_z = tl.where(raw == z, d_raw, 0.0)
            dv = dv + (d_z * ((2 / pi) / tl.sqrt((1 - z) * (1 + z))),)
    return v, dv


@triton.jit
def _self_kernel(
    X,
    LEN,
    P,
    OUT,
    DOUT,
    n,
    T,
    M: tl.constexpr,
    L: tl.constexpr,
    RELU: tl.constexpr,
    INIT: tl.constexpr,
    KINDS: tl.constexpr,
    BN: tl.constexpr,
):
    """X: (n, T, M) values; OUT: (L, T, n) the self terms from each start, 1 past each length;
    P and KINDS as for :func:`_cross_kernel`; DOUT (L, T, len(KINDS), n) their derivatives. A
    program walks ``BN`` sequences through all steps."""
    seq = tl.program_id(0) * BN + tl.arange(0, BN)
    ok = seq < n
    sw2 = tl.load(P + 0)
    su2 = tl.load(P + 1)
    sb2 = tl.load(P + 2)
    pi = tl.load(P + 4)
    eps = tl.load(P + 5)
    length = tl.load(LEN + seq, mask=ok, other=0)
    start = tl.zeros([BN], dtype=sw2.dtype)
    if INIT:
        start += tl.load(P + 3)
    zeros, d_start = (), ()  # the initial state's derivative: 1 along init_var
    for i in tl.static_range(len(KINDS)):
        zeros = zeros + (start * 0.0,)
        if INIT and KINDS[i] == 3:
            d_start = d_start + (start * 0.0 + 1.0,)
        else:
            d_start = d_start + (start * 0.0,)
    vs, ds = (), ()  # per layer: V(t, t) and its derivatives
    for _ in tl.static_range(L):
        vs, ds = vs + (start,), ds + (d_start,)
    for t in range(0, T):
        below = tl.zeros([BN], dtype=sw2.dtype)
        for c in tl.static_range(M):
            x = tl.load(X + (seq * T + t) * M + c, mask=ok, other=0.0)
            below += x * x
        below, d_below = below / M, zeros
        new_vs, new_ds = (), ()
        for layer in tl.static_range(L):
            below, d_below = _self_layer(
                vs[layer], below, length, t, OUT, DOUT, seq, ok, n, T, layer, sw2, su2, sb2, pi,
                eps, RELU, KINDS, ds[layer], d_below,
            )  # fmt: skip
            new_vs, new_ds = new_vs + (below,), new_ds + (d_below,)
        vs, ds = new_vs, new_ds


def triton_self_terms(
    values: torch.Tensor,
    lengths: torch.Tensor,
    variances,
    config: RecurrentConfig,
    directions=(),
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``recursion.self_terms`` (scalar variances) as one kernel launch: ``(N, T, L)``, and
    with ``directions`` also its derivatives along those variances, ``(N, T, L, P)``."""
    num_layers = config.num_layers
    n, steps, m = values.shape
    out = values.new_empty(num_layers, steps, n)
    d_out = values.new_empty(num_layers, steps, len(directions), n)
    block = 128
    _self_kernel[(triton.cdiv(n, block),)](
        values.contiguous(),
        lengths.to(torch.int32).contiguous(),
        _params(variances, values),
        out,
        d_out,
        n,
        steps,
        M=m,
        L=num_layers,
        RELU=config.dual.code == RELU_CODE,
        INIT=config.initial_state != InitialState.ZERO,
        KINDS=tuple(directions),
        BN=block,
        num_warps=4,
    )
    if directions:
        return out.permute(2, 1, 0), d_out.permute(3, 1, 0, 2)
    return out.permute(2, 1, 0)


def triton_cross(
    side1,
    side2,
    variances,
    out,
    order1,
    order2,
    config: RecurrentConfig,
    symmetric: bool,
    directions=(),
    weights=(),
) -> None:
    """The cross scan of sorted inputs (see ``fused._compiled_cross``; right-aligned for the
    last readout, aligned at their starts for the others) into ``out`` ``(planes, n1, n2)``:
    the Gram matrix and, in forward mode (each side carrying its self terms' ``h`` ``(L,
    steps, P, n)`` after their tables ``(L, steps, 2, n)``, see ``duals.side_tables``), its
    derivatives along the variances numbered ``directions``; for the geometric readout each
    side's ``weights`` ``(w,)`` or ``(w, dw/d decay)``, ``(n, steps)``, the latter adding the
    derivative along the decay as the last plane."""
    (x1, lengths1, ids1, selves1, *tangent1), (x2, lengths2, ids2, selves2, *tangent2) = (
        side1,
        side2,
    )
    n1, n2 = len(lengths1), len(lengths2)
    clock, m = x1.shape[-2:]
    bm, bn, warps = tiles(x1.dtype, bool(directions), config.readout.name, config.num_layers)
    grid = (triton.cdiv(n1, bm), triton.cdiv(n2, bn))
    inputs = (
        x1.permute(1, 2, 0).contiguous(),
        x2.permute(1, 2, 0).contiguous(),
        selves1.contiguous(),
        selves2.contiguous(),
        tangent1[0].contiguous() if directions else selves1,
        tangent2[0].contiguous() if directions else selves2,
        lengths1.to(torch.int32).contiguous(),
        lengths2.to(torch.int32).contiguous(),
        ids1.to(torch.int32).contiguous(),
        ids2.to(torch.int32).contiguous(),
    )
    constants = dict(
        M=m,
        L=config.num_layers,
        FROZEN=config.frozen_layers,
        RELU=config.dual.code == RELU_CODE,
        INIT_MODE=int(config.initial_state),
        SYMMETRIC=symmetric,
        KINDS=tuple(directions),
        BM=bm,
        BN=bn,
        num_warps=warps,
    )
    params = _params(variances, x1)
    if config.readout == LAST:
        _cross_kernel[grid](*inputs, params, out, order1, order2, n1, n2, clock, **constants)
        return
    working = -(-grid[0] * grid[1] // (1 + symmetric))  # tiles (K(x, x): about those above)
    groups = _diagonal_groups(clock - 1, working, out)
    diagonals, per_group = _diagonals(clock - 1, groups, x1.device)
    # Each group's sums on its own plane, added after (a fixed order: reproducible)
    part = out.unsqueeze(0) if groups == 1 else out.new_zeros(groups, *out.shape)
    tables = [torch.cat(w, -1).T.contiguous() for w in weights[:2]] or [params, params]
    _grid_kernel[(*grid, groups)](
        *inputs,
        *tables,
        diagonals,
        params,
        part,
        order1.contiguous(),
        order2.contiguous(),
        n1,
        n2,
        clock,
        per_group,
        WEIGHTS=len(weights[0]) if weights else 0,
        **constants,
    )
    while len(part) > 1:  # (by elementwise additions, the same for every pair: K(x, x) stays
        half = len(part) // 2  # exactly symmetric, which torch.sum's vectorised tails break)
        part = torch.cat([part[:half] + part[half : 2 * half], part[2 * half :]])
    if groups > 1:
        out.copy_(part[0])
    if not weights:  # the mean over each pair's time grid
        counts = torch.empty_like(lengths1), torch.empty_like(lengths2)
        counts[0][order1], counts[1][order2] = lengths1, lengths2
        out /= (counts[0][:, None] * counts[1][None, :]).clamp(min=1).to(out.dtype)


# Programs of the mean readout's kernel in flight at least, per multiprocessor (on the CPU,
# under Triton's interpreter: in all), and the bytes its groups' partial sums may take.
_PROGRAMS_PER_SM = 8
_INTERPRETED_PROGRAMS = 8
_GROUP_BYTES = 2**28


def _diagonal_groups(longest: int, working: int, out: torch.Tensor) -> int:
    """How many groups the ``2 T - 1`` diagonals of the time grid are split into, each run
    by its own programs: enough for ``working`` tiles to fill the GPU, within
    ``_GROUP_BYTES``."""
    if out.device.type == "cuda":
        count = torch.cuda.get_device_properties(out.device).multi_processor_count
        programs = count * _PROGRAMS_PER_SM
    else:
        programs = _INTERPRETED_PROGRAMS
    most = max(1, _GROUP_BYTES // (out.numel() * out.element_size()))
    return max(1, min(2 * longest - 1, -(-programs // working), most))


def _diagonals(longest: int, groups: int, device) -> tuple[torch.Tensor, int]:
    """The diagonals ``d = t' - t`` of a ``longest x longest`` time grid dealt to ``groups``
    groups, ``(groups, per_group)``, longest first and in a snake order (0, 1, ..., G - 1, G -
    1, ..., 0, ...) so that every group gets about as many cells; the padding ``longest + 1``
    is past every grid (no cells)."""
    by_length = [0] + [d for k in range(1, longest) for d in (k, -k)]
    per_group = -(-len(by_length) // groups)
    by_length += [longest + 1] * (per_group * groups - len(by_length))
    rounds = torch.tensor(by_length, dtype=torch.int32).view(per_group, groups)
    rounds[1::2] = rounds[1::2].flip(-1)
    return rounds.T.contiguous().to(device), per_group
