"""Finite-width recurrent network of docs/kernels.md and its empirical NTK / NNGP kernels.

A Monte-Carlo oracle for the infinite-width kernels: build the network in torch (float64) with the
NTK parametrisation (every weight entry N(0, 1), scales outside, weights shared across time), take
per-sequence gradients of the scalar output with autograd, and form their Gram matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

Tensor = torch.Tensor
_PHI: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "erf": torch.erf,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
    "softplus": torch.nn.functional.softplus,
}


def _stack(gen: torch.Generator, m: int, width: int, num_layers: int) -> list[dict[str, Tensor]]:
    """Draw one stack of layers: ``W^l`` (n x n), ``U^l`` (n x m_l), ``b^l`` (n), plus ``v``."""

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_(True)

    layers = [
        {"W": randn(width, width), "U": randn(width, m if k == 0 else width), "b": randn(width)}
        for k in range(num_layers)
    ]
    return [*layers, {"v": randn(width)}]


def _features(
    stack: list[dict[str, Tensor]],
    x: Tensor,
    h0: list[Tensor],
    phi: Callable[[Tensor], Tensor],
    s_w: float,
    s_u: float,
    s_b: float,
    readout: str,
    readout_decay: float = 1.0,
    s_in: Tensor | None = None,
) -> Tensor:
    """Run one stack over ``x`` (shape ``(T, m)``) and return ``h^{L,T}``, its time average or
    its geometric average (weights ``readout_decay^(T - t)``, normalised).

    ``g^{l,t} = (s_w/sqrt(n)) W^l h^{l,t-1} + (s_u/sqrt(m_l)) U^l h^{l-1,t} + s_b b^l``,
    ``h^{l,t} = phi(g^{l,t})``, ``h^{0,t} = x_t``, ``h^{l,0} = h0[l - 1]``; with ``s_in``
    ``(m,)`` the first layer's input weights of channel ``c`` are scaled by ``s_in[c]`` instead
    of ``s_u`` (per-channel input variances).
    """
    h_below = x  # rows h^{l-1,1..T}
    for layer, p in enumerate(stack[:-1]):
        n, m_l = p["U"].shape
        if layer == 0 and s_in is not None:
            drive = h_below @ (p["U"] * s_in).T / math.sqrt(m_l) + s_b * p["b"]
        else:
            drive = (s_u / math.sqrt(m_l)) * h_below @ p["U"].T + s_b * p["b"]  # (T, n)
        h, outs = h0[layer], []
        for t in range(x.shape[0]):
            h = phi((s_w / math.sqrt(n)) * (p["W"] @ h) + drive[t])
            outs.append(h)
        h_below = torch.stack(outs)
    if readout == "last":
        return h_below[-1]
    if readout == "mean":
        return h_below.mean(0)
    if readout == "geometric":
        w = readout_decay ** torch.arange(x.shape[0] - 1, -1, -1, dtype=h_below.dtype)
        return (w / w.sum()) @ h_below
    raise ValueError(f"unknown readout {readout!r}")


def _initial_states(
    seqs: Sequence[Tensor],
    gen: torch.Generator,
    width: int,
    num_layers: int,
    init_std: float,
    initial_state: str,
) -> list[list[Tensor]]:
    """Initial states ``h^{l,0}`` (entries N(0, s_h^2)) per sequence and layer.

    ``"per_input"`` (paper convention): an independent draw per distinct input, the same draw for
    identical inputs. ``"shared"``: one draw for all inputs. ``"zero"``: zeros.
    """
    if initial_state not in ("zero", "per_input", "shared"):
        raise ValueError(f"unknown initial_state {initial_state!r}")

    def draw() -> list[Tensor]:
        return [
            init_std * torch.randn(width, generator=gen, dtype=torch.float64)
            for _ in range(num_layers)
        ]

    zero = [torch.zeros(width, dtype=torch.float64) for _ in range(num_layers)]
    shared = draw() if initial_state == "shared" else zero
    out: list[list[Tensor]] = []
    for i, x in enumerate(seqs):
        same = [k for k in range(i) if seqs[k].shape == x.shape and torch.equal(seqs[k], x)]
        if initial_state != "per_input":
            out.append(shared)
        else:
            out.append(out[same[0]] if same else draw())
    return out


def empirical_kernels(
    seqs: Sequence[Tensor],
    *,
    width: int,
    num_layers: int,
    nonlinearity: str,
    recurrent_var: float,
    input_var: float,
    bias_var: float,
    seed: int,
    readout: str = "last",
    bidirectional: bool = False,
    frozen_layers: int = 0,
    init_var: float = 0.0,
    initial_state: str = "zero",
    readout_decay: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Empirical NTK and NNGP Gram matrices of one random finite-width network (``s_v = 1``).

    Args:
        seqs: Sequences of shape ``(T_i, m)`` (lengths may differ; ``m`` may not).
        width: Hidden width ``n``.
        num_layers: Depth ``L``.
        nonlinearity: A name of ``_PHI`` (``"relu"``, ``"erf"``, ``"tanh"``, ...) or an elementwise
            torch function.
        recurrent_var: ``s_w^2``.
        input_var: ``s_u^2``, or ``m`` per-channel variances of the first layer's input weights
            (the layers above then use their mean).
        bias_var: ``s_b^2``.
        seed: Seed of the weight (and initial-state) draw.
        readout: ``"last"`` (``h^{L,T}``), ``"mean"`` (time average of ``h^{L,t}``) or
            ``"geometric"`` (weights ``readout_decay^(T - t)``, normalised).
        bidirectional: Two independent stacks, the second reading the reversed sequence; the
            readouts are summed.
        frozen_layers: ``W, U, b`` of layers ``1..frozen_layers`` are not trained; ``v`` always is.
        init_var: ``s_h^2``.
        initial_state: ``"zero"``, ``"per_input"`` or ``"shared"`` (see ``_initial_states``).

    Returns:
        ``(ntk, nngp)``, both ``(N, N)`` float64: ``ntk[i, j] = <grad f(x_i), grad f(x_j)>`` over
        the trained parameters, ``nngp[i, j] = (1/n) <h(x_i), h(x_j)>`` with ``h`` the readout
        features (summed over the two directions when bidirectional).
    """
    gen = torch.Generator().manual_seed(seed)
    seqs = [s.to(torch.float64) for s in seqs]
    m = seqs[0].shape[1]
    phi = nonlinearity if callable(nonlinearity) else _PHI[nonlinearity]  # a name or a function
    s_in = None
    if not isinstance(input_var, (int, float)):
        s_in = torch.as_tensor(input_var, dtype=torch.float64).sqrt()
        input_var = float(s_in.square().mean())
    scales = (math.sqrt(recurrent_var), math.sqrt(input_var), math.sqrt(bias_var))
    directions = [False, True] if bidirectional else [False]
    stacks = [_stack(gen, m, width, num_layers) for _ in directions]
    h0s = [
        _initial_states(seqs, gen, width, num_layers, math.sqrt(init_var), initial_state)
        for _ in directions
    ]
    trained = [
        p[name]
        for stack in stacks
        for layer, p in enumerate(stack)
        for name in p
        if name == "v" or layer >= frozen_layers
    ]
    grads = torch.empty(len(seqs), sum(p.numel() for p in trained), dtype=torch.float64)
    feats = torch.empty(len(directions), len(seqs), width, dtype=torch.float64)
    for i, x in enumerate(seqs):
        f = torch.zeros((), dtype=torch.float64)
        for d, (stack, h0, rev) in enumerate(zip(stacks, h0s, directions, strict=True)):
            h = _features(
                stack, x.flip(0) if rev else x, h0[i], phi, *scales, readout, readout_decay, s_in
            )
            f = f + stack[-1]["v"] @ h / math.sqrt(width)
            feats[d, i] = h.detach()
        torch.cat([g.reshape(-1) for g in torch.autograd.grad(f, trained)], out=grads[i])
    return grads @ grads.T, (feats @ feats.transpose(1, 2)).sum(0) / width


