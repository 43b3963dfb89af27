"""The engines' interface and the one dispatcher: every engine computes a request exactly or
refuses it with a reason, never substituting another option; ``engine="auto"`` picks among the
engines that compute the request and falls back to the tensor engine when compiling fails."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from gpytorch_rntk._core import config as config_module
from gpytorch_rntk._core import duals
from gpytorch_rntk._core.engines import (
    ENGINES,
    CompilationWarning,
    EngineUnsupportedError,
    Problem,
    ahead,
    select,
)
from gpytorch_rntk._core.engines import fused as fused_engines
from gpytorch_rntk.functional import RecurrentVariances, recurrent_kernel, recurrent_kernel_diag


def _sequences(n=4, steps=5, m=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([steps, 1, 3, steps][:n])
    values = torch.randn(n, steps, m, generator=gen, dtype=torch.float64)
    values = values * (torch.arange(steps) < lengths.unsqueeze(-1)).unsqueeze(-1)
    return values, lengths


VARIANCES = RecurrentVariances(1.3, 0.9, 0.2)


class Identity(duals.Dual):
    """phi(u) = u: V = k12, V' = 1 (a linear RNN), with no code for the fused engines."""

    name = "identity"

    def __call__(self, k12, k11, k22, same=None):
        return k12, torch.ones_like(k12)


def _linear_rntk(x, lx, y, ly, sw2, su2, sb2):
    """The one-layer RNTK of a linear RNN, zero initial state, last readout, in closed form:
    ``S(T, T') = sum_k sw2^k (su2 <x_{T-k}, y_{T'-k}> / m + sb2)`` over ``k < min(T, T')``,
    ``Theta = sum_k sw2^k S(T-k, T'-k)``, readout ``S + Theta``."""
    m = x.shape[-1]
    out = torch.zeros(len(lx), len(ly), dtype=torch.float64)
    for i, ti in enumerate(lx.tolist()):
        for j, tj in enumerate(ly.tolist()):
            steps = min(ti, tj)
            inputs = [
                su2 * float(x[i, ti - 1 - k] @ y[j, tj - 1 - k]) / m + sb2 for k in range(steps)
            ]
            s = [sum(sw2**q * inputs[k + q] for q in range(steps - k)) for k in range(steps)]
            theta = sum(sw2**k * s[k] for k in range(steps))
            out[i, j] = s[0] + theta
    return out


@pytest.mark.parametrize("engine", ["auto", "tensor", "fused", "compiled", "triton"])
def test_a_new_nonlinearity_is_computed_or_refused(engine, monkeypatch):
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    monkeypatch.setitem(duals.NONLINEARITIES, "identity", Identity())
    x, lx = _sequences()
    y, ly = _sequences(3, 4, seed=1)
    expected = _linear_rntk(x, lx, y, ly, *VARIANCES[:3])
    if engine in ("auto", "tensor"):  # auto: only the tensor engine computes it
        got = recurrent_kernel(x, lx, y, ly, VARIANCES, nonlinearity="identity", engine=engine)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
        return
    with pytest.raises(EngineUnsupportedError, match="'identity'"):
        recurrent_kernel(x, lx, y, ly, VARIANCES, nonlinearity="identity", engine=engine)


@pytest.mark.parametrize("engine", ["auto", "tensor", "fused", "compiled", "triton"])
def test_a_new_readout_is_refused_by_every_engine(engine, monkeypatch):
    """No engine implements a readout it does not know: each refuses it by name."""
    monkeypatch.setitem(config_module.READOUTS, "first", config_module.Readout("first", 7))
    x, lx = _sequences()
    match = "No engine computes this request" if engine == "auto" else "'first'|not first"
    with pytest.raises(EngineUnsupportedError, match=match):
        recurrent_kernel(x, lx, x, lx, VARIANCES, readout="first", engine=engine)
    with pytest.raises(EngineUnsupportedError, match="first"):
        recurrent_kernel_diag(x, lx, VARIANCES, readout="first")


def test_explicit_engines_give_their_reasons():
    x, lx = _sequences()
    cases = [
        (dict(paired=True), "compiled", "not paired rows"),
        (dict(num_layers=4), "triton", "at most 3 layers"),
    ]
    for options, engine, reason in cases:
        with pytest.raises(EngineUnsupportedError, match=reason):
            recurrent_kernel(x, lx, x, lx, VARIANCES, engine=engine, **options)
    batched = x.expand(2, *x.shape)
    with pytest.raises(EngineUnsupportedError, match="unbatched"):
        recurrent_kernel(batched, lx.expand(2, -1), x, lx, VARIANCES, engine="compiled")
    per_batch = RecurrentVariances(torch.tensor([[[1.0]], [[2.0]]]), 1.0, 0.1)
    with pytest.raises(EngineUnsupportedError, match="scalar variances"):
        recurrent_kernel(x, lx, x, lx, per_batch, engine="compiled")
    with pytest.raises(EngineUnsupportedError, match="not the sequences"):
        recurrent_kernel(x.requires_grad_(), lx, x, lx, VARIANCES, engine="compiled")


