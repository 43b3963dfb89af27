"""The cross scan as one Triton kernel: a program per tile of pairs, state in registers.

Runs on CUDA, and on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``), which is
how the tests check it without a GPU. Up to :data:`MAX_LAYERS` layers (each layer's state is a
set of named registers); deeper networks use the compiled path.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import libdevice

from .fused import TRITON_MAX_LAYERS as MAX_LAYERS

if os.environ.get("TRITON_INTERPRET") == "1":
    # Triton's interpreter runs the kernel on NumPy arrays and has no libdevice: give it NumPy's
    # arccos and arcsin on the same tensors.
    from triton.runtime.interpreter import TensorHandle

    def _numpy_function(function):
        def apply(x):
            return tl.core.tensor(TensorHandle(function(x.handle.data), x.handle.dtype), x.type)

        return apply

    class _math:
        acos = staticmethod(_numpy_function(np.arccos))
        asin = staticmethod(_numpy_function(np.arcsin))

else:
    _math = libdevice


@triton.jit
def _dual(s, sa, sb, same, pi, eps, RELU: tl.constexpr):
    """``(V, V')`` and what their derivatives reuse: ``(norm, s / norm, cos, sin)`` (ReLU) or
    ``(prod, raw z, z, gap)`` (erf), as named in ``fused._dual``."""
    # Constants come in as values of the working dtype (``pi``, ``eps``): a Python float
    # literal would be a float32 constant, too coarse for float64.
    if RELU:
        norm = tl.sqrt(sa) * tl.sqrt(sb)
        raw = s / norm
        cos = tl.minimum(tl.maximum(raw, eps - 1), 1 - eps)
        sin = tl.sqrt((1 - cos) * (1 + cos))
        vd = (pi - _math.acos(cos)) / (2 * pi)
        v = norm * (sin / (2 * pi) + vd * cos)
        v = tl.where(same, 0.5 * s, v)
        vd = tl.where(same, 0.5, vd)
        return v, vd, norm, raw, cos, sin
    else:
        prod = (1 + 2 * sa) * (1 + 2 * sb)
        raw = 2 * s / tl.sqrt(prod)
        z = tl.minimum(tl.maximum(raw, eps - 1), 1 - eps)
        v = (2 / pi) * _math.asin(z)
        gap = prod - 4 * s * s
        vd = (4 / pi) / tl.sqrt(tl.maximum(gap, eps * prod))
        return v, vd, prod, raw, z, gap


@triton.jit
def _tangent(s, sa, sb, same, v, vd, a, raw, c, d, ds, dsa, dsb, pi, eps, RELU: tl.constexpr):
    """``(dV, dV')`` along each direction (the last axis) from ``ds``, ``dS(t, t)``, ``dS'(t',
    t')`` and :func:`_dual`'s values: ``fused._dual``'s formulas, clamps included."""
    s3, v3, vd3 = s[:, :, None], v[:, :, None], vd[:, :, None]
    inside = (raw == c)[:, :, None]
    if RELU:
        half_log = 0.5 * (dsa / sa[:, :, None] + dsb / sb[:, :, None])  # d log(norm)
        dcos_norm = tl.where(inside, ds - s3 * half_log, 0.0)  # norm * d(cos)
        dv = v3 * half_log + vd3 * dcos_norm
        dvd = dcos_norm * (0.5 / (pi * a * d))[:, :, None]
        same3 = same[:, :, None]
        return tl.where(same3, 0.5 * ds, dv), tl.where(same3, 0.0, dvd)
    else:
        dlog_prod = 2 * dsa / (1 + 2 * sa[:, :, None]) + 2 * dsb / (1 + 2 * sb[:, :, None])
        root = tl.sqrt(a)[:, :, None]
        dz = tl.where(inside, 2 * ds / root - 0.5 * raw[:, :, None] * dlog_prod, 0.0)
        dv = dz * ((2 / pi) / tl.sqrt((1 - c) * (1 + c)))[:, :, None]
        prod = a[:, :, None]
        q = tl.maximum(d, eps * a)  # as in _dual, from the same gap: equal where unclamped
        dq = tl.where((d == q)[:, :, None], prod * dlog_prod - 8 * s3 * ds, eps * prod * dlog_prod)
        return dv, (-0.5 * vd / q)[:, :, None] * dq


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
    eps,
    TRAINED: tl.constexpr,
    BELOW_TRAINED: tl.constexpr,
    RELU: tl.constexpr,
    DIRS: tl.constexpr,
    dv,
    dvd,
    dth,
    d_below,
    d_below_th,
    dsa,
    dsb,
    d_boundary,
    is_w,
    is_u,
    is_b,
    is_init,
):
    """One layer of one step: the new ``(V, V', Th)`` and, with ``DIRS`` direction slots (0:
    none), their derivatives ``(dV, dV', dTh)``, each ``(BM, BN, DIRS)``. ``is_w``, ...: per
    direction, 1 where it is along sw2 (su2, sb2, init_var), ``(1, 1, DIRS)``."""
    previous = tl.where(cont, v, boundary)
    s = sw2 * previous + su2 * below + sb2
    if DIRS > 0:
        cont3 = cont[:, :, None]
        ds = sw2 * tl.where(cont3, dv, d_boundary[:, :, None] * is_init)
        ds += previous[:, :, None] * is_w + below[:, :, None] * is_u + is_b + su2 * d_below
    if TRAINED:
        recurrent = tl.where(cont, vd * th, 0.0)
        if DIRS > 0:
            d_rec = tl.where(cont3, dvd * th[:, :, None] + vd[:, :, None] * dth, 0.0)
            dth = ds + sw2 * d_rec + recurrent[:, :, None] * is_w
            if BELOW_TRAINED:
                dth += su2 * d_below_th + below_th[:, :, None] * is_u
        th = s + sw2 * recurrent
        if BELOW_TRAINED:
            th = th + su2 * below_th
    v, vd, a, raw, c, d = _dual(s, sa, sb, same, pi, eps, RELU)
    if DIRS > 0:
        dv, dvd = _tangent(s, sa, sb, same, v, vd, a, raw, c, d, ds, dsa, dsb, pi, eps, RELU)
    return v, vd, th, dv, dvd, dth


@triton.jit
def _handed_up(dv, dvd, dth, vd, th, TRAINED: tl.constexpr):
    """A layer's ``d(V' Th)`` along each direction (what the layer above, or the readout,
    adds to ``dV``; 0 for an untrained layer)."""
    if TRAINED:
        return dvd * th[:, :, None] + vd[:, :, None] * dth
    return dv * 0.0


@triton.jit
def _selves(S, DS, layer, u, clock, n, idx, ok, ndir, p, DIRS: tl.constexpr, ROWS: tl.constexpr):
    """``S^layer(u, u)`` of sequences ``idx`` as a column (``ROWS``) or a row of the tile and,
    with directions, its derivatives ``(BM, 1, DIRS)`` or ``(1, BN, DIRS)``."""
    s = tl.load(S + (layer * clock + u) * n + idx, mask=ok, other=1.0)
    s = s[:, None] if ROWS else s[None, :]
    if DIRS > 0:
        offsets = ((layer * clock + u) * ndir + p[None, :]) * n + idx[:, None]
        ds = tl.load(DS + offsets, mask=ok[:, None] & (p[None, :] < ndir), other=0.0)
        ds = ds[:, None, :] if ROWS else ds[None, :, :]
    else:
        ds = s
    return s, ds


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
    UNIT,
    OUT,
    O1,
    O2,
    n1,
    n2,
    clock,
    ndir,
    M: tl.constexpr,
    L: tl.constexpr,
    FROZEN: tl.constexpr,
    RELU: tl.constexpr,
    INIT_MODE: tl.constexpr,
    SYMMETRIC: tl.constexpr,
    DIRS: tl.constexpr,
    SLOTS: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
):
    """X: (clock, M, n1) right-aligned values; SX: (L, clock, n1) self terms; LX lengths
    (sorted); IX ids of identical rows; P: (sw2, su2, sb2, init_var, pi, eps) in the working
    dtype. OUT: (1 + ndir, n1, n2), pair (a, b) of the sorted sets going to OUT[:, O1[a], O2[b]]:
    the Gram matrix and, with ``DIRS = SLOTS >= ndir`` direction slots (``DIRS = 0``,
    ``SLOTS = 1``: values only), its derivatives along ``ndir`` variances (forward mode): DSX
    (L, clock, ndir, n1) the self terms' derivatives, UNIT (4, SLOTS) whether each direction is
    along sw2, su2, sb2 or init_var."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    sw2 = tl.load(P + 0)
    su2 = tl.load(P + 1)
    sb2 = tl.load(P + 2)
    init_var = tl.load(P + 3)
    pi = tl.load(P + 4)
    eps = tl.load(P + 5)
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
    shorter = tl.minimum(tx[:, None], ty[None, :])
    need = tl.max(tl.max(shorter, axis=1), axis=0)  # steps the tile's longest pair needs
    keep = in_r[:, None] & in_c[None, :]
    if SYMMETRIC:  # a tile wholly below the diagonal is mirrored from above it
        below_diagonal = (pid_n + 1) * BN <= pid_m * BM
        need = tl.where(below_diagonal, 0, need)
        keep = keep & (rows[:, None] <= cols[None, :])  # each unordered pair once

    zero = tl.zeros((BM, BN), dtype=OUT.dtype.element_ty)
    v1, vd1, th1 = zero, zero, zero
    v2, vd2, th2 = zero, zero, zero
    v3, vd3, th3 = zero, zero, zero
    p = tl.arange(0, SLOTS)
    is_w = tl.load(UNIT + p)[None, None, :]
    is_u = tl.load(UNIT + SLOTS + p)[None, None, :]
    is_b = tl.load(UNIT + 2 * SLOTS + p)[None, None, :]
    is_init = tl.load(UNIT + 3 * SLOTS + p)[None, None, :]
    zero3 = tl.zeros((BM, BN, SLOTS), dtype=OUT.dtype.element_ty)
    dv1, dvd1, dth1 = zero3, zero3, zero3
    dv2, dvd2, dth2 = zero3, zero3, zero3
    dv3, dvd3, dth3 = zero3, zero3, zero3
    for k in range(0, need):
        remaining = need - k
        u = clock - remaining
        cont = shorter > remaining
        boundary = zero
        d_boundary = zero
        if INIT_MODE > 0:
            start = (tx[:, None] == remaining) & (ty[None, :] == remaining)
            if INIT_MODE == 1:
                start = start & same
            boundary = tl.where(start, init_var, zero)
            d_boundary = tl.where(start, 1.0, zero)
        below = zero
        for c in tl.static_range(M):
            xa = tl.load(X + (u * M + c) * n1 + rows, mask=in_r, other=0.0)
            yb = tl.load(Y + (u * M + c) * n2 + cols, mask=in_c, other=0.0)
            below += xa[:, None] * yb[None, :]
        below = below * (1.0 / M)
        sa, dsa = _selves(SX, DSX, 0, u, clock, n1, rows, in_r, ndir, p, DIRS, True)
        sb, dsb = _selves(SY, DSY, 0, u, clock, n2, cols, in_c, ndir, p, DIRS, False)
        v1, vd1, th1, dv1, dvd1, dth1 = _layer(
            v1, vd1, th1, below, zero, sa, sb, cont, boundary, same, sw2, su2, sb2, pi, eps,
            FROZEN < 1, False, RELU, DIRS,
            dv1, dvd1, dth1, zero3, zero3, dsa, dsb, d_boundary, is_w, is_u, is_b, is_init,
        )  # fmt: skip
        if L >= 2:
            up = _handed_up(dv1, dvd1, dth1, vd1, th1, FROZEN < 1)
            sa, dsa = _selves(SX, DSX, 1, u, clock, n1, rows, in_r, ndir, p, DIRS, True)
            sb, dsb = _selves(SY, DSY, 1, u, clock, n2, cols, in_c, ndir, p, DIRS, False)
            v2, vd2, th2, dv2, dvd2, dth2 = _layer(
                v2, vd2, th2, v1, vd1 * th1, sa, sb, cont, boundary, same, sw2, su2, sb2, pi,
                eps, FROZEN < 2, FROZEN < 1, RELU, DIRS,
                dv2, dvd2, dth2, dv1, up, dsa, dsb, d_boundary, is_w, is_u, is_b, is_init,
            )  # fmt: skip
        if L >= 3:
            up = _handed_up(dv2, dvd2, dth2, vd2, th2, FROZEN < 2)
            sa, dsa = _selves(SX, DSX, 2, u, clock, n1, rows, in_r, ndir, p, DIRS, True)
            sb, dsb = _selves(SY, DSY, 2, u, clock, n2, cols, in_c, ndir, p, DIRS, False)
            v3, vd3, th3, dv3, dvd3, dth3 = _layer(
                v3, vd3, th3, v2, vd2 * th2, sa, sb, cont, boundary, same, sw2, su2, sb2, pi,
                eps, FROZEN < 3, FROZEN < 2, RELU, DIRS,
                dv3, dvd3, dth3, dv2, up, dsa, dsb, d_boundary, is_w, is_u, is_b, is_init,
            )  # fmt: skip
    if L == 1:
        v, vd, th, dv, dvd, dth = v1, vd1, th1, dv1, dvd1, dth1
    elif L == 2:
        v, vd, th, dv, dvd, dth = v2, vd2, th2, dv2, dvd2, dth2
    else:
        v, vd, th, dv, dvd, dth = v3, vd3, th3, dv3, dvd3, dth3
    out = v + vd * th if FROZEN < L else v
    a = tl.load(O1 + rows, mask=in_r, other=0).to(tl.int64)
    b = tl.load(O2 + cols, mask=in_c, other=0).to(tl.int64)
    tl.store(OUT + a[:, None] * n2 + b[None, :], out, mask=keep)
    if SYMMETRIC:
        tl.store(OUT + b[None, :] * n1 + a[:, None], out, mask=keep)
    if DIRS > 0:
        d_out = dv + _handed_up(dv, dvd, dth, vd, th, FROZEN < L)
        plane = (1 + p.to(tl.int64))[None, None, :] * n1 * n2
        keep3 = keep[:, :, None] & (p < ndir)[None, None, :]
        tl.store(OUT + plane + a[:, None, None] * n2 + b[None, :, None], d_out, mask=keep3)
        if SYMMETRIC:
            tl.store(OUT + plane + b[None, :, None] * n1 + a[:, None, None], d_out, mask=keep3)


BLOCK = (32, 64)  # rows x columns of the tile of one program
# ... in forward mode, whose state is (1 + 3 P) x larger per pair
FORWARD_MODE_BLOCK = (16, 32)


def _params(variances, like: torch.Tensor) -> torch.Tensor:
    """``(sw2, su2, sb2, init_var, pi, eps)`` in ``like``'s dtype, the kernels' ``P``."""
    constants = like.new_tensor([math.pi, torch.finfo(like.dtype).eps])
    return torch.stack([*variances, *constants])


@triton.jit
def _self_layer(
    previous,
    below,
    length,
    t,
    OUT,
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
    DIRS: tl.constexpr,
    d_previous,
    d_below,
    DOUT,
    p,
    ndir,
    is_w,
    is_u,
    is_b,
):
    """One layer of the self-term recursion at step ``t``: stores ``S(t, t)`` (1 past the
    length) and, with ``DIRS`` direction slots, its derivatives ``(BN, DIRS)`` (0 past the
    length); returns the layer's ``V(t, t)`` and its derivatives."""
    s = sw2 * previous + su2 * below + sb2
    tl.store(OUT + (layer * T + t) * n + seq, tl.where(t < length, s, 1.0), mask=ok)
    if DIRS > 0:
        ds = sw2 * d_previous + su2 * d_below + is_b
        ds += previous[:, None] * is_w + below[:, None] * is_u
        offsets = ((layer * T + t) * ndir + p[None, :]) * n + seq[:, None]
        inside = (t < length)[:, None]
        tl.store(DOUT + offsets, tl.where(inside, ds, 0.0), mask=ok[:, None] & (p < ndir)[None, :])
    if RELU:
        v = 0.5 * s
        if DIRS > 0:
            d_previous = 0.5 * ds
    else:
        prod = (1 + 2 * s) * (1 + 2 * s)
        root = tl.sqrt(prod)
        raw = 2 * s / root
        z = tl.minimum(tl.maximum(raw, eps - 1), 1 - eps)
        v = (2 / pi) * _math.asin(z)
        if DIRS > 0:
            d_prod = (4 * (1 + 2 * s))[:, None] * ds
            d_raw = 2 * ds / root[:, None] - (raw / (2 * prod))[:, None] * d_prod
            d_z = tl.where((raw == z)[:, None], d_raw, 0.0)
            d_previous = d_z * ((2 / pi) / tl.sqrt((1 - z) * (1 + z)))[:, None]
    return v, d_previous


@triton.jit
def _self_kernel(
    X,
    LEN,
    P,
    UNIT,
    OUT,
    DOUT,
    n,
    T,
    ndir,
    M: tl.constexpr,
    L: tl.constexpr,
    RELU: tl.constexpr,
    INIT: tl.constexpr,
    DIRS: tl.constexpr,
    SLOTS: tl.constexpr,
    BN: tl.constexpr,
):
    """X: (n, T, M) values; OUT: (L, T, n) the self terms from each start, 1 past each length;
    P and UNIT as for :func:`_cross_kernel`; with ``DIRS`` direction slots DOUT (L, T, ndir, n)
    their derivatives. A program walks ``BN`` sequences through all steps."""
    seq = tl.program_id(0) * BN + tl.arange(0, BN)
    ok = seq < n
    sw2 = tl.load(P + 0)
    su2 = tl.load(P + 1)
    sb2 = tl.load(P + 2)
    pi = tl.load(P + 4)
    eps = tl.load(P + 5)
    length = tl.load(LEN + seq, mask=ok, other=0)
    p = tl.arange(0, SLOTS)
    is_w = tl.load(UNIT + p)[None, :]
    is_u = tl.load(UNIT + SLOTS + p)[None, :]
    is_b = tl.load(UNIT + 2 * SLOTS + p)[None, :]
    start = tl.zeros([BN], dtype=sw2.dtype)
    d_start = tl.zeros([BN, SLOTS], dtype=sw2.dtype)
    if INIT:
        start += tl.load(P + 3)
        d_start += tl.load(UNIT + 3 * SLOTS + p)[None, :]
    v0, v1, v2 = start, start, start
    d0, d1, d2 = d_start, d_start, d_start
    zero = tl.zeros([BN, SLOTS], dtype=sw2.dtype)
    for t in range(0, T):
        data = tl.zeros([BN], dtype=sw2.dtype)
        for c in tl.static_range(M):
            x = tl.load(X + (seq * T + t) * M + c, mask=ok, other=0.0)
            data += x * x
        data = data / M
        v0, d0 = _self_layer(
            v0, data, length, t, OUT, seq, ok, n, T, 0, sw2, su2, sb2, pi, eps, RELU,
            DIRS, d0, zero, DOUT, p, ndir, is_w, is_u, is_b,
        )  # fmt: skip
        if L >= 2:
            v1, d1 = _self_layer(
                v1, v0, length, t, OUT, seq, ok, n, T, 1, sw2, su2, sb2, pi, eps, RELU,
                DIRS, d1, d0, DOUT, p, ndir, is_w, is_u, is_b,
            )  # fmt: skip
        if L >= 3:
            v2, d2 = _self_layer(
                v2, v1, length, t, OUT, seq, ok, n, T, 2, sw2, su2, sb2, pi, eps, RELU,
                DIRS, d2, d1, DOUT, p, ndir, is_w, is_u, is_b,
            )  # fmt: skip


def _units(directions, like: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``UNIT`` (4, slots): 1 where direction ``p`` is along variance ``i``; the slots are
    the directions' count rounded up to a power of two (1 without directions)."""
    slots = 1 << (len(directions) - 1).bit_length() if directions else 1
    unit = like.new_zeros(4, slots)
    for p, i in enumerate(directions):
        unit[i, p] = 1.0
    return unit, slots


def triton_self_terms(
    values: torch.Tensor,
    lengths: torch.Tensor,
    variances,
    *,
    nonlinearity: str,
    num_layers: int,
    initial_state: str,
    directions=(),
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``functional._self_terms`` (scalar variances) as one kernel launch: ``(N, T, L)``, and
    with ``directions`` also its derivatives along those variances, ``(N, T, L, P)``."""
    if num_layers > MAX_LAYERS:
        raise ValueError(f"The Triton kernel handles up to {MAX_LAYERS} layers.")
    n, steps, m = values.shape
    out = values.new_empty(num_layers, steps, n)
    d_out = values.new_empty(num_layers, steps, len(directions), n)
    unit, slots = _units(directions, values)
    block = 128
    _self_kernel[(triton.cdiv(n, block),)](
        values.contiguous(),
        lengths.to(torch.int32).contiguous(),
        _params(variances, values),
        unit,
        out,
        d_out,
        n,
        steps,
        len(directions),
        M=m,
        L=num_layers,
        RELU=nonlinearity == "relu",
        INIT=initial_state != "zero",
        DIRS=slots if directions else 0,
        SLOTS=slots,
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
    *,
    nonlinearity,
    num_layers,
    frozen_layers,
    init_mode,
    symmetric,
    directions=(),
) -> None:
    """The cross scan of sorted, right-aligned inputs (see ``fused._compiled_cross``) into
    ``out`` ``(1 + P, n1, n2)``: the Gram matrix and, in forward mode (each side carrying its
    self terms' derivatives ``(L, steps, P, n)``), its derivatives along the variances numbered
    ``directions``."""
    if num_layers > MAX_LAYERS:
        raise ValueError(f"The Triton kernel handles up to {MAX_LAYERS} layers.")
    (x1, lengths1, ids1, selves1, *tangent1), (x2, lengths2, ids2, selves2, *tangent2) = (
        side1,
        side2,
    )
    n1, n2 = len(lengths1), len(lengths2)
    clock, m = x1.shape[-2:]
    unit, slots = _units(directions, x1)
    bm, bn = BLOCK if not directions else FORWARD_MODE_BLOCK
    grid = (triton.cdiv(n1, bm), triton.cdiv(n2, bn))
    _cross_kernel[grid](
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
        _params(variances, x1),
        unit,
        out,
        order1.contiguous(),
        order2.contiguous(),
        n1,
        n2,
        clock,
        len(directions),
        M=m,
        L=num_layers,
        FROZEN=frozen_layers,
        RELU=nonlinearity == "relu",
        INIT_MODE=init_mode,
        SYMMETRIC=symmetric,
        DIRS=slots if directions else 0,
        SLOTS=slots,
        BM=bm,
        BN=bn,
        num_warps=4,
    )
