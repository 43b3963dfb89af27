"""Gram matrices in one call, for kernel methods outside GPyTorch (SVMs, kernel ridge)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .distributed import RowShard, ShardedKernel, gather_rows
from .kernels import kernel_class
from .layout import as_int, encode_sequences

__all__ = ["gram_matrix"]


def gram_matrix(
    seqs1: Sequence[np.ndarray | Tensor],
    seqs2: Sequence[np.ndarray | Tensor] | None = None,
    *,
    kernel: str = "rntk",
    recurrent_var: float | None = None,
    input_var: float | None = None,
    bias_var: float | None = None,
    init_var: float | None = None,
    distributed: str | None = None,
    **kernel_options,
) -> np.ndarray | RowShard:
    r"""The RNTK or RNN-NNGP Gram matrix between two lists of sequences, as a NumPy array.

    Sequences are ``(T_i, m)`` arrays (or 1-D for ``m = 1``) of any lengths; the computation runs
    in float64 without gradients.

    Args:
        seqs1: ``N`` sequences.
        seqs2: ``N'`` sequences; ``None`` for ``seqs1`` itself (the symmetric training Gram).
        kernel: ``"rntk"`` (:class:`~gpytorch_rntk.RNTKKernel`) or ``"nngp"``
            (:class:`~gpytorch_rntk.RNNGPKernel`).
        recurrent_var, input_var, bias_var, init_var: The variances; ``None`` keeps the
            kernel's default.
        distributed: ``None`` (this process computes the whole matrix), or, in every process of
            an initialised :mod:`torch.distributed` process group, each computes a block of
            rows balanced by the sequences' lengths and returns ``"rows"``: its block, a
            :class:`~gpytorch_rntk.distributed.RowShard` ``(matrix, rows)`` of a NumPy array and
            its row range, or ``"gathered"``: the whole matrix (:doc:`/scaling`).
        **kernel_options: ``num_layers``, ``nonlinearity``, ``initial_state``,
            ``bidirectional``, ``readout``, ``engine`` (and ``frozen_layers`` for ``"rntk"``);
            any other keyword raises a ``TypeError``. ``variable_length``, ``batch_shape`` and
            ``active_dims`` describe a kernel's input tensor, which this function builds itself
            (sequences of equal length give the fixed-length layout's values).

    Returns:
        An ``(N, N')`` float64 array (with ``distributed="rows"``, this process's rows of it).

    Example:
        >>> import numpy as np
        >>> from sklearn.svm import SVC
        >>> rng = np.random.default_rng(0)
        >>> train = [rng.normal(size=(t, 2)) for t in (5, 8, 6, 7)]
        >>> labels = [0, 1, 0, 1]
        >>> svm = SVC(kernel="precomputed").fit(gram_matrix(train), labels)
        >>> test = [rng.normal(size=(4, 2))]
        >>> svm.predict(gram_matrix(test, train)).shape
        (1,)
    """
    allowed = {"num_layers", "nonlinearity", "initial_state", "bidirectional", "readout", "engine"}
    if kernel == "rntk":
        allowed.add("frozen_layers")
    unknown = sorted(set(kernel_options) - allowed)
    if unknown:
        hint = (
            " (variable_length, batch_shape and active_dims shape a kernel's input tensor; "
            "gram_matrix encodes the sequences itself, and sequences of equal length give the "
            "fixed-length layout's values.)"
            if {"variable_length", "batch_shape", "active_dims"} & set(unknown)
            else ""
        )
        raise TypeError(
            f"gram_matrix got unexpected keyword arguments {unknown}; it takes {sorted(allowed)}."
            + hint
        )
    if distributed not in (None, "rows", "gathered"):
        raise ValueError(f"distributed must be None, 'rows' or 'gathered', got {distributed!r}.")
    for name, seqs in (("seqs1", seqs1), ("seqs2", seqs2)):
        if isinstance(seqs, (np.ndarray, Tensor, str)):
            raise TypeError(
                f"{name} must be a list of sequences, got one {type(seqs).__name__}: pass [x] "
                "for one sequence (list(x) for the rows of a 2-D array as univariate sequences)."
            )
    variances = dict(
        recurrent_var=recurrent_var, input_var=input_var, bias_var=bias_var, init_var=init_var
    )
    variances = {k: v for k, v in variances.items() if v is not None}
    for name, value in variances.items():
        if as_int(value) is None and not isinstance(value, (float, np.floating)):
            raise TypeError(f"{name} must be a number, got {value!r}.")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and non-negative, got {value!r}.")
    if init_var is not None and kernel_options.get("initial_state", "zero") == "zero":
        raise ValueError("init_var needs initial_state='per_input' or 'shared'.")
    both = list(seqs1) + ([] if seqs2 is None else list(seqs2))
    try:
        tensors = [torch.as_tensor(s).detach() for s in both]
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"Each sequence must be an array of numbers: {err}") from None
    x = encode_sequences([t if t.is_complex() else t.double() for t in tensors]) if both else None
    input_dim = (x.shape[-1] - 1) // int(x[:, 0].max()) if both else 1
    module = kernel_class(kernel)(input_dim=input_dim, **kernel_options).double()  # validates
    module.initialize(**variances)
    if not both:
        return np.zeros((0, 0)) if distributed != "rows" else RowShard(np.zeros((0, 0)), range(0))
    x1, x2 = x[: len(seqs1)], x[len(seqs1) :]
    x2 = x1 if seqs2 is None else x2
    with torch.no_grad():
        if distributed is None:
            return module.forward(x1, x2).cpu().numpy()
        sharded = ShardedKernel(module)
        if distributed == "gathered" and seqs2 is None:  # each entry of K(x, x) once
            return sharded.forward(x1, x1).to_dense().cpu().numpy()
        shard = sharded.shard(x1, x2)
        if distributed == "gathered":
            return gather_rows(shard.matrix, shard.bounds, sharded.process_group).cpu().numpy()
        return shard._replace(matrix=shard.matrix.cpu().numpy())
