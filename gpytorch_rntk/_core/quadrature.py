r"""Dual activations of any smooth elementwise nonlinearity, by numerical quadrature.

:class:`QuadratureDual` computes :math:`V = E[\phi(u)\phi(v)]` and :math:`V' = E[\phi'(u)
\phi'(v)]` for the centred Gaussian pair of covariance :math:`[[k_{11}, k_{12}], [k_{12},
k_{22}]]` by a product rule on :math:`u = \sqrt{k_{11}}\, z_1`, :math:`v = \sqrt{k_{22}}\,(\rho
z_1 + \sqrt{1 - \rho^2}\, z_2)` with :math:`z_1, z_2` standard normal (the approach of Neural
Tangents' ``ElementwiseNumerical``), and the self pairs by the 1-D rule.

The rule. Gauss-Hermite nodes are spread for a Gaussian of unit scale, and converge slowly once
:math:`\phi(\sqrt{k} z)` changes on a scale much finer than :math:`z`'s: for tanh, 64 nodes per
dimension still miss :math:`V` by :math:`10^{-4}` of its scale at :math:`k = 10`. Each dimension
here is instead the trapezoidal rule in :math:`t` after :math:`z = c + \alpha \sinh t`
(exponentially convergent for analytic integrands), which puts nodes densely where
:math:`\phi` bends (scale :math:`\alpha = \min(1, 2/\text{std})`) and sparsely in the tails. The
inner rule's centre :math:`c` moves toward where :math:`v` crosses 0 for the outer node (0.7 of the
way, at most 4), and the weights of each rule are corrected to integrate :math:`1, z, z^2`
exactly, as Gauss-Hermite rules do. With :data:`DEFAULT_ORDER` nodes per dimension the duals of
tanh, sigmoid, GELU, SiLU, softplus and erf were measured within about :math:`10^{-9}` of their
scale :math:`\sqrt{V(k_{11}) V(k_{22})}` in float64 for variances up to 30 and every correlation
(``tests/core/test_quadrature.py``; :doc:`/kernels`, Any nonlinearity).

Derivatives. ``V`` and ``V'`` are autograd functions whose derivatives are again expectations,
by Price's theorem: :math:`\partial_{k_{12}} E[f(u) g(v)] = E[f'(u) g'(v)]`,
:math:`\partial_{k_{11}} E[f(u) g(v)] = \tfrac12 E[f''(u) g(v)]`, computed by the same rule (so
that every order of reverse and forward mode works, ``torch.func`` transforms included, and stays
finite at :math:`\rho = \pm 1` and :math:`k = 0`); the quadrature's nodes are constants. The
derivatives of :math:`\phi` are in closed form for the named activations (:data:`ACTIVATIONS`'
jets) and come from forward-mode autograd for a user's function. The pairs run in chunks, so that
the memory stays about :data:`CHUNK_ELEMENTS` values beyond the pair states whatever the order,
and autograd keeps only the pair states.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional

from .duals import NONLINEARITIES, Dual

__all__ = [
    "ACTIVATIONS",
    "CHUNK_ELEMENTS",
    "DEFAULT_ORDER",
    "QuadratureDual",
    "as_dual",
    "nonlinearity_names",
]

# Nodes per dimension of the default rule (41 x 41 per pair; see the module docstring).
DEFAULT_ORDER = 41
# Values (pairs x nodes) computed at once: bounds the memory of a dual whatever the order.
CHUNK_ELEMENTS = 2**20
# The rule's constants (module docstring): the scale of the nodes relative to the activation's
# (where phi bends, in units of the pre-activation), how far the inner rule's centre follows the
# point where v crosses 0 and at most how far (in standard deviations), and the trapezoidal step
# in t at order n, 1.14 / sqrt(n - 1), so that the range sinh(t_max) and the resolution both
# grow with the order (0.18 and +-3.6 at n = 41).
_BEND, _FOLLOW, _REACH, _STEP, _COVER = 2.0, 0.7, 4.0, 1.14, 6.5


def _softplus(x: Tensor) -> Tensor:
    """``log(1 + e^x)`` without torch's linear cut-off at ``x > 20`` (off by ``e^{-20}``)."""
    return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))


