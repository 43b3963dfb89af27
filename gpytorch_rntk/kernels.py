"""GPyTorch kernels: the Recurrent Neural Tangent Kernel and the RNN-NNGP kernel."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from gpytorch.constraints import Interval, Positive
from gpytorch.kernels import Kernel
from gpytorch.priors import Prior
from torch import Tensor

from .functional import (
    RecurrentVariances,
    check_engine,
    check_options,
    differentiated,
    nonlinearity_option,
    recurrent_kernel,
    recurrent_kernel_diag,
)
from .layout import check_encoding, check_positive_int, split_layout

__all__ = ["RNNGPKernel", "RNTKKernel", "kernel_class"]

# Defaults per nonlinearity. ReLU: recurrent_var = 2 weights every step equally and lets the
# kernel grow linearly with length; 1.8 fades each older step by 10 % (a memory of about ten
# steps) and keeps long sequences on one scale. erf: V' <= 4/pi < 1.28, so recurrent_var = 1
# keeps the NTK's recurrent path contracting once the states are O(1). Every other nonlinearity
# (tanh, sigmoid, GELU, SiLU, softplus, a user's function) takes erf's: the named ones have
# V' <= 1.13^2 < 1.28 too (GELU's largest slope is 1.13), so recurrent_var = 1 keeps their
# recurrent paths about as contracting.
DEFAULT_VARIANCES = {
    "relu": {"recurrent_var": 1.8, "input_var": 1.0, "bias_var": 0.1, "init_var": 0.5},
    "erf": {"recurrent_var": 1.0, "input_var": 1.0, "bias_var": 0.1, "init_var": 0.5},
}
# The geometric readout's decay to start from: step t of T weighs 0.9^(T - t), a memory of about
# ten steps; the marginal likelihood moves it towards 1 (the mean) or 0 (the last step).
_DEFAULT_DECAY = 0.9


def _get_positive(module: Kernel, name: str) -> Tensor:
    return getattr(module, f"raw_{name}_constraint").transform(getattr(module, f"raw_{name}"))


def _set_positive(module: Kernel, value: Tensor | float, name: str) -> None:
    raw = getattr(module, f"raw_{name}")
    value = torch.as_tensor(value, dtype=raw.dtype, device=raw.device)
    transformed = getattr(module, f"raw_{name}_constraint").inverse_transform(value)
    module.initialize(**{f"raw_{name}": transformed})


def _initial_value(module: Kernel, name: str, default: float) -> float:
    """The default, unless the constraint has its own initial value or excludes the default."""
    constraint = getattr(module, f"raw_{name}_constraint")
    if constraint.initial_value is not None:
        return constraint.initial_value.item()
    lower, upper = float(constraint.lower_bound), float(constraint.upper_bound)
    if lower < default < upper:
        return default
    return lower + 1.0 if upper == float("inf") else (lower + upper) / 2


class _PositiveHyperparameter:
    """A GPyTorch-style constrained hyperparameter: ``kernel.<name>`` reads and writes the value,
    ``kernel.raw_<name>`` is the unconstrained parameter."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, module: Kernel | None, owner: type | None = None) -> Tensor:
        if module is None:
            return self
        return _get_positive(module, self.name)

    def __set__(self, module: Kernel, value: Tensor | float) -> None:
        _set_positive(module, value, self.name)


