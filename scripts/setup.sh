#!/usr/bin/env bash
# Installs what building, serving and testing need on a fresh machine.
# Idempotent; sourced by scripts/test.sh and scripts/serve.sh.
set -euo pipefail
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi
