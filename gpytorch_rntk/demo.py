"""End-to-end demo: Gaussian processes with the RNTK against an RBF kernel on real sequences.

The data sets ship inside aeon's wheel, so nothing is downloaded. The default, Japanese Vowels
(UCI/UEA), has 9 speakers, 12 cepstral channels and utterances of 7 to 29 frames: the RNTK reads
every sequence at its own length, while the RBF baseline sees the same sequences zero-padded to
one fixed-length vector.

Classification uses Dirichlet-based GP classification (Milios et al., NeurIPS 2018): one exact GP
per class on transformed targets, all sharing one kernel, so the kernel matrix is computed once
per step. Regression uses a Gaussian likelihood on standardised targets.

Run ``python -m gpytorch_rntk.demo --help``; ``--smoke`` (or the ``SMOKE_TEST`` environment
variable) runs a tiny subset in a few seconds.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gpytorch
import numpy as np
import torch
from tqdm.auto import tqdm

from gpytorch_rntk import RNTKKernel, encode_sequences

__all__ = ["DATASETS", "main"]

DTYPE = torch.float64  # exact GPs on kernels that grow with sequence length need float64 Cholesky


@dataclass(frozen=True)
class DatasetInfo:
    """A data set bundled with aeon: its loader and whether it is classification."""

    loader_name: str
    classification: bool
    description: str

    def load(self, split: str) -> tuple[list[np.ndarray], np.ndarray]:
        """Return the split as a list of ``(T_i, m)`` float64 arrays and its labels."""
        import aeon.datasets  # imported here: aeon is an optional (demo) dependency

        loader: Callable = getattr(aeon.datasets, self.loader_name)
        X, y = loader(split=split)
        # aeon stores each series channels-first, (m, T_i); the package wants (T_i, m).
        return [np.asarray(x, dtype=np.float64).T for x in X], np.asarray(y)


DATASETS: dict[str, DatasetInfo] = {
    "japanese_vowels": DatasetInfo(
        "load_japanese_vowels", True, "9 classes, 12 channels, lengths 7-29, 270/370 train/test"
    ),
    "pickup_gesture": DatasetInfo(
        "load_pickup_gesture_wiimoteZ", True, "10 classes, 1 channel, lengths 29-361, 50/50"
    ),
    "gunpoint": DatasetInfo("load_gunpoint", True, "2 classes, 1 channel, length 150, 50/150"),
    "basic_motions": DatasetInfo(
        "load_basic_motions", True, "4 classes, 6 channels, length 100, 40/40"
    ),
    "covid3month": DatasetInfo(
        "load_covid_3month", False, "regression, 1 channel, length 84, 140/61"
    ),
}


class SequenceGP(gpytorch.models.ExactGP):
    """An exact GP with a constant mean per output (one per class for Dirichlet classification)."""

    def __init__(
        self,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        likelihood: gpytorch.likelihoods.Likelihood,
        covar_module: gpytorch.kernels.Kernel,
    ) -> None:
        super().__init__(train_x, train_y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean(batch_shape=train_y.shape[:-1])
        self.covar_module = covar_module

    def forward(self, x: torch.Tensor) -> gpytorch.distributions.MultivariateNormal:
        # Evaluate the kernel now: left lazy, the per-class noise of Dirichlet classification
        # broadcasts it to a batch of classes, and GPyTorch would then recompute the same
        # kernel matrix once per class.
        covar = self.covar_module(x).evaluate_kernel()
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), covar)


def standardise(train: list[np.ndarray], *others: list[np.ndarray]) -> tuple[list[np.ndarray], ...]:
    """Scale every channel to zero mean, unit variance using the training steps only."""
    steps = np.concatenate(train, axis=0)
    mean, std = steps.mean(axis=0), steps.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a constant channel stays as it is, centred
    return tuple([(s - mean) / std for s in seqs] for seqs in (train, *others))


def subsample(
    seqs: list[np.ndarray], y: np.ndarray, n: int | None, rng: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray]:
    """A random subset of ``n`` examples (all of them when ``n`` is None or large enough)."""
    if n is None or n >= len(seqs):
        return seqs, y
    idx = np.sort(rng.choice(len(seqs), size=n, replace=False))
    return [seqs[i] for i in idx], y[idx]


def make_likelihood(
    train_y: torch.Tensor, classification: bool
) -> tuple[gpytorch.likelihoods.Likelihood, torch.Tensor]:
    """The likelihood and the targets the GP is trained on."""
    if classification:
        likelihood = gpytorch.likelihoods.DirichletClassificationLikelihood(
            train_y, learn_additional_noise=True, dtype=DTYPE
        )
        return likelihood, likelihood.transformed_targets
    return gpytorch.likelihoods.GaussianLikelihood().to(DTYPE), train_y


def init_outputscale(kernel: gpytorch.kernels.ScaleKernel, train_x: torch.Tensor) -> None:
    """Start the output scale where the prior variance is about one on the training inputs.

    The RNTK's diagonal grows with sequence length, so the default scale can be far off and
    Adam would spend most of its iterations just rescaling.
    """
    with torch.no_grad():
        mean_diag = kernel.base_kernel(train_x, diag=True).mean()
    kernel.outputscale = 1.0 / mean_diag


def fit(model: SequenceGP, train_x: torch.Tensor, iters: int, lr: float, desc: str) -> list[float]:
    """Maximise the exact marginal likelihood with Adam; returns the loss per iteration."""
    model.train()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    progress = tqdm(range(iters), desc=desc, leave=False, disable=None)
    for _ in progress:
        optimizer.zero_grad()
        # .sum() adds the independent per-class GPs of Dirichlet classification.
        loss = -mll(model(train_x), model.train_targets).sum()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


def evaluate(
    model: SequenceGP,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    classification: bool,
    y_scale: float,
) -> float:
    """Test accuracy (classification) or RMSE in the targets' original units (regression)."""
    # Only the posterior mean is needed (argmax over classes, or the regression estimate).
    with torch.no_grad(), gpytorch.settings.skip_posterior_variances():
        mean = model(test_x).mean
    if classification:
        return (mean.argmax(dim=0) == test_y).double().mean().item()
    return ((mean - test_y).pow(2).mean().sqrt() * y_scale).item()


