r"""Kernel matrices sharded over the processes of a :mod:`torch.distributed` group
(:doc:`/scaling`).

Every process (rank) runs the same script on the same data, as with
:class:`~torch.nn.parallel.DistributedDataParallel`; each computes one block of rows of a Gram
matrix through the usual engines, the blocks balanced by work (the sequences' lengths), and the
collectives of ``torch.distributed`` (gloo between CPU processes, NCCL between GPUs) join them:

* :func:`row_bounds` and :func:`local_rows`: this rank's rows of any row-separable kernel
  function, with hyperparameter gradients summed over the ranks in the backward pass;
  :func:`gather_rows`, the whole matrix on every rank;
* :class:`ShardedGram`: a symmetric ``K(X, X)`` kept as row blocks (each entry computed once), a
  :class:`~linear_operator.LinearOperator` whose products run on the blocks, so that GPyTorch's
  iterative inference (conjugate gradients, Lanczos, the pivoted-Cholesky preconditioner)
  computes marginal likelihoods, their gradients and predictions across ranks;
* :class:`ShardedKernel`: wraps a kernel (e.g. ``ScaleKernel(RNTKKernel(...))``) so that an
  exact GP uses the above;
* :func:`split_batch` and :class:`DataParallelELBO`: data-parallel training of a variational GP
  (:class:`~gpytorch_rntk.models.SequenceVariationalGP`) in
  :class:`~torch.nn.parallel.DistributedDataParallel`, each rank a piece of every mini-batch.

Launch with ``torchrun --nproc_per_node P script.py`` and call
``torch.distributed.init_process_group`` (give it a ``timeout``: a rank that stops makes the
others raise after at most that long instead of waiting forever).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import gpytorch
import torch
import torch.distributed as dist
from gpytorch.kernels import Kernel
from linear_operator.operators import LinearOperator
from torch import Tensor

from ._core.autodiff import has_tangent
from .kernels import RNNGPKernel, RNTKKernel
from .layout import split_layout

__all__ = [
    "DataParallelELBO",
    "RowShard",
    "ShardedGram",
    "ShardedKernel",
    "gather_rows",
    "local_rows",
    "row_bounds",
    "split_batch",
]


class RowShard(NamedTuple):
    """This rank's block of rows of a matrix: ``matrix`` holds rows ``rows`` of the whole;
    ``bounds`` are all ranks' (block ``p`` is rows ``bounds[p]:bounds[p + 1]``)."""

    matrix: Tensor
    rows: range
    bounds: tuple[int, ...] = ()


def _world(group) -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "gpytorch_rntk.distributed needs an initialised process group: launch the script "
            "with torchrun and call torch.distributed.init_process_group(backend, timeout=...) "
            "first."
        )
    return dist.get_rank(group), dist.get_world_size(group)


def _collective(fn: Callable, *args, **kwargs):
    """Run one collective; a failure (a rank that stopped or timed out) becomes an error that
    says so."""
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, dist.DistError) as error:
        raise RuntimeError(
            f"gpytorch_rntk.distributed: the collective {fn.__name__} failed; another rank has "
            f"probably stopped or not reached this point within the process group's timeout "
            f"({error})"
        ) from error


def row_bounds(work: Tensor, parts: int) -> tuple[int, ...]:
    """Bounds ``0 = b_0 <= b_1 <= ... <= b_parts = N`` of contiguous row blocks of about equal
    total ``work`` (one non-negative number per row, e.g. the sequence lengths: a row of the
    Gram matrix costs in proportion to its sequence's length). Block ``p`` is rows
    ``b_p <= i < b_{p+1}``; a block may be empty (more ranks than rows).

    Example:
        >>> import torch
        >>> row_bounds(torch.tensor([1.0, 1.0, 1.0, 1.0, 4.0]), 2)
        (0, 4, 5)
    """
    if work.dim() != 1:
        raise ValueError(f"work must be one number per row, got shape {tuple(work.shape)}.")
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise ValueError(f"parts must be a positive integer, got {parts!r}.")
    work = work.detach().double().cpu()
    if work.numel() and not (torch.isfinite(work).all() and (work >= 0).all()):
        raise ValueError("work must be finite and non-negative.")
    n = work.numel()
    total = work.sum()
    if n == 0 or total == 0:  # no information: equal counts
        return tuple(round(n * p / parts) for p in range(parts + 1))
    # each row goes to the block that holds the middle of its work
    middles = work.cumsum(0) - work / 2
    targets = total * torch.arange(1, parts, dtype=torch.float64) / parts
    inner = torch.searchsorted(middles, targets).tolist()
    return (0, *inner, n)


