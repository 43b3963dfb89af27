"""The tensor layout of batches of sequences (:doc:`/layout`).

GPyTorch reads the last dimension of an input as features and BoTorch refuses NaN inputs, so a
batch of sequences of different lengths is one float tensor ``(..., N, D)``:

* variable-length layout: ``D = 1 + T_max * m``; column 0 holds the length ``T_i`` and the steps
  ``x_1 .. x_T`` follow in order, ``m`` values each, right-padded with zeros;
* fixed-length layout: ``D = T * m``, no length column.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ._core.config import as_int, check_positive_int

__all__ = [
    "as_int",
    "check_encoding",
    "check_positive_int",
    "decode_sequences",
    "decode_tokens",
    "encode_sequences",
    "encode_tokens",
    "split_layout",
]


def encode_sequences(seqs: Sequence[np.ndarray | Tensor], max_len: int | None = None) -> Tensor:
    r"""Encode a list of sequences into the variable-length layout.

    Args:
        seqs: ``N`` arrays or tensors of shape ``(T_i, m)``, or 1-D of shape ``(T_i,)`` when
            ``m = 1``. Lengths may differ; the step dimension ``m`` may not.
        max_len: The padded length ``T_max``; defaults to the longest sequence.

    Returns:
        A tensor of shape ``(N, 1 + T_max * m)`` with the length in column 0. Its dtype is the
        inputs' floating dtype (float64 in, float64 out); Python lists and integer arrays give
        torch's default dtype.

    Example:
        >>> x = encode_sequences([[1.0, 2.0, 3.0], [4.0]])
        >>> x
        tensor([[3., 1., 2., 3.],
                [1., 4., 0., 0.]])
    """
    if len(seqs) == 0:
        raise ValueError("encode_sequences needs at least one sequence, got an empty list.")
    tensors = []
    for i, seq in enumerate(seqs):
        try:
            t = torch.as_tensor(seq)  # arrays keep their dtype; Python lists get the default
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"Sequence {i} is not an array of numbers: {err}") from None
        if t.is_complex():
            raise TypeError(f"Sequence {i} is complex ({t.dtype}); the kernels take real values.")
        if t.dim() == 1:
            t = t.unsqueeze(-1)
        if t.dim() != 2:
            raise ValueError(
                f"Sequence {i} has shape {tuple(t.shape)}; expected (T, m) or (T,) for m = 1."
            )
        if t.shape[0] == 0:
            raise ValueError(f"Sequence {i} is empty (length 0); every sequence needs a step.")
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
        if not torch.isfinite(t).all():
            raise ValueError(f"Sequence {i} contains NaN or inf.")
        tensors.append(t)
    dims = {t.shape[1] for t in tensors}
    if len(dims) > 1:
        raise ValueError(f"All sequences need the same step dimension m; got {sorted(dims)}.")
    m = dims.pop()
    if m == 0:
        raise ValueError("The sequences' steps have no values (m = 0); each step needs one.")
    longest = max(t.shape[0] for t in tensors)
    if max_len is None:
        max_len = longest
    elif check_positive_int(max_len, "max_len") < longest:
        raise ValueError(f"max_len={max_len} is shorter than the longest sequence ({longest}).")
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
    exact = 2 / torch.finfo(dtype).eps  # every integer up to this is representable
    if longest > exact:
        raise ValueError(
            f"{dtype} holds lengths only up to {exact:.0f} exactly and the longest sequence has "
            f"{longest} steps; encode float32 or float64 sequences."
        )
    out = torch.zeros(len(tensors), 1 + max_len * m, dtype=dtype, device=tensors[0].device)
    for i, t in enumerate(tensors):
        out[i, 0] = t.shape[0]
        out[i, 1 : 1 + t.numel()] = t.reshape(-1).to(out)
    return out


def split_layout(x: Tensor, input_dim: int, variable_length: bool = True) -> tuple[Tensor, Tensor]:
    r"""Split a layout tensor into step values and integer lengths, validating it.

    Lengths are rounded and clamped to ``[1, T_max]`` (optimisers write non-integer lengths) and
    every value past a sequence's length is set to zero, so it can never change a kernel value.

    Args:
        x: ``(..., N, D)`` in the variable-length (``D = 1 + T_max m``) or fixed-length
            (``D = T m``) layout.
        input_dim: The step dimension ``m``.
        variable_length: Whether column 0 holds the length.

    Returns:
        ``values`` of shape ``(..., N, T_max, m)`` and ``lengths`` of shape ``(..., N)`` (int64).
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"Sequence inputs must be a torch.Tensor, got {type(x).__name__}.")
    if not x.is_floating_point():
        raise TypeError(f"Sequence inputs must be floating point, got {x.dtype}.")
    if x.dim() < 2:
        raise ValueError(f"Sequence inputs must be (..., N, D), got shape {tuple(x.shape)}.")
    input_dim = check_positive_int(input_dim, "input_dim")
    width = x.shape[-1]
    steps = width - 1 if variable_length else width
    if steps < input_dim or steps % input_dim != 0:
        layout = "1 + T_max * input_dim" if variable_length else "T * input_dim"
        raise ValueError(
            f"Input width {width} does not fit input_dim={input_dim}: the layout needs "
            f"width = {layout} with T >= 1."
        )
    if not torch.isfinite(x).all():
        raise ValueError("Sequence inputs contain NaN or inf.")
    t_max = steps // input_dim
    values = x[..., width - steps :].reshape(*x.shape[:-1], t_max, input_dim)
    if not variable_length:
        lengths = torch.full(x.shape[:-1], t_max, dtype=torch.long, device=x.device)
        return values, lengths
    lengths = x[..., 0].detach().round().clamp(1, t_max).long()
    inside = torch.arange(t_max, device=x.device) < lengths.unsqueeze(-1)
    return values * inside.unsqueeze(-1).to(values), lengths


