#!/usr/bin/env bash
# Set up the environment, build the fused engine's common CPU loops once, and run the end-to-end
# demo (RNTK vs RBF GP on Japanese Vowels by default). Arguments go to the demo:
# bash scripts/run_demo.sh --help
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
# Build the fused engine's loop for the common configurations ahead of time, once per machine
# (about 3 minutes the first time, a second after), so that engine="auto" uses it from the
# first call of a process on.
python -m gpytorch_rntk.warmup
exec python -m gpytorch_rntk.demo "$@"
