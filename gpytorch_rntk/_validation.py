"""Validation of the kernel functions' inputs at the public boundary."""

from __future__ import annotations

import torch
from torch import Tensor

from ._core.config import RecurrentVariances

__all__ = ["check_sequences"]


def check_sequences(
    values1: Tensor,
    lengths1: Tensor,
    values2: Tensor | None = None,
    lengths2: Tensor | None = None,
    variances: RecurrentVariances | None = None,
    *,
    paired: bool = False,
    readout: str = "last",
) -> None:
    """Raise a ``TypeError`` or ``ValueError`` naming what is wrong with a kernel function's
    sequences (``(..., N, T, m)`` floating values, ``(..., N)`` integer lengths in ``[1, T]``,
    finite; both sides of one dtype, device and ``m``) or variances (finite, non-negative; the
    readout decay in ``(0, 1]`` for ``readout="geometric"``, else 1: the other readouts have
    none).
    Checks the values with one synchronisation."""
    sides = {"values1": (values1, lengths1)}
    if values2 is not None:
        sides["values2"] = (values2, lengths2)
    flags, messages = [], []
    for name, (values, lengths) in sides.items():
        if not isinstance(values, Tensor) or not values.is_floating_point():
            found = values.dtype if isinstance(values, Tensor) else type(values).__name__
            raise TypeError(f"{name} must be a floating-point tensor, got {found}.")
        if values.dim() < 3 or 0 in values.shape[-2:]:
            raise ValueError(
                f"{name} must have shape (..., N, T, m) with T, m >= 1, got {tuple(values.shape)}."
            )
        if not isinstance(lengths, Tensor) or lengths.is_floating_point() or lengths.is_complex():
            found = lengths.dtype if isinstance(lengths, Tensor) else type(lengths).__name__
            raise TypeError(f"The lengths of {name} must be an integer tensor, got {found}.")
        if lengths.device != values.device:
            raise ValueError(
                f"The lengths of {name} are on {lengths.device}, {name} on {values.device}."
            )
        if lengths.shape != values.shape[:-2]:
            raise ValueError(
                f"The lengths of {name} have shape {tuple(lengths.shape)}; {name} "
                f"{tuple(values.shape)} needs {tuple(values.shape[:-2])}."
            )
        steps = values.shape[-2]
        flags += [((lengths < 1) | (lengths > steps)).any(), ~torch.isfinite(values).all()]
        messages += [f"The lengths of {name} must be in [1, T = {steps}].", f"{name} has NaN/inf."]
    if values2 is not None:
        if values2.dtype != values1.dtype or values2.device != values1.device:
            raise ValueError(
                f"values1 ({values1.dtype}, {values1.device}) and values2 ({values2.dtype}, "
                f"{values2.device}) must share a dtype and a device."
            )
        if values2.shape[-1] != values1.shape[-1]:
            raise ValueError(
                f"values1 has m = {values1.shape[-1]} values per step and values2 "
                f"{values2.shape[-1]}; they must agree."
            )
        if paired and values2.shape[-3] != values1.shape[-3]:
            raise ValueError(
                f"paired needs as many sequences on both sides, got {values1.shape[-3]} and "
                f"{values2.shape[-3]}."
            )
    for name, v in zip(RecurrentVariances._fields, variances or (), strict=False):
        v = torch.as_tensor(v, device=values1.device).detach()
        if name == "readout_decay" and readout == "geometric":
            flags.append(~((v > 0) & (v <= 1)).all())
            messages.append("readout_decay must be in (0, 1].")
            continue
        if name == "readout_decay":
            flags.append(v.ne(1).any())
            messages.append(
                f"readout_decay is the geometric readout's; readout={readout!r} has none "
                "(leave it at its default, 1.0)."
            )
            continue
        flags.append(~(torch.isfinite(v) & (v >= 0)).all())
        messages.append(f"{name} must be finite and non-negative.")
    for bad, message in zip(torch.stack(flags).tolist(), messages, strict=True):
        if bad:
            raise ValueError(message)