def check_encoding(x: Tensor, input_dim: int) -> None:
    r"""Warn if training sequences in the variable-length layout do not look encoded with step
    dimension ``input_dim``.

    Every width ``1 + k * input_dim`` fits the layout, so a wrong ``input_dim`` shows only in the
    values. :func:`encode_sequences` writes zeros past each length and lengths of at most
    ``T_max``. Sequences of ``m = 2`` values per step read with ``input_dim=1`` have values past
    the length in every row (each row's ``2 T_i`` values are read as ``T_i`` steps); read with too
    large an ``input_dim`` the longest rows' lengths exceed ``T_max``. Candidates of an optimiser
    may carry values past their lengths (the kernels ignore them), so only training data can be
    judged, and only when every row has values past its length; sequences encoded with the
    fixed-length layout's width can never be told apart.

    Args:
        x: ``(..., N, 1 + T_max * input_dim)`` training sequences.
        input_dim: The step dimension ``m`` the kernel assumes.
    """
    steps = (x.shape[-1] - 1) // input_dim
    if x.shape[-2] == 0 or steps < 1:
        return
    raw = x.detach()
    lengths = raw[..., 0]
    inside = torch.arange(steps, device=x.device) < lengths.round().clamp(1, steps).unsqueeze(-1)
    values = raw[..., 1 : 1 + steps * input_dim].reshape(*x.shape[:-1], steps, input_dim)
    beyond = ((values != 0).any(-1) & ~inside).any(-1)
    too_long, everywhere = torch.stack([(lengths > steps + 0.5).any(), beyond.all()]).tolist()
    if too_long:
        warnings.warn(
            f"Training lengths up to {lengths.max().item():g} exceed T_max = {steps}, the steps "
            f"that width {x.shape[-1]} holds with input_dim={input_dim}; the kernel clamps them. "
            "Is input_dim the step dimension m the sequences were encoded with?",
            UserWarning,
            stacklevel=2,
        )
    elif everywhere:
        warnings.warn(
            f"Every training sequence has non-zero values past its length, which "
            f"encode_sequences never writes: were the sequences encoded with more than "
            f"input_dim={input_dim} values per step? (Any width fits input_dim=1.) Pass the step "
            "dimension m of encode_sequences' (T, m) arrays, or gpytorch_rntk.botorch."
            "canonicalize_sequences(x, input_dim) if the values past the lengths are meant to "
            "be ignored.",
            UserWarning,
            stacklevel=2,
        )


