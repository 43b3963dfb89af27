"""Deprecated alias of the fused engines, kept for one release.

Use ``recurrent_kernel(..., engine="fused")`` (or ``"compiled"``, ``"triton"``) from
:mod:`gpytorch_rntk.functional`, or the kernels' ``engine=`` argument, instead. Importing this
module warns (``DeprecationWarning``); it will be removed in the next release.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from ._core.config import RecurrentVariances, make_config
from ._core.engines import ENGINES, Problem, select
from ._core.engines.fused import clock_self_terms, triton_available
from ._validation import check_sequences

__all__ = ["fused_available", "fused_kernel", "self_terms", "worth_fusing"]

warnings.warn(
    "gpytorch_rntk.fused is deprecated: use gpytorch_rntk.functional.recurrent_kernel(..., "
    "engine='fused') or the kernels' engine= argument.",
    DeprecationWarning,
    stacklevel=2,
)


def fused_kernel(
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
    readout: str = "last",
    backend: str = "auto",
) -> Tensor:
    """``recurrent_kernel(..., engine="fused")``; ``backend`` ``"triton"``, ``"compiled"`` or
    ``"auto"`` (``"fused"``)."""
    if backend not in ("auto", "triton", "compiled"):
        raise ValueError(f"Unknown backend {backend!r}; choose 'auto', 'triton' or 'compiled'.")
    config = make_config(nonlinearity, num_layers, frozen_layers, initial_state, readout)
    check_sequences(values1, lengths1, values2, lengths2, variances, readout=config.readout.name)
    variances = RecurrentVariances(*variances)
    problem = Problem.describe(values1, values2, variances)
    engine = select(config, problem, "fused" if backend == "auto" else backend)
    return engine.gram(config, values1, lengths1, values2, lengths2, variances)


def self_terms(
    values: Tensor,
    lengths: Tensor,
    variances: RecurrentVariances,
    *,
    nonlinearity: str,
    num_layers: int,
    initial_state: str,
    steps: int,
    align: str = "end",
    triton: bool = False,
    directions: tuple[int, ...] | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """The self terms on a clock of ``steps``, ``(L, steps, N)`` (see the compiled engine)."""
    config = make_config(nonlinearity, num_layers, 0, initial_state)
    return clock_self_terms(
        values,
        lengths,
        variances,
        config=config,
        steps=steps,
        align=align,
        triton=triton,
        directions=directions,
    )


def worth_fusing(
    values1: Tensor, lengths1: Tensor, values2: Tensor, lengths2: Tensor, readout: str = "last"
) -> bool:
    """Whether ``engine="auto"`` picks a fused engine for this Gram matrix (on the CPU below
    the size that repays compiling: the compiled engine where its loop's package is built,
    else the tensor engine computes it after all)."""
    config = make_config(readout=readout)
    variances = RecurrentVariances(*(torch.ones(()),) * 3)
    problem = Problem.describe(values1, values2, variances)
    return select(config, problem) is not ENGINES["tensor"]


def fused_available(device: torch.device) -> bool:
    """Whether the Triton kernel can run on ``device`` (CUDA, or Triton's interpreter)."""
    return triton_available(device)
