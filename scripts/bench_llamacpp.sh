#!/usr/bin/env bash
# SmolLM2-135M-Instruct on this machine's CPU, side by side in one run: Switchyard
# (default config: ONNX Runtime, MatMulNBits) and llama.cpp (PyPI llama-cpp-python's
# server on the same Q4_1 GGUF, 2 threads), one server busy at a time. Measures batch-1
# TTFT and decode tok/s for a ~100-token prompt, and total tok/s at 32 concurrent
# (llama.cpp's server runs one request at a time). Not part of CI.
#
# Usage: scripts/bench_llamacpp.sh [OUT_DIR]
# Needs: source scripts/setup.sh (model converted) and
#        pip install 'llama-cpp-python[server]==0.3.36'   (builds llama.cpp, ~12 min)
# Env: THREADS (2), REQUESTS per run (10), OUTPUT (128), REPEAT (2), CONCURRENT (32).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/bench-llamacpp}
THREADS=${THREADS:-2}
BIN=target/release/switchyard
[ -x "$BIN" ] || cargo build --release --locked --bin switchyard
python3 -c 'import llama_cpp.server' 2>/dev/null \
  || { echo "bench_llamacpp: pip install 'llama-cpp-python[server]==0.3.36'" >&2; exit 1; }
GGUF=$(python3 -c 'import sys; sys.path.insert(0, "scripts"); import convert_smollm2 as c; print(c.find_gguf())')
rm -rf "$OUT" && mkdir -p "$OUT"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits for URL $1 while process $2 lives (its log is $3).
wait_http() {
  for _ in $(seq 1 600); do
    curl -sf "$1" >/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "bench_llamacpp: the server behind $1 exited; see $3" >&2; exit 1; }
    sleep 0.2
  done
  echo "bench_llamacpp: $1 never answered" >&2; exit 1
}

SY_PORT=$(free_port)
RUST_LOG=warn "$BIN" serve --addr "127.0.0.1:$SY_PORT" --config switchyard.toml >"$OUT/switchyard.log" 2>&1 &
PIDS+=($!)
LC_PORT=$(free_port)
python3 -m llama_cpp.server --model "$GGUF" --model_alias smollm2-135m-instruct \
  --n_threads "$THREADS" --n_threads_batch "$THREADS" --n_ctx 2048 \
  --host 127.0.0.1 --port "$LC_PORT" --interrupt_requests False >"$OUT/llamacpp.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$SY_PORT/health" "${PIDS[0]}" "$OUT/switchyard.log"
wait_http "http://127.0.0.1:$LC_PORT/v1/models" "${PIDS[1]}" "$OUT/llamacpp.log"
python3 scripts/bench_llamacpp.py \
  --server "switchyard=http://127.0.0.1:$SY_PORT" --server "llamacpp=http://127.0.0.1:$LC_PORT" \
  --requests "${REQUESTS:-10}" --output "${OUTPUT:-128}" --repeat "${REPEAT:-2}" \
  --concurrent "${CONCURRENT:-32}" --out "$OUT/results.json" | tee "$OUT/table.txt"
