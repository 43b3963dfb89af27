r"""Dual activations: :math:`V = E[\phi(u)\phi(v)]` and :math:`V' = E[\phi'(u)\phi'(v)]` for a
centred Gaussian pair with covariance :math:`[[k_{11}, k_{12}], [k_{12}, k_{22}]]`.

One :class:`Dual` per nonlinearity, in two forms written side by side: the tensor form
(:meth:`Dual.__call__`, any autograd) used by the tensor engine, and the table form
(:func:`side_tables`, :func:`table_dual`, with hand-written forward-mode tangents) used by the
compiled engine, which reads each side's self terms as precomputed tables so that no pair divides
by them. The Triton kernels keep one ``@triton.jit`` copy of the table form, selected by the same
integer :attr:`Dual.code`. A dual without a code runs in the tensor engine only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "ERF",
    "NONLINEARITIES",
    "RELU",
    "Dual",
    "Erf",
    "ReLU",
    "erf_dual",
    "relu_dual",
    "side_tables",
    "table_dual",
]

Mask = Tensor | bool

# The integer codes of the duals that the compiled and Triton engines implement.
RELU, ERF = 0, 1


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
    # Clamping one ulp inside [-1, 1] keeps arccos' slope finite; exactly (anti)parallel states
    # (cos = +-1) then take their exact duals below.
    raw = k12 / norm
    cos = raw.clamp(-1 + eps, 1 - eps)
    vd = (math.pi - torch.arccos(cos)) / (2 * math.pi)
    sin = ((1 - cos) * (1 + cos)).sqrt()
    v = norm * (sin / (2 * math.pi) + vd * cos)
    # Exactly (anti)parallel states of different sequences (e.g. a common prefix): 0, or the
    # duals of a self pair (V = k12 / 2, V' = 1/2).
    opposite = raw <= -1
    v, vd = torch.where(opposite, 0.0, v), torch.where(opposite, 0.0, vd)
    parallel = raw >= 1
    same = parallel if same is None or same is False else parallel | same
    return torch.where(same, k12 / 2, v), torch.where(same, 0.5, vd)


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


def _erf_self(k: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`erf_dual` of a self pair with covariance ``k``."""
    return (2 / math.pi) * torch.arcsin(2 * k / (1 + 2 * k)), (4 / math.pi) * (1 + 4 * k).rsqrt()