def _gelu(x: Tensor) -> Tensor:
    return functional.gelu(x)  # (exact, erf-based: approximate="none")


# Jets: ``jet(x, n)`` is ``[phi(x), phi'(x), ..., phi^(n)(x)]`` in closed form (the duals read up
# to the 3rd derivative for first-order gradients, the 5th for second-order ones).


def _horner(coefficients: list[float], y: Tensor) -> Tensor:
    out = torch.full_like(y, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        out = out * y + c
    return out


def _ode_jet(y: Tensor, slope: list[float], n: int) -> list[Tensor]:
    """The jet of ``y = phi(x)`` where ``phi' = slope(phi)``, a polynomial (coefficients from
    the constant up): each derivative is a polynomial in ``y``, ``P_{k+1} = P_k'(y) slope(y)``."""
    polynomial, jet = [0.0, 1.0], [y]
    for _ in range(n):
        derivative = [i * c for i, c in enumerate(polynomial)][1:]
        polynomial = [0.0] * (len(derivative) + len(slope) - 1)
        for i, a in enumerate(derivative):
            for j, b in enumerate(slope):
                polynomial[i + j] += a * b
        jet.append(_horner(polynomial, y))
    return jet


def _hermite(x: Tensor, n: int, scale: float) -> list[Tensor]:
    """Hermite polynomials ``[H_0, ..., H_n]``: ``H_{m+1} = scale (x H_m - m H_{m-1})``
    (``scale = 2``: the physicists' ones, ``d^m e^{-x^2} = (-1)^m H_m e^{-x^2}``; 1: the
    probabilists', ``He_m``)."""
    out = [torch.ones_like(x), scale * x][: n + 1]
    for m in range(1, n):
        out.append(scale * (x * out[m] - m * out[m - 1]))
    return out


def _tanh_jet(x: Tensor, n: int) -> list[Tensor]:
    return _ode_jet(torch.tanh(x), [1.0, 0.0, -1.0], n)


def _sigmoid_jet(x: Tensor, n: int) -> list[Tensor]:
    return _ode_jet(torch.sigmoid(x), [0.0, 1.0, -1.0], n)


def _silu_jet(x: Tensor, n: int) -> list[Tensor]:
    s = _sigmoid_jet(x, n)  # (x s)^(k) = x s^(k) + k s^(k-1)
    return [x * s[0]] + [x * s[k] + k * s[k - 1] for k in range(1, n + 1)]


def _softplus_jet(x: Tensor, n: int) -> list[Tensor]:
    return [_softplus(x)] + (_sigmoid_jet(x, n - 1) if n else [])


def _erf_jet(x: Tensor, n: int) -> list[Tensor]:
    gauss = (2 / math.sqrt(math.pi)) * torch.exp(-x.square())
    hermite = _hermite(x, max(n - 1, 0), 2.0)
    return [torch.erf(x)] + [(-1) ** (k - 1) * hermite[k - 1] * gauss for k in range(1, n + 1)]


def _gelu_jet(x: Tensor, n: int) -> list[Tensor]:
    """``x Phi(x)``: ``Phi + x phi``, then ``(-1)^k (He_{k-2} - He_k) phi`` (``phi`` the normal
    density, ``d^m phi = (-1)^m He_m phi``; ``gelu'' = (2 - x^2) phi``)."""
    density = torch.exp(-0.5 * x.square()) / math.sqrt(2 * math.pi)
    jet = [_gelu(x), 0.5 * torch.erfc(-x / math.sqrt(2)) + x * density][: n + 1]
    hermite = _hermite(x, n, 1.0)
    jet += [(-1) ** k * (hermite[k - 2] - hermite[k]) * density for k in range(2, n + 1)]
    return jet


def _relu_jet(x: Tensor, n: int) -> list[Tensor]:
    return [torch.relu(x), (x > 0).to(x.dtype)][: n + 1] + [torch.zeros_like(x)] * (n - 1)


# name -> (phi, its jet)
ACTIVATIONS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor, int], list]]] = {
    "tanh": (torch.tanh, _tanh_jet),
    "sigmoid": (torch.sigmoid, _sigmoid_jet),
    "gelu": (_gelu, _gelu_jet),
    "silu": (functional.silu, _silu_jet),
    "softplus": (_softplus, _softplus_jet),
    # the closed forms serve these names; these are their quadrature duals, for comparison
    "relu": (torch.relu, _relu_jet),
    "erf": (torch.erf, _erf_jet),
}
# Callables that name a built-in activation (``nonlinearity=torch.tanh`` is ``"tanh"``).
_BUILT_IN = {
    torch.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    functional.gelu: "gelu",
    functional.silu: "silu",
    functional.softplus: "softplus",
    torch.relu: "relu",
    functional.relu: "relu",
    torch.erf: "erf",
    torch.special.erf: "erf",
}


