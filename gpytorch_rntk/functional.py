r"""The RNTK and RNN-NNGP recursions as plain tensor functions (:doc:`/kernels`).

:func:`recurrent_kernel` and :func:`recurrent_kernel_diag` validate their inputs and options once
and hand them to one of the engines (the tensor engine, a compiled loop, or a Triton kernel on
CUDA); the dual activations :func:`relu_dual` and :func:`erf_dual`, :class:`QuadratureDual`
(any smooth elementwise nonlinearity) and the sequence helpers are the same functions the engines
use.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ._core.autodiff import differentiated
from ._core.config import INITIAL_STATES, READOUTS, RecurrentVariances, make_config
from ._core.duals import NONLINEARITIES, Dual, erf_dual, relu_dual
from ._core.engines import ENGINE_NAMES, diag, gram
from ._core.lanes import identical_rows, reverse_sequences
from ._core.quadrature import ACTIVATIONS, QuadratureDual, as_dual
from ._validation import check_sequences

__all__ = [
    "ENGINES",
    "INITIAL_STATES",
    "NONLINEARITIES",
    "QuadratureDual",
    "READOUTS",
    "RecurrentVariances",
    "check_engine",
    "check_options",
    "check_sequences",
    "differentiated",
    "erf_dual",
    "identical_rows",
    "nonlinearity_option",
    "recurrent_kernel",
    "recurrent_kernel_diag",
    "relu_dual",
    "reverse_sequences",
]

ENGINES = ENGINE_NAMES


def check_options(
    nonlinearity: str | Callable | Dual,
    initial_state: str,
    num_layers: int,
    frozen_layers: int = 0,
    readout: str = "last",
) -> None:
    """Raise a ``ValueError`` naming the first option that is not understood."""
    make_config(nonlinearity, num_layers, frozen_layers, initial_state, readout)


def nonlinearity_option(nonlinearity: str | Callable | Dual) -> str | Dual:
    """A ``nonlinearity`` option in the form the kernels keep: the name of a built-in
    nonlinearity (also for a function that is one, e.g. ``torch.tanh``), else its dual (a
    :class:`QuadratureDual`, built and checked once). Raises as :func:`check_options`."""
    dual = as_dual(nonlinearity)
    if dual.name in NONLINEARITIES or dual.name in ACTIVATIONS:
        return dual.name if as_dual(dual.name) == dual else dual
    return dual


def check_engine(engine: str) -> None:
    """Raise a ``ValueError`` if ``engine`` is not one of :data:`ENGINES`."""
    if not isinstance(engine, str) or engine not in ENGINE_NAMES:
        raise ValueError(f"Unknown engine {engine!r}; choose one of {list(ENGINE_NAMES)}.")


def recurrent_kernel(
    values1: Tensor,
    lengths1: Tensor,
    values2: Tensor,
    lengths2: Tensor,
    variances: RecurrentVariances,
    *,
    nonlinearity: str | Callable | Dual = "relu",
    num_layers: int = 1,
    frozen_layers: int = 0,
    initial_state: str = "zero",
    paired: bool = False,
    bidirectional: bool = False,
    readout: str = "last",
    block_elements: int | None = None,
    engine: str = "auto",
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
        variances: Each broadcastable against ``(..., N, N')`` (e.g. shaped ``(*batch, 1, 1)``);
            ``readout_decay`` only with ``readout="geometric"``.
        nonlinearity: ``"relu"`` or ``"erf"`` (closed-form duals), ``"tanh"``, ``"sigmoid"``,
            ``"gelu"`` (exact, erf-based), ``"silu"`` or ``"softplus"``, any smooth elementwise
            torch function (e.g. ``torch.tanh`` or a lambda), or a :class:`QuadratureDual` (e.g.
            of another order): all but relu and erf by quadrature (:doc:`/kernels`, Any
            nonlinearity), which costs about ``2 * 41**2`` evaluations of the function per pair,
            step and layer and runs on the tensor engine only.
        num_layers: Depth ``L``.
        frozen_layers: Number of untrained bottom layers (:doc:`/kernels`, Variants);
            ``num_layers`` gives the NNGP kernel.
        initial_state: ``"zero"``, ``"per_input"`` (the paper's) or ``"shared"``.
        paired: Compute only ``K(x1_i, x2_i)``, giving ``(..., N)`` (needs ``N == N'``).
        bidirectional: Add the kernel of the time-reversed sequences (:doc:`/kernels`, Variants: two
            independent stacks, readouts summed), which compares sequences aligned at their
            first elements.
        readout: ``"last"`` (the state at the last step), ``"mean"`` (average pooling over
            time: the mean of the readout over all ``T1 x T2`` time pairs of each pair) or
            ``"geometric"`` (the last layer's states weighted :math:`\propto \lambda^{T - t}`,
            ``lambda = variances.readout_decay`` in ``(0, 1]``: the readout summed over all time
            pairs with both steps' weights; ``lambda = 1`` is the mean, ``lambda -> 0`` the
            last readout), at the mean's cost.
        block_elements: Pairs per row block; default :math:`2^{20}`, or :math:`2^{18}` when
            gradients are needed (each block then replays one chunk of steps at a time).
        engine: ``"tensor"`` (one tensor operation per term on whole blocks of pairs: any
            input, any gradient; the reference), ``"compiled"`` (each tile of pairs through
            all its steps in a compiled loop: ahead of time on the CPU, by
            :func:`torch.compile` on CUDA), ``"triton"`` (one Triton kernel, on CUDA),
            ``"fused"`` (``"triton"`` where it computes the request, else ``"compiled"``) or
            ``"auto"``: the fastest engine that computes the request and repays its
            compilation (on the CPU, a loop already built on this machine at every size:
            ``python -m gpytorch_rntk.warmup`` builds the common ones ahead). The compiled
            and Triton engines take
            unbatched inputs and scalar variances and give first derivatives for the variances
            only; an engine named here that cannot compute the request raises a ``ValueError``
            saying why. Where compiling fails (e.g. no C++ compiler), ``"auto"`` falls back to
            the tensor engine with one warning.

    Returns:
        ``(..., N, N')``, or ``(..., N)`` if ``paired``.

    Example:
        >>> import torch
        >>> from gpytorch_rntk.functional import (
        ...     RecurrentVariances, recurrent_kernel, recurrent_kernel_diag)
        >>> lengths = torch.tensor([5, 2, 4])
        >>> values = torch.randn(3, 5, 2, dtype=torch.float64)
        >>> values *= (torch.arange(5) < lengths[:, None]).unsqueeze(-1)  # zero past each end
        >>> variances = RecurrentVariances(recurrent_var=1.8, input_var=1.0, bias_var=0.1)
        >>> gram = recurrent_kernel(values, lengths, values, lengths, variances)
        >>> gram.shape
        torch.Size([3, 3])
        >>> torch.allclose(recurrent_kernel_diag(values, lengths, variances), gram.diagonal())
        True
    """
    config = make_config(
        nonlinearity, num_layers, frozen_layers, initial_state, readout, bidirectional
    )
    check_engine(engine)
    if not isinstance(paired, bool):
        raise TypeError(f"paired must be True or False, got {paired!r}.")
    check_sequences(
        values1,
        lengths1,
        values2,
        lengths2,
        variances,
        paired=paired,
        readout=config.readout.name,
    )
    return gram(
        config,
        values1,
        lengths1,
        values2,
        lengths2,
        RecurrentVariances(*variances),
        paired=paired,
        engine=engine,
        block_elements=block_elements,
    )


def recurrent_kernel_diag(
    values: Tensor,
    lengths: Tensor,
    variances: RecurrentVariances,
    *,
    nonlinearity: str | Callable | Dual = "relu",
    num_layers: int = 1,
    frozen_layers: int = 0,
    initial_state: str = "zero",
    bidirectional: bool = False,
    readout: str = "last",
) -> Tensor:
    r"""``K(x_i, x_i)`` for each sequence without an ``N x N`` matrix.

    With ``readout="last"`` this is the self-term recursion alone, :math:`O(L\,T N)`; with
    ``"mean"`` every diagonal of each sequence's grid with itself, :math:`O(L\,T^2 N)` (half of
    it, by symmetry).

    Args are as for :func:`recurrent_kernel`; returns ``(..., N)``.
    """
    config = make_config(
        nonlinearity, num_layers, frozen_layers, initial_state, readout, bidirectional
    )
    check_sequences(values, lengths, variances=variances, readout=config.readout.name)
    return diag(config, values, lengths, RecurrentVariances(*variances))
