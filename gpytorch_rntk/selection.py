r"""Choosing a recurrent kernel's configuration (readout, direction, depth) on the training data.

:func:`select_kernel` fits one exact GP per candidate configuration on the training data, each by
maximising its marginal likelihood, and keeps the one whose fitted model scores best on the
training data: by default the maximised log marginal likelihood per training datum
(``criterion="mll"``), or the closed-form leave-one-out log predictive density
(``criterion="loo"``), or a score of the caller's. It takes no test data, so nothing about the
test set can leak into the choice. See :doc:`/selection` for the recipe and why the marginal
likelihood is the default.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gpytorch
import torch
from gpytorch.kernels import Kernel, ScaleKernel
from gpytorch.models import ExactGP
from torch import Tensor

from .kernels import kernel_class

__all__ = [
    "CandidateResult",
    "Selection",
    "adam_fit",
    "candidate_grid",
    "gaussian_model",
    "select_kernel",
]

#: The options :func:`candidate_grid` varies by default: readout, direction and depth.
DEFAULT_GRID: dict[str, tuple] = {
    "readout": ("last", "mean"),
    "bidirectional": (False, True),
    "num_layers": (1, 2),
}
CRITERIA = ("mll", "loo")


def candidate_grid(**options: Iterable[Any]) -> list[dict[str, Any]]:
    """Every combination of the given kernel options, as a list of keyword dictionaries.

    Without arguments: ``readout`` in ``("last", "mean")``, ``bidirectional`` in
    ``(False, True)`` and ``num_layers`` in ``(1, 2)``, eight candidates. An argument replaces
    that option's values or adds an option (any keyword of :class:`~gpytorch_rntk.RNTKKernel`,
    or ``kernel="rntk"`` / ``"nngp"``); values are checked by :func:`select_kernel`, not here.

    Example:
        >>> candidate_grid(readout=("last", "mean"), bidirectional=(False,), num_layers=(1,))
        [{'readout': 'last', 'bidirectional': False, 'num_layers': 1}, {'readout': 'mean', 'bidirectional': False, 'num_layers': 1}]
    """  # noqa: E501
    grid = {**DEFAULT_GRID, **options}
    for name, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise TypeError(f"{name} must be a sequence of values, got {values!r}.")
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


@dataclass
class CandidateResult:
    """One candidate's fit on the training data.

    Attributes:
        options: The candidate's kernel options (with ``kernel``, the class name used).
        mll: The maximised exact log marginal likelihood per training datum, summed over the
            batch of outputs (the classes of Dirichlet classification); NaN if the fit failed.
        loo: The leave-one-out log predictive density per training datum at the fitted
            hyperparameters (computed when ``criterion="loo"``), else None.
        score: The value the selection compared (larger is better; ``-inf`` if the fit failed).
        seconds: Wall time of the fit and the scoring.
        hyperparameters: The fitted model's named hyperparameters (constrained values; the mean
            over a batch for batched ones).
        error: ``"<Exception>: <message>"`` if building, fitting or scoring failed.
    """

    options: dict[str, Any]
    mll: float = math.nan
    loo: float | None = None
    score: float = -math.inf
    seconds: float = 0.0
    hyperparameters: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def label(self) -> str:
        """``"readout=mean, bidirectional=True, num_layers=1"``."""
        return ", ".join(f"{name}={value}" for name, value in self.options.items())


@dataclass
class Selection:
    """The outcome of :func:`select_kernel`.

    Attributes:
        model: The chosen candidate's fitted model, in eval mode, ready to predict.
        best: The chosen candidate's :class:`CandidateResult`.
        results: Every candidate's result, in the order given.
        criterion: What was compared: ``"mll"``, ``"loo"`` or the name of the caller's function.
    """

    model: ExactGP
    best: CandidateResult
    results: list[CandidateResult]
    criterion: str

    @property
    def options(self) -> dict[str, Any]:
        """The chosen candidate's kernel options."""
        return self.best.options

    def summary(self) -> str:
        """One line per candidate: score, marginal likelihood, seconds; the chosen one marked."""
        return "\n".join(_line(result, result is self.best) for result in self.results)


def _line(result: CandidateResult, chosen: bool = False) -> str:
    mark = "*" if chosen else " "
    if result.error is not None:
        return f"{mark} {result.label}: failed ({result.error})"
    loo = "" if result.loo is None else f", LOO/N {result.loo:.4f}"
    return (
        f"{mark} {result.label}: MLL/N {result.mll:.4f}{loo}, score {result.score:.4f} "
        f"({result.seconds:.1f} s)"
    )