class _RecurrentKernel(Kernel):
    r"""Shared machinery of :class:`RNTKKernel` and :class:`RNNGPKernel`."""

    has_lengthscale = False

    recurrent_var = _PositiveHyperparameter()
    input_var = _PositiveHyperparameter()
    bias_var = _PositiveHyperparameter()
    init_var = _PositiveHyperparameter()
    readout_decay = _PositiveHyperparameter()

    def __init__(
        self,
        input_dim: int,
        num_layers: int = 1,
        nonlinearity: str | Callable = "relu",
        initial_state: str = "zero",
        variable_length: bool = True,
        *,
        bidirectional: bool = False,
        frozen_layers: int = 0,
        readout: str = "last",
        engine: str = "auto",
        ard_num_dims: int | None = None,
        normalize: bool = False,
        recurrent_var_prior: Prior | None = None,
        recurrent_var_constraint: Interval | None = None,
        input_var_prior: Prior | None = None,
        input_var_constraint: Interval | None = None,
        bias_var_prior: Prior | None = None,
        bias_var_constraint: Interval | None = None,
        init_var_prior: Prior | None = None,
        init_var_constraint: Interval | None = None,
        readout_decay_prior: Prior | None = None,
        readout_decay_constraint: Interval | None = None,
        **kwargs,
    ) -> None:
        input_dim = check_positive_int(input_dim, "input_dim")
        check_options(nonlinearity, initial_state, num_layers, frozen_layers, readout)
        check_engine(engine)
        flags = (
            ("variable_length", variable_length),
            ("bidirectional", bidirectional),
            ("normalize", normalize),
        )
        for name, flag in flags:
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {flag!r}.")
        unknown = sorted(set(kwargs) - {"batch_shape", "active_dims"})
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword arguments {unknown}. Set the "
                "variances after construction, e.g. kernel.initialize(recurrent_var=1.5)."
            )
        if initial_state == "zero" and (init_var_prior, init_var_constraint) != (None, None):
            raise ValueError(
                "init_var_prior and init_var_constraint need initial_state='per_input' or "
                "'shared': with initial_state='zero' there is no init_var."
            )
        geometric = readout == "geometric"
        if not geometric and (readout_decay_prior, readout_decay_constraint) != (None, None):
            raise ValueError(
                "readout_decay_prior and readout_decay_constraint need readout='geometric': "
                f"readout={readout!r} has no readout_decay."
            )
        if ard_num_dims is not None and ard_num_dims != input_dim:
            raise ValueError(
                f"ard_num_dims must be input_dim = {input_dim} (one input_var per channel of a "
                f"step) or None, got {ard_num_dims!r}."
            )
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.num_layers = int(num_layers)
        # a name, or the QuadratureDual of a function that is not a built-in one
        self.nonlinearity = nonlinearity_option(nonlinearity)
        self._initial_state = initial_state
        self.variable_length = bool(variable_length)
        self.frozen_layers = int(frozen_layers)
        self.bidirectional = bool(bidirectional)
        self.readout = readout
        self.engine = engine
        # (not GPyTorch's own ard_num_dims, which would check the inputs' width against it)
        self._ard_num_dims = ard_num_dims
        self.normalize = bool(normalize)
        priors = {
            "recurrent_var": (recurrent_var_prior, recurrent_var_constraint),
            "input_var": (input_var_prior, input_var_constraint),
            "bias_var": (bias_var_prior, bias_var_constraint),
            "init_var": (init_var_prior, init_var_constraint),
            "readout_decay": (
                readout_decay_prior,
                Interval(0.0, 1.0)
                if readout_decay_constraint is None
                else readout_decay_constraint,
            ),
        }
        if initial_state == "zero":
            del priors["init_var"]
        if not geometric:
            del priors["readout_decay"]
        for name, (prior, constraint) in priors.items():
            # (a nonlinearity without defaults of its own, e.g. tanh or a user's function,
            # takes erf's, a bounded activation's)
            defaults = DEFAULT_VARIANCES.get(self.nonlinearity, DEFAULT_VARIANCES["erf"])
            default = _DEFAULT_DECAY if name == "readout_decay" else defaults[name]
            channels = input_dim if name == "input_var" and ard_num_dims is not None else 1
            self._register_positive(name, default, prior, constraint, channels)

    @property
    def initial_state(self) -> str:
        """``"zero"``, ``"per_input"`` or ``"shared"``, fixed at construction (it decides whether
        the kernel has the hyperparameter ``init_var``)."""
        return self._initial_state

    @initial_state.setter
    def initial_state(self, value: str) -> None:
        raise AttributeError(
            "initial_state is fixed at construction (it decides whether the kernel has "
            f"init_var); build a new kernel with initial_state={value!r} instead."
        )

    def _register_positive(
        self,
        name: str,
        default: float,
        prior: Prior | None,
        constraint: Interval | None,
        channels: int = 1,
    ) -> None:
        self.register_parameter(
            f"raw_{name}", torch.nn.Parameter(torch.zeros(*self.batch_shape, 1, channels))
        )
        self.register_constraint(f"raw_{name}", Positive() if constraint is None else constraint)
        if prior is not None:
            if not isinstance(prior, Prior):
                raise TypeError(f"Expected gpytorch.priors.Prior for {name}_prior, got {prior!r}.")
            self.register_prior(
                f"{name}_prior",
                prior,
                partial(_get_positive, name=name),
                partial(_set_positive, name=name),
            )
        value = _initial_value(self, name, default)
        self._initial_values = {**getattr(self, "_initial_values", {}), name: value}
        _set_positive(self, value, name)

    def _raw_initial(self, name: str) -> Tensor:
        """The raw value of hyperparameter ``name``'s initial value in the parameter's dtype."""
        raw = getattr(self, f"raw_{name}")
        value = torch.tensor(self._initial_values[name], dtype=raw.dtype, device=raw.device)
        return getattr(self, f"raw_{name}_constraint").inverse_transform(value)

    def _apply(self, fn, *args, **kwargs):
        # A parameter created in float32 holds its initial value rounded to float32 (1.8 reads
        # 1.7999999450995 after .double()). Entries still at their initial value are set again
        # exactly in the new dtype; every other entry converts as usual.
        untouched = {}
        for name in getattr(self, "_initial_values", {}):
            raw = getattr(self, f"raw_{name}")
            untouched[name] = (raw.dtype, (raw == self._raw_initial(name)).detach())
        module = super()._apply(fn, *args, **kwargs)
        for name, (dtype, mask) in untouched.items():
            raw = getattr(self, f"raw_{name}")
            if raw.dtype != dtype and raw.is_floating_point() and mask.any():
                with torch.no_grad():
                    raw.copy_(torch.where(mask.to(raw.device), self._raw_initial(name), raw))
        return module

    def extra_repr(self) -> str:
        return (
            f"input_dim={self.input_dim}, num_layers={self.num_layers}, "
            f"nonlinearity={self.nonlinearity!r}, initial_state={self.initial_state!r}, "
            f"variable_length={self.variable_length}, bidirectional={self.bidirectional}, "
            f"frozen_layers={self.frozen_layers}, readout={self.readout!r}"
            + ("" if self._ard_num_dims is None else f", ard_num_dims={self._ard_num_dims}")
            + (", normalize=True" if self.normalize else "")
        )

    def _variances(self) -> RecurrentVariances:
        # The scan casts them to the inputs' dtype and device. Per-channel input variances
        # give the scan their mean and scale the steps by the rest (:meth:`_scaled`).
        input_var = self.input_var
        return RecurrentVariances(
            self.recurrent_var,
            input_var if self._ard_num_dims is None else input_var.mean(-1, keepdim=True),
            self.bias_var,
            0.0 if self.initial_state == "zero" else self.init_var,
            self.readout_decay if self.readout == "geometric" else 1.0,
        )

    def _check_ard_engine(self) -> None:
        """Refuse per-channel input variances that need a gradient on a compiled engine named
        explicitly: they are learned through the scaled steps, which only the tensor engine
        differentiates."""
        learning = self._ard_num_dims is not None and self.raw_input_var.requires_grad
        if learning and torch.is_grad_enabled() and self.engine not in ("auto", "tensor"):
            raise ValueError(
                f"engine={self.engine!r} cannot learn per-channel input variances "
                "(ard_num_dims): they scale the steps, and the compiled engines differentiate "
                "the variances only, not the steps. Use engine='auto' (the tensor engine "
                "computes these gradients), or freeze input_var "
                "(kernel.raw_input_var.requires_grad_(False)) or use torch.no_grad() to predict."
            )

    def _scaled(self, values: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        r"""``values`` ``(..., N, T, m)`` with channel :math:`c` times
        :math:`\sqrt{\sigma_{u,c}^2 / \bar\sigma_u^2}` where ``input_var`` is per channel
        (ARD), :math:`\bar\sigma_u^2` their mean, which the scan reads as ``input_var``: then
        its first layer's input term :math:`\bar\sigma_u^2 \langle x_t, x'_{t'} \rangle / m`
        is :math:`\sum_c \sigma_{u,c}^2 x_{t,c} x'_{t',c} / m`, that of a network whose first
        layer's input weights of channel :math:`c` have variance :math:`\sigma_{u,c}^2`, and the
        layers above read :math:`\bar\sigma_u^2` (equal variances give the kernel without
        ARD). The lengths are broadcast to the scaled values' batch shape."""
        if self._ard_num_dims is None:
            return values, lengths
        input_var = self.input_var.to(values)  # (*batch, 1, m)
        scale = (input_var / input_var.mean(-1, keepdim=True)).sqrt()
        values = values * scale.unsqueeze(-2)
        return values, lengths.expand(values.shape[:-2])

    def __call__(self, x1: Tensor, x2: Tensor | None = None, **kwargs):
        for name, x in (("x1", x1), ("x2", x2)):
            if not (isinstance(x, Tensor) or (name == "x2" and x is None)):
                raise TypeError(
                    f"{name} must be a torch.Tensor in the layout of encode_sequences, got "
                    f"{type(x).__name__}."
                )
        # (before GPyTorch's own check, which says only "dimensions"; with active_dims it rules;
        # GPyTorch reads a 1-D input as a column)
        widths = [1 if x.dim() < 2 else x.shape[-1] for x in (x1, x1 if x2 is None else x2)]
        if self.active_dims is None and widths[0] != widths[1]:
            raise ValueError(
                f"x1 has width {widths[0]} and x2 width {widths[1]}: GPyTorch needs one "
                "width for both; encode them with the same max_len (encode_sequences(..., "
                "max_len=T_max))."
            )
        return super().__call__(x1, x2, **kwargs)

    def forward(
        self,
        x1: Tensor,
        x2: Tensor,
        diag: bool = False,
        last_dim_is_batch: bool = False,
        **params,
    ) -> Tensor:
        r"""Evaluate the kernel.

        Inputs of different floating dtypes are promoted, with the hyperparameters' dtype, as
        GPyTorch's kernels do (a ``.double()`` kernel computes float32 inputs in float64).

        Args:
            x1: ``(..., N, D)`` sequences in the layout of :doc:`/layout`.
            x2: ``(..., N', D')`` sequences (``forward`` accepts another ``T_max``).
            diag: Return only ``K(x1_i, x2_i)``, ``(..., N)``, in :math:`O(L\,T N)`
                (:math:`O(L\,T^2 N)` with ``readout="mean"``).
            last_dim_is_batch: Not supported (deprecated in GPyTorch); raises.

        Returns:
            A dense ``(..., N, N')`` tensor, or ``(..., N)`` if ``diag``.

        Warns:
            RuntimeWarning: If the result holds inf or NaN (the kernel overflows: ReLU with
                ``recurrent_var`` above 2 grows about ``(recurrent_var / 2)^T``), if the erf
                NTK's inputs are so large that the dtype's rounding costs more than 0.1 %
                (:doc:`/kernels`, Numerical precision), and, in training mode, if the training
                sequences do not look encoded with step dimension ``input_dim``
                (``gpytorch_rntk.layout.check_encoding``, :doc:`/layout`).
        """
        if last_dim_is_batch:
            raise NotImplementedError(
                f"{type(self).__name__} does not support last_dim_is_batch=True: the last "
                "dimension holds the steps of one sequence."
            )
        same = x1 is x2
        x1, x2 = self._promoted(x1, x2)
        if diag and x1.shape[-2] != x2.shape[-2]:
            raise ValueError(
                f"diag=True needs as many sequences in x1 as in x2, got {x1.shape[-2]} and "
                f"{x2.shape[-2]}."
            )
        if not diag and not same:
            shared = self._shared_side(x1, x2)
            if shared is not None:
                return shared
        values1, lengths1 = split_layout(x1, self.input_dim, self.variable_length)
        if same and self.training and self.variable_length:
            check_encoding(x1, self.input_dim)
        self._check_ard_engine()
        values1, lengths1 = self._scaled(values1, lengths1)
        options = dict(
            nonlinearity=self.nonlinearity,
            num_layers=self.num_layers,
            frozen_layers=self.frozen_layers,
            initial_state=self.initial_state,
            bidirectional=self.bidirectional,
            readout=self.readout,
        )
        variances = self._variances()
        # K(x, x) by its symmetric path; equal values count only when no gradient is asked of
        # either side (one side's gradient would otherwise count twice or not at all).
        equal = not differentiated(x1, x2) and x1.shape == x2.shape and torch.equal(x1, x2)
        # K(x, x) of one sequence given as two tensors with gradients (the posterior variance of
        # a candidate, (b, 1, D) against itself): its value is the self recursion's, O(L T)
        # instead of a cross scan, and by the kernel's symmetry each side's derivative is half
        # the derivative of k(x, x) (on the ReLU NTK's kink the central one). Computed at the
        # midpoint of both sides, which gives each side that half.
        one_pair = (
            not (diag or same or equal)
            and x1.shape[-2] == 1
            and x1.shape == x2.shape
            and torch.equal(x1.detach(), x2.detach())
        )
        if same or equal:
            values2, lengths2 = values1, lengths1  # lets the Gram be computed as symmetric
        else:
            values2, lengths2 = split_layout(x2, self.input_dim, self.variable_length)
            values2, lengths2 = self._scaled(values2, lengths2)
        if one_pair:
            values1 = values2 = (values1 + values2) / 2
            lengths2 = lengths1
        if self.nonlinearity == "erf":
            self._check_erf_range(values1, values2, variances)
        if (same or equal) and diag:
            out = recurrent_kernel_diag(values1, lengths1, variances, **options)
        elif one_pair:
            out = recurrent_kernel_diag(values1, lengths1, variances, **options).unsqueeze(-1)
        else:
            out = recurrent_kernel(
                values1,
                lengths1,
                values2,
                lengths2,
                variances,
                paired=diag,
                engine=self.engine,
                **options,
            )
        if not torch.isfinite(out.detach()).all():
            self._warn_non_finite(max(values1.shape[-2], values2.shape[-2]), out.dtype)
        if self.normalize:
            out = self._normalized(
                out, diag, values1, lengths1, values2, lengths2, variances, options
            )
        return out

    def _shared_side(self, x1: Tensor, x2: Tensor) -> Tensor | None:
        """``K(x1, x2)`` as one unbatched Gram matrix where one side holds the same sequences
        in every batch (GPyTorch's posterior on a batch of candidates ``(b, q, D)`` against the
        training inputs repeated ``(b, N, D)``), else ``None``: the candidates of all batches
        become the rows, so the repeated side is validated, aligned and compared once instead
        of ``b`` times (the same pairs, the same values). Only for unbatched hyperparameters and
        a repeated side that needs no gradient."""
        if self.batch_shape != torch.Size() or x1.dim() < 3 or x2.dim() < 3:
            return None
        if x1.numel() == 0 or x2.numel() == 0 or x1.device != x2.device:
            return None  # (left to the checks of the batched call)
        batch = torch.broadcast_shapes(x1.shape[:-2], x2.shape[:-2])
        size = math.prod(batch)
        for side, other in ((x2, x1), (x1, x2)):
            if side.requires_grad:
                continue
            repeated = side.expand(*batch, *side.shape[-2:]).reshape(size, *side.shape[-2:])
            if not torch.equal(repeated, repeated[:1].expand_as(repeated)):
                continue
            rows = other.expand(*batch, *other.shape[-2:]).reshape(-1, other.shape[-1])
            if side is x2:
                out = self.forward(rows, repeated[0])  # (b q, N)
                return out.view(*batch, other.shape[-2], side.shape[-2])
            out = self.forward(repeated[0], rows)  # (N, b q)
            return out.view(side.shape[-2], *batch, other.shape[-2]).movedim(0, -2)
        return None

    def _normalized(self, out, diag, values1, lengths1, values2, lengths2, variances, options):
        r""":math:`k(x, x') / \sqrt{k(x, x)\, k(x', x')}` of the kernel values ``out``: 1 on the
        diagonal of ``K(x, x)``; the self terms from the Gram matrix's diagonal where ``x1`` and
        ``x2`` are the same sequences, else from ``recurrent_kernel_diag`` (:math:`O(L\,T N)`,
        the mean and geometric readouts :math:`O(L\,T^2 N)`). A self term of 0 (a zero sequence
        without bias) counts as the smallest normal number."""
        same = values1 is values2 and lengths1 is lengths2
        if same and diag:
            return torch.ones_like(out)
        if same:
            selves1 = selves2 = out.diagonal(dim1=-2, dim2=-1)
        else:
            selves1 = recurrent_kernel_diag(values1, lengths1, variances, **options)
            selves2 = recurrent_kernel_diag(values2, lengths2, variances, **options)
        tiny = torch.finfo(out.dtype).tiny
        norm1, norm2 = (s.clamp_min(tiny).rsqrt() for s in (selves1, selves2))
        if diag:  # paired rows
            return out * norm1 * norm2
        return out * norm1.unsqueeze(-1) * norm2.unsqueeze(-2)

    def _promoted(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        """``x1`` and ``x2`` in the promoted dtype of both and the hyperparameters (GPyTorch's
        kernels promote too); ``x1 is x2`` is kept. Non-float inputs are left to
        :func:`~gpytorch_rntk.layout.split_layout`, which names them."""
        floating = [isinstance(x, Tensor) and x.is_floating_point() for x in (x1, x2)]
        if all(floating) and x1.device != x2.device:
            raise ValueError(
                f"x1 is on {x1.device} and x2 on {x2.device}; move both (and the kernel, "
                "kernel.to(device)) to one device."
            )
        dtype = self.recurrent_var.dtype
        for x, is_float in zip((x1, x2), floating, strict=True):
            dtype = torch.promote_types(dtype, x.dtype) if is_float else dtype
        promoted1 = x1.to(dtype) if floating[0] else x1
        return promoted1, promoted1 if x1 is x2 else x2.to(dtype) if floating[1] else x2

    def _check_erf_range(
        self, values1: Tensor, values2: Tensor, variances: RecurrentVariances
    ) -> None:
        """erf's dual activations multiply the two self-covariances ``(1 + 2k)``: with a bound
        ``s`` on every pre-activation variance (``V <= 1`` for erf), raise if ``(1 + 2s)^2``
        overflows the dtype (the NNGP then returns 0, the NTK NaN) and warn if the NTK's
        ``V'``, which takes a difference of such products, keeps less than 0.1 % accuracy
        (relative rounding about ``eps * s``)."""
        with torch.no_grad():
            steps = max(
                float(v.square().sum(-1).amax()) if v.numel() else 0.0 for v in (values1, values2)
            )
            inputs = max(steps / self.input_dim, 1.0)  # layer l > 1 reads V[S^(l-1)] <= 1
            s = variances.recurrent_var + variances.bias_var + variances.init_var
            s = torch.as_tensor(s + variances.input_var * inputs, dtype=values1.dtype).max()
        if not torch.isfinite((1 + 2 * s) ** 2):
            raise ValueError(
                f"The erf kernel's pre-activation variances reach about {s.item():.3g} "
                f"(input_var * |x_t|^2 / input_dim + recurrent_var + bias_var), and erf's dual "
                f"activations overflow {values1.dtype} there (to 0 or NaN). Standardise the "
                "inputs (or lower input_var), or compute in float64."
            )
        loss = torch.finfo(values1.dtype).eps * s
        if self.frozen_layers < self.num_layers and loss > 1e-3:
            warnings.warn(
                f"The erf NTK's pre-activation variances reach about {s.item():.3g}: in "
                f"{values1.dtype} its V' keeps a relative accuracy of only about "
                f"{loss.item():.1g} there (a difference of two products of that size). "
                "Standardise the inputs (or lower input_var), or compute in float64.",
                RuntimeWarning,
                stacklevel=2,
            )

    def _warn_non_finite(self, steps: int, dtype: torch.dtype) -> None:
        growth = (
            f"with ReLU the kernel grows about (recurrent_var / 2)^T, so recurrent_var above 2 "
            f"overflows {dtype} on long sequences"
            if self.nonlinearity == "relu"
            else f"the {getattr(self.nonlinearity, 'name', self.nonlinearity)} NTK grows once "
            "recurrent_var * V' exceeds 1"
        )
        wider = "" if dtype == torch.float64 else " or compute in float64"
        recurrent_var = self.recurrent_var.detach()
        shown = f"{recurrent_var.item():.4g}" if recurrent_var.numel() == 1 else "(batched)"
        warnings.warn(
            f"{type(self).__name__} returned inf or NaN (recurrent_var = {shown}, sequences "
            f"of up to T = {steps} steps): {growth}. GPyTorch will fail to factorise this "
            "matrix. Bound recurrent_var (e.g. recurrent_var_constraint=Interval(0.0, 2.0) "
            f"for ReLU), shorten or standardise the sequences{wider}.",
            RuntimeWarning,
            stacklevel=2,
        )


class RNTKKernel(_RecurrentKernel):
    r"""The Recurrent Neural Tangent Kernel (Alemohammad et al., ICLR 2021).

    The NTK of an infinitely wide Elman RNN with ``num_layers`` layers read out at the last step,
    for sequences of different lengths aligned at their last elements. Per layer :math:`l`, time
    pair :math:`(t, t')`:

    .. math::
        S^{l}(t,t') &= \sigma_w^2\, V[S^{l}(t-1,t'-1)] + \sigma_u^2\, I^{l}(t,t') + \sigma_b^2,\\
        \Theta^{l}(t,t') &= S^{l}(t,t') + \sigma_w^2\, V'[S^{l}(t-1,t'-1)]\,\Theta^{l}(t-1,t'-1)
            + \sigma_u^2\, V'[S^{l-1}(t,t')]\,\Theta^{l-1}(t,t'),

    with :math:`I^{1}(t,t') = \langle x_t, x'_{t'}\rangle / m`, :math:`I^{l} = V[S^{l-1}]`, and
    the readout :math:`\Theta(x,x') = V[S^{L}(T,T')] + V'[S^{L}(T,T')]\,\Theta^{L}(T,T')`.
    :math:`V, V'` are the dual activations of the nonlinearity (ReLU and erf in closed form,
    any other by quadrature). With ReLU, ``recurrent_var = 2``
    weights all steps equally; smaller values fade old steps geometrically (factor
    ``recurrent_var / 2`` per step), larger ones let early steps dominate.

    With ``readout="mean"`` the network is read out through average pooling over time,
    :math:`f(x) = v^\top \frac{1}{T}\sum_t h^{L,t}(x) / \sqrt{n}`, and the kernel is the mean of
    the readout over every time pair :math:`(t, t')`, each diagonal :math:`t' - t` starting from
    the recursion's boundary (:doc:`/kernels`, Variants):
    :math:`\Theta_{avg}(x,x') = \frac{1}{T T'}\sum_{t,t'} V[S^{L}(t,t')]
    + V'[S^{L}(t,t')]\,\Theta^{L}(t,t')`. With ``readout="geometric"`` the states are averaged
    with weights :math:`w_t = \lambda^{T-t} / \sum_{s=1}^{T} \lambda^{T-s}` and the kernel is
    :math:`\sum_{t,t'} w_t w'_{t'} (V + V'\Theta)(t, t')`.

    Cost: :math:`O(L\,T N N')` elementwise work, :math:`O(L N N')` memory in row blocks;
    ``diag=True`` costs :math:`O(L\,T N)`. ``readout="mean"`` costs :math:`O(L\,T T' N N')`
    (:math:`O(L\,T^2 N)` for ``diag=True``) in the same memory. Gradients are checkpointed over
    time.

    Args:
        input_dim: The step dimension ``m``.
        num_layers: Depth ``L``.
        nonlinearity: ``"relu"`` or ``"erf"`` (closed-form duals), ``"tanh"``, ``"sigmoid"``,
            ``"gelu"``, ``"silu"``, ``"softplus"``, or any smooth elementwise torch function
            (``nonlinearity=torch.tanh``, a lambda; or a
            :class:`~gpytorch_rntk.functional.QuadratureDual` for another quadrature order):
            these by quadrature on the tensor engine, about ``2 * 41**2`` evaluations of the
            function per pair, step and layer (:doc:`/kernels`, Any nonlinearity). A function is
            probed once at construction; ``kernel.nonlinearity`` then holds its name or its
            ``QuadratureDual``.
        initial_state: ``"zero"`` (no initial-state term), ``"per_input"`` (the paper's: initial
            states correlated only for identical inputs) or ``"shared"`` (one initial state for
            all inputs). The latter two add the hyperparameter ``init_var``.
        variable_length: Whether inputs carry the length column (:doc:`/layout`).
        bidirectional: Add the kernel of the time-reversed sequences (a bidirectional RNN,
            :doc:`/kernels`, Variants): sequences are then also compared aligned at their first
            elements. Twice the cost.
        frozen_layers: The NTK of a network whose first ``frozen_layers`` layers are not trained;
            ``num_layers`` gives the NNGP kernel.
        readout: ``"last"`` (the paper's: the state at the last step), ``"mean"`` (average
            pooling of the last layer's states over time; exact, about ``T`` times the cost) or
            ``"geometric"`` (the states weighted :math:`\propto \lambda^{T - t}`, normalised,
            with the learnable hyperparameter ``readout_decay`` :math:`= \lambda \in (0, 1)`,
            default 0.9: :math:`\lambda \to 0` is the last readout, :math:`\lambda \to 1` the
            mean, and the marginal likelihood chooses the memory in between; the mean's cost).
        engine: ``"auto"``, ``"tensor"``, ``"fused"``, ``"compiled"`` or ``"triton"``: how
            Gram matrices are computed (:func:`~gpytorch_rntk.functional.recurrent_kernel`).
            ``"auto"`` uses a fused engine (a compiled loop, or a Triton kernel on CUDA) for
            large matrices whose sequences need no gradient (predictions, marginal-likelihood
            training of the variances), on the CPU also for marginal-likelihood training on
            sequences of 100 steps or more whatever their number (a fit repays the one
            compilation), at every size where its loop is already built on this machine
            (``python -m gpytorch_rntk.warmup``), and the tensor engine elsewhere; ``"fused"``
            uses it whatever the size (building a CPU loop takes 15-100 s once per
            configuration and machine, then many small Gram matrices gain too) and raises,
            saying why, where it does not apply: batched inputs (BoTorch's ``(b, q, D)``
            candidates), ``diag=True`` between different inputs, gradients for the sequences
            or of second order.
        normalize: Return :math:`k(x, x') / \sqrt{k(x, x)\, k(x', x')}`: the kernel of the
            network's output normalised to unit prior variance (a correlation; positive
            semi-definite, as a Schur product of the kernel with a rank-one matrix). Every
            sequence then has prior variance 1, whatever its length or scale, which suits
            Bayesian optimisation (an unnormalised ReLU kernel grows with the inputs' size, and
            an acquisition function is drawn to large inputs). Costs one diagonal per side
            where ``x1`` and ``x2`` differ. Wrap it in a :class:`~gpytorch.kernels.ScaleKernel`
            for the variance.
        ard_num_dims: ``input_dim`` for one ``input_var`` per channel of a step (ARD, shape
            ``(*batch_shape, 1, input_dim)``): the kernel of a network whose first layer's input
            weights of channel :math:`c` have variance ``input_var[..., c]`` (the layers above
            read their mean; equal values give the kernel without ARD). Learned through the
            scaled steps, so its gradients run on the tensor engine (``engine="auto"``);
            ``None`` (default): one ``input_var``.
        recurrent_var_prior: Optional prior (likewise ``input_var_prior``,
            ``bias_var_prior``, ``init_var_prior`` and ``readout_decay_prior``).
        recurrent_var_constraint, input_var_constraint, bias_var_constraint, init_var_constraint:
            Constraints (default :class:`~gpytorch.constraints.Positive`).
        readout_decay_constraint: Default :class:`~gpytorch.constraints.Interval` ``(0, 1)``.
        **kwargs: :class:`gpytorch.kernels.Kernel`'s ``batch_shape`` and ``active_dims``; any
            other keyword raises (set the variances with ``kernel.initialize(...)``).

    Defaults: ReLU ``recurrent_var=1.8, input_var=1, bias_var=0.1, init_var=0.5``
    (``readout_decay=0.9``); erf (and every other nonlinearity)
    ``recurrent_var=1``, the rest the same (exact in every dtype: ``.double()`` sets values still
    at their defaults again in float64). There is no readout variance: wrap the kernel in a
    :class:`~gpytorch.kernels.ScaleKernel`. With ReLU the kernel is homogeneous of degree one in
    (``input_var``, ``bias_var``, ``init_var``), so the outputscale duplicates their common scale:
    fix one of them when learning the outputscale (``kernel.raw_input_var.requires_grad_(False)``,
    as :func:`~gpytorch_rntk.botorch.sequence_gp` does; :doc:`/kernels`, Fitting).

    Example:
        >>> import torch
        >>> from gpytorch_rntk import RNTKKernel, encode_sequences
        >>> x = encode_sequences([torch.randn(5, 2), torch.randn(3, 2)])
        >>> kernel = RNTKKernel(input_dim=2)
        >>> kernel(x).to_dense().shape
        torch.Size([2, 2])
    """


class RNNGPKernel(_RecurrentKernel):
    r"""The NNGP kernel of an infinitely wide Elman RNN read out at the last step (or averaged).

    :math:`K(x, x') = V[S^{L}(T, T')]` with :math:`S` the pre-activation covariance recursion of
    :class:`RNTKKernel` (the RNTK of a network with every layer frozen); with
    ``readout="mean"``, :math:`\frac{1}{T T'}\sum_{t,t'} V[S^{L}(t, t')]`. Arguments as for
    :class:`RNTKKernel` (``bidirectional`` and ``readout`` as keywords), without
    ``frozen_layers``.

    Example:
        >>> import torch
        >>> from gpytorch_rntk import RNNGPKernel, encode_sequences
        >>> x = encode_sequences([torch.randn(4, 1), torch.randn(2, 1)])
        >>> RNNGPKernel(input_dim=1, num_layers=2)(x, diag=True).shape
        torch.Size([2])
    """

    def __init__(
        self,
        input_dim: int,
        num_layers: int = 1,
        nonlinearity: str | Callable = "relu",
        initial_state: str = "zero",
        variable_length: bool = True,
        **kwargs,
    ) -> None:
        if "frozen_layers" in kwargs:
            raise TypeError(
                "RNNGPKernel takes no frozen_layers: the NNGP kernel is the RNTK with every layer "
                "frozen (RNTKKernel(..., frozen_layers=k) for the NTK with k layers frozen)."
            )
        super().__init__(
            input_dim,
            num_layers,
            nonlinearity,
            initial_state,
            variable_length,
            frozen_layers=num_layers,
            **kwargs,
        )


def kernel_class(name: str) -> type[RNTKKernel] | type[RNNGPKernel]:
    """The class named ``"rntk"`` (:class:`RNTKKernel`) or ``"nngp"`` (:class:`RNNGPKernel`)."""
    classes = {"rntk": RNTKKernel, "nngp": RNNGPKernel}
    if name not in classes:
        raise ValueError(f"Unknown kernel {name!r}; choose one of {sorted(classes)}.")
    return classes[name]
