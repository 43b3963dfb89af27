"""The engines behind one interface (:class:`~.base.Engine`), and the one dispatcher.

``engine="auto"`` takes the first engine, fastest first, that computes the request
(``unsupported()`` is ``None``) and repays its set-up cost (``worth()``); the tensor engine
computes every request of the built-in options and is the fallback (also where the compiled
engine was chosen for a request that repays only a cached compilation, and none is cached).
An engine named explicitly that cannot compute the request raises
:class:`~.base.EngineUnsupportedError` with its reason.
"""

from __future__ import annotations

import warnings

from torch import Tensor

from ..config import RecurrentConfig, RecurrentVariances
from ..lanes import reverse_sequences
from .base import Engine, EngineUnsupportedError, Problem
from .fused import (
    CachedCompiledEngine,
    CompilationFailedError,
    CompilationWarning,
    CompiledEngine,
    NotCachedError,
    TritonEngine,
)
from .tensor import TensorEngine, batch_shape

__all__ = [
    "ENGINES",
    "ENGINE_NAMES",
    "CompilationWarning",
    "Engine",
    "EngineUnsupportedError",
    "Problem",
    "diag",
    "gram",
    "select",
]

# The engines a user names, fastest first.
ENGINES: dict[str, Engine] = {
    engine.name: engine for engine in (TritonEngine(), CompiledEngine(), TensorEngine())
}
# The order in which engine="auto" considers them: the compiled engine where it repays
# compiling, then where its loop's package is built (else the tensor engine computes it).
AUTO = (ENGINES["triton"], ENGINES["compiled"], CachedCompiledEngine(), ENGINES["tensor"])
# "fused": the Triton kernel where it computes the request, else the compiled engine.
ENGINE_NAMES = ("auto", "tensor", "fused", "compiled", "triton")


def select(config: RecurrentConfig, problem: Problem, engine: str = "auto") -> Engine:
    """The engine that computes ``problem`` under ``config``: see the module docstring."""
    if engine == "auto":
        reasons = []
        for candidate in AUTO:
            reason = candidate.unsupported(config, problem)
            if reason is None and candidate.worth(config, problem):
                return candidate
            reasons.append(reason)
        raise EngineUnsupportedError(f"No engine computes this request: {reasons[-1]}.")
    if engine == "fused":
        reason = ENGINES["triton"].unsupported(config, problem)
        engine = "triton" if reason is None else "compiled"
    if engine not in ENGINES:
        raise ValueError(f"Unknown engine {engine!r}; choose one of {list(ENGINE_NAMES)}.")
    reason = ENGINES[engine].unsupported(config, problem)
    if reason is not None:
        raise EngineUnsupportedError(f"engine={engine!r} cannot compute this request: {reason}.")
    return ENGINES[engine]


def gram(
    config: RecurrentConfig,
    values1: Tensor,
    lengths1: Tensor,
    values2: Tensor,
    lengths2: Tensor,
    variances: RecurrentVariances,
    *,
    paired: bool = False,
    engine: str = "auto",
    block_elements: int | None = None,
) -> Tensor:
    """``K(x1, x2)`` of validated inputs (:func:`gpytorch_rntk.functional.recurrent_kernel`)."""
    n1, n2 = values1.shape[-3], values2.shape[-3]
    if not (n1 and n2):  # a side without sequences
        batch = batch_shape(values1, values2, variances)
        return values1.new_zeros(*batch, n1) if paired else values1.new_zeros(*batch, n1, n2)
    problem = Problem.describe(values1, values2, variances, paired=paired)
    chosen = select(config, problem, engine)

    def run(v1: Tensor, l1: Tensor, v2: Tensor, l2: Tensor) -> Tensor:
        options = dict(paired=paired, block_elements=block_elements)
        try:
            return chosen.gram(config, v1, l1, v2, l2, variances, **options)
        except NotCachedError:  # (CachedCompiledEngine) the tensor engine is the cheaper
            chosen.not_cached(config, problem)
            return ENGINES["tensor"].gram(config, v1, l1, v2, l2, variances, **options)
        except CompilationFailedError as error:
            fallback = ENGINES["tensor"] if engine == "auto" else chosen
            warnings.warn(
                f"gpytorch_rntk: compiling the fused engine's loop failed ({error}), so the "
                f"{fallback.name} engine "
                f"{'computes this' if fallback is not chosen else 'runs its loop eagerly'} and "
                "nothing is compiled again in this process. Compiling on the CPU needs a working "
                "C++ compiler (e.g. g++); set GPYTORCH_RNTK_COMPILE=0 to skip compiling.",
                CompilationWarning,
                stacklevel=4,
            )
            return fallback.gram(config, v1, l1, v2, l2, variances, **options)

    return _plus_reversed(run, config, values1, lengths1, values2, lengths2)


def diag(
    config: RecurrentConfig, values: Tensor, lengths: Tensor, variances: RecurrentVariances
) -> Tensor:
    """``K(x_i, x_i)`` of validated inputs
    (:func:`gpytorch_rntk.functional.recurrent_kernel_diag`)."""
    if not values.shape[-3]:
        return values.new_zeros(*batch_shape(values, values, variances), 0)
    problem = Problem.describe(values, None, variances, diag=True)
    chosen = select(config, problem)
    return _plus_reversed(
        lambda v, n: chosen.diag(config, v, n, variances), config, values, lengths
    )


def _plus_reversed(kernel_fn, config: RecurrentConfig, *sequences: Tensor) -> Tensor:
    """``kernel_fn(*sequences)``, plus the same on every sequence reversed within its length
    for a bidirectional kernel. ``sequences`` alternates values and lengths."""
    forward = kernel_fn(*sequences)
    if not config.bidirectional:
        return forward
    reversed_sequences = list(sequences)
    for k in range(0, len(sequences), 2):
        same_as_first = k > 0 and sequences[k] is sequences[0] and sequences[k + 1] is sequences[1]
        reversed_sequences[k] = (
            reversed_sequences[0]  # keep K(x, x) recognisable as symmetric
            if same_as_first
            else reverse_sequences(sequences[k], sequences[k + 1])
        )
    return forward + kernel_fn(*reversed_sequences)