def test_forward_mode_tangents_on_variances_stay_on_the_tensor_engine():
    """A fused engine would drop a jvp's tangent: auto keeps such calls on the tensor engine,
    and the derivative equals a finite difference."""
    x, lx = _sequences()
    base = torch.tensor(1.3, dtype=torch.float64)

    seen = []

    def gram(sw2):
        variances = RecurrentVariances(sw2, 0.9, 0.2)
        seen.append(Problem.describe(x, x, variances).variance_tangent)
        return recurrent_kernel(x, lx, x, lx, variances, engine="auto")

    _, tangent = torch.func.jvp(gram, (base,), (torch.ones_like(base),))
    assert seen == [True]
    h = 1e-6
    expected = (gram(base + h) - gram(base - h)) / (2 * h)
    torch.testing.assert_close(tangent, expected, rtol=1e-6, atol=1e-9)
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(base, torch.ones_like(base))
        with pytest.raises(EngineUnsupportedError, match="forward-mode"):
            recurrent_kernel(x, lx, x, lx, RecurrentVariances(dual, 0.9, 0.2), engine="compiled")


def test_auto_picks_by_size(monkeypatch):
    x, lx = _sequences()
    variances = VARIANCES.like(x)
    config = config_module.make_config()
    problem = Problem.describe(x, x, variances)
    assert select(config, problem) is not ENGINES["compiled"]  # small: building does not repay
    monkeypatch.setattr(fused_engines.CompiledEngine, "threshold", 0)
    monkeypatch.delenv("GPYTORCH_RNTK_COMPILE", raising=False)
    assert select(config, problem) is ENGINES["compiled"]
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")  # compiling switched off: not worth it
    assert select(config, problem) is ENGINES["tensor"]


def test_auto_compiles_long_scans_that_need_variance_gradients(monkeypatch):
    """A fit evaluates the same shapes many times: on the CPU, a scan of at least
    ``grad_steps`` steps whose variances need a gradient goes to the compiled engine at any
    size; not without gradients, not for shorter scans, not when a sequence is differentiated
    (the compiled engine cannot), and not with compiling switched off."""
    monkeypatch.delenv("GPYTORCH_RNTK_COMPILE", raising=False)
    monkeypatch.setattr(fused_engines, "_compile_failure", [])
    config = config_module.make_config()
    steps = fused_engines.CompiledEngine.grad_steps
    x = torch.randn(3, steps, 1, dtype=torch.float64)
    learned = RecurrentVariances(torch.tensor(1.3, dtype=torch.float64, requires_grad=True), 1, 0.1)
    assert select(config, Problem.describe(x, x, learned)) is ENGINES["compiled"]
    # (the others: the cached compiled engine, which uses the package only where it is built)
    assert select(config, Problem.describe(x, x, VARIANCES.like(x))) is not ENGINES["compiled"]
    short = x[:, : steps - 1]
    assert select(config, Problem.describe(short, short, learned)) is not ENGINES["compiled"]
    moved = x.clone().requires_grad_()
    assert select(config, Problem.describe(moved, x, learned)) is ENGINES["tensor"]
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    assert select(config, Problem.describe(x, x, learned)) is ENGINES["tensor"]


