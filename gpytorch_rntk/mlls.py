"""An exact marginal log likelihood whose gradient costs one Cholesky inverse."""

from __future__ import annotations

import math

import gpytorch
import torch
from gpytorch.distributions import MultitaskMultivariateNormal, MultivariateNormal
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

__all__ = ["CholeskyMarginalLogLikelihood"]


class CholeskyMarginalLogLikelihood(gpytorch.mlls.ExactMarginalLogLikelihood):
    r""":class:`gpytorch.mlls.ExactMarginalLogLikelihood` with the covariance's gradient formed
    directly.

    The value is GPyTorch's: the Gaussian log density of the targets under the likelihood's
    marginal, from a Cholesky factor of the training covariance :math:`K` (jitter added as
    GPyTorch adds it), plus the priors and added loss terms, over :math:`N`. GPyTorch
    differentiates through the factorisation, and PyTorch's Cholesky backward costs two
    triangular solves with :math:`N` right-hand sides and two :math:`N \times N` products,
    several times the forward's cost; docs/performance.md gives the measured ratios, alone and
    for the whole marginal likelihood's gradient with the fused kernel. Here the gradient with
    respect to :math:`K` is written down,

    .. math::
        \frac{\partial \log p(y)}{\partial K} = \tfrac12 \left(\alpha \alpha^\top - K^{-1}\right),
        \qquad \alpha = K^{-1} (y - \mu),

    with :math:`K^{-1}` from the factor (:func:`torch.cholesky_inverse`), and passed on to the
    kernel's hyperparameters (for the fused engine, contracted with its forward-mode
    derivatives). Use it where an exact GP's marginal likelihood is trained with Cholesky
    (``gpytorch.settings.max_cholesky_size`` at least :math:`N`, GPyTorch's default up to
    800); elsewhere (multitask distributions, masked NaN observations, larger :math:`N`
    under GPyTorch's iterative methods) it computes what GPyTorch's does. First derivatives
    only: a backward pass with ``create_graph=True`` raises.

    Example:
        >>> import gpytorch, torch
        >>> from gpytorch_rntk import RNTKKernel
        >>> from gpytorch_rntk.mlls import CholeskyMarginalLogLikelihood
        >>> class GP(gpytorch.models.ExactGP):
        ...     def __init__(self, x, y):
        ...         super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        ...         self.mean_module = gpytorch.means.ConstantMean()
        ...         self.covar_module = gpytorch.kernels.ScaleKernel(RNTKKernel(input_dim=1))
        ...     def forward(self, x):
        ...         return gpytorch.distributions.MultivariateNormal(
        ...             self.mean_module(x), self.covar_module(x))
        >>> x = torch.cat([torch.full((8, 1), 5.0), torch.randn(8, 5)], -1)
        >>> y = torch.randn(8)
        >>> model = GP(x, y)
        >>> mll = CholeskyMarginalLogLikelihood(model.likelihood, model)
        >>> loss = -mll(model(x), y)
        >>> loss.backward()
        >>> reference = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
        >>> bool(torch.isclose(-reference(model(x), y), loss))
        True
    """

    def forward(self, function_dist, target: Tensor, *params, **kwargs) -> Tensor:
        if not _applies(function_dist, target):
            return super().forward(function_dist, target, *params, **kwargs)
        output = self.likelihood(function_dist, *params, **kwargs)
        covariance = output.lazy_covariance_matrix.to_dense()
        res = _GaussianLogProb.apply(target - output.mean, covariance)
        res = self._add_other_terms(res, params)
        return res.div_(function_dist.event_shape.numel())


def _applies(function_dist, target: Tensor) -> bool:
    """Whether GPyTorch would compute this marginal likelihood by one Cholesky factor of a
    single-output covariance whose batch shape is the targets'."""
    n = function_dist.event_shape.numel()
    return (
        isinstance(function_dist, MultivariateNormal)
        and not isinstance(function_dist, MultitaskMultivariateNormal)
        and gpytorch.settings.observation_nan_policy.value() == "ignore"
        and (
            gpytorch.settings.fast_computations.log_prob.off()
            or n <= gpytorch.settings.max_cholesky_size.value()
        )
        and target.shape == function_dist.batch_shape + function_dist.event_shape
    )


class _GaussianLogProb(torch.autograd.Function):
    """``log N(diff; 0, K)`` by a Cholesky factor of ``K``, and its gradients ``-alpha`` and
    ``(alpha alpha^T - K^{-1}) / 2`` from that factor."""

    @staticmethod
    def forward(ctx, diff: Tensor, covariance: Tensor) -> Tensor:
        factor = psd_safe_cholesky(covariance)
        alpha = torch.cholesky_solve(diff.unsqueeze(-1), factor).squeeze(-1)
        ctx.save_for_backward(factor, alpha)
        inv_quad = (diff * alpha).sum(-1)
        logdet = 2 * factor.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (inv_quad + logdet + diff.shape[-1] * math.log(2 * math.pi))

    @staticmethod
    def backward(ctx, grad: Tensor):
        if torch.is_grad_enabled():  # create_graph=True: this backward is not differentiable
            raise RuntimeError(
                "CholeskyMarginalLogLikelihood gives first derivatives only; for higher ones "
                "(create_graph=True) use gpytorch.mlls.ExactMarginalLogLikelihood."
            )
        factor, alpha = ctx.saved_tensors
        d_diff = -grad.unsqueeze(-1) * alpha
        d_covariance = None
        if ctx.needs_input_grad[1]:  # two N x N buffers
            d_covariance = (alpha.unsqueeze(-1) * alpha.unsqueeze(-2)).sub_(
                torch.cholesky_inverse(factor)
            )
            d_covariance.mul_((0.5 * grad)[..., None, None])
        return d_diff, d_covariance
