#!/usr/bin/env bash
# Sets up and builds (scripts/setup.sh), then runs the whole test suite:
# GoogleTest units, lit + FileCheck tests, the NumPy cross-check and the
# bounded libFuzzer run. Prints ctest's summary; exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
scripts/setup.sh
ctest --test-dir "$BUILD_DIR" --output-on-failure -j 2
