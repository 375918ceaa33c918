#!/usr/bin/env bash
# The GPU checks of scripts/gpu-check.sh on a host with an AMD Instinct GPU
# (ROCm installed: hiprtc, hipBLAS; no Rust needed). Build on a CPU machine
# with the AMD backend first (it carries over):
# `cargo build --release --locked --features rocm`. Then, from the
# repository root:
#
#   scripts/rocm-check.sh [OUT_DIR]     (default rocm-check-out/)
exec env BACKEND=rocm "$(dirname "$0")/gpu-check.sh" "$@"