class _SequenceExactGP(ExactGP):
    """The default model: constant mean, ``ScaleKernel(kernel)``, Gaussian likelihood."""

    def __init__(self, train_x: Tensor, train_y: Tensor, kernel: Kernel) -> None:
        likelihood = gpytorch.likelihoods.GaussianLikelihood()
        super().__init__(train_x, train_y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = ScaleKernel(kernel)

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def gaussian_model(kernel: Kernel, train_x: Tensor, train_y: Tensor) -> ExactGP:
    """The default ``make_model`` of :func:`select_kernel`: an exact GP with a constant mean,
    ``ScaleKernel(kernel)`` and a Gaussian likelihood, in ``train_x``'s dtype and device.

    The constant starts at the targets' mean and the output scale where the prior variance on
    the training inputs equals the targets' variance (the recurrent kernels' diagonal grows with
    the sequence length, so GPyTorch's default scale can be far off).
    """
    model = _SequenceExactGP(train_x, train_y, kernel).to(train_x)
    with torch.no_grad():
        diag = kernel(train_x, diag=True).mean().clamp_min(1e-12)
        variance = train_y.var().clamp_min(1e-6) if train_y.numel() > 1 else train_y.new_ones(())
        model.covar_module.outputscale = variance / diag
        model.mean_module.constant = train_y.mean()
    return model


def adam_fit(model: ExactGP, iters: int = 50, lr: float = 0.1) -> None:
    """The default ``fit`` of :func:`select_kernel`: ``iters`` Adam steps on the exact marginal
    likelihood (summed over a batch of outputs), on the model's own training data."""
    model.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(iters):
        optimizer.zero_grad()
        loss = -mll(model(*model.train_inputs), model.train_targets).sum()
        loss.backward()
        optimizer.step()


def _training_objective(model: ExactGP, loo: bool) -> float:
    """The exact MLL (or LOO log predictive density) per datum on the model's training data,
    summed over a batch of outputs, at the current hyperparameters."""
    model.train()
    cls = (
        gpytorch.mlls.LeaveOneOutPseudoLikelihood
        if loo
        else gpytorch.mlls.ExactMarginalLogLikelihood
    )
    objective = cls(model.likelihood, model)
    with torch.no_grad():
        value = objective(model(*model.train_inputs), model.train_targets).sum().item()
    return value


def _hyperparameters(model: ExactGP) -> dict[str, float]:
    values = {}
    for name, _ in model.named_parameters():
        module_name, _, raw_name = name.rpartition(".")
        if not raw_name.startswith("raw_"):
            continue
        module = model.get_submodule(module_name) if module_name else model
        value = getattr(module, raw_name[4:], None)
        if isinstance(value, Tensor) and value.is_floating_point():
            values[f"{module_name}.{raw_name[4:]}".lstrip(".")] = value.detach().mean().item()
    return values


def _build_kernels(
    candidates: list[dict[str, Any]],
    input_dim: int,
    kernel: str,
    kernel_options: Mapping[str, Any],
) -> list[tuple[dict[str, Any], Kernel]]:
    """Build every candidate's kernel before fitting any, so a bad option fails at once."""
    built, seen = [], set()
    for i, candidate in enumerate(candidates):
        if not isinstance(candidate, Mapping):
            raise TypeError(
                f"candidate {i} must be a mapping of kernel options, got {candidate!r}."
            )
        options = {**kernel_options, **candidate}
        name = options.pop("kernel", kernel)
        key = repr(sorted({**options, "kernel": name}.items()))
        if key in seen:
            raise ValueError(f"candidate {i} ({dict(candidate)}) repeats an earlier candidate.")
        seen.add(key)
        if "input_dim" in options:
            raise ValueError("input_dim is an argument of select_kernel, not a candidate option.")
        try:
            cls = kernel_class(name)
            instance = cls(input_dim, **options)
        except (TypeError, ValueError) as error:
            raise type(error)(f"candidate {i} ({dict(candidate)}): {error}") from error
        built.append((dict(candidate), instance))
    return built


def select_kernel(
    train_x: Tensor,
    train_y: Tensor,
    candidates: Iterable[Mapping[str, Any]] | None = None,
    *,
    input_dim: int,
    kernel: str = "rntk",
    kernel_options: Mapping[str, Any] | None = None,
    make_model: Callable[[Kernel, Tensor, Tensor], ExactGP] | None = None,
    fit: Callable[[ExactGP], object] | None = None,
    criterion: str | Callable[[ExactGP], float] = "mll",
    verbose: bool = False,
) -> Selection:
    r"""Fit an exact GP per candidate kernel configuration on the training data; keep the best.

    Every candidate is a dictionary of keyword arguments of the recurrent kernels (``readout``,
    ``bidirectional``, ``num_layers``, ``nonlinearity``, ...; ``kernel="rntk"`` or ``"nngp"``
    picks the class), merged over ``kernel_options``. All kernels are built first, so an
    unknown option or value raises before any fitting. Then, one candidate at a time:
    ``make_model(kernel, train_x, train_y)`` builds a GPyTorch ``ExactGP`` around the kernel,
    ``fit(model)`` maximises its marginal likelihood, and the fitted model is scored on the
    training data. The best score wins (the first among equals); only its model is kept.

    Args:
        train_x: ``(N, D)`` training sequences in the layout of :doc:`/layout`.
        train_y: The training targets: ``(N,)`` for the default Gaussian model; whatever
            ``make_model`` expects otherwise (e.g. class labels, from which it builds a
            Dirichlet likelihood's targets).
        candidates: Kernel options to compare (default :func:`candidate_grid`\ (): readout
            ``"last"``/``"mean"`` x one/two directions x one/two layers). Taken as data: any
            readout or option the kernel classes accept can be compared.
        input_dim: ``m``, the dimension of one step.
        kernel: The kernel class for candidates without a ``kernel`` key: ``"rntk"``
            (:class:`~gpytorch_rntk.RNTKKernel`) or ``"nngp"``
            (:class:`~gpytorch_rntk.RNNGPKernel`).
        kernel_options: Options shared by every candidate (e.g. ``{"engine": "fused"}``).
        make_model: ``(kernel, train_x, train_y) -> ExactGP`` with its likelihood as
            ``model.likelihood`` and training targets set; default :func:`gaussian_model`.
            A model with a batch of outputs (Dirichlet classification) is scored by the sum over
            the batch.
        fit: ``fit(model)`` fits the hyperparameters on ``model.train_inputs`` /
            ``model.train_targets``; default :func:`adam_fit` (50 Adam steps, learning rate 0.1).
        criterion: ``"mll"``: the maximised exact log marginal likelihood per training datum
            (the evidence for the configuration); ``"loo"``: the closed-form leave-one-out log
            predictive density per datum at the fitted hyperparameters (Rasmussen and Williams,
            2006, section 5.4.2; needs a Gaussian-type likelihood); or a function
            ``score(model) -> float`` of the fitted model (larger is better), which must use
            only the model's training data.
        verbose: Print one line per candidate as it finishes.

    Returns:
        A :class:`Selection`: the chosen fitted model (in eval mode), its options and every
        candidate's :class:`CandidateResult`.

    Raises:
        ValueError: If there are no candidates, a candidate repeats another, an option value is
            not understood, or the criterion is unknown.
        TypeError: If a candidate is not a mapping or names an option the kernels do not take.
        RuntimeError: If every candidate's fit failed (each failure is recorded in its
            :class:`CandidateResult` and the others go on).

    Example:
        >>> import torch
        >>> from gpytorch_rntk import encode_sequences
        >>> seqs = [torch.randn(8, 1) for _ in range(12)]
        >>> x = encode_sequences(seqs).double()
        >>> y = torch.stack([s[0, 0] for s in seqs]).double()  # the first step
        >>> grid = candidate_grid(num_layers=(1,))
        >>> selection = select_kernel(x, y, grid, input_dim=1, fit=lambda m: adam_fit(m, 5))
        >>> len(selection.results), sorted(selection.options)
        (4, ['bidirectional', 'num_layers', 'readout'])
    """
    candidates = candidate_grid() if candidates is None else list(candidates)
    if not candidates:
        raise ValueError("candidates is empty: give at least one kernel configuration.")
    if isinstance(criterion, str):
        if criterion not in CRITERIA:
            raise ValueError(f"Unknown criterion {criterion!r}; choose one of {list(CRITERIA)}.")
        criterion_name = criterion
    elif callable(criterion):
        criterion_name = getattr(criterion, "__name__", type(criterion).__name__)
    else:
        raise TypeError(f"criterion must be 'mll', 'loo' or a function, got {criterion!r}.")
    if not isinstance(train_x, Tensor) or train_x.dim() != 2:
        found = tuple(train_x.shape) if isinstance(train_x, Tensor) else type(train_x).__name__
        raise ValueError(f"train_x must be an (N, D) tensor of sequences, got {found}.")
    if not isinstance(train_y, Tensor) or train_y.shape[0] != train_x.shape[0]:
        found = tuple(train_y.shape) if isinstance(train_y, Tensor) else type(train_y).__name__
        raise ValueError(f"train_y must be a tensor with N = {train_x.shape[0]} rows, got {found}.")
    make_model = gaussian_model if make_model is None else make_model
    fit = adam_fit if fit is None else fit
    built = _build_kernels(candidates, input_dim, kernel, dict(kernel_options or {}))

    results: list[CandidateResult] = []
    best_model, best = None, None
    for options, instance in built:
        result = CandidateResult(options)
        start = time.perf_counter()
        try:
            model = make_model(instance, train_x, train_y)
            fit(model)
            result.mll = _training_objective(model, loo=False)
            if criterion == "loo":
                result.loo = _training_objective(model, loo=True)
                result.score = result.loo
            elif criterion == "mll":
                result.score = result.mll
            else:
                result.score = float(criterion(model))
            result.hyperparameters = _hyperparameters(model)
            if math.isnan(result.score):
                raise FloatingPointError("the score is NaN")
        except Exception as error:  # one failed fit (a non-PSD matrix, ...) must not end the search
            result.error = f"{type(error).__name__}: {error}"
            result.score = -math.inf
            model = None
        result.seconds = time.perf_counter() - start
        results.append(result)
        if model is not None and (best is None or result.score > best.score):
            best_model, best = model, result
        if verbose:
            print(_line(result), flush=True)
    if best is None:
        failures = "; ".join(f"{r.label}: {r.error}" for r in results)
        raise RuntimeError(f"Every candidate failed: {failures}")
    best_model.eval()
    return Selection(best_model, best, results, criterion_name)
