"""The interface every engine implements, and the description of one request."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..autodiff import differentiated, has_tangent, needs_grad
from ..config import RecurrentConfig, RecurrentVariances

__all__ = ["Engine", "EngineUnsupportedError", "Problem"]


class EngineUnsupportedError(ValueError):
    """An engine named explicitly cannot compute the request; the message says why."""


@dataclass(frozen=True)
class Problem:
    """What an engine needs to know of a request to decide whether it can and should run it."""

    device: torch.device
    dtype: torch.dtype
    n1: int
    n2: int
    steps1: int  # the padded lengths T1, T2
    steps2: int
    batched: bool  # leading batch dimensions on the sequences
    scalar_variances: bool  # every variance a scalar (no batch of hyperparameters)
    paired: bool  # K(x1_i, x2_i) only
    diag: bool  # K(x_i, x_i) only
    sequence_grad: bool  # a sequence is differentiated (reverse or forward mode)
    variance_grad: bool  # a variance needs a reverse-mode gradient
    variance_tangent: bool  # a variance carries a forward-mode tangent

    @classmethod
    def describe(
        cls,
        values1: Tensor,
        values2: Tensor | None,
        variances: RecurrentVariances,
        *,
        paired: bool = False,
        diag: bool = False,
    ) -> Problem:
        other = values1 if values2 is None else values2
        return cls(
            device=values1.device,
            dtype=values1.dtype,
            n1=values1.shape[-3],
            n2=other.shape[-3],
            steps1=values1.shape[-2],
            steps2=other.shape[-2],
            batched=values1.dim() > 3 or other.dim() > 3,
            scalar_variances=all(not isinstance(v, Tensor) or v.numel() == 1 for v in variances),
            paired=paired,
            diag=diag,
            sequence_grad=differentiated(values1, values2),
            variance_grad=needs_grad(*variances),
            variance_tangent=has_tangent(*variances),
        )


class Engine:
    """One way to compute the kernel. Subclasses implement:

    * :meth:`unsupported`: ``None`` if the engine computes this request exactly, else the reason
      it does not (an option it does not implement is a reason, never read as another option);
    * :meth:`worth`: its own cost model, whether ``engine="auto"`` should pick it;
    * :meth:`gram`: ``(..., N, N')`` (``(..., N)`` if ``paired``) for one direction of time
      (the dispatcher adds the reversed sequences for bidirectional kernels);
    * :meth:`diag`: ``K(x_i, x_i)``, ``(..., N)``.
    """

    name: str = ""

    def unsupported(self, config: RecurrentConfig, problem: Problem) -> str | None:
        raise NotImplementedError

    def worth(self, config: RecurrentConfig, problem: Problem) -> bool:
        return True

    def gram(
        self,
        config: RecurrentConfig,
        values1: Tensor,
        lengths1: Tensor,
        values2: Tensor,
        lengths2: Tensor,
        variances: RecurrentVariances,
        *,
        paired: bool = False,
        block_elements: int | None = None,
    ) -> Tensor:
        raise NotImplementedError

    def diag(self, config: RecurrentConfig, values: Tensor, lengths: Tensor, variances) -> Tensor:
        raise NotImplementedError
