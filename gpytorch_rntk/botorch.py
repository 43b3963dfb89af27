r"""Bayesian optimisation over sequences with BoTorch.

A sequence enters BoTorch as one row of the layout of :doc:`/layout`: column 0 holds the length,
then the steps, right-padded with zeros (``D = 1 + T_max * m``), or only the steps for fixed-length
problems (``D = T * m``). The kernels round and clamp the length and ignore every value past it,
so BoTorch's optimisers may write any finite value there. This module adds only what BoTorch
lacks:

* :func:`sequence_gp`: a :class:`~botorch.models.SingleTaskGP` with a recurrent kernel, no
  input transform (a per-column transform would break the layout) and a parametrisation that
  marginal-likelihood fits converge in (:doc:`/kernels`, Fitting);
* :func:`sequence_bounds`: the ``2 x D`` bounds of the layout for the optimisers;
* :func:`canonicalize_sequences`: integer lengths and zeros past them, as a
  ``post_processing_func``;
* :func:`optimize_acqf_variable_length`: the length as a discrete design variable together with
  continuous step values.

Four design modes, and what to call:

* **Fixed length, continuous steps.** ``optimize_acqf(acq, sequence_bounds(T, m, lo, hi,
  variable_length=False), q, ...)`` with a ``variable_length=False`` kernel (or the variable-length
  layout with ``fixed_features={0: T}``). The kernel is differentiable in the step values except
  where a candidate coincides with a training sequence (the ReLU RNTK's ``V'`` term has a kink
  there, as ``arccos`` does at 1); gradient-based acquisition optimisation works, and L-BFGS-B may
  occasionally stop early near such points. One evaluation of the acquisition function costs
  about as much for 4 candidates as for 128 (the recursion's steps, not the pairs, dominate at
  BO sizes), so many restarts with few iterations pay: ``num_restarts=16, raw_samples=512,
  options={"maxiter": 25}`` reached an expected improvement within 0.5 % of BoTorch's 4
  restarts with up to 200 iterations, in a fifth of the time or less (100 sequences of 50
  steps; :doc:`/bayesian_optimisation`). The fit runs on the compiled engine where its loop's
  package is built on the machine (``python -m gpytorch_rntk.warmup`` builds those of
  :func:`sequence_gp`'s defaults once): an iteration then took 3.2-3.4 s there, against
  7-12 s with the fit on the tensor engine.
* **Token strings.** :func:`~gpytorch_rntk.layout.encode_tokens` and
  :func:`optimize_acqf_tokens` (mutation hill climbing; ``feasible=`` for known constraints).
* **A pool of given sequences.** BoTorch's
  :func:`~botorch.optim.optimize.optimize_acqf_discrete` already evaluates the pool in chunks of
  ``max_batch_size`` rows, each a ``(chunk, 1, D)`` batch against the training set. GPyTorch
  concatenates the training inputs to every batch, so the memory of one chunk grows as
  ``max_batch_size * n_train * D``: about 1.5 kB per (candidate, training sequence) pair at
  ``T = 30``, i.e. keep ``max_batch_size * n_train`` near :math:`2^{15}`-:math:`2^{16}`
  (``max_batch_size=256`` for 100-200 training sequences). Do not pass ``X_avoid`` for large
  pools: BoTorch compares every pool row with every avoided row at once (an
  ``n_avoid x pool x D`` tensor); drop the evaluated rows from the pool by index instead.
* **Variable length.** :func:`optimize_acqf_variable_length`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import InputTransform
from botorch.models.transforms.outcome import OutcomeTransform
from botorch.optim import optimize_acqf_mixed, optimize_acqf_mixed_alternating
from botorch.utils.types import DEFAULT
from gpytorch.constraints import GreaterThan, Interval
from gpytorch.kernels import ScaleKernel
from gpytorch.likelihoods import Likelihood
from gpytorch.means import Mean
from gpytorch.priors import LogNormalPrior
from torch import Tensor

from .functional import QuadratureDual, nonlinearity_option
from .kernels import DEFAULT_VARIANCES, kernel_class
from .layout import check_positive_int, encode_tokens, split_layout
from .models import SequenceInputsMixin

__all__ = [
    "canonicalize_sequences",
    "optimize_acqf_tokens",
    "optimize_acqf_variable_length",
    "recurrent_var_bound",
    "sequence_bounds",
    "sequence_gp",
]


# How much more than the last step the first step of the longest sequence may weigh.
_MAX_GROWTH = 100.0
# The floor of the variances with a log-normal prior (relative to a data term of order one).
_MIN_VARIANCE = 1e-6
# The largest V' (the gain of the recurrent path per unit of recurrent_var) of the closed forms.
_MAX_DUAL_SLOPE = {"relu": 0.5, "erf": 4 / math.pi}


def recurrent_var_bound(max_len: int, nonlinearity: str | Callable = "relu") -> float:
    r"""The upper bound :func:`sequence_gp` puts on ``recurrent_var`` for sequences of ``max_len``.

    The recurrent path multiplies the kernel's dependence on a step by :math:`\sigma_w^2 V'` per
    step of age (:doc:`/kernels`), and :math:`V' \le 1/2` for ReLU (equality on the diagonal:
    every step of age ``s`` weighs :math:`(\sigma_w^2/2)^s`), :math:`V' \le 4/\pi` for erf
    (equality for small pre-activations, where erf is linear). The bound
    ``min(2, 100 ** (1 / (max_len - 1))) / max V'`` keeps that factor at most
    ``100 ** (1 / (max_len - 1))``, whatever the other variances: the first step of the longest
    sequence weighs at most 100 times the last, no step more than twice the next, and the kernel
    cannot grow geometrically with the length. ReLU: 2.34 at ``max_len = 30``, 2.10 at 100, 2.03
    at 300, 4 for ``max_len <= 2``; erf: :math:`\pi/8` times these (0.92, 0.82, 0.80, 1.57).
    Fading memories stay unrestricted. For any other nonlinearity (a quadrature dual) max V' is
    the largest :math:`E[\phi'(u)^2]`, :math:`u \sim N(0, k)`, over a grid of
    :math:`k \in \{0\} \cup [10^{-4}, 10^3]` (by Cauchy-Schwarz no cross pair's :math:`V'` is
    larger): 1 for tanh (at :math:`k = 0`), 1/16 for sigmoid.

    Example:
        >>> round(recurrent_var_bound(100), 4), round(recurrent_var_bound(100, "erf"), 4)
        (2.0952, 0.8228)
    """
    max_len = check_positive_int(max_len, "max_len")
    growth = min(2.0, _MAX_GROWTH ** (1.0 / max(max_len - 1, 1)))
    return growth / _max_dual_slope(nonlinearity_option(nonlinearity))


def _step_scale(train_x: Tensor, input_dim: int, variable_length: bool) -> float:
    """The mean of ``<x_t, x_t> / m`` over the training sequences' steps; 1 where it is 0 or
    the inputs do not fit the layout (``sequence_gp`` then raises BoTorch's or the layout's
    error for them)."""
    try:
        values, lengths = split_layout(train_x.detach(), input_dim, variable_length)
    except (ValueError, TypeError):
        return 1.0
    inside = torch.arange(values.shape[-2], device=values.device) < lengths.unsqueeze(-1)
    terms = values.square().sum(-1) / input_dim
    scale = float((terms * inside).sum() / inside.sum().clamp_min(1))
    return scale if scale > 0 and math.isfinite(scale) else 1.0


@lru_cache(maxsize=64)
def _max_dual_slope(nonlinearity) -> float:
    """The largest ``V'`` of a nonlinearity in the form of ``nonlinearity_option``."""
    if nonlinearity in _MAX_DUAL_SLOPE:
        return _MAX_DUAL_SLOPE[nonlinearity]
    dual = QuadratureDual.named(nonlinearity) if isinstance(nonlinearity, str) else nonlinearity
    k = torch.cat([torch.zeros(1), torch.logspace(-4, 3, 141)]).double()
    with torch.no_grad():
        return float(dual.self_pair(k)[1].max())


class _SequenceSingleTaskGP(SequenceInputsMixin, SingleTaskGP):
    """A :class:`~botorch.models.SingleTaskGP` whose test inputs of another width than the
    training sequences raise the package's width message (GPyTorch would fail inside
    ``torch.cat``)."""


def sequence_gp(
    train_x: Tensor,
    train_y: Tensor,
    input_dim: int,
    kernel: str = "rntk",
    *,
    train_Yvar: Tensor | None = None,  # noqa: N803 (BoTorch's name)
    likelihood: Likelihood | None = None,
    mean_module: Mean | None = None,
    outcome_transform: OutcomeTransform | None | type[DEFAULT] = DEFAULT,
    input_transform: InputTransform | None = None,
    **kernel_kwargs,
) -> SingleTaskGP:
    r"""A :class:`~botorch.models.SingleTaskGP` on sequences with a recurrent kernel.

    The covariance is ``ScaleKernel(RNTKKernel(input_dim, **kernel_kwargs))`` (or
    :class:`~gpytorch_rntk.RNNGPKernel`), the outcomes are standardised (BoTorch's default
    :class:`~botorch.models.transforms.outcome.Standardize`). The defaults are chosen for BO and
    so that :func:`~botorch.fit.fit_gpytorch_mll` converges (:doc:`/kernels`, Fitting;
    :doc:`/bayesian_optimisation`):

    * **erf by default** (``nonlinearity="erf"``; the kernel classes' own default is ReLU). The
      erf kernels are smooth, and their prior variance levels off for large steps, where the
      ReLU kernels' grows with the steps' size and draws improvement-based acquisition functions
      to the corners of a box; on the controller benchmark erf-BO found the better designs
      (:doc:`/bayesian_optimisation`). Pass ``nonlinearity="relu"`` (or any other) to choose.
    * **``input_var`` scaled to the data.** It starts at ``1 / s``, ``s`` the mean of
      ``<x_t, x_t> / m`` over the training sequences' steps, so that the input term of a step is
      of order one whatever the units of the steps (one-hot steps have ``s = 1 / m``; values
      uniform in ``[-1, 1]`` ``s = 1/3``): the role that BoTorch's dimension-scaled lengthscale
      prior plays for its RBF kernel. erf learns it with a log-normal prior centred there.
      **ReLU fixes it there**: the ReLU kernels are homogeneous of degree one in
      (``input_var``, ``bias_var``, ``init_var``), so scaling all three by ``c`` scales the
      kernel by ``c``, exactly what the outputscale does; learning all of them leaves a direction
      along which the marginal likelihood is flat, and fits drift along it to outputscales of
      1e-27. ``sequence_gp`` therefore learns the outputscale and ``bias_var``/``init_var``
      relative to the data term (``raw_input_var.requires_grad`` is ``False``). erf and the
      other nonlinearities (tanh, GELU, ..., a user's function by quadrature) are not
      homogeneous: there every variance is learned (a user's homogeneous function, e.g. a leaky
      ReLU, has ReLU's flat direction: pass ``input_var_constraint`` or fix ``raw_input_var``
      yourself).
    * **``recurrent_var`` bounded** to ``[0, recurrent_var_bound(T_max, nonlinearity)]``
      (:func:`recurrent_var_bound`), so that the kernel cannot grow geometrically over long
      sequences; pass ``recurrent_var_constraint`` to choose another. Where erf's default 1
      exceeds the bound (``T_max > 20``), ``recurrent_var`` starts at half the bound.
    * **Broad priors** on the other variances, log-normal around their starting values with
      BoTorch's scale :math:`\sqrt{3}` (``bias_var``, ``init_var``, and ``input_var`` except for
      ReLU): they keep the optimum finite where the data do not pin it down and give BoTorch's
      retries something to sample from; pass ``bias_var_prior`` etc. to replace them. These
      variances are at least ``1e-6`` (``GreaterThan``; ``Positive`` can underflow to 0, where
      the prior is undefined).
    * **The outputscale starts** where the prior variance of ``f`` matches the variance of the
      (transformed) training targets: ``var(y) / mean(K(x_i, x_i))``.

    There is deliberately **no input transform**:
    :class:`~botorch.models.transforms.input.Normalize` rescales every column on its own, so the
    length column would no longer hold the length (every length would read as 1), the zero
    padding would move away from zero, and the same value would be scaled differently at different
    time steps although the recurrent network shares its weights across time. ``input_var``
    already follows the scale of the step values (above); to centre them, apply one affine map
    to all steps of all sequences before encoding.

    With several outcomes (``train_y`` of shape ``(..., n, k)``, ``k > 1``) each outcome gets its
    own kernel hyperparameters (kernel ``batch_shape`` extended by ``k``), as BoTorch does for its
    default kernel, and :meth:`~botorch.models.model.Model.subset_output` selects outcomes.

    Args:
        train_x: ``(..., n, D)`` training sequences in the layout of :doc:`/layout`
            (see :func:`~gpytorch_rntk.encode_sequences`).
        train_y: ``(..., n, k)`` observations.
        input_dim: The step dimension ``m``.
        kernel: ``"rntk"`` (:class:`~gpytorch_rntk.RNTKKernel`) or ``"nngp"``
            (:class:`~gpytorch_rntk.RNNGPKernel`).
        train_Yvar: Optional ``(..., n, k)`` observation noise variances (a fixed-noise model).
        likelihood, mean_module, outcome_transform: As for
            :class:`~botorch.models.SingleTaskGP` (default: its Gaussian likelihood, constant
            mean and ``Standardize``; ``outcome_transform=None`` for none).
        input_transform: Must be ``None``; any other value raises (see above).
        **kernel_kwargs: Passed to the kernel: ``num_layers``, ``nonlinearity`` (default
            ``"erf"`` here), ``normalize``, ``readout``, ``variable_length`` (``False`` for the
            fixed-length layout), priors, constraints, ...

    Returns:
        An unfitted model; fit it with :func:`botorch.fit.fit_gpytorch_mll`.

    Example:
        >>> import torch
        >>> from botorch.fit import fit_gpytorch_mll
        >>> from gpytorch.mlls import ExactMarginalLogLikelihood
        >>> from gpytorch_rntk import encode_sequences
        >>> seqs = [torch.randn(t, 1, dtype=torch.float64) for t in (3, 5, 4, 2, 5, 3)]
        >>> train_x = encode_sequences(seqs)
        >>> train_y = torch.stack([s[-1] for s in seqs])
        >>> model = sequence_gp(train_x, train_y, input_dim=1)
        >>> _ = fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        >>> model.posterior(train_x[:2]).mean.shape
        torch.Size([2, 1])
    """
    if input_transform is not None:
        raise ValueError(
            f"sequence_gp takes no input transform, got {type(input_transform).__name__}. A "
            "per-column transform such as Normalize breaks the sequence layout: the length "
            "column would no longer hold the length (every length would read as 1) and each "
            "time step would be scaled on its own. Rescale the step values with one affine map "
            "for all steps of all sequences before encoding them (e.g. (x - lo) / (hi - lo) with "
            "scalars lo, hi); the kernel's variances adapt to the scale."
        )
    if train_y.dim() < 2 or train_y.shape[-2] != train_x.shape[-2]:
        raise ValueError(
            f"train_y must be (..., n, k) with n = {train_x.shape[-2]} (the rows of train_x), "
            f"got shape {tuple(train_y.shape)}."
        )
    batch_shape = train_x.shape[:-2]
    if train_y.dim() >= 2 and train_y.shape[-1] > 1:
        batch_shape = batch_shape + train_y.shape[-1:]
    kernel_kwargs.setdefault("batch_shape", batch_shape)
    variable_length = kernel_kwargs.get("variable_length", True)
    max_len = max((train_x.shape[-1] - bool(variable_length)) // input_dim, 1)  # checked below
    # a name, or the QuadratureDual of a user's function (raises for an unknown one)
    nonlinearity = nonlinearity_option(kernel_kwargs.get("nonlinearity", "erf"))
    kernel_kwargs["nonlinearity"] = nonlinearity
    bound = recurrent_var_bound(max_len, nonlinearity)
    kernel_kwargs.setdefault("recurrent_var_constraint", Interval(0.0, bound))
    defaults = dict(DEFAULT_VARIANCES.get(nonlinearity, DEFAULT_VARIANCES["erf"]))  # the kernel's
    defaults["input_var"] = input_var = 1.0 / _step_scale(train_x, input_dim, variable_length)
    learned = ["bias_var"]
    if kernel_kwargs.get("initial_state", "zero") != "zero":
        learned.append("init_var")
    if nonlinearity != "relu":
        learned.append("input_var")
    for name in learned:
        prior = LogNormalPrior(math.log(defaults[name]), math.sqrt(3.0))
        kernel_kwargs.setdefault(f"{name}_prior", prior)
        # softplus underflows to 0 (where the log-normal density is not defined) at raw < -745
        kernel_kwargs.setdefault(f"{name}_constraint", GreaterThan(_MIN_VARIANCE))
    base_kernel = kernel_class(kernel)(input_dim, **kernel_kwargs)
    covar_module = ScaleKernel(base_kernel, batch_shape=kernel_kwargs["batch_shape"])
    model = _SequenceSingleTaskGP(
        train_x,
        train_y,
        train_Yvar=train_Yvar,
        likelihood=likelihood,
        covar_module=covar_module,
        mean_module=mean_module,
        outcome_transform=outcome_transform,
        input_transform=None,
    )  # rejects NaN inputs with BoTorch's InputDataError
    split_layout(train_x, input_dim, base_kernel.variable_length)  # the width
    if base_kernel.nonlinearity == "relu":
        base_kernel.raw_input_var.requires_grad_(False)  # its scale is the outputscale's
    with torch.no_grad():
        base_kernel.input_var = torch.full_like(base_kernel.input_var, input_var)
        targets = model.train_targets
        target_var = targets.var(-1) if targets.shape[-1] > 1 else torch.ones_like(targets[..., 0])
        target_var = torch.where(target_var > 0, target_var, torch.ones_like(target_var))
        prior_var = base_kernel(model.train_inputs[0], diag=True).mean(-1)
        covar_module.outputscale = (target_var / prior_var).expand(covar_module.batch_shape)
    if model.num_outputs > 1:
        # Where each outcome's parameters sit (from the end), for Model.subset_output; BoTorch
        # lists them only for the kernel it builds itself.
        subset = {
            f"covar_module.{name}": -1 - (p.dim() - len(covar_module.batch_shape))
            for name, p in covar_module.named_parameters()
        }
        if mean_module is None:
            subset["mean_module.raw_constant"] = -1
        if likelihood is None and train_Yvar is None:
            subset["likelihood.noise_covar.raw_noise"] = -2
        model._subset_batch_dict = subset
    return model


def sequence_bounds(
    max_len: int,
    input_dim: int,
    lower: float | Tensor,
    upper: float | Tensor,
    min_len: int = 1,
    variable_length: bool = True,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Bounds for BoTorch's optimisers in the sequence layout.

    Args:
        max_len: ``T_max`` (the padded length), or ``T`` for the fixed-length layout.
        input_dim: The step dimension ``m``.
        lower: Lower bound of the step values: a scalar, a tensor of shape ``(m,)`` (per
            channel), ``(max_len, m)`` (per step and channel) or, when ``m = 1``, ``(max_len,)``.
        upper: Upper bound, shaped as ``lower``.
        min_len: The shortest allowed length (variable-length layout only).
        variable_length: Prepend the length column with bounds ``[min_len, max_len]``.
        dtype: Defaults to ``lower``'s dtype if it is a floating tensor, else the default dtype.
        device: Defaults to ``lower``'s device if it is a tensor.

    Returns:
        A ``(2, D)`` tensor, ``D = 1 + max_len * input_dim`` (or ``max_len * input_dim``).

    Example:
        >>> sequence_bounds(3, 1, -1.0, torch.tensor([1.0, 2.0, 3.0]), min_len=2)
        tensor([[ 2., -1., -1., -1.],
                [ 3.,  1.,  2.,  3.]])
    """
    max_len = check_positive_int(max_len, "max_len")
    input_dim = check_positive_int(input_dim, "input_dim")
    if not variable_length:
        min_len = max_len
    if check_positive_int(min_len, "min_len") > max_len:
        raise ValueError(f"min_len must be an integer in [1, max_len={max_len}], got {min_len!r}.")
    like = lower if isinstance(lower, Tensor) else upper if isinstance(upper, Tensor) else None
    if dtype is None:
        floating = like is not None and like.is_floating_point()
        dtype = like.dtype if floating else torch.get_default_dtype()
    if device is None and like is not None:
        device = like.device

    def per_step(bound: float | Tensor, name: str) -> Tensor:
        bound = torch.as_tensor(bound, dtype=dtype, device=device)
        if input_dim == 1 and bound.dim() == 1 and bound.shape[0] == max_len:
            bound = bound.unsqueeze(-1)
        try:
            return bound.expand(max_len, input_dim)
        except RuntimeError:
            raise ValueError(
                f"{name} of shape {tuple(bound.shape)} does not broadcast to "
                f"(max_len, input_dim) = ({max_len}, {input_dim})."
            ) from None

    lo, hi = per_step(lower, "lower").reshape(-1), per_step(upper, "upper").reshape(-1)
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        raise ValueError("The bounds must be finite.")
    if (lo > hi).any():
        raise ValueError("Every lower bound must be at most the matching upper bound.")
    bounds = torch.stack([lo, hi])
    if variable_length:
        lengths = torch.tensor([[min_len], [max_len]], dtype=dtype, device=bounds.device)
        bounds = torch.cat([lengths, bounds], dim=-1)
    return bounds


def canonicalize_sequences(x: Tensor, input_dim: int) -> Tensor:
    r"""The canonical encoding of variable-length rows: integer lengths, zeros past them.

    The kernels read a row the same way before and after (they round and clamp the length to
    ``[1, T_max]`` and ignore the values past it), but an optimiser returns whatever it left in
    those places. Use this as ``post_processing_func`` of BoTorch's optimisers, or on candidates
    before storing them with the training data.

    Args:
        x: ``(..., N, 1 + T_max * input_dim)`` sequences in the variable-length layout.
        input_dim: The step dimension ``m``.

    Returns:
        A tensor of the same shape whose rows equal :func:`~gpytorch_rntk.encode_sequences` of
        the sequences they encode.

    Example:
        >>> canonicalize_sequences(torch.tensor([[1.6, 0.3, 0.7, 0.9]]), input_dim=1)
        tensor([[2.0000, 0.3000, 0.7000, 0.0000]])
    """
    values, lengths = split_layout(x, input_dim, variable_length=True)
    return torch.cat([lengths.unsqueeze(-1).to(values), values.flatten(-2)], dim=-1)


def _length_fixed_features(lengths: Sequence[int], max_len: int, input_dim: int) -> list[dict]:
    """One ``fixed_features`` dict per length: the length column and zeros past the length."""
    return [
        {0: float(t), **{col: 0.0 for col in range(1 + t * input_dim, 1 + max_len * input_dim)}}
        for t in lengths
    ]


def _model_parameter(acq_function: AcquisitionFunction) -> Tensor | None:
    """A parameter of the acquisition function's model (its dtype and device), or ``None``."""
    return next(getattr(acq_function, "model", torch.nn.Module()).parameters(), None)


def optimize_acqf_variable_length(
    acq_function: AcquisitionFunction,
    bounds: Tensor,
    input_dim: int,
    q: int = 1,
    lengths: Sequence[int] | None = None,
    *,
    method: str = "alternating",
    num_restarts: int = 8,
    raw_samples: int = 256,
    options: dict | None = None,
    **kwargs,
) -> tuple[Tensor, Tensor | None]:
    r"""Optimise an acquisition function over sequence lengths and step values together.

    The length (column 0) is a discrete variable taking the values ``lengths``, the step values
    are continuous within ``bounds``. Two strategies, both BoTorch's own optimisers:

    * ``"alternating"``: :func:`~botorch.optim.optimize_mixed.optimize_acqf_mixed_alternating`,
      local search over the length (one step longer or shorter) alternating with L-BFGS-B over
      the step values. Its cost hardly depends on the number of lengths. This wrapper sets
      ``max_discrete_values`` so that the length is never relaxed to a continuous variable
      (BoTorch relaxes discrete variables with more than 20 values, and the kernel's rounding makes
      the relaxed length's gradient zero, so it would never move).
    * ``"enumerate"``: :func:`~botorch.optim.optimize.optimize_acqf_mixed` with one fixed-feature
      set per length, which also fixes the steps past the length to zero: an exhaustive, and
      ``len(lengths)`` times more costly, search that optimises only the active steps.

    Either way the returned candidates are canonical (:func:`canonicalize_sequences`): integer
    lengths in ``lengths`` and zeros past them, ready to append to the training data. For ``q > 1``
    both build the batch greedily, one candidate at a time.

    Args:
        acq_function: The acquisition function, on ``(b, q, 1 + T_max * input_dim)`` inputs.
        bounds: ``(2, 1 + T_max * input_dim)`` bounds, e.g. from :func:`sequence_bounds`. The
            length column's bounds are replaced by ``[min(lengths), max(lengths)]``.
        input_dim: The step dimension ``m``.
        q: The number of candidates.
        lengths: The allowed lengths; default every integer within the length column's bounds.
        method: ``"alternating"`` or ``"enumerate"``.
        num_restarts: Optimiser restarts (per length for ``"enumerate"``).
        raw_samples: Raw samples for the initial conditions (per length for ``"enumerate"``).
        options: Options of the underlying optimiser.
        **kwargs: Further arguments of the underlying optimiser (e.g. ``fixed_features`` for
            ``"alternating"``, ``inequality_constraints``).

    Returns:
        ``(candidates, acq_value)``: ``(q, D)`` canonical candidates and their acquisition value.

    Example:
        >>> from botorch.acquisition import LogExpectedImprovement
        >>> from gpytorch_rntk import encode_sequences
        >>> seqs = [torch.rand(t, dtype=torch.float64) for t in (2, 4, 3, 4, 1)]
        >>> train_y = torch.stack([s.sum() for s in seqs]).unsqueeze(-1)
        >>> model = sequence_gp(encode_sequences(seqs), train_y, input_dim=1)
        >>> acqf = LogExpectedImprovement(model, best_f=model.train_targets.max())
        >>> bounds = sequence_bounds(4, 1, 0.0, 1.0, min_len=2, dtype=torch.float64)
        >>> x, _ = optimize_acqf_variable_length(acqf, bounds, 1, num_restarts=2, raw_samples=16)
        >>> x.shape, x[0, 0] in (2.0, 3.0, 4.0)
        (torch.Size([1, 5]), True)
    """
    width = bounds.shape[-1]
    input_dim = check_positive_int(input_dim, "input_dim")
    if bounds.dim() != 2 or bounds.shape[0] != 2:
        raise ValueError(f"bounds must have shape (2, D), got {tuple(bounds.shape)}.")
    if not torch.isfinite(bounds).all():
        raise ValueError("The bounds must be finite.")
    parameter = _model_parameter(acq_function)
    if parameter is not None and parameter.dtype != bounds.dtype:
        raise ValueError(
            f"bounds are {bounds.dtype} but the model is {parameter.dtype}: BoTorch's optimisers "
            "evaluate the model at candidates of the bounds' dtype. Build them in the model's, "
            "e.g. sequence_bounds(..., dtype=train_x.dtype)."
        )
    if (width - 1) % input_dim != 0 or width < 1 + input_dim:
        raise ValueError(
            f"bounds of width {width} do not fit the variable-length layout 1 + T_max * "
            f"input_dim with input_dim={input_dim}."
        )
    max_len = (width - 1) // input_dim
    if lengths is None:
        low, high = bounds[:, 0].tolist()
        lengths = range(max(1, round(low)), min(max_len, round(high)) + 1)
    lengths = list(lengths)
    if any(int(t) != t for t in lengths):
        raise ValueError(f"lengths must be integers, got {lengths}.")
    lengths = sorted({int(t) for t in lengths})
    if not lengths or lengths[0] < 1 or lengths[-1] > max_len:
        raise ValueError(f"lengths must be a non-empty set of integers in [1, {max_len}].")
    bounds = bounds.clone()
    bounds[:, 0] = torch.tensor([lengths[0], lengths[-1]]).to(bounds)

    def canonical(x: Tensor) -> Tensor:
        return canonicalize_sequences(x, input_dim)

    if method == "alternating":
        options = {"max_discrete_values": len(lengths), **(options or {})}
        return optimize_acqf_mixed_alternating(
            acq_function,
            bounds,
            discrete_dims={0: [float(t) for t in lengths]},
            options=options,
            q=q,
            num_restarts=num_restarts,
            raw_samples=raw_samples,
            post_processing_func=canonical,
            **kwargs,
        )
    if method == "enumerate":
        return optimize_acqf_mixed(
            acq_function,
            bounds,
            q=q,
            num_restarts=num_restarts,
            raw_samples=raw_samples,
            fixed_features_list=_length_fixed_features(lengths, max_len, input_dim),
            options=options,
            post_processing_func=canonical,
            **kwargs,
        )
    raise ValueError(f"Unknown method {method!r}; choose 'alternating' or 'enumerate'.")


def optimize_acqf_tokens(
    acq_function: AcquisitionFunction,
    alphabet_size: int,
    starts: Sequence[Sequence[int] | Tensor],
    max_len: int,
    q: int = 1,
    *,
    min_len: int | None = None,
    avoid: Sequence[Sequence[int] | Tensor] = (),
    feasible: Callable[[Tensor], bool] | None = None,
    num_neighbours: int = 256,
    max_steps: int = 50,
    batch_size: int = 512,
    generator: torch.Generator | None = None,
) -> tuple[list[Tensor], Tensor]:
    r"""Optimise an acquisition function over token sequences by mutation hill climbing.

    The designs are strings over ``0 .. alphabet_size - 1`` encoded by
    :func:`~gpytorch_rntk.layout.encode_tokens` (one-hot steps, the model's ``input_dim =
    alphabet_size``). From each of ``starts`` (e.g. the best designs observed so far) the search
    draws ``num_neighbours`` random single mutations per step (a substitution of one token;
    with ``min_len`` also the insertion or deletion of one token, lengths kept within
    ``[min_len, max_len]``), evaluates the acquisition function on them in batches, and moves
    to the best one while it improves; a start stops when no neighbour improves on it, and the
    best sequence met that is not in ``avoid`` is returned. Like BoTorch's
    :func:`~botorch.optim.optimize.optimize_acqf_discrete_local_search` (which this follows
    for sequences of varying length), ``q > 1`` candidates are chosen greedily, each pending
    (``set_X_pending``) while the next is searched for, and never twice.

    Args:
        acq_function: The acquisition function, on ``(b, 1, 1 + max_len * alphabet_size)``.
        alphabet_size: The number of tokens.
        starts: Token sequences to climb from (at least one).
        max_len: The encoding's ``T_max`` (the training inputs' width ``1 + max_len *
            alphabet_size``); no candidate is longer.
        q: The number of candidates.
        min_len: Allow insertions and deletions, keeping lengths at least ``min_len``;
            ``None`` (default): substitutions only, every candidate as long as its start.
        avoid: Sequences never returned (e.g. those already evaluated).
        feasible: A known constraint: a predicate on a token sequence (a 1-D long tensor) that
            says whether it may be proposed, e.g. a grammar or validity check, or transitions
            between tokens that are forbidden. Mutations it rejects are never evaluated, and a
            start it rejects is climbed from but never returned. ``None``: every sequence.
        num_neighbours: Random mutations drawn per start and step.
        max_steps: Steps of the climb at most.
        batch_size: Candidates per call of the acquisition function.
        generator: For reproducible mutations.

    Returns:
        ``(candidates, acq_values)``: ``q`` token sequences (1-D long tensors) and the
        acquisition value of each where it was chosen, ``(q,)``.

    Example:
        >>> from botorch.acquisition import LogExpectedImprovement
        >>> from gpytorch_rntk import encode_tokens
        >>> designs = [[0, 1, 2, 1], [2, 2, 0], [1, 0, 0, 2], [0, 0, 1]]
        >>> train_x = encode_tokens(designs, alphabet_size=3, max_len=5)
        >>> train_y = torch.tensor([[0.1], [0.5], [0.2], [0.3]], dtype=torch.float64)
        >>> model = sequence_gp(train_x, train_y, input_dim=3)
        >>> acqf = LogExpectedImprovement(model, best_f=model.train_targets.max())
        >>> found, _ = optimize_acqf_tokens(acqf, 3, designs, max_len=5, min_len=2, avoid=designs)
        >>> 2 <= len(found[0]) <= 5 and found[0].tolist() not in designs
        True
    """
    size = check_positive_int(alphabet_size, "alphabet_size")
    max_len = check_positive_int(max_len, "max_len")
    q = check_positive_int(q, "q")
    num_neighbours = check_positive_int(num_neighbours, "num_neighbours")
    max_steps = check_positive_int(max_steps, "max_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    if min_len is not None and not 1 <= check_positive_int(min_len, "min_len") <= max_len:
        raise ValueError(f"min_len must be in [1, max_len={max_len}], got {min_len}.")
    if len(starts) == 0:
        raise ValueError("optimize_acqf_tokens needs at least one start sequence.")
    parameter = _model_parameter(acq_function)
    dtype = parameter.dtype if parameter is not None else torch.float64
    device = parameter.device if parameter is not None else torch.device("cpu")

    def key(t: Tensor) -> tuple[int, ...]:
        return tuple(t.tolist())

    def as_tokens(seqs) -> list[Tensor]:
        if len(seqs) == 0:
            return []
        encode_tokens(seqs, size, max_len=max_len)  # validates tokens and lengths, or raises
        return [torch.as_tensor(t).long().cpu() for t in seqs]

    starts, avoided = as_tokens(starts), {key(t) for t in as_tokens(avoid)}
    if feasible is not None and not callable(feasible):
        raise TypeError(f"feasible must be a callable or None, got {type(feasible).__name__}.")
    allowed = (lambda seq: True) if feasible is None else (lambda seq: bool(feasible(seq)))
    if min_len is not None and min(len(t) for t in starts) < min_len:
        raise ValueError(f"A start is shorter than min_len={min_len}.")

    def evaluate(seqs: list[Tensor]) -> Tensor:
        values = []
        with torch.no_grad():
            for i in range(0, len(seqs), batch_size):
                x = encode_tokens(seqs[i : i + batch_size], size, max_len, dtype).to(device)
                values.append(acq_function(x.unsqueeze(-2)).reshape(-1).cpu())
        return torch.cat(values)

    def neighbours(seq: Tensor) -> list[Tensor]:
        kinds = 1 if min_len is None else 3  # substitution; insertion, deletion
        kinds = torch.randint(kinds, (num_neighbours,), generator=generator)
        out = []
        for kind in kinds.tolist():
            n = len(seq)
            if kind == 1 and n < max_len:  # insertion
                at = int(torch.randint(n + 1, (), generator=generator))
                token = torch.randint(size, (1,), generator=generator)
                out.append(torch.cat([seq[:at], token, seq[at:]]))
            elif kind == 2 and n > min_len:  # deletion
                at = int(torch.randint(n, (), generator=generator))
                out.append(torch.cat([seq[:at], seq[at + 1 :]]))
            elif size > 1:  # substitution by a different token
                at = int(torch.randint(n, (), generator=generator))
                shift = int(torch.randint(1, size, (), generator=generator))
                new = seq.clone()
                new[at] = (new[at] + shift) % size
                out.append(new)
        return out

    chosen, values, pending = [], [], []
    set_pending = getattr(acq_function, "set_X_pending", None)
    original_pending = getattr(acq_function, "X_pending", None)
    try:
        for _ in range(q):
            current = list(starts)
            current_values = evaluate(current)
            best, best_value = None, -math.inf
            for seq, value in zip(current, current_values.tolist(), strict=True):
                if key(seq) not in avoided and value > best_value and allowed(seq):
                    best, best_value = seq, value
            for _ in range(max_steps):
                proposals, owners, seen = [], [], set()
                for i, seq in enumerate(current):
                    for new in neighbours(seq):
                        k = key(new)
                        if k not in seen and k not in avoided:
                            seen.add(k)
                            if not allowed(new):
                                continue
                            proposals.append(new)
                            owners.append(i)
                if not proposals:
                    break
                proposal_values = evaluate(proposals)
                owners = torch.tensor(owners)
                moved = False
                for i in range(len(current)):
                    mine = (owners == i).nonzero().flatten()
                    if len(mine) == 0:
                        continue
                    top = mine[proposal_values[mine].argmax()]
                    if proposal_values[top] > current_values[i]:
                        current[i], current_values[i] = proposals[top], proposal_values[top]
                        moved = True
                    if proposal_values[top] > best_value:
                        best, best_value = proposals[top], float(proposal_values[top])
                if not moved:
                    break
            if best is None:
                raise ValueError(
                    "Every sequence met is in avoid or rejected by feasible, and no mutation "
                    "left them: widen the search "
                    "(more num_neighbours or max_steps, or min_len for insertions/deletions)."
                )
            chosen.append(best)
            values.append(best_value)
            avoided.add(key(best))
            if set_pending is not None and len(chosen) < q:
                pending.append(encode_tokens([best], size, max_len, dtype).to(device))
                set_pending(torch.cat(pending))
    finally:
        if set_pending is not None and pending:
            set_pending(original_pending)
    return chosen, torch.tensor(values, dtype=dtype)
