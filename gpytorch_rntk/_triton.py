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
    # Constants come in as values of the working dtype (``pi``, ``eps``): a Python float
    # literal would be a float32 constant, too coarse for float64.
    if RELU:
        norm = tl.sqrt(sa) * tl.sqrt(sb)
        cos = tl.minimum(tl.maximum(s / norm, eps - 1), 1 - eps)
        vd = (pi - _math.acos(cos)) / (2 * pi)
        v = norm * (tl.sqrt((1 - cos) * (1 + cos)) / (2 * pi) + vd * cos)
        v = tl.where(same, 0.5 * s, v)
        vd = tl.where(same, 0.5, vd)
    else:
        prod = (1 + 2 * sa) * (1 + 2 * sb)
        z = tl.minimum(tl.maximum(2 * s / tl.sqrt(prod), eps - 1), 1 - eps)
        v = (2 / pi) * _math.asin(z)
        vd = (4 / pi) / tl.sqrt(tl.maximum(prod - 4 * s * s, eps * prod))
    return v, vd


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
):
    s = sw2 * tl.where(cont, v, boundary) + su2 * below + sb2
    if TRAINED:
        th = s + sw2 * tl.where(cont, vd * th, 0.0)
        if BELOW_TRAINED:
            th = th + su2 * below_th
    v, vd = _dual(s, sa, sb, same, pi, eps, RELU)
    return v, vd, th


@triton.jit
def _cross_kernel(
    X,
    Y,
    SX,
    SY,
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
    BM: tl.constexpr,
    BN: tl.constexpr,
):
    """X: (clock, M, n1) right-aligned values; SX: (L, clock, n1) self terms; LX lengths
    (sorted); IX ids of identical rows; P: (sw2, su2, sb2, init_var, pi, eps) in the working
    dtype. OUT: (n1, n2), pair (a, b) of the sorted sets going to OUT[O1[a], O2[b]]."""
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
    for k in range(0, need):
        remaining = need - k
        u = clock - remaining
        cont = shorter > remaining
        boundary = zero
        if INIT_MODE > 0:
            start = (tx[:, None] == remaining) & (ty[None, :] == remaining)
            if INIT_MODE == 1:
                start = start & same
            boundary = tl.where(start, init_var, zero)
        below = zero
        for c in tl.static_range(M):
            xa = tl.load(X + (u * M + c) * n1 + rows, mask=in_r, other=0.0)
            yb = tl.load(Y + (u * M + c) * n2 + cols, mask=in_c, other=0.0)
            below += xa[:, None] * yb[None, :]
        below = below * (1.0 / M)
        sa = tl.load(SX + u * n1 + rows, mask=in_r, other=1.0)[:, None]
        sb = tl.load(SY + u * n2 + cols, mask=in_c, other=1.0)[None, :]
        v1, vd1, th1 = _layer(
            v1,
            vd1,
            th1,
            below,
            zero,
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
            FROZEN < 1,
            False,
            RELU,
        )
        if L >= 2:
            sa = tl.load(SX + (clock + u) * n1 + rows, mask=in_r, other=1.0)[:, None]
            sb = tl.load(SY + (clock + u) * n2 + cols, mask=in_c, other=1.0)[None, :]
            v2, vd2, th2 = _layer(
                v2,
                vd2,
                th2,
                v1,
                vd1 * th1,
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
                FROZEN < 2,
                FROZEN < 1,
                RELU,
            )
        if L >= 3:
            sa = tl.load(SX + (2 * clock + u) * n1 + rows, mask=in_r, other=1.0)[:, None]
            sb = tl.load(SY + (2 * clock + u) * n2 + cols, mask=in_c, other=1.0)[None, :]
            v3, vd3, th3 = _layer(
                v3,
                vd3,
                th3,
                v2,
                vd2 * th2,
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
                FROZEN < 3,
                FROZEN < 2,
                RELU,
            )
    if L == 1:
        out = v1 + vd1 * th1 if FROZEN < 1 else v1
    elif L == 2:
        out = v2 + vd2 * th2 if FROZEN < 2 else v2
    else:
        out = v3 + vd3 * th3 if FROZEN < 3 else v3
    a = tl.load(O1 + rows, mask=in_r, other=0).to(tl.int64)
    b = tl.load(O2 + cols, mask=in_c, other=0).to(tl.int64)
    tl.store(OUT + a[:, None] * n2 + b[None, :], out, mask=keep)
    if SYMMETRIC:
        tl.store(OUT + b[None, :] * n1 + a[:, None], out, mask=keep)


