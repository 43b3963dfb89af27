#!/usr/bin/env bash
# Set up the environment and run the end-to-end demo (RNTK vs RBF GP on Japanese Vowels by
# default). Arguments go to the demo: bash scripts/run_demo.sh --help
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
exec python -m gpytorch_rntk.demo "$@"