def decode_sequences(x: Tensor, input_dim: int) -> tuple[Tensor, Tensor]:
    r"""Invert :func:`encode_sequences`.

    Args:
        x: ``(..., N, 1 + T_max * input_dim)`` in the variable-length layout.
        input_dim: The step dimension ``m``.

    Returns:
        ``values`` of shape ``(..., N, T_max, m)``, zero past each length, and ``lengths`` of
        shape ``(..., N)``.

    Example:
        >>> values, lengths = decode_sequences(encode_sequences([[1.0, 2.0], [3.0]]), 1)
        >>> lengths
        tensor([2, 1])
    """
    return split_layout(x, input_dim, variable_length=True)


def encode_tokens(
    tokens: Sequence[Sequence[int] | Tensor | np.ndarray],
    alphabet_size: int,
    max_len: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""Encode token sequences (strings over an alphabet ``0 .. alphabet_size - 1``: amino acids,
    nucleotides, a molecule's tokens) as one-hot steps in the variable-length layout.

    Step ``t`` of a sequence is the indicator vector of its token, so ``m = alphabet_size`` and
    the kernels (``input_dim=alphabet_size``) compare sequences of any lengths; the input term
    ``<x_t, x'_t'> / m`` of two steps is ``1 / m`` where their tokens agree and 0 elsewhere.

    Args:
        tokens: ``N`` sequences of integer tokens (lists, 1-D integer tensors or arrays).
        alphabet_size: The number of distinct tokens.
        max_len: The padded length ``T_max`` (default: the longest sequence); training and
            candidate inputs must share it.
        dtype: A floating dtype (float64, as BoTorch recommends).

    Returns:
        ``(N, 1 + T_max * alphabet_size)``.

    Example:
        >>> encode_tokens([[0, 2], [1]], alphabet_size=3)
        tensor([[2., 1., 0., 0., 0., 0., 1.],
                [1., 0., 1., 0., 0., 0., 0.]], dtype=torch.float64)
    """
    size = check_positive_int(alphabet_size, "alphabet_size")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}.")
    if len(tokens) == 0:
        raise ValueError("encode_tokens needs at least one sequence, got an empty list.")
    steps = []
    for i, seq in enumerate(tokens):
        t = torch.as_tensor(seq)
        if t.shape == (0,):  # (an empty list becomes a float tensor: say what is wrong)
            raise ValueError(f"Token sequence {i} is empty; every sequence needs a token.")
        if t.dim() != 1 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(
                f"Token sequence {i} must be a 1-D sequence of integers, got "
                f"{t.dtype} of shape {tuple(t.shape)}."
            )
        if t.min() < 0 or t.max() >= size:
            raise ValueError(
                f"Token sequence {i} has tokens outside 0 .. {size - 1} (alphabet_size={size}): "
                f"min {int(t.min())}, max {int(t.max())}."
            )
        steps.append(torch.nn.functional.one_hot(t.long().cpu(), size).to(dtype))
    return encode_sequences(steps, max_len=max_len)


def decode_tokens(x: Tensor, alphabet_size: int) -> list[Tensor]:
    """Invert :func:`encode_tokens`: the integer tokens of each row of ``x`` ``(N, D)``.

    Raises a ``ValueError`` where a step within a sequence's length is not one-hot (e.g. a
    candidate from a continuous optimiser): round such steps yourself, or search over tokens
    with :func:`gpytorch_rntk.botorch.optimize_acqf_tokens`.
    """
    size = check_positive_int(alphabet_size, "alphabet_size")
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a 2-D tensor (N, 1 + T_max * {size}), got {type(x)}.")
    values, lengths = decode_sequences(x, size)
    inside = torch.arange(values.shape[-2], device=x.device) < lengths.unsqueeze(-1)
    one_hot = ((values == 0) | (values == 1)).all(-1) & (values.sum(-1) == 1)
    bad = inside & ~one_hot
    if bad.any():
        row, step = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"Row {row}, step {step} is not a one-hot vector of {size} entries "
            f"({values[row, step].tolist()}): not a token sequence."
        )
    tokens = values.argmax(-1)
    return [tokens[i, : int(lengths[i])] for i in range(len(tokens))]