def test_auto_falls_back_to_the_tensor_engine_without_a_compiler(monkeypatch):
    """Where Inductor finds no C++ compiler, engine="auto" warns once and computes the Gram
    matrix on the tensor engine (no traceback from deep inside torch.compile); a compiled engine
    named explicitly runs its loop eagerly from then on."""
    import torch._inductor.config as inductor_config

    monkeypatch.delenv("GPYTORCH_RNTK_COMPILE", raising=False)
    monkeypatch.setattr(fused_engines, "_compiled_steps", {})
    monkeypatch.setattr(fused_engines, "_compile_failure", [])
    monkeypatch.setattr(fused_engines.CompiledEngine, "threshold", 0)
    x, lx = _sequences()
    expected = recurrent_kernel(x, lx, x, lx, VARIANCES, engine="tensor")
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",)}):
        with pytest.warns(CompilationWarning, match="C\\+\\+ compiler"):
            got = recurrent_kernel(x, lx, x, lx, VARIANCES)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        with warnings.catch_warnings():
            warnings.simplefilter("error", CompilationWarning)  # warned once, then quiet
            eager = recurrent_kernel(x, lx, x, lx, VARIANCES, engine="compiled")
            again = recurrent_kernel(x, lx, x, lx, VARIANCES)
    torch.testing.assert_close(eager, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    assert "GPYTORCH_RNTK_COMPILE" not in os.environ


@pytest.fixture
def eager_compilation(monkeypatch, tmp_path):
    """The compiled engine's bookkeeping with its loop run eagerly (no 10-90 s build): packages
    "built" as empty files in a directory of this test's own, and a list of the loops built and
    loaded."""
    monkeypatch.delenv("GPYTORCH_RNTK_COMPILE", raising=False)
    monkeypatch.setenv("GPYTORCH_RNTK_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(fused_engines, "_compile_failure", [])
    monkeypatch.setattr(fused_engines, "_loaded", {})
    monkeypatch.setattr(fused_engines, "_not_cached", set())
    events = []

    def build(steps, args, kwargs, path):
        events.append(("built", steps.__name__))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def load(steps, path):
        events.append(("loaded", steps.__name__))
        return steps

    monkeypatch.setattr(ahead, "build", build)
    monkeypatch.setattr(ahead, "load", load)
    return events


def _packages() -> int:
    return len(list((ahead.cache_dir() / "aot").glob("*.pt2")))


def test_auto_uses_the_compiled_engine_where_its_loop_is_built(eager_compilation, monkeypatch):
    """Below the size that repays compiling, engine="auto" computes on the tensor engine
    (nothing built or loaded, and not even tried again in this process) until the loop's
    package is on this machine (built once by a named engine, here or in another process),
    then on the compiled engine without a CompilationWarning, for any number of sequences;
    another configuration (dtype) has no package."""
    monkeypatch.setattr(fused_engines.CompiledEngine, "threshold", 2**40)  # never cold
    monkeypatch.setattr(fused_engines.CachedCompiledEngine, "threshold", 0)
    x, lx = _sequences()
    expected = recurrent_kernel(x, lx, x, lx, VARIANCES, engine="tensor")
    problem = Problem.describe(x, x, VARIANCES.like(x))
    assert isinstance(select(config_module.make_config(), problem), fused_engines.CompiledEngine)

    got = recurrent_kernel(x, lx, x, lx, VARIANCES)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # the tensor engine's own
    assert eager_compilation == [] and _packages() == 0
    # declined at once from then on (a fit does not set the compiled engine up each step)
    assert select(config_module.make_config(), problem) is ENGINES["tensor"]

    with pytest.warns(CompilationWarning, match="compiling the fused engine's loop ahead"):
        recurrent_kernel(x, lx, x, lx, VARIANCES, engine="compiled")
    assert eager_compilation == [("built", "_cross_steps"), ("loaded", "_cross_steps")]
    assert _packages() == 1
    assert isinstance(select(config_module.make_config(), problem), fused_engines.CompiledEngine)

    fused_engines._loaded.clear()  # a new process: the package on disk is what it finds
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompilationWarning)
        got = recurrent_kernel(x, lx, x, lx, VARIANCES)
        more, lmore = _sequences(n=3, steps=5, seed=1)  # another tile size: the same package
        other = recurrent_kernel(more, lmore, x, lx, VARIANCES)
    assert eager_compilation[2:] == [("loaded", "_cross_steps")] and _packages() == 1
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        other, recurrent_kernel(more, lmore, x, lx, VARIANCES, engine="tensor"), rtol=1e-12, atol=0
    )

    x32 = x.float()
    got = recurrent_kernel(x32, lx, x32, lx, VARIANCES)
    assert len(eager_compilation) == 3  # float32's loop has no package: the tensor engine
    torch.testing.assert_close(got, recurrent_kernel(x32, lx, x32, lx, VARIANCES, engine="tensor"))


@pytest.mark.parametrize("readout", ["mean", "geometric"])
def test_one_package_serves_every_tile_size(eager_compilation, monkeypatch, readout):
    """The mean and geometric readouts' loop is built once for tiles of any number of rows and
    diagonals (dynamic dimensions of the package)."""
    x, lx = _sequences(n=4, steps=5)
    for tile in ((2, 4), (4, 64), (32, 1024)):
        monkeypatch.setattr(fused_engines, "_MEAN_TILE", tile)
        got = recurrent_kernel(x, lx, x[:3], lx[:3], VARIANCES, readout=readout, engine="compiled")
        expected = recurrent_kernel(
            x, lx, x[:3], lx[:3], VARIANCES, readout=readout, engine="tensor"
        )
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    assert eager_compilation == [("built", "_shifted_steps"), ("loaded", "_shifted_steps")]


