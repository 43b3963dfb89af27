"""Exact duplicate detection (``_core.lanes.row_ids``): hashed, verified, and exact on a hash
collision."""

from __future__ import annotations

import torch

from gpytorch_rntk._core import lanes


def _sets(dtype, device):
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(6, 5, 2, generator=gen).to(device=device, dtype=dtype)
    lengths = torch.tensor([5, 2, 3, 5, 1, 4], device=device)
    values = values * (torch.arange(5, device=device) < lengths.unsqueeze(-1)).unsqueeze(-1)
    other = values[[0, 3, 1, 2]].clone()
    other_lengths = lengths[[0, 3, 1, 2]].clone()
    other_lengths[2] = 3  # same values as row 1, another length: not identical
    other[3, 0, 0] = -0.0 if values[2, 0, 0] == 0 else values[2, 0, 0]
    return values, lengths, other, other_lengths


def _expected(values, lengths, other, other_lengths):
    rows = [(int(n), v[:n].tolist()) for v, n in zip(values, lengths, strict=True)]
    cols = [(int(n), v[:n].tolist()) for v, n in zip(other, other_lengths, strict=True)]
    return torch.tensor([[a == b for b in cols] for a in rows])


def test_identical_rows_are_exact(dtype, device):
    sets = _sets(dtype, device)
    got = lanes.identical_rows(*sets)
    assert got.cpu().tolist() == _expected(*sets).tolist()
    assert got.sum() == 3  # rows 0, 3 and 2 reappear; row 1 with another length does not
    batched = [torch.stack([s, s.flip(0)]) for s in sets]  # two batches, ids within each
    got = lanes.identical_rows(*batched)
    assert got[0].cpu().tolist() == _expected(*sets).tolist()
    assert got[1].cpu().tolist() == _expected(*(s.flip(0) for s in sets)).tolist()


def test_negative_zero_equals_zero(device):
    values = torch.zeros(2, 3, 1, device=device, dtype=torch.float64)
    values[1, 1, 0] = -0.0
    lengths = torch.tensor([3, 3], device=device)
    assert lanes.identical_rows(values, lengths, values, lengths).all()


def test_a_hash_collision_falls_back_to_exact_numbering(monkeypatch, device):
    # with every multiplier 1 the hash is the sum of the bit patterns: rows that are
    # permutations of each other collide, and the check must catch it
    monkeypatch.setattr(
        lanes,
        "_hash_coefficients",
        lambda width, dev: torch.ones(width, dtype=torch.long, device=dev),
    )
    values = torch.tensor([[[1.0], [2.0]], [[2.0], [1.0]]], dtype=torch.float64, device=device)
    lengths = torch.tensor([2, 2], device=device)
    flat = torch.cat([lengths.unsqueeze(-1).to(values), values.flatten(-2)], -1)
    assert lanes._hashed_ids(flat, torch.zeros(2, dtype=torch.long, device=device)) is None
    got = lanes.identical_rows(values, lengths, values, lengths)
    assert got.cpu().tolist() == [[True, False], [False, True]]


def test_rows_of_two_batches_that_share_a_hash_fall_back(monkeypatch, device):
    # a zero multiplier for the batch tag: the same row in two batches gets one key, which
    # the check must catch (ids are numbered within each batch)
    monkeypatch.setattr(
        lanes,
        "_hash_coefficients",
        lambda width, dev: torch.cat([torch.zeros(1), torch.ones(width - 1)]).long().to(dev),
    )
    flat = torch.tensor([[2.0, 1.0, 3.0], [2.0, 1.0, 3.0]], dtype=torch.float64, device=device)
    tag = torch.tensor([0, 1], device=device)
    assert lanes._hashed_ids(flat, tag) is None
    monkeypatch.undo()
    ids = lanes._hashed_ids(flat, tag)
    assert ids is not None and ids[0] != ids[1]
