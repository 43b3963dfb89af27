#!/usr/bin/env bash
# The CUDA checks of the Triton kernels, for a machine with a GPU and PyTorch, Triton, GPyTorch
# and BoTorch installed (the package runs from the checkout). Writes logs to ${OUT:-outputs};
# the steps come in order of importance, each with its own time limit, about 7 minutes in all.
# Step 5 compares with engines carried beside the checkout (no git history needed there):
#   mkdir -p outputs/old_engine && git archive 4a7a62e gpytorch_rntk | tar -x -C outputs/old_engine
#   mkdir -p outputs/variant && git archive triton-uniform-tiles gpytorch_rntk | tar -x -C outputs/variant
# (the branch triton-uniform-tiles: the last readout's kernel without per-pair masks on tiles
# of one length; equal lengths are where it differs)
set -uo pipefail
out="${OUT:-outputs}"; mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, triton, gpytorch; print(torch.__version__, triton.__version__, gpytorch.__version__, torch.cuda.get_device_name())"
# 1. the Triton kernels on CUDA (last, mean and geometric readouts; values and forward mode;
# golden values) against the tensor path
timeout 170 python3 -m pytest -q -p no:cacheprovider -k "cuda and (triton or grid_kernel or golden)" \
    tests/engines/test_fused.py 2>&1 | tail -15 | tee "$out/tests.log"
# 2. the mean readout: the Triton kernel against the tensor path (values), and its gradient
timeout 150 python3 benchmarks/mean_gram.py --device cuda --sizes 100 1000 --steps 150 \
    --engine triton --no-tensor-grad --fresh --repeats 3 2>&1 | tee "$out/mean.log"
# 3. the last readout's target case (equal lengths)
timeout 80 python3 benchmarks/gram.py --device cuda --sizes 10000 --steps 150 --layers 2 \
    --nonlinearities relu --dtypes float32 --variable no 2>&1 | tee "$out/target.log"
# 4. tiles: the last readout's values (float32, L = 2), the mean readout's values and gradient
t="python3 benchmarks/triton_tiles.py --device cuda --repeats 2"
timeout 60 $t --n 10000 --t 150 --layers 2 --dtype float32 \
    --tiles 32x64x4 32x32x4 16x64x4 32x64x8 64x32x4 2>&1 | tee "$out/tiles.log"
timeout 50 $t --readout mean --n 1000 --t 150 --layers 1 --dtype float64 \
    --tiles 32x32x8 16x32x4 32x32x4 16x16x4 2>&1 | tee -a "$out/tiles.log"
timeout 50 $t --readout mean --n 1000 --t 150 --layers 1 --dtype float64 --gradient \
    --tiles 16x16x8 16x16x4 16x32x8 2>&1 | tee -a "$out/tiles.log"
# 5. this engine against the one before the mean kernel (4a7a62e) and against outputs/variant
c="python3 benchmarks/compare_revisions.py --device cuda --n 10000 --t 150 --layers 2 --dtype float32"
[ -d outputs/old_engine ] && timeout 50 $c --against outputs/old_engine 2>&1 | tee "$out/compare.log"
[ -d outputs/variant ] && timeout 50 $c --equal --against outputs/variant 2>&1 | tee -a "$out/compare.log"
cat "$out/tests.log"