def test_the_cached_compiled_engine_is_worth_it_on_the_cpu_at_any_size(monkeypatch):
    """The cached compiled engine is considered on the CPU for requests of any size, values
    and variance gradients, unless compiling is switched off."""
    monkeypatch.delenv("GPYTORCH_RNTK_COMPILE", raising=False)
    monkeypatch.setattr(fused_engines, "_compile_failure", [])
    monkeypatch.setattr(fused_engines, "_not_cached", set())
    engine, config = fused_engines.CachedCompiledEngine(), config_module.make_config()
    x = torch.zeros(2, 3, 1, dtype=torch.float64)
    learned = RecurrentVariances(torch.tensor(1.3, dtype=torch.float64, requires_grad=True), 1, 0)
    values, fit = Problem.describe(x, x, VARIANCES.like(x)), Problem.describe(x, x, learned)
    assert engine.worth(config, values) and engine.worth(config, fit)
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    assert not engine.worth(config, values)


def test_a_package_key_names_what_the_compiled_loop_is_specialised_on():
    """Equal dtypes, constants and fixed dimensions give one package, whatever the tile's size
    (its rows and columns are dynamic dimensions); any other difference another."""
    key = ahead.package_key
    steps = fused_engines._cross_steps

    def call(n1=4, n2=6, dtype=torch.float64, k=8, code=0, eps=1e-7):
        state = tuple(torch.zeros(n1, n2, dtype=dtype) for _ in range(3))
        xs, ys = torch.zeros(k, n1, 1, dtype=dtype), torch.zeros(k, n2, 1, dtype=dtype)
        sxs, sys_ = torch.zeros(k, 1, 2, n1, 1), torch.zeros(k, 1, 2, 1, n2)
        lengths1, lengths2 = torch.zeros(n1, dtype=torch.long), torch.zeros(n2, dtype=torch.long)
        variances = tuple(torch.zeros((), dtype=dtype) for _ in range(5))
        top = torch.tensor(k)
        args = (state, xs, ys, sxs, sys_, lengths1, lengths2, lengths1, lengths2, top, variances)
        return key(steps, (*args, code, 0, 0, eps), {})

    base = call()
    assert base == call(n1=16, n2=3)
    assert base != call(dtype=torch.float32)
    assert base != call(k=4)  # steps per call are unrolled: fixed
    assert base != call(code=1)
    assert base != call(eps=1e-15)


def test_warm_up_builds_one_package_per_configuration(eager_compilation, monkeypatch, capsys):
    """python -m gpytorch_rntk.warmup builds (here: runs eagerly) one package per configuration
    asked for, none again for one already built, and says what it did."""
    from gpytorch_rntk import warmup

    monkeypatch.setattr(warmup, "SEQUENCES", 6)
    monkeypatch.setattr(warmup, "STEPS", 3)
    warmup.main(["--dtypes", "float64", "--channels", "1", "2", "--fits"])
    built = [steps for event, steps in eager_compilation if event == "built"]
    assert built.count("_cross_steps") == 4  # (values, gradients) x (m = 1, 2)
    assert built.count("_shifted_steps") == 4  # the same
    assert _packages() == 8
    printed = capsys.readouterr().out
    assert "mean relu L=1 m=2 float64 N=6 values" in printed
    assert "last relu L=1 m=1 float64 N=6 gradients" in printed
    warmup.main([])  # the presets: the kernels' defaults, and sequence_gp's fits (erf, float64)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 + 2 and "last erf L=1 m=1 float64 N=6 gradients" in printed[-1]
    assert _packages() == 8 + 2 + 2  # float32 last and mean; erf: values, gradients


@pytest.mark.parametrize("engine", ["tensor", "compiled"])
def test_python_float_variances_keep_the_inputs_precision(engine, monkeypatch):
    """Python-float variances on float64 sequences enter in float64 (they were rounded through
    float32: 2.6 became 2.600000001490116)."""
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    x, lx = _sequences()
    floats = RecurrentVariances(2.6, 0.7, 0.1)
    tensors = RecurrentVariances(*(torch.tensor(v, dtype=torch.float64) for v in floats))
    got = recurrent_kernel(x, lx, x, lx, floats, engine=engine)
    expected = recurrent_kernel(x, lx, x, lx, tensors, engine=engine)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    diag = recurrent_kernel_diag(x, lx, floats)
    torch.testing.assert_close(diag, recurrent_kernel_diag(x, lx, tensors), rtol=0, atol=0)
