#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs them all.
# This is the test command README.md documents and .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
cargo build --workspace --locked
cargo test --workspace --locked "$@"