class _LocalRows(torch.autograd.Function):
    """``compute()`` (this rank's rows) whose backward pass sums the parameters' gradients over
    the ranks: in an SPMD program every rank's loss is the same function of the whole matrix,
    so the sum of the ranks' row-block gradients is that loss's gradient, on every rank."""

    @staticmethod
    def forward(ctx, compute: Callable[[], Tensor], group, *params: Tensor) -> Tensor:
        with torch.enable_grad():
            out = compute()
        ctx.out, ctx.group = out, group
        ctx.save_for_backward(*params)
        return out.detach()

    @staticmethod
    def backward(ctx, grad: Tensor):
        params, out = ctx.saved_tensors, ctx.out
        ctx.out = None
        wanted = [i for i, need in enumerate(ctx.needs_input_grad[2:]) if need]
        if not wanted:
            return (None,) * (2 + len(params))
        found = [None] * len(wanted)
        if out.requires_grad:
            found = torch.autograd.grad(out, [params[i] for i in wanted], grad, allow_unused=True)
        local = [
            torch.zeros_like(params[i]) if g is None else g
            for i, g in zip(wanted, found, strict=True)
        ]
        flat = torch.cat([g.reshape(-1) for g in local])
        _collective(dist.all_reduce, flat, group=ctx.group)
        grads = [None] * len(params)
        for i, g in zip(wanted, flat.split([g.numel() for g in local]), strict=True):
            grads[i] = g.view_as(params[i])
        return (None, None, *grads)


