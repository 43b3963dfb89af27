"""Random variable-length batches for the tests."""

from __future__ import annotations

import torch

from gpytorch_rntk import encode_sequences


def random_sequences(
    lengths: list[int], m: int, seed: int = 0, dtype: torch.dtype = torch.float64
) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(t, m, generator=gen, dtype=dtype) for t in lengths]


def random_batch(
    lengths: list[int], m: int, seed: int = 0, max_len: int | None = None, **kw
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Sequences and their encoding."""
    seqs = random_sequences(lengths, m, seed, **kw)
    return seqs, encode_sequences(seqs, max_len=max_len)