class Dual:
    """A nonlinearity's dual activations.

    Subclasses give :meth:`__call__` (the cross dual, any pair) and :meth:`self_pair` (a pair of
    a sequence with itself); :attr:`code` is the integer by which the compiled and Triton engines
    select their own implementation of the same formulas (``None``: the tensor engine only).
    """

    name: str = ""
    code: int | None = None

    def __call__(
        self, k12: Tensor, k11: Tensor, k22: Tensor, same: Mask | None = None
    ) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def self_pair(self, k: Tensor) -> tuple[Tensor, Tensor]:
        """``(V, V')`` of a pair of one input with itself, covariance ``k``."""
        return self(k, k, k, True)

    def self_slope(self, k: Tensor) -> Tensor:
        """The derivative of :meth:`self_pair`'s ``V`` in ``k`` (forward-mode self terms)."""
        return torch.func.jvp(lambda k: self.self_pair(k)[0], (k,), (torch.ones_like(k),))[1]

    def differentiable_in_sequences(self) -> Dual:
        """The dual to use where a sequence is differentiated (the default: this one)."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ReLU(Dual):
    """:func:`relu_dual`. (The RNTK has a kink at identical sequences, ``V'`` linear in the
    angle; the self-pair form gives the symmetric derivative there, the mean of the one-sided
    ones, as the general form's clamp does.)"""

    name, code = "relu", RELU

    def __call__(self, k12, k11, k22, same=None):
        return relu_dual(k12, k11, k22, same)

    def self_pair(self, k):
        return k / 2, torch.full_like(k, 0.5)

    def self_slope(self, k):
        return torch.full_like(k, 0.5)


class Erf(Dual):
    """:func:`erf_dual`. Its self-pair form has the derivatives of moving both sides together:
    right for the variances and for ``K(x_i, x_i)``, not for one of two identical sequences
    alone, so where a sequence is differentiated the general form is kept there
    (:meth:`differentiable_in_sequences`)."""

    name, code = "erf", ERF

    def __call__(self, k12, k11, k22, same=None):
        return erf_dual(k12, k11, k22, same)

    def self_pair(self, k):
        return _erf_self(k)

    def self_slope(self, k):  # d/dk (2/pi) arcsin(2k / (1 + 2k)) = V'_self / (1 + 2k)
        return (4 / math.pi) * (1 + 4 * k).rsqrt() / (1 + 2 * k)

    def differentiable_in_sequences(self) -> Dual:
        return _ErfOneSided()


class _ErfOneSided(Erf):
    """:func:`erf_dual` with its general form on identical sequences too (a mask ``same`` is
    ignored; ``True``, pairs of one sequence with itself, is kept)."""

    def __call__(self, k12, k11, k22, same=None):
        return erf_dual(k12, k11, k22, True if same is True else None)


NONLINEARITIES: dict[str, Dual] = {"relu": ReLU(), "erf": Erf()}


def side_tables(selves: Tensor, tangents: Tensor | None, code: int):
    """What the cross scan reads of one side's self terms ``S`` ``(L, steps, n)``, so that no
    pair divides by them: with ``c = S`` (ReLU) or ``1 + 2 S`` (erf), the tables ``(root,
    inv)``, ``(L, steps, 2, n)``: ``root = sqrt(c)`` (ReLU) or ``c`` (erf), ``inv = 1 /
    sqrt(c)``; and from the derivatives ``dS`` ``(L, steps, P, n)`` (or ``None``), ``h = d log
    sqrt(c)``."""
    relu = _is_relu(code)
    c = selves if relu else 1 + 2 * selves
    positive = c > 0  # c = 0 (ReLU, zero input, no bias): inv = 0 gives cos = 0, V = 0
    safe = torch.where(positive, c, 1.0)
    inv = torch.where(positive, safe.rsqrt(), 0.0)
    tables = torch.stack([c.sqrt() if relu else c, inv], 2)
    if tangents is None:
        return tables, None
    h = (0.5 if relu else 1.0) * tangents / safe.unsqueeze(2)
    return tables, torch.where(positive.unsqueeze(2), h, 0.0)


def table_dual(s, side_a, side_b, same, code: int, eps: float, tangents=()):
    """The cross dual of :meth:`Dual.__call__`, written so that the compiler fuses it, from the
    sides' tables ``(root, inv)`` (:func:`side_tables`): each quotient by a side's term a
    product with its reciprocal.

    Returns ``(V, V', derivatives)``: for each forward-mode direction ``(dS, h)`` in
    ``tangents``, ``h = h(t, t) + h(t', t')`` the sides' ``d log sqrt(c)``, ``(dV, dV')``, the
    clamps' derivatives included (zero where clamped). ``_triton._dual`` and
    ``_triton._tangent`` are the same.
    """
    (root_a, inv_a), (root_b, inv_b) = side_a, side_b
    inv_norm = inv_a * inv_b
    derivatives = []
    if _is_relu(code):
        raw = s * inv_norm
        cos = raw.clamp(-1 + eps, 1 - eps)
        sin = ((1 - cos) * (1 + cos)).sqrt()
        vd = (math.pi - torch.arccos(cos)) * (0.5 / math.pi)
        v = (root_a * root_b) * (sin * (0.5 / math.pi) + vd * cos)
        inside = raw == cos
        slope = (0.5 / math.pi) * inv_norm / sin if tangents else None  # dV' / (norm dcos)
        # exactly (anti)parallel states of different sequences, as relu_dual: the self-pair
        # form (V = S / 2, V' = 1/2, dV = dS / 2, dV' = 0), or 0. (Kept apart from ``same``:
        # merged into it, Inductor's CPU forward mode ran much slower; docs/performance.md.)
        parallel, opposite = raw >= 1, raw <= -1
        v = torch.where(parallel, 0.5 * s, torch.where(opposite, 0.0, v))
        vd = torch.where(parallel, 0.5, torch.where(opposite, 0.0, vd))
        for ds, h in tangents:  # h = d log(norm)
            dcos_norm = torch.where(inside, ds - s * h, 0.0)  # norm * d(cos)
            dv = v * h + vd * dcos_norm
            dv = torch.where(parallel, 0.5 * ds, torch.where(opposite, 0.0, dv))
            derivatives.append(
                (torch.where(same, 0.5 * ds, dv), torch.where(same, 0.0, dcos_norm * slope))
            )
        v = torch.where(same, 0.5 * s, v)
        vd = torch.where(same, 0.5, vd)
    else:
        prod = root_a * root_b
        raw = 2 * s * inv_norm
        gap = prod - 4 * s * s
        # self pairs from their self terms, c = 1 + 2S (erf_dual): z = 1 - 1/c, q = 2c - 1
        z = torch.where(same, 1 - inv_norm, raw.clamp(-1 + eps, 1 - eps))
        q = torch.where(same, root_a + root_b - 1, torch.maximum(gap, eps * prod))
        v = (2 / math.pi) * torch.arcsin(z)
        inv_root_q = q.rsqrt()
        vd = (4 / math.pi) * inv_root_q
        if tangents:
            arcsine = (2 / math.pi) * ((1 - z) * (1 + z)).rsqrt()
            dvd_dq = -0.5 * vd * inv_root_q * inv_root_q
        for ds, h in tangents:  # h = d log(prod) / 2, = dc / c on self pairs
            dz = torch.where(raw == z, 2 * ds * inv_norm - raw * h, 0.0)
            dq = torch.where(gap == q, 2 * prod * h - 8 * s * ds, 2 * eps * prod * h)
            dz = torch.where(same, h * inv_norm, dz)
            dq = torch.where(same, (root_a + root_b) * h, dq)
            derivatives.append((dz * arcsine, dvd_dq * dq))
    return v, vd, derivatives


def _is_relu(code: int) -> bool:
    """Whether the table form's ``code`` is ReLU's (else erf's; any other code is an error: the
    engines refuse such duals before they get here)."""
    if code not in (RELU, ERF):
        raise AssertionError(f"No table form for the dual with code {code!r}.")
    return code == RELU
