"""Test accuracy of exact GP classifiers with the RNTK and RNN-NNGP kernels on UCR/UEA data sets.

Data: the UCR/UEA train/test splits that ship inside aeon's wheel (GunPoint, ItalyPowerDemand,
ArrowHead, BasicMotions, JapaneseVowels, OSULeaf), read from the ``.ts`` files on disk, so
nothing is downloaded (aeon itself is never imported). PLAID is not in aeon's wheel; it is in
sktime's, which is searched too when sktime is installed (it is not a dependency), and
``--data-dir`` adds folders laid out like the archive (``<dir>/<Name>/<Name>_TRAIN.ts``). A data
set found nowhere gets a row marked as unavailable.
JapaneseVowels (7-29 frames) and PLAID (100-1344 steps) have sequences of different lengths.

Normalisation (``--normalise``): ``series`` z-normalises every series and channel on its own
(the UCR convention, removing offset and amplitude); ``channel`` standardises each channel with
the mean and standard deviation of all training steps; ``auto`` (the default) takes ``series``
for univariate sets and ``channel`` for multivariate ones, whose channels' levels and amplitudes
carry class information (the per-frame cepstrum of a speaker in JapaneseVowels, the motion
intensity in BasicMotions).

Methods (``--variants``, comma-separated):

* ``rntk`` / ``nngp``: an exact GP with ``ScaleKernel(RNTKKernel)`` / ``ScaleKernel(RNNGPKernel)``
  on the sequences as they are (variable-length layout), ``num_layers=1``, ReLU. Suffixes pick
  the variant: ``-mean`` (average-pooling readout, ``readout="mean"``), ``-geo`` (the geometric
  readout with its learned ``readout_decay``), ``-ard`` (one ``input_var`` per channel) or
  ``-last`` (the default,
  or what ``--readout`` says), ``-bi`` (bidirectional) or ``-uni`` (the default, or
  ``--bidirectional``).
* ``select``: the RNTK family with its configuration chosen on the training split only, by
  :func:`gpytorch_rntk.selection.select_kernel`: one Dirichlet GP per candidate (readout
  ``--select-readouts``, one and two directions, ``--select-layers`` layers, kernel class
  ``--select-kernels``; by default the eight RNTKs last/mean x uni/bi x 1/2 layers), each fitted
  like the others, and the one with the largest maximised marginal likelihood per training
  datum (``--select-by mll``; ``loo``: the closed-form leave-one-out log predictive density)
  classifies the test split. The choice and every candidate's training MLL are printed, and
  the table lists the configuration each data set chose. It costs the sum of its candidates'
  fits: the mean readout wants ``--engine fused`` on a CPU.
* ``rbf``: an exact GP with ``ScaleKernel(RBFKernel)`` on the right-zero-padded vectors (no length
  column), lengthscale started at the median pairwise distance.
* ``svm``: scikit-learn's ``SVC(kernel="rbf")`` on the same padded vectors, ``C`` in
  ``10^-2 .. 10^3`` and ``gamma`` in ``10^-3 .. 10^1`` times ``1 / (D var)`` (``D`` the vector's
  width, ``var`` the variance of the training vectors' entries: scikit-learn's
  ``gamma="scale"``) chosen by ``GridSearchCV`` with stratified k-fold cross-validation on the
  training split (k = 5, or the size of the smallest class if smaller; plain shuffled k-fold
  when a class has a single member), refitted on the whole training split.
* ``1nn``: 1-nearest neighbour, Euclidean distance on the same padded vectors.

Every GP is a Dirichlet classifier (Milios et al., NeurIPS 2018; GPyTorch's
``DirichletClassificationLikelihood`` with learned extra noise, one constant mean per class,
all classes sharing the kernel), its hyperparameters fitted by maximising the exact marginal
likelihood of the training split only with Adam (``--iters``, ``--lr``); a test sequence gets the
class of the largest posterior mean, and the GPs' negative log predictive density (NLPD) is
printed too: class probabilities from 512 draws of the latent posteriors, normalised after
exponentiation, as in that paper. ``all`` runs rntk/nngp x last/mean x uni/bi, select, rbf,
svm and 1nn; the default is select, rbf, svm and 1nn.
The published accuracies of 1-NN with full-window DTW (UCR archive) are printed alongside where
known.

    python benchmarks/classification.py --engine fused          # the five default sets
    python benchmarks/classification.py --variants all --datasets OSULeaf --max-train 100
    python benchmarks/classification.py --smoke --datasets ItalyPowerDemand   # seconds
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gpytorch
import numpy as np
import torch
from linear_operator.utils.cholesky import psd_safe_cholesky

from gpytorch_rntk import RNNGPKernel, RNTKKernel, encode_sequences
from gpytorch_rntk.demo import SequenceGP, init_outputscale, make_likelihood
from gpytorch_rntk.selection import Selection, candidate_grid, select_kernel

DTYPE = torch.float64

# Published test accuracy of 1-NN with full-window DTW (UCR archive, Dau et al. 2019).
PUBLISHED_DTW = {"GunPoint": 0.907, "ItalyPowerDemand": 0.950, "ArrowHead": 0.703}
ALL_DATASETS = (
    "GunPoint",
    "ItalyPowerDemand",
    "ArrowHead",
    "BasicMotions",
    "JapaneseVowels",
    "OSULeaf",
    "PLAID",
)
DEFAULT_DATASETS = ALL_DATASETS[:5]
WHERE_BUNDLED = {"PLAID": "in sktime's wheel (sktime/datasets/data/PLAID), not in aeon's"}
DEFAULT_VARIANTS = "select,rbf,svm,1nn"
# The methods other than the fixed kernel variants.
OTHER_LABELS = {"select": "RNTK select", "rbf": "RBF GP", "svm": "SVM RBF", "1nn": "1-NN ED"}
SVM_C = 10.0 ** np.arange(-2, 4)  # 0.01 .. 1000
SVM_GAMMA = 10.0 ** np.arange(-3, 2)  # times 1 / (D var)
RECURRENT_HYPERPARAMETERS = ("recurrent_var", "input_var", "bias_var")


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def bundled_data_dirs() -> list[Path]:
    """The folders of UCR/UEA ``.ts`` files shipped in the aeon and sktime wheels (if installed).

    Located without importing the packages (sktime is slow to import and may be absent).
    """
    dirs = []
    for package in ("aeon", "sktime"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
            if path.is_dir():
                dirs.append(path)
    return dirs


def find_dataset(name: str, data_dirs: Sequence[Path]) -> Path | None:
    """The first ``<dir>/<name>`` folder holding both ``<name>_TRAIN.ts`` and ``<name>_TEST.ts``."""
    for folder in data_dirs:
        if all((folder / name / f"{name}_{split}.ts").is_file() for split in ("TRAIN", "TEST")):
            return folder / name
    return None


@dataclass
class Dataset:
    """A train/test split: lists of ``(T_i, m)`` float64 arrays and integer labels."""

    name: str
    train: list[np.ndarray]
    train_y: np.ndarray
    test: list[np.ndarray]
    test_y: np.ndarray

    @property
    def num_classes(self) -> int:
        return int(max(self.train_y.max(), self.test_y.max())) + 1

    @property
    def channels(self) -> int:
        return self.train[0].shape[1]


def read_ts(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Read a classification ``.ts`` file of the UCR/UEA archive (the format aeon writes).

    One case per line after ``@data``: the channels separated by ``:``, each a comma-separated
    series, then the class label. Series may differ in length between cases (not between the
    channels of one case). Returns ``(T_i, m)`` float64 arrays and the labels as strings.
    Without aeon, so the benchmark runs wherever torch and gpytorch do.
    """
    seqs, labels = [], []
    in_data = False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            if line.lower().startswith("@timestamps") and line.lower().endswith("true"):
                raise NotImplementedError(f"{path}: time-stamped .ts files are not supported.")
            in_data = line.lower().startswith("@data")
            continue
        *channels, label = line.split(":")
        if "?" in line:
            raise ValueError(f"{path}: missing values ('?') are not supported.")
        seqs.append(np.stack([np.array(c.split(","), dtype=np.float64) for c in channels], 1))
        labels.append(label.strip())
    return seqs, np.asarray(labels)


