"""Pieces of the recursion shared by the engines."""

from __future__ import annotations

import torch
from torch import Tensor

from .config import RecurrentVariances
from .duals import Dual

__all__ = ["self_terms"]


def self_terms(
    values: Tensor,
    lengths: Tensor,
    variances: RecurrentVariances,
    dual: Dual,
    num_layers: int,
    init: bool,
) -> list[Tensor]:
    """The self terms ``S^l(t, t)`` of each sequence at every step, counted from its start.

    One ``(..., N, T)`` table per layer; past each length it holds 1, a finite positive
    placeholder for the duals of pairs that are not active there. ``variances`` broadcast
    against ``(..., N)``.
    """
    sw2, su2, sb2, init_var = variances
    steps, m = values.shape[-2:]
    data = values.square().sum(-1) / m
    previous = [init_var if init else 0.0] * num_layers  # P^l(t-1, t-1) of the self pair
    columns: list[list[Tensor]] = [[] for _ in range(num_layers)]
    for t in range(steps):
        below = data[..., t]
        for layer in range(num_layers):
            s = sw2 * previous[layer] + su2 * below + sb2
            columns[layer].append(s)
            below = previous[layer] = dual.self_pair(s)[0]
    inside = torch.arange(steps, device=values.device) < lengths.unsqueeze(-1)
    return [torch.where(inside, torch.stack(c, -1), 1.0) for c in columns]