BLOCK = (32, 64)  # rows x columns of the tile of one program


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
):
    """One layer of the self-term recursion at step ``t``: stores ``S(t, t)`` (1 past the
    length) and returns the layer's ``V(t, t)``."""
    s = sw2 * previous + su2 * below + sb2
    tl.store(OUT + (layer * T + t) * n + seq, tl.where(t < length, s, 1.0), mask=ok)
    if RELU:
        v = 0.5 * s
    else:
        prod = (1 + 2 * s) * (1 + 2 * s)
        z = tl.minimum(tl.maximum(2 * s / tl.sqrt(prod), eps - 1), 1 - eps)
        v = (2 / pi) * _math.asin(z)
    return v


@triton.jit
def _self_kernel(
    X,
    LEN,
    P,
    OUT,
    n,
    T,
    M: tl.constexpr,
    L: tl.constexpr,
    RELU: tl.constexpr,
    INIT: tl.constexpr,
    BN: tl.constexpr,
):
    """X: (n, T, M) values; OUT: (L, T, n) the self terms from each start, 1 past each length;
    P as for :func:`_cross_kernel`. A program walks ``BN`` sequences through all steps."""
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
    v0 = start
    v1 = start
    v2 = start
    for t in range(0, T):
        data = tl.zeros([BN], dtype=sw2.dtype)
        for c in tl.static_range(M):
            x = tl.load(X + (seq * T + t) * M + c, mask=ok, other=0.0)
            data += x * x
        data = data / M
        v0 = _self_layer(v0, data, length, t, OUT, seq, ok, n, T, 0, sw2, su2, sb2, pi, eps, RELU)
        if L >= 2:
            v1 = _self_layer(v1, v0, length, t, OUT, seq, ok, n, T, 1, sw2, su2, sb2, pi, eps, RELU)
        if L >= 3:
            v2 = _self_layer(v2, v1, length, t, OUT, seq, ok, n, T, 2, sw2, su2, sb2, pi, eps, RELU)


def triton_self_terms(
    values: torch.Tensor,
    lengths: torch.Tensor,
    variances,
    *,
    nonlinearity: str,
    num_layers: int,
    initial_state: str,
) -> torch.Tensor:
    """``functional._self_terms`` (scalar variances) as one kernel launch: ``(N, T, L)``."""
    if num_layers > MAX_LAYERS:
        raise ValueError(f"The Triton kernel handles up to {MAX_LAYERS} layers.")
    n, steps, m = values.shape
    out = values.new_empty(num_layers, steps, n)
    params = _params(variances, values)
    block = 128
    _self_kernel[(triton.cdiv(n, block),)](
        values.contiguous(),
        lengths.to(torch.int32).contiguous(),
        params,
        out,
        n,
        steps,
        M=m,
        L=num_layers,
        RELU=nonlinearity == "relu",
        INIT=initial_state != "zero",
        BN=block,
        num_warps=4,
    )
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
) -> None:
    """The cross scan of sorted, right-aligned inputs (see ``fused._compiled_cross``)."""
    if num_layers > MAX_LAYERS:
        raise ValueError(f"The Triton kernel handles up to {MAX_LAYERS} layers.")
    (x1, lengths1, ids1, selves1), (x2, lengths2, ids2, selves2) = side1, side2
    n1, n2 = len(lengths1), len(lengths2)
    clock, m = x1.shape[-2:]
    bm, bn = BLOCK
    grid = (triton.cdiv(n1, bm), triton.cdiv(n2, bn))
    params = _params(variances, x1)
    _cross_kernel[grid](
        x1.permute(1, 2, 0).contiguous(),
        x2.permute(1, 2, 0).contiguous(),
        selves1.contiguous(),
        selves2.contiguous(),
        lengths1.to(torch.int32).contiguous(),
        lengths2.to(torch.int32).contiguous(),
        ids1.to(torch.int32).contiguous(),
        ids2.to(torch.int32).contiguous(),
        params,
        out,
        order1.contiguous(),
        order2.contiguous(),
        n1,
        n2,
        clock,
        M=m,
        L=num_layers,
        FROZEN=frozen_layers,
        RELU=nonlinearity == "relu",
        INIT_MODE=init_mode,
        SYMMETRIC=symmetric,
        BM=bm,
        BN=bn,
        num_warps=4,
    )