def load_dataset(name: str, folder: Path) -> Dataset:
    """Read a data set's ``.ts`` files; labels become ``0 .. C-1`` in sorted order."""
    (train, train_y), (test, test_y) = (
        read_ts(folder / f"{name}_{split}.ts") for split in ("TRAIN", "TEST")
    )
    classes = np.unique(np.concatenate([train_y, test_y]))
    return Dataset(
        name, train, np.searchsorted(classes, train_y), test, np.searchsorted(classes, test_y)
    )


def normalise(data: Dataset, how: str) -> str:
    """Normalise ``data`` in place (see the module docstring); returns the rule applied."""
    if how == "auto":
        how = "series" if data.channels == 1 else "channel"
    if how == "series":

        def znorm(s: np.ndarray) -> np.ndarray:
            std = s.std(axis=0)
            return (s - s.mean(axis=0)) / np.where(std > 0, std, 1.0)

        data.train = [znorm(s) for s in data.train]
        data.test = [znorm(s) for s in data.test]
    elif how == "channel":
        steps = np.concatenate(data.train, axis=0)
        mean, std = steps.mean(axis=0), steps.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        data.train = [(s - mean) / std for s in data.train]
        data.test = [(s - mean) / std for s in data.test]
    elif how != "none":
        raise ValueError(f"Unknown normalisation {how!r}.")
    return how