def nonlinearity_names() -> list[str]:
    """The nonlinearities known by name: the closed forms, then the quadrature duals."""
    return list(NONLINEARITIES) + [n for n in ACTIVATIONS if n not in NONLINEARITIES]


def as_dual(nonlinearity) -> Dual:
    """The :class:`~.duals.Dual` of a ``nonlinearity`` option: a name (the closed forms of
    :data:`~.duals.NONLINEARITIES` first, then :data:`ACTIVATIONS`), a :class:`~.duals.Dual`
    (e.g. a :class:`QuadratureDual` of another order), or an elementwise torch function (a
    built-in one by its name, any other by quadrature)."""
    if isinstance(nonlinearity, Dual):
        return nonlinearity
    if isinstance(nonlinearity, str):
        if nonlinearity in NONLINEARITIES:
            return NONLINEARITIES[nonlinearity]
        if nonlinearity in ACTIVATIONS:
            return QuadratureDual.named(nonlinearity)
        raise ValueError(
            f"Unknown nonlinearity {nonlinearity!r}; choose one of {nonlinearity_names()} or "
            "pass an elementwise torch function (e.g. nonlinearity=torch.tanh)."
        )
    if callable(nonlinearity):
        name = _built_in_name(nonlinearity)
        return as_dual(name) if name is not None else QuadratureDual(nonlinearity)
    raise TypeError(
        f"nonlinearity must be a name ({', '.join(nonlinearity_names())}), an elementwise torch "
        f"function or a QuadratureDual, got {type(nonlinearity).__name__} {nonlinearity!r}."
    )


def _built_in_name(function) -> str | None:
    try:
        return _BUILT_IN.get(function)
    except TypeError:  # an unhashable callable
        return None


