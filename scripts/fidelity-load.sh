#!/usr/bin/env bash
# Fidelity under load: the live server (sim devices, time_scale = 1, real
# HTTP, worker threads and wall clock) against the simulator, on the same
# fleet and workload, at fractions of the fleet's SLO capacity; prints p50
# and p95 TTFT and TPOT of both and their relative difference.
#
#   scripts/fidelity-load.sh [OUT_DIR]              (default fidelity-load-out/)
#   FLEET="a100-80g=8" CAPACITY=56 FRACTIONS="0.5 0.9" DUR=60 scripts/fidelity-load.sh
#
# CAPACITY is the fleet's simulated SLO capacity in req/s (the grid's
# figure for a100-80g ×8 on mix:balanced under the cost policy).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="$(mkdir -p "${1:-fidelity-load-out}" && cd "${1:-fidelity-load-out}" && pwd)"
BIN="${BIN:-./target/release/switchyard}"
[ -x "$BIN" ] || cargo build --release --locked --bin switchyard >/dev/null 2>&1
FLEET="${FLEET:-a100-80g=8}"
CAPACITY="${CAPACITY:-56}"
FRACTIONS="${FRACTIONS:-0.5 0.9}"
DUR="${DUR:-60}"
WORKLOAD="${WORKLOAD:-mix:balanced=1}"
PORT="${PORT:-18191}"
profile="${FLEET%%=*}"
count="${FLEET##*=}"
{
  echo "profiles_dir = \"$(pwd)/profiles\""
  echo "[server]"
  echo "max_pending_requests = 100000"
  echo "[model]"
  echo "spec = \"llama-3.1-8b\""
  echo "[router.slo]"
  echo "ttft_ms = 2000"
  echo "tpot_ms = 100"
  echo "percentile = 0.95"
  for i in $(seq 0 $((count - 1))); do
    echo "[[devices]]"
    echo "id = \"$profile-$i\""
    echo "backend = \"sim\""
    echo "profile = \"$profile\""
    echo "time_scale = 1.0"
  done
} > "$OUT/switchyard.toml"
for f in $FRACTIONS; do
  rate=$(python3 -c "print(round($CAPACITY * $f, 2))")
  W=(--workload "$WORKLOAD" --rate "$rate" --duration "$DUR" --seed 7 --quiet --timeout 120)
  "$BIN" serve --config "$OUT/switchyard.toml" --addr "127.0.0.1:$PORT" > "$OUT/serve-$f.log" 2>&1 &
  SRV=$!
  for _ in $(seq 1 50); do
    curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
    sleep 0.2
  done
  "$BIN" loadgen --target "http://127.0.0.1:$PORT" --token-ids --max-inflight 4096 "${W[@]}" \
    --out "$OUT/live-$f" 2>&1 | tail -1
  kill -TERM "$SRV"; wait "$SRV" || true
  "$BIN" loadgen --target "sim:$OUT/switchyard.toml" "${W[@]}" --out "$OUT/sim-$f" 2>&1 | tail -1
done
python3 - "$OUT" $FRACTIONS <<'PY'
import json, sys
out, fractions = sys.argv[1], sys.argv[2:]
def q(d):
    r = json.load(open(f"{out}/{d}/results.json"))["runs"][0]
    return {k: (r[k]["p50"], r[k]["p95"]) for k in ("ttft_s", "tpot_s")}, r["completed"], r["requests"]
print("| load | metric | live (ms) | sim (ms) | sim/live − 1 |")
print("|---|---|---|---|---|")
for f in fractions:
    live, lc, lr = q(f"live-{f}"); sim, sc, sr = q(f"sim-{f}")
    for k in ("ttft_s", "tpot_s"):
        for i, p in enumerate(("p50", "p95")):
            a, b = live[k][i], sim[k][i]
            print(f"| {float(f)*100:.0f} % ({lc}/{lr} live, {sc}/{sr} sim) | {k[:-2]} {p} | {a*1e3:.1f} | {b*1e3:.1f} | {(b/a-1)*100:+.1f} % |")
PY