def stratified_subset(labels: np.ndarray, n: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` examples keeping the class proportions (every class at least once)."""
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * n / len(labels)
    quota = np.maximum(1, np.floor(share)).astype(int)
    while quota.sum() > n:  # the places given to rare classes come from the largest ones
        quota[np.argmax(quota)] -= 1
    # Hand the remaining places to the classes with the largest fractional remainders.
    for c in np.argsort(quota - share)[: n - quota.sum()]:
        quota[c] += 1
    keep = [
        rng.choice(np.flatnonzero(labels == c), min(q, k), replace=False)
        for c, q, k in zip(classes, quota, counts, strict=True)
    ]
    return np.sort(np.concatenate(keep))


def subsample(data: Dataset, max_train: int | None, max_test: int | None, seed: int) -> None:
    rng = np.random.default_rng(seed)
    train = stratified_subset(data.train_y, max_train, rng)
    test = stratified_subset(data.test_y, max_test, rng)
    data.train, data.train_y = [data.train[i] for i in train], data.train_y[train]
    data.test, data.test_y = [data.test[i] for i in test], data.test_y[test]


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelVariant:
    """One RNTK / RNN-NNGP configuration."""

    kernel: str  # "rntk" or "nngp"
    readout: str  # "last", "mean" or "geometric"
    bidirectional: bool
    ard: bool = False  # one input_var per channel

    @property
    def label(self) -> str:
        words = [self.kernel.upper()]
        if self.readout != "last":
            words.append(self.readout)
        if self.bidirectional:
            words.append("bi")
        if self.ard:
            words.append("ARD")
        return " ".join(words)

    def build(self, input_dim: int, engine: str = "auto") -> gpytorch.kernels.Kernel:
        cls = RNTKKernel if self.kernel == "rntk" else RNNGPKernel
        return cls(
            input_dim=input_dim,
            bidirectional=self.bidirectional,
            readout=self.readout,
            engine=engine,
            ard_num_dims=input_dim if self.ard else None,
        )


def parse_variants(spec: str, readout: str, bidirectional: bool) -> list[KernelVariant | str]:
    """``"rntk,rntk-mean-bi,rbf,1nn"`` or ``"all"`` -> kernel variants and baseline names."""
    if spec == "all":
        return [
            KernelVariant(kernel, r, bi)
            for kernel in ("rntk", "nngp")
            for r in ("last", "mean")
            for bi in (False, True)
        ] + ["select", "rbf", "svm", "1nn"]
    methods: list[KernelVariant | str] = []
    for name in spec.split(","):
        name = name.strip().lower()
        if name in OTHER_LABELS:
            methods.append(name)
            continue
        kernel, *suffixes = name.split("-")
        unknown = set(suffixes) - {"last", "mean", "geo", "bi", "uni", "ard"}
        if kernel not in ("rntk", "nngp") or unknown:
            raise ValueError(
                f"Unknown method {name!r}: use rntk or nngp with optional -last/-mean/-geo, "
                f"-uni/-bi and -ard suffixes, {', '.join(OTHER_LABELS)}, or all."
            )
        r = {"mean": "mean", "geo": "geometric", "last": "last"}
        r = next((r[x] for x in suffixes if x in r), readout)
        bi = "bi" in suffixes or (bidirectional and "uni" not in suffixes)
        methods.append(KernelVariant(kernel, r, bi, "ard" in suffixes))
    return methods


def method_label(method: KernelVariant | str) -> str:
    return method.label if isinstance(method, KernelVariant) else OTHER_LABELS[method]


def posterior(
    model: SequenceGP, train_x: torch.Tensor, test_x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(C, M)`` posterior mean and variance of each class's latent GP at the test inputs.

    Computed from the training marginal, the test-train block and the test inputs' own
    variances only: GPyTorch's own prediction would also evaluate the whole test-test kernel
    block, which costs as much as the training kernel on test sets like ItalyPowerDemand's 1029
    series.
    """
    model.train()  # the forward pass on the training inputs, not the prediction path
    with torch.no_grad():
        prior = model(train_x)
        marginal = model.likelihood(prior)  # K + the per-class Dirichlet noise
        chol = psd_safe_cholesky(marginal.covariance_matrix)
        residual = (model.train_targets - prior.mean).unsqueeze(-1)
        weights = torch.cholesky_solve(residual, chol)  # (C, N, 1)
        cross = model.covar_module(test_x, train_x).to_dense()  # (M, N) or (C, M, N)
        mean = model.mean_module(test_x) + (cross @ weights).squeeze(-1)
        half = torch.linalg.solve_triangular(chol, cross.transpose(-1, -2), upper=False)
        prior_var = model.covar_module(test_x, diag=True)  # (M,) or (C, M)
        var = (prior_var - half.square().sum(-2)).clamp_min(0.0)
    model.eval()
    return mean, var.expand_as(mean)


def class_probabilities(
    mean: torch.Tensor, var: torch.Tensor, samples: int = 512, seed: int = 0
) -> torch.Tensor:
    """The Dirichlet classifier's predictive class probabilities ``(C, M)``: the latent values
    drawn from each class's posterior ``N(mean, var)`` and normalised after exponentiation
    (Milios et al., 2018), averaged over ``samples`` draws."""
    generator = torch.Generator(device=mean.device).manual_seed(seed)
    noise = torch.randn(samples, *mean.shape, generator=generator, device=mean.device)
    draws = mean + var.sqrt() * noise.to(mean.dtype)
    return torch.softmax(draws, dim=-2).mean(0)


def scores(
    model: SequenceGP, train_x: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor
) -> tuple[float, float]:
    """Test accuracy (the class of the largest posterior mean) and the negative log predictive
    density per test series (NLPD, lower is better)."""
    mean, var = posterior(model, train_x, test_x)
    accuracy = (mean.argmax(dim=0) == test_y).double().mean().item()
    probabilities = class_probabilities(mean, var)
    picked = probabilities.gather(0, test_y.view(1, -1)).squeeze(0)
    return accuracy, -picked.clamp_min(1e-300).log().mean().item()


def fit(model: SequenceGP, train_x: torch.Tensor, iters: int, lr: float, budget_s: float) -> int:
    """Maximise the exact marginal likelihood with Adam; returns the number of steps taken.

    Stops early once ``budget_s`` seconds have passed, so one slow variant cannot hold up a
    whole study (the table marks such fits).
    """
    model.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    for step in range(iters):
        if time.perf_counter() - start > budget_s:
            return step
        optimizer.zero_grad()
        # .sum() adds the independent per-class GPs of Dirichlet classification.
        loss = -mll(model(train_x), model.train_targets).sum()
        loss.backward()
        optimizer.step()
    return iters


def gp_accuracy(
    base_kernel: gpytorch.kernels.Kernel,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    args: argparse.Namespace,
) -> tuple[float, float, int]:
    """Fit a Dirichlet GP classifier on the training split; test accuracy, NLPD and Adam steps
    taken. A geometric readout's fit starts from each of ``args.decay_starts`` and keeps the
    fit of the highest training marginal likelihood (its hyperparameters end in
    ``base_kernel``): the likelihood has several optima in the decay."""
    starts = args.decay_starts if getattr(base_kernel, "readout", None) == "geometric" else [None]
    if len(starts) > 1:
        fits = []
        for start in starts:
            candidate = copy.deepcopy(base_kernel)
            candidate.readout_decay = start
            model, steps = _fitted_model(candidate, train_x, train_y, args)
            fits.append((_training_mll(model, train_x), start, model, steps, candidate))
        mll, start, model, steps, best = max(fits, key=lambda f: f[0])
        print(f"    decay starts {starts}: the best training MLL ({mll:.4g}) from {start}")
        base_kernel.load_state_dict(best.state_dict())
        return (*scores(model, train_x, test_x, test_y), steps)
    if starts != [None]:
        base_kernel.readout_decay = starts[0]
    model, steps = _fitted_model(base_kernel, train_x, train_y, args)
    return (*scores(model, train_x, test_x, test_y), steps)


def _training_mll(model: SequenceGP, train_x: torch.Tensor) -> float:
    """The exact marginal log likelihood of the training data (summed over the classes)."""
    model.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    with torch.no_grad():
        return mll(model(train_x), model.train_targets).sum().item()


def _fitted_model(base_kernel, train_x, train_y, args) -> tuple[SequenceGP, int]:
    """A Dirichlet GP classifier on ``ScaleKernel(base_kernel)`` fitted by :func:`fit`."""
    likelihood, targets = make_likelihood(train_y, classification=True)
    kernel = gpytorch.kernels.ScaleKernel(base_kernel)
    model = SequenceGP(train_x, targets, likelihood, kernel).to(device=train_x.device, dtype=DTYPE)
    if isinstance(base_kernel, gpytorch.kernels.RBFKernel):
        # Median heuristic: the default lengthscale is far below the distances between
        # long standardised vectors, where every correlation would be ~0.
        base_kernel.lengthscale = torch.pdist(train_x).median().clamp_min(1e-3)
    init_outputscale(kernel, train_x)
    return model, fit(model, train_x, args.iters, args.lr, args.fit_budget)


def dirichlet_model(
    base_kernel: gpytorch.kernels.Kernel, train_x: torch.Tensor, train_y: torch.Tensor
) -> SequenceGP:
    """A Dirichlet GP classifier with ``ScaleKernel(base_kernel)`` (the ``make_model`` of the
    ``select`` variant), output scale started as for the fixed variants."""
    likelihood, targets = make_likelihood(train_y, classification=True)
    kernel = gpytorch.kernels.ScaleKernel(base_kernel)
    model = SequenceGP(train_x, targets, likelihood, kernel).to(device=train_x.device, dtype=DTYPE)
    init_outputscale(kernel, train_x)
    return model


def selection_candidates(args: argparse.Namespace) -> list[dict]:
    """The ``select`` variant's candidates: kernel class x readout x direction x depth."""
    return candidate_grid(
        kernel=args.select_kernels.split(","),
        readout=args.select_readouts.split(","),
        bidirectional=(False, True),
        num_layers=[int(n) for n in args.select_layers.split(",")],
    )


def describe(options: dict) -> str:
    """``{"kernel": "rntk", "readout": "mean", "bidirectional": True, "num_layers": 2}`` ->
    ``"RNTK mean bi, 2 layers"``."""
    words = [options.get("kernel", "rntk").upper(), options.get("readout", "last")]
    if options.get("bidirectional"):
        words.append("bi")
    layers = options.get("num_layers", 1)
    return " ".join(words) + f", {layers} layer{'s' if layers > 1 else ''}"


def select_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    input_dim: int,
    args: argparse.Namespace,
) -> tuple[float, float, Selection, dict[int, int]]:
    """Choose the configuration on the training split (select_kernel), then classify the test
    split with the chosen fitted model: accuracy, NLPD, the selection and the Adam steps per
    candidate."""
    steps: dict[int, int] = {}  # candidate index -> Adam steps taken
    built = []

    def make_model(base_kernel: gpytorch.kernels.Kernel, x: torch.Tensor, y: torch.Tensor):
        built.append(base_kernel)  # select_kernel builds the candidates' models in order
        return dirichlet_model(base_kernel, x, y)

    def fit_candidate(model: SequenceGP) -> None:
        steps[len(built) - 1] = fit(model, train_x, args.iters, args.lr, args.fit_budget)

    selection = select_kernel(
        train_x,
        train_y,
        selection_candidates(args),
        input_dim=input_dim,
        kernel_options={"engine": args.engine},
        make_model=make_model,
        fit=fit_candidate,
        criterion=args.select_by,
        verbose=True,  # a line per candidate as it finishes: the search can take long
    )
    return (*scores(selection.model, train_x, test_x, test_y), selection, steps)


def svm_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    seed: int,
) -> tuple[float, str]:
    """An RBF-kernel SVM, ``C`` and ``gamma`` chosen by cross-validation on the training split.

    Returns the test accuracy and the chosen values (``gamma`` in units of ``1 / (D var)``).
    """
    import warnings

    from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
    from sklearn.svm import SVC

    x, y = train_x.cpu().numpy(), train_y.cpu().numpy()
    scale = 1.0 / (x.shape[1] * max(float(x.var()), 1e-12))  # scikit-learn's gamma="scale"
    grid = {"C": SVM_C, "gamma": scale * SVM_GAMMA}
    smallest = int(np.unique(y, return_counts=True)[1].min())
    if smallest >= 2:
        folds = min(5, smallest)
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    else:  # a class with one member cannot be in every fold
        folds = min(5, len(y))
        cv = KFold(folds, shuffle=True, random_state=seed)
    search = GridSearchCV(SVC(kernel="rbf"), grid, cv=cv, n_jobs=1)
    with warnings.catch_warnings():
        # (a training fold can miss a rare class: scikit-learn warns, the fold still counts)
        warnings.simplefilter("ignore", UserWarning)
        search.fit(x, y)
    accuracy = float(search.score(test_x.cpu().numpy(), test_y.cpu().numpy()))
    best = search.best_params_
    detail = (
        f"C {best['C']:.3g}, gamma {best['gamma'] / scale:.3g} / (D var), "
        f"{folds}-fold CV accuracy {search.best_score_:.3f}"
    )
    return accuracy, detail


def one_nn_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor
) -> float:
    nearest = torch.cdist(test_x, train_x).argmin(dim=1)
    return (train_y[nearest] == test_y).double().mean().item()


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One data set's line of the table."""

    name: str
    available: bool
    note: str = ""
    n_train: str = ""
    n_test: str = ""
    lengths: str = ""
    channels: int = 0
    classes: int = 0
    normalisation: str = ""
    accuracy: dict[str, float] | None = None  # NaN: the method failed
    nlpd: dict[str, float] | None = None  # the GP classifiers' test NLPD
    seconds: dict[str, float] | None = None
    steps: dict[str, int] | None = None  # fits stopped early by --fit-budget
    chosen: dict[str, str] | None = None  # the select variant's choice, per label


def length_range(seqs: Sequence[np.ndarray]) -> str:
    lengths = [len(s) for s in seqs]
    lo, hi = min(lengths), max(lengths)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def subset_size(used: int, full: int) -> str:
    return str(used) if used == full else f"{used} of {full}"


def run_dataset(name: str, methods: list[KernelVariant | str], args: argparse.Namespace) -> Row:
    folder = find_dataset(name, args.data_dirs)
    if folder is None:
        searched = ", ".join(str(d) for d in args.data_dirs) or "nowhere"
        print(f"{name}: not available offline (searched {searched})", flush=True)
        return Row(name, available=False, note=f"not found in {searched}")
    data = load_dataset(name, folder)
    full_train, full_test = len(data.train), len(data.test)
    subsample(data, args.max_train, args.max_test, args.seed)
    rule = normalise(data, args.normalise)
    row = Row(
        name,
        available=True,
        n_train=subset_size(len(data.train), full_train),
        n_test=subset_size(len(data.test), full_test),
        lengths=length_range(data.train + data.test),
        channels=data.channels,
        classes=data.num_classes,
        normalisation=rule,
        accuracy={},
        nlpd={},
        seconds={},
        steps={},
        chosen={},
    )
    print(
        f"{name}: {row.n_train} train / {row.n_test} test, T = {row.lengths}, "
        f"m = {row.channels}, {row.classes} classes, normalisation: {rule}",
        flush=True,
    )
    # One width D for train and test; the baselines see the padded steps without the length.
    encoded = encode_sequences([torch.from_numpy(s) for s in data.train + data.test])
    encoded = encoded.to(device=args.device, dtype=DTYPE)
    train_x, test_x = encoded[: len(data.train)], encoded[len(data.train) :]
    train_y = torch.from_numpy(data.train_y).to(args.device)
    test_y = torch.from_numpy(data.test_y).to(args.device)
    for method in methods:
        label = method_label(method)
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        detail = ""
        try:
            if method == "1nn":
                accuracy = one_nn_accuracy(train_x[:, 1:], train_y, test_x[:, 1:], test_y)
            elif method == "svm":
                accuracy, detail = svm_accuracy(
                    train_x[:, 1:], train_y, test_x[:, 1:], test_y, args.seed
                )
            elif method == "select":
                accuracy, row.nlpd[label], selection, steps = select_accuracy(
                    train_x, train_y, test_x, test_y, data.channels, args
                )
                best = selection.best
                row.chosen[label] = (
                    f"{describe(best.options)} (MLL/N {best.mll:.4f}"
                    + ("" if best.loo is None else f", LOO/N {best.loo:.4f}")
                    + ")"
                )
                if min(steps.values(), default=args.iters) < args.iters:
                    row.steps[label] = min(steps.values())
                detail = f"chose {row.chosen[label]}; by {selection.criterion}:\n" + "\n".join(
                    "      "
                    + ("* " if result is best else "  ")
                    + f"{describe(result.options):<22} "
                    + (
                        f"failed: {result.error}"
                        if result.error
                        else f"MLL/N {result.mll:8.4f}"
                        + ("" if result.loo is None else f"  LOO/N {result.loo:8.4f}")
                        + f"  {steps.get(i, 0)} steps  {result.seconds:6.1f} s"
                    )
                    for i, result in enumerate(selection.results)
                )
            else:
                if method == "rbf":
                    kernel, inputs = gpytorch.kernels.RBFKernel(), (train_x[:, 1:], test_x[:, 1:])
                else:
                    kernel, inputs = method.build(data.channels, args.engine), (train_x, test_x)
                accuracy, row.nlpd[label], steps = gp_accuracy(
                    kernel, inputs[0], train_y, inputs[1], test_y, args
                )
                if steps < args.iters:
                    row.steps[label] = steps
                names = ("lengthscale",) if method == "rbf" else RECURRENT_HYPERPARAMETERS
                if getattr(kernel, "readout", None) == "geometric":
                    names = (*names, "readout_decay")
                detail = f"{steps} Adam steps; " + ", ".join(
                    f"{name} {getattr(kernel, name).mean().item():.3g}" for name in names
                )
        except Exception as error:  # one failed fit (e.g. a non-PSD matrix) must not end the run
            accuracy = math.nan
            detail = f"FAILED: {type(error).__name__}: {error}"
        row.seconds[label] = time.perf_counter() - start
        row.accuracy[label] = accuracy
        nlpd = f", NLPD {row.nlpd[label]:.3f}" if label in row.nlpd else ""
        print(
            f"  {label:<14} accuracy {accuracy:.3f}{nlpd}  ({row.seconds[label]:.1f} s)  {detail}",
            flush=True,
        )
    return row


def markdown_table(rows: list[Row], labels: list[str], with_times: bool = True) -> str:
    """The accuracy table (and a table of seconds per method)."""

    def fmt(value: float | None) -> str:
        if value is None:
            return "n/a"
        return "failed" if math.isnan(value) else f"{value:.3f}"

    def stopped(row: Row, label: str) -> str:
        return f" ({row.steps[label]} steps)" if row.steps and label in row.steps else ""

    header = ["data set", "N train", "N test", "T", "m", "classes", *labels, "1-NN DTW (published)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        dtw = fmt(PUBLISHED_DTW.get(r.name))
        if not r.available:
            cells = [f"{r.name} (not available offline)", *["–"] * (5 + len(labels)), dtw]
        else:
            accuracy = r.accuracy or {}
            cells = [
                r.name,
                r.n_train,
                r.n_test,
                r.lengths,
                str(r.channels),
                str(r.classes),
                *(fmt(accuracy.get(label)) + stopped(r, label) for label in labels),
                dtw,
            ]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    for r in rows:
        if not r.available:
            where = WHERE_BUNDLED.get(r.name, "not in aeon's wheel")
            text += f"\n\n{r.name}: {r.note} ({where}; add a folder with --data-dir)."
    gp_labels = [label for label in labels if any(label in (r.nlpd or {}) for r in rows)]
    if gp_labels:
        nlpd_lines = [
            "| " + " | ".join(["data set", *gp_labels]) + " |",
            "|" + "---|" * (1 + len(gp_labels)),
        ]
        for r in rows:
            if r.available:
                cells = [fmt((r.nlpd or {}).get(label)) for label in gp_labels]
                nlpd_lines.append("| " + " | ".join([r.name, *cells]) + " |")
        text += "\n\nTest NLPD of the GP classifiers (per series, lower is better; class "
        text += "probabilities from 512 draws of the latent posterior):\n\n"
        text += "\n".join(nlpd_lines)
    if with_times:
        time_header = ["data set", *labels]
        time_lines = ["| " + " | ".join(time_header) + " |", "|" + "---|" * len(time_header)]
        for r in rows:
            if r.available:
                seconds = r.seconds or {}
                cells = [f"{seconds[label]:.1f}" if label in seconds else "" for label in labels]
                time_lines.append("| " + " | ".join([r.name, *cells]) + " |")
        text += "\n\nSeconds per method (hyperparameter fit and test predictions):\n\n"
        text += "\n".join(time_lines)
    return text


def report(
    rows: list[Row],
    labels: list[str],
    command: str,
    wall: float,
    args: argparse.Namespace,
) -> str:
    """The tables and how they were made."""
    rules = sorted({r.normalisation for r in rows if r.available})
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    text = (
        f"{markdown_table(rows, labels)}\n\n"
        f"Command: `{command.strip()}` ({args.iters} Adam steps, lr {args.lr}, seed {args.seed}, "
        f"normalisation {args.normalise}: {', '.join(rules) or '-'}); "
        f"wall time {wall:.0f} s on {device} with {args.threads} thread(s).\n"
    )
    chosen = [(r.name, label, c) for r in rows if r.chosen for label, c in r.chosen.items()]
    if chosen:
        text += (
            f"\nConfigurations chosen on the training split by `select` (criterion "
            f"{args.select_by}; candidates {args.select_kernels} x readout {args.select_readouts}"
            f" x uni/bi x {args.select_layers} layers; training MLL per datum, summed over the "
            "classes' GPs):\n\n"
        )
        text += "".join(f"- {name}: {c}\n" for name, _, c in chosen)
    if any(r.steps for r in rows):
        text += (
            f"(k steps): the fit stopped after k Adam steps, at the --fit-budget of "
            f"{args.fit_budget:g} s.\n"
        )
    return text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--datasets",
        default=",".join(DEFAULT_DATASETS),
        help=f"comma-separated, or 'all' ({', '.join(ALL_DATASETS)})",
    )
    parser.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help="comma-separated methods: rntk/nngp[-last|-mean|-geo][-uni|-bi][-ard], select, rbf, "
        "svm, 1nn; "
        "or 'all'",
    )
    parser.add_argument(
        "--select-by",
        choices=("mll", "loo"),
        default="mll",
        help="select: the training-data criterion (marginal likelihood or leave-one-out)",
    )
    parser.add_argument(
        "--select-readouts", default="last,mean", help="select: readouts to compare"
    )
    parser.add_argument("--select-layers", default="1,2", help="select: depths to compare")
    parser.add_argument(
        "--select-kernels", default="rntk", help="select: kernel classes (rntk, nngp)"
    )
    parser.add_argument("--readout", choices=("last", "mean"), default="last")
    parser.add_argument("--bidirectional", action="store_true", help="default to -bi kernels")
    parser.add_argument(
        "--normalise", choices=("auto", "series", "channel", "none"), default="auto"
    )
    parser.add_argument("--iters", type=int, default=None, help="Adam steps (default 50, smoke 3)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument(
        "--fit-budget",
        type=float,
        default=math.inf,
        help="seconds per hyperparameter fit; Adam stops after the step that passes it",
    )
    parser.add_argument("--max-train", type=int, default=None, help="stratified subsample")
    parser.add_argument(
        "--decay-starts",
        type=lambda text: [float(v) for v in text.split(",")],
        default=[0.9],
        help="the geometric readout's starting decays, comma-separated; with more than one, "
        "the fit of the highest training marginal likelihood is kept (default 0.9)",
    )
    parser.add_argument("--max-test", type=int, default=None, help="stratified subsample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument(
        "--engine",
        choices=("auto", "tensor", "fused"),
        default="auto",
        help="how the RNTK/NNGP Gram matrices are computed (gpytorch_rntk.functional)",
    )
    parser.add_argument(
        "--data-dir",
        action="append",
        type=Path,
        default=[],
        help="extra folder of <Name>/<Name>_TRAIN.ts files, searched first (repeatable)",
    )
    parser.add_argument("--output", type=Path, default=Path("outputs/classification.md"))
    parser.add_argument(
        "--smoke",
        action="store_true",
        default=bool(os.environ.get("SMOKE_TEST")),
        help="20 training / 60 test series and 3 Adam steps (also set by SMOKE_TEST)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.max_train = min(args.max_train or 20, 20)
        args.max_test = min(args.max_test or 60, 60)
    if args.iters is None:
        args.iters = 3 if args.smoke else 50
    args.data_dirs = [*args.data_dir, *bundled_data_dirs()]
    return args


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the benchmark; returns the table, the accuracies per data set and the output path."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    datasets = ALL_DATASETS if args.datasets == "all" else args.datasets.split(",")
    methods = parse_variants(args.variants, args.readout, args.bidirectional)
    labels = [method_label(m) for m in methods]
    command = "python benchmarks/classification.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    start = time.perf_counter()
    rows: list[Row] = []
    for name in datasets:
        rows.append(run_dataset(name.strip(), methods, args))
        # Written after every data set, so an interrupted run keeps what it finished.
        text = report(rows, labels, command, time.perf_counter() - start, args)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    wall = time.perf_counter() - start
    print("\n" + text)
    print(f"Table written to {args.output}")
    return {
        "table": text,
        "labels": labels,
        "accuracy": {r.name: r.accuracy for r in rows if r.available},
        "nlpd": {r.name: r.nlpd for r in rows if r.available},
        "unavailable": [r.name for r in rows if not r.available],
        "output": str(args.output),
        "seconds": wall,
    }


if __name__ == "__main__":
    main()
