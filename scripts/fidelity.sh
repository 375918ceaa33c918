#!/usr/bin/env bash
# Simulation fidelity: the same workload against the live server (ONNX on this
# host's CPU) and against `sim:` with this host's calibrated CPU profile;
# prints predicted vs measured p50/p95 TTFT and TPOT.
#
#   scripts/fidelity.sh [OUT_DIR]        (default fidelity-out/)
#   MODEL=tiny|bench RATE=0.5 PROMPT=200 OUTPUT=64 DUR=120 scripts/fidelity.sh
#
# bench (default; `python3 scripts/make_test_model.py --size bench` first):
# device time dominates latency. tiny: steps of ~0.2 ms, so HTTP, tokenizer
# and streaming overheads (not modelled by the simulator) dominate instead.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh
set +e +o pipefail
OUT="$(mkdir -p "${1:-fidelity-out}" && cd "${1:-fidelity-out}" && pwd)"
MODEL="${MODEL:-bench}"
cargo build --release --locked --bin switchyard >/dev/null 2>&1
BIN=./target/release/switchyard
rm -rf "$OUT/profiles" && cp -r profiles "$OUT/profiles"
sed -e "s#^profiles_dir = .*#profiles_dir = \"$OUT/profiles\"#" \
    -e "s#^spec = .*#spec = \"$MODEL-llama\"#" \
    -e "s#^path = .*#path = \"$(pwd)/models/$MODEL\"#" switchyard.toml > "$OUT/switchyard.toml"
$BIN profile --device cpu-0 --config "$OUT/switchyard.toml" \
  --out "$OUT/profiles/devices/cpu.toml" 2>&1 | tail -2
W=(--workload "fixed:prompt=${PROMPT:-200},output=${OUTPUT:-64}" --rate "${RATE:-0.5}"
   --duration "${DUR:-120}" --seed 7 --quiet)
$BIN serve --config "$OUT/switchyard.toml" --addr 127.0.0.1:18183 > "$OUT/serve.log" 2>&1 &
SRV=$!
sleep 8
$BIN loadgen --target http://127.0.0.1:18183 --token-ids "${W[@]}" --out "$OUT/live" | tail -2
kill -TERM $SRV; wait $SRV
$BIN loadgen --target "sim:$OUT/switchyard.toml" "${W[@]}" --out "$OUT/sim" | tail -2
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def q(d):
    r = json.load(open(f"{out}/{d}/results.json"))["runs"][0]
    return {k: (r[k]["p50"], r[k]["p95"]) for k in ("ttft_s", "tpot_s")}, r["completed"], r["requests"]
live, lc, lr = q("live"); sim, sc, sr = q("sim")
print(f"live completed {lc}/{lr}, sim completed {sc}/{sr}")
for k in ("ttft_s", "tpot_s"):
    for i, p in enumerate(("p50", "p95")):
        a, b = live[k][i], sim[k][i]
        print(f"{k} {p}: live {a*1e3:.1f} ms  sim {b*1e3:.1f} ms  sim/live-1 = {(b/a-1)*100:+.1f}%")
PY
