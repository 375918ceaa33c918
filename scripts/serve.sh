#!/usr/bin/env bash
# Sets up a fresh machine and serves the default configuration
# (switchyard.toml) on 127.0.0.1:8000. Extra arguments go to `switchyard serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
cargo build --release --locked
exec ./target/release/switchyard serve --config switchyard.toml "$@"