def empirical_kernel_statistics(
    seqs: Sequence[Tensor], seeds: Sequence[int], **kw: object
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The seed average of :func:`empirical_kernels` and its standard error, per entry.

    Args:
        seqs: Sequences of shape ``(T_i, m)``.
        seeds: Seeds to average over (at least two).
        **kw: Other keyword arguments of :func:`empirical_kernels`.

    Returns:
        ``((ntk_mean, ntk_se), (nngp_mean, nngp_se))``; ``se`` is the sample standard deviation
        over the seeds divided by ``sqrt(len(seeds))``.
    """
    runs = [empirical_kernels(seqs, seed=s, **kw) for s in seeds]  # type: ignore[arg-type]
    out = []
    for k in range(2):
        samples = torch.stack([r[k] for r in runs])
        out.append((samples.mean(0), samples.std(0) / math.sqrt(len(runs))))
    return out[0], out[1]


def scale_relative_error(emp: Tensor, ana: Tensor) -> float:
    """The scale-relative error ``max |emp - ana| / max |ana|`` (docs/kernels.md, Monte Carlo)."""
    return float((emp - ana).abs().max() / ana.abs().max())


# A correct kernel puts every entry of the seed average within Z_MAX standard errors of the
# limit (Student's t with seeds - 1 degrees of freedom: |t| > 6 has probability below 1e-5 for
# 32 seeds and more), and the check needs every standard error to be at most RESOLUTION of the
# kernel's scale, so that no entry can be off by more than 6 x 2.5 % = 15 % of the scale and
# pass (the entries that fluctuate less, by far less). Measured over the suite's 70 checks
# (fast and slow, the seed counts of the tests): largest |z| 3.3, largest standard error 2.3 %
# (ReLU, two layers, NNGP), largest scale-relative error 4.5 %. With the earlier fixed
# tolerances alone (8 % and 6 % of the scale) a test with few seeds failed on noise: width 2048
# with 6 seeds put the ReLU kernels' seed average 7.9 % of the scale from the limit, 2 standard
# errors, where 96 seeds put it within 0.6 % (NTK) and 1.0 % (NNGP), every entry within 1.5
# standard errors.
Z_MAX = 6.0
RESOLUTION = 0.025


def assert_agrees(mean: Tensor, se: Tensor, limit: Tensor, name: str = "") -> None:
    """Assert that a seed-averaged empirical kernel agrees with its infinite-width limit.

    The deviation of each entry is measured in its own standard error over the seeds (entries
    of a Gram matrix fluctuate by very different amounts: long sequences' self terms most), so
    that sampling noise passes whatever the seed count and a wrong recursion term, which moves
    entries by many standard errors, fails. The largest standard error must be at most
    :data:`RESOLUTION` of the kernel's scale ``max |limit|``, or the check would be too coarse
    to fail.
    """
    scale = limit.abs().max()
    resolution = float(se.max() / scale)
    z = (mean - limit).abs() / se.clamp_min(1e-6 * scale)
    summary = (
        f"{name}: max |z| {float(z.max()):.2f}, scale-relative error "
        f"{scale_relative_error(mean, limit):.4f}, largest standard error {resolution:.4f}"
    )
    assert resolution <= RESOLUTION, f"too few seeds to resolve the kernel; {summary}"
    assert float(z.max()) < Z_MAX, summary
