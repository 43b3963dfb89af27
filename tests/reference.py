"""Per-pair reference implementation of the RNTK / RNN-NNGP kernels (docs/kernels.md).

A test oracle: it follows the recursions and variants of docs/kernels.md literally, one pair of
sequences at a time, with explicit Python loops over layers and over the full (T x T') grid of time
pairs (t, t'). Clarity is the point, not speed. All arithmetic is in Python floats (IEEE float64).

Indexing: Python index ``i`` stands for time step ``t = i + 1``. For each layer ``l`` we build the
self terms ``S^l(t, t)`` of each input (the same recursion with ``x' = x``) and the cross grids
``S^l(t, t')`` and ``Th^l(t, t')`` for every ``t = 1..T``, ``t' = 1..T'``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

Nonlinearity = Literal["relu", "erf"]
InitialState = Literal["zero", "per_input", "shared"]
Readout = Literal["last", "mean", "geometric"]
Grid = list[list[float]]  # grid[t - 1][t' - 1]


_QUADRATURE: dict[Any, Any] = {}  # dual()'s quadrature duals by nonlinearity


def dual(nonlinearity: Any, k11: float, k22: float, k12: float) -> tuple[float, float]:
    """Return ``(V, V')`` = ``(E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` for a 2x2 Gaussian.

    Args:
        nonlinearity: ``"relu"`` or ``"erf"`` (closed forms); any other name of the package's
            quadrature duals (``"tanh"``, ...), an elementwise torch function or a
            ``QuadratureDual``: the package's quadrature dual of that function, one pair at a
            time (its accuracy is checked on its own in tests/core/test_quadrature.py), with its
            1-D self-pair form where ``k11 == k22 == k12`` as for ReLU.
        k11: Variance of ``u`` (must be > 0 for ReLU).
        k22: Variance of ``v`` (must be > 0 for ReLU).
        k12: Covariance of ``u`` and ``v``.

    Returns:
        The pair ``(V, V')`` (docs/kernels.md, *Dual activations*).
    """
    if not (isinstance(nonlinearity, str) and nonlinearity in ("relu", "erf")):
        from gpytorch_rntk.functional import QuadratureDual

        quadrature = _QUADRATURE.get(nonlinearity)  # (built once: construction probes phi)
        if quadrature is None:
            if isinstance(nonlinearity, str):
                quadrature = QuadratureDual.named(nonlinearity)
            elif isinstance(nonlinearity, QuadratureDual):
                quadrature = nonlinearity
            else:
                quadrature = QuadratureDual(nonlinearity)
            _QUADRATURE[nonlinearity] = quadrature
        k = torch.tensor([k11, k22, k12], dtype=torch.float64)
        with torch.no_grad():
            same = k11 == k22 == k12
            v, vd = quadrature.self_pair(k[0]) if same else quadrature(k[2], k[0], k[1])
        return float(v), float(vd)
    if nonlinearity == "relu":
        if k11 == k22 == k12:  # exact self pair: closed form (arccos has infinite slope at 1)
            return k11 / 2.0, 0.5
        if k11 == 0.0 or k22 == 0.0:  # u or v is identically 0 (s_b = 0, zero steps): V = 0. V'
            return 0.0, 0.0  # is then irrelevant: it multiplies a Th that is also exactly 0.
        c = min(1.0, max(-1.0, k12 / math.sqrt(k11 * k22)))
        th = math.acos(c)
        v = math.sqrt(k11 * k22) / (2.0 * math.pi) * (math.sin(th) + (math.pi - th) * c)
        return v, (math.pi - th) / (2.0 * math.pi)
    if nonlinearity == "erf":
        a = (1.0 + 2.0 * k11) * (1.0 + 2.0 * k22)
        v = (2.0 / math.pi) * math.asin(2.0 * k12 / math.sqrt(a))
        return v, (4.0 / math.pi) / math.sqrt(a - 4.0 * k12**2)
    raise ValueError(f"unknown nonlinearity {nonlinearity!r}")


@dataclass(frozen=True)
class _Net:
    """Hyperparameters of the recursion (variances: the squared scales of docs/kernels.md)."""

    num_layers: int
    nonlinearity: str
    recurrent_var: float  # s_w^2
    input_var: float  # s_u^2 (of the layers above the first, with per-channel variances)
    bias_var: float  # s_b^2
    frozen_layers: int  # L_f
    channel_vars: tuple[float, ...] | None = None  # s_{u,c}^2 of the first layer's channels


def _initial_cross(x: torch.Tensor, xp: torch.Tensor, init_var: float, initial_state: str) -> float:
    """Return ``P^l(0, 0)``, the covariance of the initial states of ``x`` and ``x'``."""
    if initial_state == "zero":
        return 0.0
    if initial_state == "per_input":  # paper convention: s_h^2 1[x = x'] (same length and values)
        return init_var if (x.shape == xp.shape and torch.equal(x, xp)) else 0.0
    if initial_state == "shared":  # one initial state for all inputs: s_h^2 for every pair.
        # P(0, 0) enters only the cell (1, 1): with readout="last" that cell is on the aligned
        # diagonal only when T = T'; with readout="mean" it is used for every pair.
        return init_var
    raise ValueError(f"unknown initial_state {initial_state!r}")


def _grids(
    net: _Net,
    x: torch.Tensor,
    xp: torch.Tensor,
    p00: float,
    self_x: list[list[float]] | None,
    self_xp: list[list[float]] | None,
    aligned_only: bool,
) -> tuple[list[Grid], Grid]:
    """Run the layer recursion (docs/kernels.md) on the (T x T') time grid of one pair.

    Args:
        net: Hyperparameters.
        x: First sequence, shape ``(T, m)``.
        xp: Second sequence, shape ``(T', m)``.
        p00: ``P^l(0, 0)`` for this pair (the same for every layer).
        self_x: ``self_x[l - 1][t - 1] = S^l(t, t)`` of ``x``. ``None`` on the self pass
            (``x' = x``), which reads the self terms off the diagonal it is filling.
        self_xp: Same for ``x'`` (``None`` on the self pass).
        aligned_only: Compute only the cells with ``t' - t = T' - T``; every other cell stays NaN,
            so any dependency on them would poison the result. The self pass must use this (its
            diagonal only depends on the diagonal).

    Returns:
        ``(S, Th)`` with ``S[l - 1]`` the grid of ``S^l(t, t')`` for every layer and ``Th`` the
        grid of ``Th^L(t, t')`` of the last layer.
    """
    T, Tp, m = x.shape[0], xp.shape[0], x.shape[1]
    s_layers: list[Grid] = []
    th_below: Grid = []  # Th^{l-1}
    for layer in range(1, net.num_layers + 1):
        s = [[math.nan] * Tp for _ in range(T)]
        th = [[math.nan] * Tp for _ in range(T)]
        grids = [*s_layers, s]  # S^1 .. S^l

        def selfs(lay: int, grids: list[Grid] = grids) -> tuple[list[float], list[float]]:
            """Self terms ``S^lay(t, t)`` of ``x`` and ``x'``."""
            if self_x is None or self_xp is None:
                diag = [grids[lay - 1][k][k] for k in range(T)]
                return diag, diag
            return self_x[lay - 1], self_xp[lay - 1]

        for i in range(T):
            for j in range(Tp):
                if aligned_only and j - i != Tp - T:
                    continue
                # Recurrent term P^l(t-1, t'-1) and the V' that multiplies Th^l(t-1, t'-1).
                if i >= 1 and j >= 1:
                    sx, sxp = selfs(layer)
                    p, dp = dual(net.nonlinearity, sx[i - 1], sxp[j - 1], s[i - 1][j - 1])
                    th_rec = th[i - 1][j - 1]
                else:  # P(0, 0) = p00; P(0, t'-1) = P(t-1, 0) = 0; no recurrent Th term
                    p, dp, th_rec = (p00 if i == j == 0 else 0.0), 0.0, 0.0
                # Input term I^l(t, t') and the V' that multiplies Th^{l-1}(t, t').
                if layer == 1:
                    if net.channel_vars is None:
                        inp = net.input_var * float(torch.dot(x[i], xp[j])) / m
                    else:  # each channel's input weights with a variance of their own (ARD)
                        pairs = zip(net.channel_vars, x[i], xp[j], strict=True)
                        inp = sum(v * float(a * b) for v, a, b in pairs) / m
                    dinp, th_in = 0.0, 0.0
                else:
                    sx, sxp = selfs(layer - 1)
                    inp, dinp = dual(net.nonlinearity, sx[i], sxp[j], s_layers[-1][i][j])
                    inp *= net.input_var
                    th_in = th_below[i][j]
                s[i][j] = net.recurrent_var * p + inp + net.bias_var
                # Th^l = [l trained] (S^l + s_w^2 V' Th^l_prev) + s_u^2 V' Th^{l-1}, where a frozen
                # layer's Th is 0 (no trained parameter at or below it). Equivalent to the path
                # rules of frozen layers (docs/kernels.md, *Variants*); with L_f = 0 it is exactly
                # the Th recursion (*The NTK recursion*).
                own = (
                    s[i][j] + net.recurrent_var * dp * th_rec if layer > net.frozen_layers else 0.0
                )
                th[i][j] = own + net.input_var * dinp * th_in
        s_layers.append(s)
        th_below = th
    return s_layers, th_below


def reference_kernel(
    x: torch.Tensor,
    xp: torch.Tensor,
    *,
    num_layers: int,
    nonlinearity: Nonlinearity,
    recurrent_var: float,
    input_var: float,
    bias_var: float,
    init_var: float = 0.0,
    initial_state: InitialState = "zero",
    ntk: bool = True,
    frozen_layers: int = 0,
    readout: Readout = "last",
    bidirectional: bool = False,
    aligned_only: bool = False,
    readout_decay: float = 1.0,
) -> float:
    """Infinite-width kernel of one pair of sequences, literally per docs/kernels.md.

    Args:
        x: First sequence, shape ``(T, m)``.
        xp: Second sequence, shape ``(T', m)``; ``T'`` may differ from ``T``.
        num_layers: Depth ``L >= 1``.
        nonlinearity: ``"relu"`` or ``"erf"``.
        recurrent_var: ``s_w^2``.
        input_var: ``s_u^2``, or a sequence of ``m`` per-channel variances ``s_{u,c}^2`` of the
            first layer's input weights (ARD); the layers above then use their mean.
        bias_var: ``s_b^2``.
        init_var: ``s_h^2`` (ignored when ``initial_state == "zero"``).
        initial_state: ``"zero"`` (no initial-state term), ``"per_input"`` (paper convention,
            ``P(0, 0) = s_h^2 1[x = x']``) or ``"shared"`` (``P(0, 0) = s_h^2``, which the last
            readout uses only when ``T = T'``).
        ntk: Return the RNTK ``Th(x, x')`` if True, else the NNGP kernel ``K(x, x')``.
        frozen_layers: Number ``L_f`` of leading layers excluded from training (``0..L``).
        readout: ``"last"`` (last step), ``"mean"`` (average pooling over all time pairs) or
            ``"geometric"`` (step ``t`` of ``T`` weighted ``readout_decay^(T - t)``, normalised
            per sequence; the sum over all time pairs of both steps' weights times the readout).
        bidirectional: Add the kernel of the time-reversed sequences.
        aligned_only: Testing aid for ``readout="last"``: compute only the aligned diagonal
            ``t' - t = T' - T`` of each cross grid (others stay NaN). Must not change the result.

    Returns:
        The kernel value as a Python float.
    """
    if not 0 <= frozen_layers <= num_layers:
        raise ValueError("frozen_layers must be in [0, num_layers]")
    if aligned_only and readout != "last":
        raise ValueError("aligned_only only makes sense with readout='last'")
    x, xp = x.to(torch.float64), xp.to(torch.float64)
    if bidirectional:
        kw: dict[str, Any] = {
            "num_layers": num_layers,
            "nonlinearity": nonlinearity,
            "ntk": ntk,
            "recurrent_var": recurrent_var,
            "input_var": input_var,
            "bias_var": bias_var,
            "init_var": init_var,
            "initial_state": initial_state,
            "readout": readout,
            "frozen_layers": frozen_layers,
            "aligned_only": aligned_only,
            "readout_decay": readout_decay,
        }
        return reference_kernel(x, xp, **kw) + reference_kernel(x.flip(0), xp.flip(0), **kw)

    channel_vars = None
    if not isinstance(input_var, (int, float)):
        channel_vars = tuple(float(v) for v in input_var)
        input_var = sum(channel_vars) / len(channel_vars)
    net = _Net(
        num_layers, nonlinearity, recurrent_var, input_var, bias_var, frozen_layers, channel_vars
    )
    T, Tp = x.shape[0], xp.shape[0]
    # Self terms: the same recursion with x' = x (its diagonal t = t' only needs the diagonal).
    s_xx, _ = _grids(net, x, x, _initial_cross(x, x, init_var, initial_state), None, None, True)
    s_pp, _ = _grids(net, xp, xp, _initial_cross(xp, xp, init_var, initial_state), None, None, True)
    self_x = [[g[k][k] for k in range(T)] for g in s_xx]
    self_xp = [[g[k][k] for k in range(Tp)] for g in s_pp]
    p00 = _initial_cross(x, xp, init_var, initial_state)
    s, th = _grids(net, x, xp, p00, self_x, self_xp, aligned_only)
    keep_th = ntk and frozen_layers < num_layers  # readout's V' Th term only if L_f < L

    def out(i: int, j: int) -> float:
        """Readout kernel at time pair ``(i + 1, j + 1)``: ``V`` or ``V + V' Th^L``."""
        v, dv = dual(nonlinearity, self_x[-1][i], self_xp[-1][j], s[-1][i][j])
        return v + dv * th[i][j] if keep_th else v

    if readout == "last":
        return out(T - 1, Tp - 1)
    if readout == "mean":
        return sum(out(i, j) for i in range(T) for j in range(Tp)) / (T * Tp)
    if readout == "geometric":
        w = [readout_decay ** (T - 1 - i) for i in range(T)]
        wp = [readout_decay ** (Tp - 1 - j) for j in range(Tp)]
        total = sum(w[i] * wp[j] * out(i, j) for i in range(T) for j in range(Tp))
        return total / (sum(w) * sum(wp))
    raise ValueError(f"unknown readout {readout!r}")


def reference_gram(
    xs: Sequence[torch.Tensor], xps: Sequence[torch.Tensor], **kw: Any
) -> torch.Tensor:
    """Gram matrix ``[reference_kernel(xs[i], xps[j], **kw)]`` in float64.

    Args:
        xs: Sequences of shape ``(T_i, m)``.
        xps: Sequences of shape ``(T'_j, m)``.
        **kw: Keyword arguments of :func:`reference_kernel`.

    Returns:
        A ``(len(xs), len(xps))`` float64 tensor.
    """
    rows = [[reference_kernel(a, b, **kw) for b in xps] for a in xs]
    return torch.tensor(rows, dtype=torch.float64).reshape(len(xs), len(xps))
