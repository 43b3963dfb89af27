#!/usr/bin/env bash
# Set up the environment, lint, and run the test suite. Extra arguments go to pytest, e.g.
#   bash scripts/run_tests.sh -m slow          # only the slow checks
#   bash scripts/run_tests.sh -m "" -x         # everything, stop at the first failure
# Exits with pytest's exit code (5 = no tests collected is a failure, not a pass); a lint
# failure fails the run too, after the tests have run.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
source scripts/setup_env.sh || exit 1

ruff check .
lint_status=$?

python -m pytest "$@"
test_status=$?

if [ "$test_status" -ne 0 ]; then
    exit "$test_status"
fi
if [ "$lint_status" -ne 0 ]; then
    echo "run_tests: tests passed but 'ruff check .' failed" >&2
    exit 1
fi
exit 0
