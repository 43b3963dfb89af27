"""Time-grid helpers shared by the engines: exact duplicate detection, alignment and reversal of
zero-padded sequences, and the packing of a time grid's diagonals into lanes."""

from __future__ import annotations

import functools
import math
import random
from functools import partial

import torch
from torch import Tensor

__all__ = [
    "diagonal_lanes",
    "diagonal_length",
    "identical_rows",
    "reverse_sequences",
    "right_align",
    "row_ids",
]


def identical_rows(
    values1: Tensor, lengths1: Tensor, values2: Tensor, lengths2: Tensor, paired: bool = False
) -> Tensor:
    r"""Which pairs are the same sequence: same length and the same values within it.

    Exact (no tolerance) and without an ``N x N' x T`` tensor: rows are numbered by
    :func:`torch.unique` and the numbers compared.

    Args:
        values1, lengths1: ``(..., N, T, m)`` values, zero past each length, and ``(..., N)``.
        values2, lengths2: The same for the second input.
        paired: Compare row ``i`` with row ``i`` only, giving ``(..., N)``.

    Returns:
        A bool tensor ``(..., N, N')`` (or ``(..., N)`` if ``paired``).
    """
    ids1, ids2 = row_ids(values1, lengths1, values2, lengths2)
    return ids1 == ids2 if paired else ids1.unsqueeze(-1) == ids2.unsqueeze(-2)


def row_ids(
    values1: Tensor, lengths1: Tensor, values2: Tensor, lengths2: Tensor
) -> tuple[Tensor, Tensor]:
    """Integer ids ``(..., N)`` and ``(..., N')``, equal exactly for identical sequences (same
    length, same values within it; ``-0.0`` equals ``0.0``), numbered over both sets.

    Each row (length and values) is hashed by its values' bits (integer arithmetic, so
    identical rows hash identically whatever the reduction order), rows are numbered by their
    hashes, and every row is then compared with the first of its number: a hash collision
    (different rows, one number) is caught there and the rows are numbered exactly by
    :func:`torch.unique` over the rows themselves instead (a sort, many times slower on long
    rows)."""
    batch = torch.broadcast_shapes(values1.shape[:-3], values2.shape[:-3])
    n1 = values1.shape[-3]

    steps = max(values1.shape[-2], values2.shape[-2])

    def rows(values: Tensor, lengths: Tensor) -> Tensor:
        values = torch.nn.functional.pad(values, (0, 0, 0, steps - values.shape[-2]))
        flat = torch.cat([lengths.unsqueeze(-1).to(values), values.flatten(-2)], dim=-1)
        return flat.detach().expand(*batch, *flat.shape[-2:])

    both = torch.cat([rows(values1, lengths1), rows(values2, lengths2)], dim=-2)
    flat = both.reshape(-1, both.shape[-1]) + 0.0  # (-0.0 + 0.0 is +0.0)
    n_batch = math.prod(batch)
    tag = torch.arange(n_batch, device=both.device).repeat_interleave(both.shape[-2])
    ids = _hashed_ids(flat, tag)
    if ids is None:  # a collision: number the rows themselves
        tagged = torch.cat([tag.unsqueeze(-1).to(flat), flat], -1)
        ids = torch.unique(tagged, dim=0, return_inverse=True)[1]
    ids = ids.reshape(*batch, both.shape[-2])
    return ids[..., :n1], ids[..., n1:]


@functools.lru_cache(maxsize=64)
def _hash_coefficients(width: int, device: torch.device) -> Tensor:
    """Odd 64-bit multipliers, the same in every call (Python's generator: no torch random
    operation, which ``torch.func.vmap`` would refuse)."""
    draw = random.Random(0x5EED).getrandbits
    return torch.tensor([draw(62) * 2 + 1 for _ in range(width)], device=device)


def _hashed_ids(flat: Tensor, tag: Tensor) -> Tensor | None:
    """Ids of the rows of ``flat`` ``(R, W)`` within each ``tag``, equal exactly for equal rows;
    ``None`` if two different rows (or rows of two tags) share a hash."""
    bits = {8: torch.int64, 4: torch.int32, 2: torch.int16}[flat.element_size()]
    words = flat.contiguous().view(bits).to(torch.int64)
    coefficients = _hash_coefficients(flat.shape[-1] + 1, flat.device)
    # one 64-bit key per row (the products and sums wrap around in int64): a 1-D unique, a
    # sort, where the rows themselves would need torch.unique(dim=0)
    keys = (words * coefficients[1:]).sum(-1) + tag * coefficients[0]
    _, ids = torch.unique(keys, return_inverse=True)
    first = torch.full((int(ids.max()) + 1,), len(ids), device=ids.device)
    first = first.scatter_reduce(0, ids, torch.arange(len(ids), device=ids.device), "amin")
    if (flat != flat[first[ids]]).any() or (tag != tag[first[ids]]).any():
        return None
    return ids


def reverse_sequences(values: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence within its length, keeping the zero padding at the end.

    Args:
        values: ``(..., N, T, m)``, zero past each length.
        lengths: ``(..., N)``.

    Returns:
        ``(..., N, T, m)`` with ``out[..., i, t, :] = values[..., i, T_i - 1 - t, :]`` for
        ``t < T_i`` and zero after.
    """
    steps = values.shape[-2]
    index = lengths.unsqueeze(-1) - 1 - torch.arange(steps, device=values.device)
    inside = (index >= 0).unsqueeze(-1).to(values)
    index = index.clamp(min=0).unsqueeze(-1).expand(*index.shape, values.shape[-1])
    return values.gather(-2, index) * inside


def right_align(values: Tensor, lengths: Tensor, steps: int) -> Tensor:
    """``(..., N, steps, m)`` with the sequences' last elements at the last position."""
    offset = torch.arange(steps, device=values.device) - steps + lengths.unsqueeze(-1)
    index = offset.clamp(min=0).unsqueeze(-1).expand(*offset.shape, values.shape[-1])
    return values.gather(-2, index) * (offset >= 0).unsqueeze(-1).to(values)


def diagonal_length(d: int, longest1: int, longest2: int) -> int:
    """Cells of the diagonal ``t' - t = d`` of a ``longest1 x longest2`` grid."""
    return min(longest1 - max(0, -d), longest2 - max(0, d))


def diagonal_lanes(longest1: int, longest2: int, symmetric: bool = False) -> list[list[int]]:
    """The diagonals ``d = t' - t`` of a ``longest1 x longest2`` grid (only ``d >= 0`` if
    ``symmetric``) packed into lanes of ``min(longest1, longest2)`` cells: longest first, each
    lane topped up with the shortest that still fit."""
    cells = min(longest1, longest2)
    offsets = range(longest1) if symmetric else range(1 - longest1, longest2)
    length = partial(diagonal_length, longest1=longest1, longest2=longest2)
    order = sorted(offsets, key=length, reverse=True)
    lanes, i, j = [], 0, len(order) - 1
    while i <= j:
        lane, room = [order[i]], cells - length(order[i])
        i += 1
        while i <= j and length(order[j]) <= room:
            lane.append(order[j])
            room -= length(order[j])
            j -= 1
        lanes.append(lane)
    return lanes
