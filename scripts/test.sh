#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs them all.
# This is the test command README.md documents and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
# `rocm` adds the AMD backend and its hiprtc compile tests; CUDA is always built.
cargo build --workspace --locked --features rocm
cargo clippy --workspace --all-targets --locked --features rocm -- -D warnings
cargo test --workspace --locked --features rocm "$@"
