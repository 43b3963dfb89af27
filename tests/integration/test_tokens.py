"""Token sequences: one-hot encoding (``encode_tokens`` / ``decode_tokens``) and the acquisition
search over tokens (``gpytorch_rntk.botorch.optimize_acqf_tokens``)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("botorch")

from botorch.acquisition import LogExpectedImprovement  # noqa: E402

from gpytorch_rntk import decode_tokens, encode_tokens  # noqa: E402
from gpytorch_rntk.botorch import optimize_acqf_tokens, sequence_gp  # noqa: E402

TARGET = [2, 0, 1, 2]


def test_encode_decode_round_trip(dtype, device):
    tokens = [[0, 2, 1], [3], [1, 1, 0, 2, 3]]
    x = encode_tokens([torch.tensor(t, device=device) for t in tokens], 4, max_len=6, dtype=dtype)
    assert x.shape == (3, 1 + 6 * 4) and x.dtype == dtype
    assert x[:, 0].tolist() == [3, 1, 5]
    assert x[0, 1:].view(6, 4)[1].tolist() == [0, 0, 1, 0]  # step 1 of sequence 0 is token 2
    assert x[1, 1 + 4 :].abs().sum() == 0  # zero past the length
    assert [t.tolist() for t in decode_tokens(x, 4)] == tokens


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: encode_tokens([[0, 4]], 4), ValueError, "outside 0 .. 3"),
        (lambda: encode_tokens([[-1]], 4), ValueError, "outside"),
        (lambda: encode_tokens([[0.5, 1.0]], 4), TypeError, "integers"),
        (lambda: encode_tokens([[]], 4), ValueError, "empty"),
        (lambda: encode_tokens([torch.tensor([], dtype=torch.long)], 4), ValueError, "empty"),
        (lambda: encode_tokens([], 4), ValueError, "at least one"),
        (lambda: encode_tokens([[0]], 0), ValueError, "alphabet_size"),
        (lambda: encode_tokens([[0, 1, 2]], 3, max_len=2), ValueError, "max_len"),
        (lambda: encode_tokens([[0]], 3, dtype=torch.int64), TypeError, "floating"),
        (lambda: decode_tokens(torch.tensor([[1.0, 0.5, 0.5]]), 2), ValueError, "one-hot"),
        (lambda: decode_tokens(torch.tensor([[1.0, 1.0, 1.0]]), 2), ValueError, "one-hot"),
    ],
)
def test_bad_tokens_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()


class _Matches(torch.nn.Module):
    """A toy acquisition function: tokens agreeing with TARGET step by step, minus the length's
    distance from TARGET's; records the pending points it is given."""

    def __init__(self, size: int, max_len: int):
        super().__init__()
        self.size, self.max_len, self.X_pending, self.history = size, max_len, None, []

    def set_X_pending(self, x):
        self.X_pending = x
        self.history.append(None if x is None else len(x))

    def forward(self, x):
        x = x.squeeze(-2)
        lengths = x[:, 0]
        steps = x[:, 1:].view(len(x), self.max_len, self.size)
        agree = sum(steps[:, t, k] for t, k in enumerate(TARGET) if k < self.size)
        return agree - (lengths - len(TARGET)).abs()


def test_hill_climbing_finds_the_optimum_by_substitutions():
    acqf = _Matches(3, 6)
    found, values = optimize_acqf_tokens(
        acqf, 3, [[0, 0, 0, 0]], max_len=6, generator=torch.Generator().manual_seed(0)
    )
    assert [t.tolist() for t in found] == [TARGET]
    assert values.tolist() == [4.0]


def test_insertions_and_deletions_move_the_length_within_bounds():
    acqf = _Matches(3, 7)
    gen = torch.Generator().manual_seed(1)
    found, _ = optimize_acqf_tokens(acqf, 3, [[1, 1, 1, 1, 1, 1, 1]], 7, min_len=2, generator=gen)
    assert found[0].tolist() == TARGET
    # without min_len the length stays the start's
    found, values = optimize_acqf_tokens(acqf, 3, [[1, 1]], 7, generator=gen)
    assert len(found[0]) == 2 and values.item() == found_value(acqf, found[0], 3, 7)


def found_value(acqf, tokens, size, max_len):
    return acqf(encode_tokens([tokens], size, max_len).unsqueeze(-2)).item()