def local_rows(compute: Callable[[], Tensor], params: Sequence[Tensor] = (), group=None) -> Tensor:
    """``compute()``, this rank's rows of a matrix, differentiable for ``params`` (the
    hyperparameters it depends on) with their gradients summed over the ranks of ``group``
    (every rank must run the backward pass, as in an SPMD program).

    Gradients reach ``params`` only: anything else ``compute`` reads is a constant (the rows of
    the other ranks do not see its gradient); :class:`ShardedKernel` refuses inputs that need
    one. Forward-mode tangents on ``params`` are refused.
    """
    params = [p for p in params if isinstance(p, Tensor)]
    if has_tangent(*params):
        raise ValueError(
            "local_rows does not carry forward-mode tangents across ranks; use reverse mode "
            "(backward) for the hyperparameters' gradients."
        )
    _world(group)
    if not (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
        with torch.no_grad():
            return compute()
    return _LocalRows.apply(compute, group, *params)


class _GatherRows(torch.autograd.Function):
    """The row blocks of all ranks stacked; the backward pass keeps this rank's rows of the
    gradient (every rank computes the same loss of the whole: see :class:`_LocalRows`)."""

    @staticmethod
    def forward(ctx, rows: Tensor, bounds: tuple[int, ...], group) -> Tensor:
        rank, world = _world(group)
        ctx.rows = range(bounds[rank], bounds[rank + 1])
        sizes = [bounds[p + 1] - bounds[p] for p in range(world)]
        padded = rows.new_zeros(max(sizes), *rows.shape[1:])
        padded[: rows.shape[0]] = rows
        parts = [torch.empty_like(padded) for _ in range(world)]
        _collective(dist.all_gather, parts, padded.contiguous(), group=group)
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad[ctx.rows.start : ctx.rows.stop], None, None


def _check_same_on_all_ranks(tensor: Tensor, group, what: str) -> None:
    """Raise unless every rank passes the same ``tensor`` (compared by a checksum, one small
    all-reduce): an SPMD product of a sharded matrix is wrong, silently, if the ranks multiply
    different vectors, e.g. random probe vectors drawn from differently seeded generators."""
    flat = tensor.detach().reshape(-1).double()
    weights = torch.arange(1, flat.numel() + 1, device=flat.device, dtype=flat.dtype)
    checksum = torch.stack([flat.sum(), (flat * weights.sqrt()).sum()])
    extremes = torch.cat([checksum, -checksum])
    _collective(dist.all_reduce, extremes, op=dist.ReduceOp.MAX, group=group)
    if not torch.equal(extremes[:2], -extremes[2:]):
        raise RuntimeError(
            f"gpytorch_rntk.distributed: the ranks passed different {what}. Every rank must "
            "run the same computation on the same data: seed every rank alike "
            "(torch.manual_seed(seed) on each rank before anything draws random numbers; "
            "GPyTorch draws the probe vectors of its log-determinant estimate) and give every "
            "rank all of the inputs."
        )


class _SumOverRanks(torch.autograd.Function):
    """The sum of every rank's ``part``; the backward pass passes the gradient through (every
    rank computes the same loss of the sum: see :class:`_LocalRows`)."""

    @staticmethod
    def forward(ctx, part: Tensor, group) -> Tensor:
        total = part.clone().contiguous()
        _collective(dist.all_reduce, total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def gather_rows(rows: Tensor, bounds: Sequence[int], group=None) -> Tensor:
    """The whole matrix on every rank from each rank's block ``rows`` (rows
    ``bounds[rank]:bounds[rank + 1]``, other dimensions equal on all ranks); differentiable as
    :func:`local_rows` is."""
    rank, world = _world(group)
    bounds = tuple(int(b) for b in bounds)
    if len(bounds) != world + 1 or rows.shape[0] != bounds[rank + 1] - bounds[rank]:
        raise ValueError(
            f"rank {rank} holds {rows.shape[0]} rows, but bounds {bounds} give it "
            f"{bounds[rank + 1] - bounds[rank] if len(bounds) == world + 1 else '?'} "
            f"(bounds must have world_size + 1 = {world + 1} entries)."
        )
    return _GatherRows.apply(rows, bounds, group)


class ShardedGram(LinearOperator):
    r"""A symmetric ``N x N`` kernel matrix spread over the ranks of a process group without
    computing any entry twice: the rank that holds rows ``a:b`` (``bounds[rank]:bounds[rank +
    1]``) keeps ``upper``, their entries in columns ``a:N`` (its diagonal block and everything
    right of it); an entry left of the diagonal block is the transpose of an entry that an
    earlier rank keeps. Build it with :meth:`ShardedKernel.forward`, or from ``upper`` blocks
    computed by :func:`local_rows`.

    Products :math:`K V` multiply each block and its mirror and sum the results over the ranks
    (``N x k`` numbers per rank and product), so conjugate gradients, Lanczos and the
    pivoted-Cholesky preconditioner run on the shards; the gradient of :math:`u^\top K v` for
    the hyperparameters is each block's, summed over the ranks. ``to_dense()`` gathers the whole
    matrix (GPyTorch's Cholesky path, below ``gpytorch.settings.max_cholesky_size``).
    """

    def __init__(self, upper: Tensor, *, bounds: tuple[int, ...], group=None):
        rank, world = _world(group)
        if len(bounds) != world + 1:
            raise ValueError(f"bounds {bounds} must have world_size + 1 = {world + 1} entries.")
        start, stop = bounds[rank], bounds[rank + 1]
        if upper.shape != (stop - start, bounds[-1] - start):
            raise ValueError(
                f"upper must be this rank's rows {start}:{stop} in columns {start}:N of the "
                f"N = {bounds[-1]} columns, shape ({stop - start}, {bounds[-1] - start}); got "
                f"{tuple(upper.shape)}."
            )
        super().__init__(upper, bounds=bounds, group=group)
        self.upper, self.bounds, self.group = upper, bounds, group
        self.row_range = range(start, stop)

    def _size(self) -> torch.Size:
        n = self.bounds[-1]
        return torch.Size((n, n))

    def _transpose_nonbatch(self) -> ShardedGram:
        return self

    def _matmul(self, rhs: Tensor) -> Tensor:
        # rhs (..., N, k). This rank's part of K rhs: its rows times rhs[a:], and its entries
        # right of the diagonal block as the transposed entries of rows b: (times rhs[a:b]).
        _check_same_on_all_ranks(rhs, self.group, "vectors to multiply by the kernel matrix")
        start, stop = self.row_range.start, self.row_range.stop
        out = torch.zeros_like(rhs, dtype=torch.promote_types(rhs.dtype, self.upper.dtype))
        out[..., start:stop, :] = self.upper @ rhs[..., start:, :]
        out[..., stop:, :] = self.upper[:, stop - start :].mT @ rhs[..., start:stop, :]
        return _SumOverRanks.apply(out, self.group)

    def _diagonal(self) -> Tensor:
        index = torch.arange(len(self.row_range), device=self.upper.device)
        return gather_rows(self.upper[index, index], self.bounds, self.group)

    def _bilinear_derivative(self, left_vecs: Tensor, right_vecs: Tensor) -> tuple[Tensor]:
        # d(u^T K v)/d upper: an entry right of the diagonal block stands for K_ij and K_ji
        # (u_i v_j + u_j v_i), one in the block for itself; _LocalRows sums over the ranks
        start, stop = self.row_range.start, self.row_range.stop
        grad = left_vecs[..., start:stop, :] @ right_vecs[..., start:, :].mT
        grad[..., stop - start :] += right_vecs[..., start:stop, :] @ left_vecs[..., stop:, :].mT
        return (grad.reshape(-1, *grad.shape[-2:]).sum(0),)

    def _get_indices(self, row_index: Tensor, col_index: Tensor, *batch_indices) -> Tensor:
        # each entry from the rank that keeps it, zeros elsewhere, summed over the ranks (the
        # pivoted-Cholesky preconditioner's rows; differentiable like the products)
        row_index, col_index = torch.broadcast_tensors(row_index, col_index)
        _check_same_on_all_ranks(torch.stack([row_index, col_index]), self.group, "indices")
        bounds = torch.tensor(self.bounds, device=row_index.device)
        # (i, j) is kept by the rank of row i if j is right of that rank's start, else as (j, i)
        row_start = bounds[torch.searchsorted(bounds, row_index, right=True) - 1]
        mirrored = col_index < row_start
        rows = torch.where(mirrored, col_index, row_index)
        cols = torch.where(mirrored, row_index, col_index)
        start, stop = self.row_range.start, self.row_range.stop
        mine = (rows >= start) & (rows < stop)
        if stop > start:
            local = self.upper[(rows - start).clamp(0, stop - start - 1), (cols - start).clamp(0)]
            values = torch.where(mine, local, torch.zeros_like(local))
        else:
            values = self.upper.new_zeros(rows.shape)
        return _SumOverRanks.apply(values, self.group)

    def to_dense(self) -> Tensor:
        # every rank's rows padded with zeros on the left, then the left parts mirrored
        n, start = self.bounds[-1], self.row_range.start
        rows = torch.cat([self.upper.new_zeros(len(self.row_range), start), self.upper], -1)
        padded = gather_rows(rows, self.bounds, self.group)
        sizes = torch.tensor(self.bounds, device=padded.device).diff()
        starts = torch.tensor(self.bounds[:-1], device=padded.device).repeat_interleave(sizes)
        kept = torch.arange(n, device=padded.device) >= starts.unsqueeze(-1)
        return torch.where(kept, padded, padded.mT)

    def _expand_batch(self, batch_shape: torch.Size) -> LinearOperator:
        raise NotImplementedError(
            "ShardedGram holds one matrix; batches of sharded matrices are not supported."
        )


def _work(kernel: Kernel, x: Tensor, symmetric: bool) -> Tensor:
    """The cost of each row of ``K(x, .)``: its sequence's length where the kernel reads
    lengths from the layout, else 1; for ``K(x, x)``, whose rows are computed from the diagonal
    on (:class:`ShardedGram`), times the work of the columns from the row on."""
    recurrent = [m for m in kernel.modules() if isinstance(m, (RNTKKernel, RNNGPKernel))]
    if len(recurrent) == 1 and recurrent[0].variable_length:
        _, lengths = split_layout(x.detach(), recurrent[0].input_dim, True)
        work = lengths.double().cpu()
    else:
        work = torch.ones(x.shape[-2], dtype=torch.float64)
    if symmetric:
        work = work * work.flip(0).cumsum(0).flip(0)
    return work


class ShardedKernel(Kernel):
    r"""``base_kernel`` with its Gram matrices computed in row blocks, one per rank of a
    :mod:`torch.distributed` process group (every rank runs the same script on the same inputs).

    ``K(X, X)`` comes back as a :class:`ShardedGram` (each rank computes and keeps its rows
    from the diagonal on, about ``N^2 / (2 P)`` numbers, balanced by work); any other
    ``K(X, Z)`` gathered on every rank; ``diag=True`` is
    computed whole on every rank (:math:`O(N)`). Rows are balanced by the sequences' lengths.
    Gradients reach the hyperparameters of ``base_kernel``, summed over the ranks, so every rank
    holds the full gradient (no gradient all-reduce by the caller); gradients for the inputs are
    refused.

    With GPyTorch's iterative inference (above ``gpytorch.settings.max_cholesky_size``, default
    800) no rank ever holds the whole matrix; below it GPyTorch's Cholesky gathers it.

    Args:
        base_kernel: A kernel whose ``forward(x1[rows], x2)`` equals rows ``rows`` of
            ``forward(x1, x2)``: :class:`~gpytorch_rntk.RNTKKernel`,
            :class:`~gpytorch_rntk.RNNGPKernel`, and such kernels scaled or summed.
        process_group: The group to shard over; ``None`` for the default group.

    Example (run under ``torchrun``)::

        torch.distributed.init_process_group("gloo", timeout=datetime.timedelta(minutes=5))
        covar = ShardedKernel(ScaleKernel(RNTKKernel(input_dim=1)))
        model = SingleTaskGP(train_x, train_y, covar_module=covar)
    """

    chunk_elements: int = 2**24  # kernel values computed per call: 64 MiB in float32

    def __init__(self, base_kernel: Kernel, process_group=None):
        if not isinstance(base_kernel, Kernel):
            raise TypeError(f"base_kernel must be a gpytorch Kernel, got {type(base_kernel)}.")
        super().__init__()
        self.base_kernel = base_kernel
        self.process_group = process_group

    def shard(self, x1: Tensor, x2: Tensor | None = None) -> RowShard:
        """This rank's rows of ``K(x1, x2)`` (``x2 = None``: ``K(x1, x1)``) and their range."""
        x2 = x1 if x2 is None else x2
        bounds, rows = self._split(x1, symmetric=False)
        return RowShard(self._rows(x1, x2, rows), rows, bounds)

    def _split(self, x1: Tensor, symmetric: bool) -> tuple[tuple[int, ...], range]:
        """All ranks' row bounds for ``x1`` (balanced by :func:`_work`) and this rank's rows."""
        rank, world = _world(self.process_group)
        bounds = row_bounds(_work(self.base_kernel, x1, symmetric), world)
        return bounds, range(bounds[rank], bounds[rank + 1])

    def _rows(self, x1: Tensor, x2: Tensor, rows: range, upper: bool = False) -> Tensor:
        if x1.requires_grad or x2.requires_grad:
            raise ValueError(
                "ShardedKernel computes gradients for the hyperparameters only, not for the "
                "inputs (acquisition optimisation): evaluate the base kernel for those."
            )
        if x1.dim() != 2 or x2.dim() != 2:
            raise ValueError(
                f"ShardedKernel takes unbatched inputs (N, D), got {tuple(x1.shape)} and "
                f"{tuple(x2.shape)}."
            )
        # (the hyperparameters too: optimisers on different ranks must take the same steps)
        parameters = [p.detach().reshape(-1).to(x1) for p in self.base_kernel.parameters()]
        both = torch.cat([x1.reshape(-1), x2.reshape(-1), *parameters])
        _check_same_on_all_ranks(
            both, self.process_group, "inputs or hyperparameters to ShardedKernel"
        )
        block = x1[rows.start : rows.stop]
        # K(x, x)'s rows from the diagonal on: the diagonal block by the symmetric path, then
        # the columns right of it; else all columns. Written into one buffer in chunks of
        # columns, so that the peak is the shard plus about one chunk (not twice the shard).
        columns = x2[rows.stop :] if upper else x2
        step = max(1, self.chunk_elements // max(1, len(rows)))

        def compute() -> Tensor:
            out = None
            pieces = [(block, 0)] if upper else []
            offset = len(rows) if upper else 0
            pieces += [(columns[j : j + step], offset + j) for j in range(0, len(columns), step)]
            for other, start in pieces:
                values = self.base_kernel.forward(block, other)
                if out is None:
                    out = values.new_empty(len(rows), offset + len(columns))
                out[:, start : start + values.shape[-1]] = values
            if out is None:  # no columns
                return self.base_kernel.forward(block, x2[:0])
            return out

        return local_rows(compute, list(self.base_kernel.parameters()), self.process_group)

    def forward(
        self, x1: Tensor, x2: Tensor, diag: bool = False, last_dim_is_batch: bool = False, **params
    ):
        if last_dim_is_batch:
            raise NotImplementedError("ShardedKernel does not support last_dim_is_batch=True.")
        if diag:
            return self.base_kernel.forward(x1, x2, diag=True)
        symmetric = x1 is x2 or (x1.shape == x2.shape and torch.equal(x1, x2))
        bounds, mine = self._split(x1, symmetric)
        rows = self._rows(x1, x2, mine, upper=symmetric)
        if symmetric:
            return ShardedGram(rows, bounds=bounds, group=self.process_group)
        return gather_rows(rows, bounds, self.process_group)


def split_batch(batch: Tensor, rank: int, world_size: int) -> tuple[Tensor, float]:
    """This rank's contiguous piece of a global mini-batch, and the weight of its data term.

    Every rank draws the same global mini-batch (the same generator and seed) and trains on its
    piece in :class:`~torch.nn.parallel.DistributedDataParallel`, which averages the ranks'
    gradients. The ELBO averages its expected log-likelihood over the rows it is given, so a
    rank holding ``b`` of the ``n`` rows counts its data term ``world_size * b / n`` times
    (:class:`DataParallelELBO`'s ``share``): the average over the ranks is then the ELBO of the
    whole batch, as one process training on all of it would compute (the weight is exactly 1
    for equal pieces; ``n`` need not divide evenly).

    Args:
        batch: The global mini-batch (e.g. its row indices), the same on every rank.
        rank: This process's rank (``torch.distributed.get_rank()``).
        world_size: The number of processes (``torch.distributed.get_world_size()``).

    Returns:
        This rank's rows of ``batch`` and the weight of its data term.

    Raises:
        ValueError: If some rank would get no rows (every rank must run a forward and a
            backward pass for DDP's gradient all-reduce), or ``rank`` is not in the world.

    Example:
        >>> import torch
        >>> split_batch(torch.arange(5), rank=1, world_size=2)
        (tensor([3, 4]), 0.8)
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of size {world_size}.")
    if len(batch) < world_size:
        raise ValueError(
            f"a mini-batch of {len(batch)} rows cannot be split over {world_size} ranks: every "
            "rank needs at least one row."
        )
    piece = torch.tensor_split(batch, world_size)[rank]
    return piece, world_size * len(piece) / len(batch)


class DataParallelELBO(torch.nn.Module):
    """The negative mini-batch ELBO of a variational GP as one module, the unit to wrap in
    :class:`~torch.nn.parallel.DistributedDataParallel`: it holds the likelihood (whose noise
    would otherwise be trained apart on each rank, silently) as well as the model, and returns
    a tensor (DDP cannot look inside the model's ``MultivariateNormal``).

    Natural-gradient steps (``gpytorch.optim.NGD``) for q(u) work unchanged: their step is
    linear in the gradients DDP averages. Wrap it after the model's first call (GPyTorch builds
    q(u) then), so that DDP's broadcast of rank 0's state covers it.

    Args:
        model: The variational GP.
        likelihood: Its likelihood.
        num_data: The size of the whole training set (not of a rank's piece of it).

    Example (under ``torchrun``)::

        loss_fn = DistributedDataParallel(DataParallelELBO(model, likelihood, len(train_y)))
        rows, share = split_batch(batch, dist.get_rank(), dist.get_world_size())
        loss_fn(train_x[rows], train_y[rows], share).backward()
    """

    def __init__(
        self,
        model: gpytorch.models.ApproximateGP,
        likelihood: gpytorch.likelihoods.Likelihood,
        num_data: int,
    ) -> None:
        super().__init__()
        self.model = model
        self.likelihood = likelihood
        # the terms one by one, to weight the data term of a rank's piece (split_batch)
        self.mll = gpytorch.mlls.VariationalELBO(likelihood, model, num_data, combine_terms=False)

    def forward(self, x: Tensor, y: Tensor, share: float = 1.0) -> Tensor:
        """``-(share * data term - KL / N + log prior / N - added losses)``; with ``share`` 1
        bit for bit ``-VariationalELBO(likelihood, model, num_data)(model(x), y)``."""
        log_likelihood, kl_divergence, log_prior, *added = self.mll(self.model(x), y)
        elbo = share * log_likelihood - kl_divergence + log_prior
        if added:  # only returned when the model has added loss terms
            elbo = elbo - added[0]
        return -elbo
