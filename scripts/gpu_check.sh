#!/usr/bin/env bash
# The CUDA checks of the fused engine, for a machine with a GPU and PyTorch, Triton, GPyTorch and
# BoTorch installed (the package runs from the checkout). Writes logs to ${OUT:-outputs}; the
# steps come in order of importance, each with its own time limit, about 10 minutes in all.
# The engine of commit cdceee7 to compare with: a git revision, or where the machine has no
# git history its package carried in outputs/old_engine
#   (mkdir -p outputs/old_engine && git archive cdceee7 gpytorch_rntk | tar -x -C outputs/old_engine)
set -uo pipefail
out="${OUT:-outputs}"; mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
old=cdceee7; [ -d outputs/old_engine/gpytorch_rntk ] && old=outputs/old_engine
nvidia-smi -L
python3 -c "import torch, triton, gpytorch; print(torch.__version__, triton.__version__, gpytorch.__version__, torch.cuda.get_device_name())"
# 1. an exact GP's marginal-likelihood gradient against its forward (issue 5: at most 3x), with
# GPyTorch's MLL and with CholeskyMarginalLogLikelihood; then the linear algebra alone
m="python3 benchmarks/mll_gradient.py --device cuda --mlls gpytorch cholesky"
timeout 100 $m --n 2000 --t 100 --engines fused tensor --repeats 2 2>&1 | tee "$out/mll.log"
timeout 60 $m --n 5000 --t 100 --engines fused 2>&1 | tail -2 | tee -a "$out/mll.log"
timeout 70 $m --n 10000 --t 150 --layers 2 --dtype float32 --engines fused 2>&1 | tail -2 | tee -a "$out/mll.log"
timeout 40 python3 benchmarks/mll_linear_algebra.py --device cuda --n 2000 5000 2>&1 | tee "$out/la.log"
timeout 40 python3 benchmarks/mll_linear_algebra.py --device cuda --n 10000 --dtype float32 2>&1 | tail -2 | tee -a "$out/la.log"
# 2. the Triton kernel (values and forward mode) and the golden values on CUDA
timeout 150 python3 -m pytest -q -x -p no:cacheprovider -k "cuda and (triton or forward_mode or golden)" \
    tests/engines/test_fused.py tests/engines/test_conformance.py tests/kernels/test_kernels.py 2>&1 | tail -15 | tee "$out/tests.log"
# 3. this engine against commit cdceee7's in one process (values and forward mode)
c="python3 benchmarks/compare_revisions.py --device cuda --against $old"
timeout 50 $c --n 2000 --t 100 2>&1 | tee "$out/compare.log"
timeout 60 $c --n 10000 --t 150 --layers 2 --dtype float32 2>&1 | tee -a "$out/compare.log"
# 4. the target case, both dtypes
b="python3 benchmarks/gram.py --device cuda --sizes 10000 --steps 150 --layers 2 --nonlinearities relu"
timeout 60 $b --dtypes float32 float64 --variable both 2>&1 | tee "$out/target.log"
# 5. forward-mode tiles against TILES' (float64: 16 x 16, 8 warps)
for tile in "16 32 8" "16 32 4" "32 32 8"; do
    timeout 30 python3 benchmarks/mll_gradient.py --device cuda --mlls cholesky --n 2000 --t 100 \
        --engines fused --triton-tile $tile 2>&1 | tail -1 | tee -a "$out/mll.log"
done
# 6. memory of a 20000 x 20000 float32 Gram, T = 100
timeout 30 python3 benchmarks/gram.py --device cuda --memory 20000 100 2>&1 | tee "$out/memory.log"
