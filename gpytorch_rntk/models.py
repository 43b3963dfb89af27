"""Variational GPs whose inducing points are sequences."""

from __future__ import annotations

import gpytorch
import torch
from torch import Tensor

from .kernels import kernel_class
from .layout import check_encoding, check_positive_int, split_layout

__all__ = ["SequenceInputsMixin", "SequenceVariationalGP", "inducing_sequences"]


def _check_width(x: Tensor, width: int, stored: str) -> None:
    if isinstance(x, Tensor) and x.dim() >= 1 and x.shape[-1] != width:
        raise ValueError(
            f"Inputs of width {x.shape[-1]}, {stored} of width {width}: encode both with the "
            "same max_len (encode_sequences(..., max_len=T_max); with BoTorch, bounds from "
            "sequence_bounds(T_max, ...))."
        )


class SequenceInputsMixin:
    r"""For an exact GP on sequences: test inputs of another width than the training
    sequences raise a ``ValueError`` that says how to encode them, where GPyTorch would fail
    inside ``torch.cat`` while joining them to the training inputs.

    GPyTorch joins the two before any kernel sees them, so only the model can check. Put the
    mixin first among the bases.

    Example:
        >>> import gpytorch
        >>> from gpytorch_rntk import RNTKKernel, encode_sequences
        >>> class SequenceGP(SequenceInputsMixin, gpytorch.models.ExactGP):
        ...     def forward(self, x):
        ...         mean, covar = gpytorch.means.ZeroMean()(x), RNTKKernel(1)(x)
        ...         return gpytorch.distributions.MultivariateNormal(mean, covar)
        >>> x = encode_sequences([torch.randn(t, 1) for t in (3, 5)])
        >>> model = SequenceGP(x, torch.zeros(2), gpytorch.likelihoods.GaussianLikelihood())
        >>> model.eval()(x[:, :4])
        Traceback (most recent call last):
        ...
        ValueError: Inputs of width 4, training sequences of width 6: encode both with the
        same max_len (encode_sequences(..., max_len=T_max); with BoTorch, bounds from
        sequence_bounds(T_max, ...)).
    """

    def __call__(self, *inputs, **kwargs):
        if not self.training and self.train_inputs is not None:
            for train_x, x in zip(self.train_inputs, inputs, strict=False):
                _check_width(x, train_x.shape[-1], "training sequences")
        return super().__call__(*inputs, **kwargs)


def inducing_sequences(train_x: Tensor, num_inducing: int) -> Tensor:
    r"""Initial inducing sequences: training sequences spread evenly over the lengths.

    Rows of ``train_x`` (variable-length layout, length in column 0) are sorted by length and
    ``num_inducing`` of them taken at evenly spaced ranks, so short and long sequences are both
    represented.

    Args:
        train_x: ``(N, 1 + T_max m)`` training sequences.
        num_inducing: ``M <= N``.

    Returns:
        An ``(M, 1 + T_max m)`` copy.
    """
    if not isinstance(train_x, Tensor) or train_x.dim() != 2:
        found = tuple(train_x.shape) if isinstance(train_x, Tensor) else type(train_x).__name__
        raise ValueError(f"train_x must be an (N, D) tensor, got {found}.")
    if check_positive_int(num_inducing, "num_inducing") > train_x.shape[-2]:
        raise ValueError(
            f"num_inducing must be in [1, {train_x.shape[-2]}] (the number of training rows), "
            f"got {num_inducing}."
        )
    order = torch.argsort(train_x[:, 0], stable=True)
    ranks = torch.linspace(0, len(order) - 1, num_inducing).round().long()
    return train_x[order[ranks]].detach().clone()


class SequenceVariationalGP(gpytorch.models.ApproximateGP):
    r"""SVGP (Hensman et al., 2015) with an RNTK or RNN-NNGP kernel and inducing sequences.

    The inducing sequences' step values are learned; their lengths (column 0) are not: the
    kernel reads a length without a gradient, and the model writes the initial lengths back
    before each evaluation if anything moved them (weight decay, as in ``AdamW``, shrinks
    every parameter whatever its gradient), so they stay where :func:`inducing_sequences` put
    them. The ELBO needs only ``M x M`` and ``M x B`` kernel
    blocks and the diagonal of the mini-batch (:math:`O(B T L)`), so mini-batch training is
    memory-flat in the data set size.

    Args:
        inducing_points: ``(M, 1 + T_max m)`` initial inducing sequences.
        input_dim: The step dimension ``m``.
        kernel: ``"rntk"`` or ``"nngp"``.
        variational_distribution: The class of :math:`q(u)`; pass
            ``gpytorch.variational.NaturalVariationalDistribution`` to train it with
            ``gpytorch.optim.NGD`` (natural gradients, which converge in far fewer steps) and
            the rest (``model.hyperparameters()``, inducing sequences included) with Adam.
        **kernel_options: Passed to :class:`~gpytorch_rntk.RNTKKernel` /
            :class:`~gpytorch_rntk.RNNGPKernel` (``num_layers``, ``nonlinearity``, ...).

    Example:
        >>> import torch
        >>> from gpytorch_rntk import encode_sequences
        >>> x = encode_sequences([torch.randn(t, 1) for t in (3, 5, 4, 6)])
        >>> model = SequenceVariationalGP(inducing_sequences(x, 2), input_dim=1)
        >>> model(x).mean.shape
        torch.Size([4])
    """

    def __init__(
        self,
        inducing_points: Tensor,
        input_dim: int,
        kernel: str = "rntk",
        variational_distribution: type[
            gpytorch.variational._VariationalDistribution
        ] = gpytorch.variational.CholeskyVariationalDistribution,
        **kernel_options,
    ) -> None:
        base_kernel = kernel_class(kernel)(input_dim=input_dim, **kernel_options)
        split_layout(inducing_points, input_dim, base_kernel.variable_length)  # validates width
        if base_kernel.variable_length:
            check_encoding(inducing_points, base_kernel.input_dim)
        distribution = variational_distribution(inducing_points.shape[-2])
        strategy = gpytorch.variational.VariationalStrategy(
            self, inducing_points, distribution, learn_inducing_locations=True
        )
        super().__init__(strategy)
        lengths = inducing_points[..., 0].detach().clone() if base_kernel.variable_length else None
        self.register_buffer("inducing_lengths", lengths)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(base_kernel)

    def __call__(self, x: Tensor, *args, **kwargs):
        points = self.variational_strategy.inducing_points
        _check_width(x, points.shape[-1], "inducing sequences")
        if self.inducing_lengths is not None and not torch.equal(
            points[..., 0], self.inducing_lengths
        ):
            # Only when they moved: an in-place write would invalidate a graph still in use.
            with torch.no_grad():
                points[..., 0] = self.inducing_lengths
        return super().__call__(x, *args, **kwargs)

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))