class QuadratureDual(Dual):
    r"""The dual activations of an elementwise function ``phi`` by quadrature: :math:`V` and
    :math:`V'` by a mapped trapezoidal product rule, their derivatives of every order by Price's
    theorem (see ``gpytorch_rntk._core.quadrature`` and :doc:`/kernels`, Any nonlinearity).

    With the default order the duals of smooth activations are within about :math:`10^{-9}` of
    their scale in float64 for pre-activation variances up to 30 (measured for tanh, sigmoid,
    GELU, SiLU, softplus and erf); a higher order reaches larger variances. Only the tensor
    engine runs them.

    Args:
        phi: An elementwise torch function, smooth, and differentiable by torch's forward-mode
            autograd (:func:`torch.func.jvp`) where ``derivative`` is not given (``phi(x)[i]``
            depends on ``x[i]`` only; its derivatives give :math:`V'` and the gradients). A kink
            (ReLU) or jump makes the rule converge slowly, and the gradients of :math:`V'` then
            miss the kink's point mass.
        name: Shown in messages and ``repr``; default ``phi.__name__``.
        order: Nodes per dimension (default 41): a cross dual evaluates ``phi`` and ``phi'`` at
            ``order**2`` points per pair, a self pair at ``order``.
        derivative: ``phi'`` in closed form (default: by forward-mode autograd; the higher
            derivatives, for gradients, by forward-mode autograd of it).

    Raises:
        TypeError: If ``phi`` does not map a float tensor to a float tensor of the same shape,
            elementwise and differentiably, with finite values (probed once on a few values).
        ValueError: If ``order`` is not an integer of at least 2.

    Example:
        >>> import torch
        >>> from gpytorch_rntk.functional import QuadratureDual
        >>> dual = QuadratureDual(lambda x: torch.sin(x) + x / 2, name="sine", order=61)
        >>> k = torch.tensor([0.5, 2.0], dtype=torch.float64)
        >>> v, slope = dual(0.3 * k, k, k.flip(0))  # (k12, k11, k22)
        >>> v.shape
        torch.Size([2])
    """

    code = None  # the tensor engine only

    def __init__(
        self,
        phi: Callable[[Tensor], Tensor],
        *,
        name: str | None = None,
        order: int = DEFAULT_ORDER,
        derivative: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if not callable(phi):
            raise TypeError(f"phi must be an elementwise torch function, got {phi!r}.")
        self._setup(phi, name, order, derivative)
        _probe(self)

    def _setup(self, phi, name, order, derivative, jet=None) -> None:
        if isinstance(order, bool) or not isinstance(order, int) or order < 2:
            raise ValueError(f"order must be an integer of at least 2, got {order!r}.")
        self.phi, self.order, self.derivative, self.jet = phi, order, derivative, jet
        self.name = name if name is not None else getattr(phi, "__name__", type(phi).__name__)
        self.one_sided = False

    @classmethod
    def named(cls, name: str, order: int = DEFAULT_ORDER) -> QuadratureDual:
        """The quadrature dual of a named activation of :data:`ACTIVATIONS` (including relu and
        erf, whose closed forms serve their names elsewhere)."""
        phi, jet = ACTIVATIONS[name]
        dual = object.__new__(cls)
        dual._setup(phi, name, order, None, jet)  # (known good: no probe)
        return dual

    def __call__(self, k12, k11, k22, same=None):
        if same is True:
            return self.self_pair(k12)
        v, vd = _Moments.apply(self, _DUALS, k12, k11, k22)
        if same is not None and same is not False and not self.one_sided:
            # identical sequences from their self terms (as erf_dual: no drift of the cross
            # state from them); their derivatives are those of moving both sides together
            v_self, vd_self = self.self_pair(k11)
            v, vd = torch.where(same, v_self, v), torch.where(same, vd_self, vd)
        return v, vd

    def self_pair(self, k):
        return _SelfMoments.apply(self, _DUALS, k)

    def differentiable_in_sequences(self) -> Dual:
        """The general form on identical sequences too (one of them may move alone)."""
        if self.one_sided:
            return self
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__, one_sided=True)
        return other

    def _key(self) -> tuple:
        # the functions by identity (a callable object need not be hashable)
        functions = (id(self.phi), id(self.derivative), id(self.jet))
        return (*functions, self.name, self.order, self.one_sided)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"QuadratureDual({self.name!r}, order={self.order})"

    def derivatives(self, x: Tensor, orders) -> dict[int, Tensor]:
        """``{p: phi^(p)(x)}`` for each ``p`` in ``orders``: a named activation's jet, else by
        forward-mode autograd (:func:`torch.func.jvp`, which composes with the ``torch.func``
        transforms a kernel may run under; ``derivative`` for the first), two consecutive orders
        at once."""
        if self.jet is not None:
            jet = self.jet(x, max(orders))
            return {p: jet[p] for p in orders}
        out: dict[int, Tensor] = {}
        for p in sorted(set(orders)):
            if p in out:
                continue
            if p + 1 in orders and not (p == 0 and self.derivative is not None):
                out[p], out[p + 1] = _slope(self._nth(p), x)
            else:
                out[p] = self._nth(p)(x)
        return out

    def _nth(self, p: int) -> Callable[[Tensor], Tensor]:
        """``phi^(p)`` as a function."""
        if p == 0:
            return self.phi
        if p == 1 and self.derivative is not None:
            return self.derivative
        below = self._nth(p - 1)
        return lambda x: _slope(below, x)[1]