def plot_kernels(
    kernels: dict[str, torch.Tensor],
    labels: np.ndarray,
    path: Path,
    title: str,
    classes: bool = True,
) -> None:
    """Save each kernel matrix side by side, normalised to a correlation, rows sorted by label.

    With ``classes`` white lines separate the classes; otherwise ``labels`` are regression
    targets and only set the order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    boundaries = np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 0.5 if classes else []
    fig, axes = plt.subplots(1, len(kernels), figsize=(5.2 * len(kernels), 4.6))
    for ax, (name, K) in zip(np.atleast_1d(axes), kernels.items(), strict=True):
        K = K.detach().cpu().numpy()[np.ix_(order, order)]
        d = np.sqrt(np.clip(np.diag(K), 1e-300, None))
        image = ax.imshow(K / np.outer(d, d), cmap="viridis", interpolation="nearest")
        for b in boundaries:
            ax.axhline(b, color="white", lw=0.5)
            ax.axvline(b, color="white", lw=0.5)
        ax.set_title(name)
        ax.set_xlabel(f"test example (sorted by {'class' if classes else 'target'})")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m gpytorch_rntk.demo",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="japanese_vowels")
    parser.add_argument("--iters", type=int, default=None, help="Adam steps (default 30, smoke 3)")
    parser.add_argument("--lr", type=float, default=0.1, help="Adam learning rate")
    parser.add_argument("--num-layers", type=int, default=1, help="RNTK depth L")
    parser.add_argument("--max-train", type=int, default=None, help="subsample the training set")
    parser.add_argument("--max-test", type=int, default=None, help="subsample the test set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("outputs/demo_kernel.png"))
    parser.add_argument(
        "--smoke",
        action="store_true",
        default=bool(os.environ.get("SMOKE_TEST")),
        help="tiny subset and 3 iterations, for tests (also set by the SMOKE_TEST variable)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.max_train = min(args.max_train or 32, 32)
        args.max_test = min(args.max_test or 32, 32)
    if args.iters is None:
        args.iters = 3 if args.smoke else 30
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, float | str]:
    """Run the demo; returns the test metric of each kernel and the path of the saved plot."""
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    info = DATASETS[args.dataset]
    start = time.perf_counter()

    train_seqs, train_labels = subsample(*info.load("train"), args.max_train, rng)
    test_seqs, test_labels = subsample(*info.load("test"), args.max_test, rng)
    train_seqs, test_seqs = standardise(train_seqs, test_seqs)
    input_dim = train_seqs[0].shape[1]

    # Encode train and test together so that both share one T_max, hence one width D.
    encoded = encode_sequences([torch.from_numpy(s) for s in train_seqs + test_seqs]).to(DTYPE)
    train_x, test_x = encoded[: len(train_seqs)], encoded[len(train_seqs) :]
    lengths = encoded[:, 0]
    print(
        f"{args.dataset}: {info.description}\n"
        f"  using {len(train_seqs)} train / {len(test_seqs)} test sequences, m = {input_dim}, "
        f"lengths {int(lengths.min())}-{int(lengths.max())}, encoded width D = {encoded.shape[1]}"
    )

    if info.classification:
        classes = np.unique(np.concatenate([train_labels, test_labels]))
        train_y = torch.from_numpy(np.searchsorted(classes, train_labels))
        test_y = torch.from_numpy(np.searchsorted(classes, test_labels))
        y_scale = 1.0
    else:
        y_mean, y_scale = float(train_labels.mean()), float(train_labels.std()) or 1.0
        train_y = torch.from_numpy((train_labels.astype(np.float64) - y_mean) / y_scale)
        test_y = torch.from_numpy((test_labels.astype(np.float64) - y_mean) / y_scale)

    # The RBF baseline sees the same steps as one fixed-length vector: no length column,
    # shorter sequences right-padded with zeros (the training mean after standardising).
    candidates = {
        "RNTK": (
            RNTKKernel(input_dim=input_dim, num_layers=args.num_layers),
            train_x,
            test_x,
        ),
        "RBF (zero-padded)": (gpytorch.kernels.RBFKernel(), train_x[:, 1:], test_x[:, 1:]),
    }
    metric = "accuracy" if info.classification else "RMSE"
    results: dict[str, float | str] = {"metric": metric}
    test_kernels = {}
    for name, (base_kernel, x_train, x_test) in candidates.items():
        likelihood, targets = make_likelihood(train_y, info.classification)
        kernel = gpytorch.kernels.ScaleKernel(base_kernel)
        model = SequenceGP(x_train, targets, likelihood, kernel).to(DTYPE)
        if isinstance(base_kernel, gpytorch.kernels.RBFKernel):
            # Median heuristic: the default lengthscale (0.69) is far below the distances
            # between D-dimensional standardised vectors, where every correlation would be ~0.
            base_kernel.lengthscale = torch.pdist(x_train).median().clamp_min(1e-3)
        init_outputscale(kernel, x_train)

        t0 = time.perf_counter()
        losses = fit(model, x_train, args.iters, args.lr, desc=f"fit {name}")
        score = evaluate(model, x_test, test_y, info.classification, y_scale)
        results[name] = score
        with torch.no_grad():
            test_kernels[name] = kernel(x_test).to_dense()
        print(
            f"  {name:<18} test {metric} = {score:.4f}   final loss {losses[-1]:.3f}   "
            f"({time.perf_counter() - t0:.1f} s, {args.iters} iterations)"
        )
        if name == "RNTK":
            hypers = ", ".join(
                f"{p} = {getattr(base_kernel, p).mean().item():.3g}"
                for p in ("recurrent_var", "input_var", "bias_var")
            )
            print(f"    learned RNTK hyperparameters: {hypers}")

    plot_kernels(
        test_kernels,
        test_labels,
        args.output,
        f"{args.dataset}: learned kernels on the test set",
        classes=info.classification,
    )
    results["plot"] = str(args.output)
    print(f"Kernel plot saved to {args.output}")
    print(f"Total time {time.perf_counter() - start:.1f} s")
    return results


if __name__ == "__main__":
    main()