def test_q_candidates_are_distinct_avoid_is_respected_and_pending_restored():
    acqf = _Matches(3, 6)
    gen = torch.Generator().manual_seed(2)
    found, values = optimize_acqf_tokens(
        acqf, 3, [[0, 0, 0, 0], [1, 2, 1]], 6, q=3, min_len=1, avoid=[TARGET], generator=gen
    )
    keys = [tuple(t.tolist()) for t in found]
    assert len(set(keys)) == 3 and tuple(TARGET) not in keys
    assert all(1 <= len(t) <= 6 for t in found)
    # next best after TARGET: one token off at length 4 (value 3)
    assert values.tolist() == [3.0, 3.0, 3.0]
    assert [found_value(acqf, t, 3, 6) for t in found] == values.tolist()
    assert acqf.history == [1, 2, None]  # pending grew, then was restored


def test_feasible_constrains_every_proposal_and_the_result():
    """A known constraint (here: token 2 never follows token 1): the climb never evaluates a
    sequence it rejects, returns the best feasible one, and a rejected start is climbed from
    but not returned."""
    size, max_len = 3, 6
    evaluated = []

    class Recording(_Matches):
        def forward(self, x):
            evaluated.extend(t.tolist() for t in decode_tokens(x.squeeze(-2), size))
            return super().forward(x)

    def feasible(seq):
        pairs = zip(seq[:-1].tolist(), seq[1:].tolist(), strict=True)
        return not any(a == 1 and b == 2 for a, b in pairs)

    assert not feasible(torch.tensor(TARGET))  # the unconstrained optimum is ruled out
    acqf = Recording(size, max_len)
    start = [1, 2, 0, 0]  # infeasible itself
    found, values = optimize_acqf_tokens(
        acqf, size, [start], max_len, feasible=feasible, generator=torch.Generator().manual_seed(3)
    )
    assert feasible(found[0]) and found[0].tolist() != start
    assert all(feasible(torch.tensor(s)) for s in evaluated if s != start)
    assert values.item() == 3.0  # one token off TARGET: the best a feasible sequence reaches
    with pytest.raises(TypeError, match="feasible"):
        optimize_acqf_tokens(acqf, size, [start], max_len, feasible=True)


def test_bad_options_raise():
    acqf = _Matches(3, 6)
    with pytest.raises(ValueError, match="at least one start"):
        optimize_acqf_tokens(acqf, 3, [], 6)
    with pytest.raises(ValueError, match="min_len"):
        optimize_acqf_tokens(acqf, 3, [[0, 1]], 6, min_len=7)
    with pytest.raises(ValueError, match="shorter than min_len"):
        optimize_acqf_tokens(acqf, 3, [[0]], 6, min_len=2)
    with pytest.raises(ValueError, match="max_len"):
        optimize_acqf_tokens(acqf, 3, [[0] * 7], 6)
    with pytest.raises(ValueError, match="outside"):
        optimize_acqf_tokens(acqf, 3, [[0, 3]], 6)
    with pytest.raises(ValueError, match="q"):
        optimize_acqf_tokens(acqf, 3, [[0, 1]], 6, q=0)
    with pytest.raises(ValueError, match="avoid"):  # alphabet of one token: nowhere to go
        optimize_acqf_tokens(_Matches(1, 2), 1, [[0, 0]], 2, avoid=[[0, 0]])


def test_with_an_rntk_model_and_log_ei():
    gen = torch.Generator().manual_seed(3)
    designs = [torch.randint(4, (int(n),), generator=gen).tolist() for n in [5, 6, 4, 6, 5, 3]]
    train_x = encode_tokens(designs, 4, max_len=6)
    train_y = torch.tensor([[sum(t == 2 for t in d) / len(d)] for d in designs]).double()
    model = sequence_gp(train_x, train_y, input_dim=4, normalize=True)
    acqf = LogExpectedImprovement(model, best_f=model.train_targets.max())
    found, values = optimize_acqf_tokens(
        acqf, 4, designs, 6, min_len=3, avoid=designs, generator=gen, num_neighbours=64
    )
    assert found[0].tolist() not in designs and 3 <= len(found[0]) <= 6
    x = encode_tokens(found, 4, max_len=6)
    torch.testing.assert_close(acqf(x.unsqueeze(-2)), values, rtol=1e-10, atol=1e-12)
    # it climbed: at least as good as every one-token substitution of the best design
    best = designs[int(train_y.argmax())]
    subs = [best[:i] + [t] + best[i + 1 :] for i in range(len(best)) for t in range(4)]
    subs = [s for s in subs if s not in designs]
    assert values.item() >= acqf(encode_tokens(subs, 4, 6).unsqueeze(-2)).max().item() - 1e-12