def _slope(f: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """``(f(x), f'(x))`` of an elementwise ``f``: a forward-mode derivative along ones."""
    return torch.func.jvp(f, (x,), (torch.ones_like(x),))


def _probe(dual: QuadratureDual) -> None:
    """Call ``phi`` (and its derivative) once on a few values: a clear error at construction
    instead of deep inside a kernel."""
    x = torch.linspace(-3.0, 3.0, 7, dtype=torch.float64)
    what = f"nonlinearity {dual.name!r}"
    try:
        y = dual.phi(x)
    except Exception as error:
        raise TypeError(f"The {what} failed on a float64 tensor: {error!r}.") from error
    if not isinstance(y, Tensor) or y.shape != x.shape or not y.is_floating_point():
        got = f"shape {tuple(y.shape)}, {y.dtype}" if isinstance(y, Tensor) else type(y).__name__
        raise TypeError(
            f"The {what} must map a float tensor to a float tensor of the same shape "
            f"(elementwise), got {got} for a float64 tensor of shape (7,)."
        )
    if not torch.equal(dual.phi(x.flip(0)), y.flip(0)):
        raise TypeError(f"The {what} must be elementwise: phi(x)[i] may depend on x[i] only.")
    try:
        slope = dual.derivatives(x, (1,))[1]
    except Exception as error:
        raise TypeError(
            f"The {what} must be differentiable by torch.autograd in forward mode (its "
            f"derivative gives V'): {error!r}."
        ) from error
    if not slope.any() and not (y == y[0]).all():  # (e.g. it detaches its input)
        raise TypeError(
            f"The {what} must be differentiable by torch.autograd (its derivative gives V'), "
            "but its derivative is 0 where it is not constant: does it detach its input?"
        )
    if not (torch.isfinite(y).all() and torch.isfinite(slope).all()):
        raise TypeError(f"The {what} or its derivative is not finite on [-3, 3].")


# ---------------------------------------------------------------------------------------------
# The rule


def _t_nodes(order: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``sinh t``, ``cosh t`` and the basis ``[1, s, s^2, s^3, s^4]`` (``s = sinh t``, as
    columns) at the trapezoidal nodes ``t`` of ``order``, in ``like``'s dtype and device."""
    key = (order, like.dtype, like.device)
    if key not in _NODES:
        h = _STEP / math.sqrt(order - 1)
        t = (torch.arange(order, dtype=torch.float64) - (order - 1) / 2) * h
        sinh = t.sinh()
        powers = torch.stack([sinh**k for k in range(5)], -1)
        _NODES[key] = tuple(x.to(like) for x in (sinh, t.cosh(), powers))
    return _NODES[key]


_NODES: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}


class _Rule(NamedTuple):
    """A rule for ``E[f(z)]``, ``z`` standard normal, per leading index: nodes ``z = center +
    alpha s`` (``s = sinh t``), and ``E[f] = sum_j w_j f(z_j) (beta . [1, s_j, s_j^2])``: the
    trapezoidal weights ``w`` times the correction that makes ``1, z, z^2`` exact."""

    center: Tensor  # (...,)
    alpha: Tensor  # (...,)
    w: Tensor  # (..., n)
    beta: Tensor  # (..., 3)

    def expect(self, values: Tensor, powers: Tensor) -> Tensor:
        """``E[f]`` from ``values = f(z)`` ``(..., n)``: one product with the basis."""
        return ((self.w * values) @ powers[:, :3] * self.beta).sum(-1)


def _rule(center: Tensor, alpha: Tensor, sinh: Tensor, cosh: Tensor, powers: Tensor) -> _Rule:
    """The :class:`_Rule` at ``center`` with scale ``alpha``. Its weights are those of ``t``,
    ``alpha cosh t exp(-z^2 / 2)``, up to a factor per rule (the correction normalises)."""
    c, a = center.unsqueeze(-1), alpha.unsqueeze(-1)
    w = cosh * torch.exp(-(c * a) * sinh - (0.5 * a.square()) * powers[:, 2])
    # w (b0 + b1 y + b2 y^2), y = z - center = alpha s, with the moments of 1, y, y^2 those of
    # N(0, 1): 1, -center, 1 + center^2 (a symmetric 3 x 3 system, solved by cofactors)
    m0, m1, m2, m3, m4 = (w @ powers).unbind(-1)  # in units of s: y^k = alpha^k s^k
    a2 = alpha.square()
    m1, m2, m3, m4 = m1 * alpha, m2 * a2, m3 * a2 * alpha, m4 * a2.square()
    mu1, mu2 = -center, 1 + center.square()
    c00, c01, c02 = m2 * m4 - m3 * m3, m2 * m3 - m1 * m4, m1 * m3 - m2 * m2
    c11, c12, c22 = m0 * m4 - m2 * m2, m1 * m2 - m0 * m3, m0 * m2 - m1 * m1
    det = m0 * c00 + m1 * c01 + m2 * c02
    b0 = (c00 + mu1 * c01 + mu2 * c02) / det
    b1 = (c01 + mu1 * c11 + mu2 * c12) / det
    b2 = (c02 + mu1 * c12 + mu2 * c22) / det
    return _Rule(center, alpha, w, torch.stack([b0, b1 * alpha, b2 * alpha.square()], -1))


def _scale(std: Tensor, sinh: Tensor, center: Tensor | float = 0.0) -> Tensor:
    """The rule's ``alpha`` for a pre-activation of standard deviation ``std`` (in units of
    ``z``): at least what keeps ``|z - center| <= 6.5 + |center|`` within the nodes."""
    alpha = (_BEND / std).clamp(max=1.0)  # (std = 0: 1)
    if isinstance(center, Tensor):
        return torch.maximum(alpha, (_COVER + center.abs()) / float(sinh[-1]))
    return alpha.clamp(min=(_COVER + abs(center)) / float(sinh[-1]))


def _moments(
    dual: QuadratureDual, orders: tuple, k12: Tensor, k11: Tensor, k22: Tensor
) -> list[Tensor]:
    """``E[phi^(p)(u) phi^(q)(v)]`` for each ``(p, q)`` in ``orders``, flat ``(P,)`` inputs.

    The outer variable is the one of larger variance (so that swapping ``k11`` and ``k22``
    swaps the moments exactly): ``x = a z1``, ``y = b (rho z1 + s z2)``, ``a >= b``, the inner
    rule (over ``z2``) per outer node.
    """
    sinh, cosh, powers = _t_nodes(dual.order, k12)
    swap = k22 > k11
    root1, root2 = k11.clamp_min(0).sqrt(), k22.clamp_min(0).sqrt()
    a, b = torch.where(swap, root2, root1), torch.where(swap, root1, root2)
    norm = a * b
    rho = torch.where(norm > 0, k12 / torch.where(norm > 0, norm, 1.0), 0.0).clamp(-1, 1)
    s = ((1 - rho) * (1 + rho)).sqrt()
    zero = torch.zeros_like(a)
    outer = _rule(zero, _scale(a, sinh), sinh, cosh, powers)
    z1 = outer.alpha.unsqueeze(-1) * sinh  # (P, n)
    # the inner rule moves toward where y crosses 0, z2 = -rho z1 / s, where y is sharp there
    tiny = torch.finfo(k12.dtype).tiny
    crossing = (-rho.unsqueeze(-1) * z1 / s.clamp_min(tiny).unsqueeze(-1)).clamp(-_REACH, _REACH)
    std = (b * s).unsqueeze(-1)  # of y given z1
    center = _FOLLOW * crossing * (std / _BEND).clamp(max=1)
    inner = _rule(center, _scale(std, sinh, center), sinh, cosh, powers)  # (P, n) rules
    # y = b rho z1 + std (center + alpha s) at the inner nodes
    offset = (b * rho).unsqueeze(-1) * z1 + std * center
    y = offset.unsqueeze(-1) + (std * inner.alpha).unsqueeze(-1) * sinh  # (P, n, n)
    needed = {p for pq in orders for p in pq}
    at_x = dual.derivatives(a.unsqueeze(-1) * z1, needed)
    given = {q: inner.expect(f, powers) for q, f in dual.derivatives(y, needed).items()}
    moment = {}  # E[phi^(i)(x) phi^(j)(y)]
    for pq in orders:
        for i, j in (pq, pq[::-1]):
            if (i, j) not in moment:
                moment[i, j] = outer.expect(at_x[i] * given[j], powers)
    return [torch.where(swap, moment[q, p], moment[p, q]) for p, q in orders]


def _self_moments(dual: QuadratureDual, orders: tuple, k: Tensor) -> list[Tensor]:
    """``E[phi^(p)(u) phi^(q)(u)]``, ``u ~ N(0, k)``, flat ``(P,)`` input."""
    sinh, cosh, powers = _t_nodes(dual.order, k)
    root = k.clamp_min(0).sqrt()
    rule = _rule(torch.zeros_like(root), _scale(root, sinh), sinh, cosh, powers)
    u = (root * rule.alpha).unsqueeze(-1) * sinh
    at = dual.derivatives(u, {p for pq in orders for p in pq})
    return [rule.expect(at[p] * at[q], powers) for p, q in orders]


def _chunked(compute, per_pair: int, *ks: Tensor) -> list[Tensor]:
    """``compute(*flat_ks)`` over chunks of pairs (``per_pair`` values each), reshaped back to
    the broadcast shape."""
    shape = torch.broadcast_shapes(*(k.shape for k in ks))
    flat = [k.expand(shape).reshape(-1) for k in ks]
    size = max(1, CHUNK_ELEMENTS // per_pair)
    pieces = [compute(*(f[i : i + size] for f in flat)) for i in range(0, flat[0].numel(), size)]
    if not pieces:  # no pairs
        return None
    return [torch.cat(parts).view(shape) for parts in zip(*pieces, strict=True)]


class _Orders:
    """The ``(p, q)`` of the moments an autograd function computes, as one opaque argument
    (a tuple of ints would be a pytree to ``torch.func``'s transforms)."""

    __slots__ = ("pairs",)

    def __init__(self, pairs) -> None:
        self.pairs = tuple(pairs)


_DUALS = _Orders(((0, 0), (1, 1)))  # (V, V')


def _derived_orders(orders: tuple) -> tuple:
    """The moments the derivatives of ``orders`` read (Price's theorem)."""
    needed = []
    for p, q in orders:
        for pq in ((p + 1, q + 1), (p + 2, q), (p, q + 2)):
            if pq not in needed:
                needed.append(pq)
    return tuple(needed)


class _Moments(torch.autograd.Function):
    """``E[phi^(p)(u) phi^(q)(v)]`` per ``(p, q)`` of ``orders``, differentiable in ``(k12,
    k11, k22)`` to any order by Price's theorem."""

    generate_vmap_rule = True  # (torch.func.vmap, jacfwd, hessian)

    @staticmethod
    def forward(dual, orders, k12, k11, k22):
        orders = orders.pairs
        k12, k11, k22 = torch.broadcast_tensors(*_as_tensors(k12, k11, k22))
        out = _chunked(
            lambda *f: _moments(dual, orders, *f), dual.order * dual.order, k12, k11, k22
        )
        return tuple(out) if out is not None else tuple(torch.zeros_like(k12) for _ in orders)

    @staticmethod
    def setup_context(ctx, inputs, output):
        dual, orders, *ks = inputs
        ctx.dual, ctx.orders = dual, orders.pairs
        ctx.shapes = [k.shape if isinstance(k, Tensor) else () for k in ks]
        ctx.save_for_backward(*_as_tensors(*ks))
        ctx.save_for_forward(*_as_tensors(*ks))

    @staticmethod
    def _derivatives(ctx, ks):
        """Per ``(p, q)``: (d/dk12, d/dk11, d/dk22)."""
        needed = _derived_orders(ctx.orders)
        values = dict(zip(needed, _Moments.apply(ctx.dual, _Orders(needed), *ks), strict=True))
        return [
            (values[p + 1, q + 1], 0.5 * values[p + 2, q], 0.5 * values[p, q + 2])
            for p, q in ctx.orders
        ]

    @staticmethod
    def backward(ctx, *grads):
        ks = ctx.saved_tensors
        used = [(g, d) for g, d in zip(grads, _Moments._derivatives(ctx, ks), strict=True)]
        out = []
        for i, shape in enumerate(ctx.shapes):
            if not ctx.needs_input_grad[2 + i]:
                out.append(None)
                continue
            total = sum(g * d[i] for g, d in used if g is not None)
            out.append(total.sum_to_size(shape) if isinstance(total, Tensor) else None)
        return (None, None, *out)

    @staticmethod
    def jvp(ctx, _dual, _orders, *tangents):
        ks = ctx.saved_tensors
        return tuple(
            sum(d * t for d, t in zip(ds, tangents, strict=True) if t is not None)
            for ds in _Moments._derivatives(ctx, ks)
        )


class _SelfMoments(torch.autograd.Function):
    """``E[phi^(p)(u) phi^(q)(u)]``, ``u ~ N(0, k)``, per ``(p, q)`` of ``orders``:
    ``d/dk = (E[p+2, q] + 2 E[p+1, q+1] + E[p, q+2]) / 2``."""

    generate_vmap_rule = True  # (torch.func.vmap, jacfwd, hessian)

    @staticmethod
    def forward(dual, orders, k):
        orders = orders.pairs
        (k,) = _as_tensors(k)
        out = _chunked(lambda f: _self_moments(dual, orders, f), dual.order, k)
        return tuple(out) if out is not None else tuple(torch.zeros_like(k) for _ in orders)

    @staticmethod
    def setup_context(ctx, inputs, output):
        dual, orders, k = inputs
        ctx.dual, ctx.orders = dual, orders.pairs
        ctx.save_for_backward(*_as_tensors(k))
        ctx.save_for_forward(*_as_tensors(k))

    @staticmethod
    def _slopes(ctx, k):
        needed = _derived_orders(ctx.orders)
        values = dict(zip(needed, _SelfMoments.apply(ctx.dual, _Orders(needed), k), strict=True))
        return [
            0.5 * (values[p + 2, q] + values[p, q + 2]) + values[p + 1, q + 1]
            for p, q in ctx.orders
        ]

    @staticmethod
    def backward(ctx, *grads):
        (k,) = ctx.saved_tensors
        if not ctx.needs_input_grad[2]:
            return None, None, None
        slopes = _SelfMoments._slopes(ctx, k)
        total = sum(g * d for g, d in zip(grads, slopes, strict=True) if g is not None)
        return None, None, total.sum_to_size(k.shape) if isinstance(total, Tensor) else None

    @staticmethod
    def jvp(ctx, _dual, _orders, tangent):
        (k,) = ctx.saved_tensors
        return tuple(d * tangent for d in _SelfMoments._slopes(ctx, k))


def _as_tensors(*ks) -> list[Tensor]:
    like = next((k for k in ks if isinstance(k, Tensor)), None)
    options = {} if like is None else dict(dtype=like.dtype, device=like.device)
    return [k if isinstance(k, Tensor) else torch.as_tensor(k, **options) for k in ks]
