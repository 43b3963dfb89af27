"""Whether tensors take part in differentiation (reverse or forward mode)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["differentiated", "has_tangent", "needs_grad"]


def needs_grad(*tensors: Tensor | float | None) -> bool:
    """Whether grad mode is on and any of ``tensors`` requires a gradient."""
    return torch.is_grad_enabled() and any(
        isinstance(t, Tensor) and t.requires_grad for t in tensors
    )


def differentiated(*tensors: Tensor | float | None) -> bool:
    """Whether any of ``tensors`` is differentiated: it needs a gradient (reverse mode, grad
    mode on) or carries a forward-mode tangent (``torch.func.jvp``, ``forward_ad``)."""
    return needs_grad(*tensors) or has_tangent(*tensors)


def has_tangent(*tensors: Tensor | float | None) -> bool:
    """Whether any of ``tensors`` carries a forward-mode tangent (``torch.func.jvp``,
    ``forward_ad``)."""
    return any(
        isinstance(t, Tensor) and torch.autograd.forward_ad.unpack_dual(t).tangent is not None
        for t in tensors
    )
