#!/usr/bin/env bash
# Fleet-tier overhead, side by side in one run on loopback: the same
# closed-loop workload, from the same client (`switchyard loadgen`), against
# (1) two sim-device nodes directly (half the streams each), (2) a
# Switchyard tier in front of them, (3) vLLM's router (PyPI vllm-router,
# round_robin and cache_aware) in front of them. Workers are zero-time sims
# by default, so what is measured is the proxies.
#
# Usage: scripts/bench_tier.sh [OUT_DIR]   (builds release; needs `pip install vllm-router==0.1.17`)
# Env: PROXY_WORKERS (below), STREAMS ("64 512": closed loops of that many streams; "r2000": open loop,
# Poisson arrivals at 2000 req/s), REQUESTS per run (20000: a p99 from 200
# tail samples, where 2000 left 20 and runs of one binary differed by a
# third), PROMPT (256), OUTPUT (32), TIME_SCALE (0: zero-time sims; 1: steps
# take their profile's predicted time), NODE_PROFILES ("h100-sxm h100-sxm":
# the two nodes' device profiles; two different ones show the routing,
# not only the proxying),
# REPEAT (2: runs of each proxy, rotated; the table shows each run and their mean).
# Each proxy's CPU time (user + system, all its threads) per request is read
# from /proc, and the two nodes' together: what a proxy makes its workers do
# (a tier follows their KV events) competes for the same cores.
# "node 1 %" is the share of a proxy's run that node 1 served, and
# "prefix %" the nodes' prefix-cache hit rate over the run (prompt tokens
# found cached; every run sends the same prompts, so later runs find some).
# ITL is per streamed chunk (as vLLM's benchmark_serving counts it); the
# tier sends one delta per upstream chunk, as a proxy relaying bytes passes
# the chunks on, so the two chunk alike. TPOT, (e2e - TTFT) / (tokens - 1)
# per request, is per token.
# e2e ends at the last token; a closed-loop stream is held until its response
# ends, so "held ms" (streams / completions per second, Little's law) shows a
# proxy that ends responses late: its clients send less often, and the nodes
# see fewer requests in flight than there are streams. Compare latencies at
# equal load with an open loop (r...) below both proxies' capacity.
# PROXY_WORKERS (unset: each proxy's default, one runtime worker per core)
# gives every proxy, the tier and vllm-router alike (both are tokio
# servers), that many runtime worker threads through TOKIO_WORKER_THREADS.
# On a host whose cores the client and nodes share, a proxy with one worker
# per core loses the CPU to them in bursts, and its tail is set by those
# stalls rather than by its own work (docs/fleet-tier-bench.md).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/bench-tier}
STREAMS=${STREAMS:-64 512}
REQUESTS=${REQUESTS:-20000}
PROMPT=${PROMPT:-256}
OUTPUT=${OUTPUT:-32}
TIME_SCALE=${TIME_SCALE:-0}
read -r -a NODE_PROFILE <<< "${NODE_PROFILES:-h100-sxm h100-sxm}"
[ "${#NODE_PROFILE[@]}" = 2 ] || { echo "bench_tier: NODE_PROFILES names two profiles" >&2; exit 1; }
REPEAT=${REPEAT:-2}
BIN=${BIN:-target/release/switchyard}
PROXY_ENV=()
[ -n "${PROXY_WORKERS:-}" ] && PROXY_ENV=(TOKIO_WORKER_THREADS="$PROXY_WORKERS")
[ -x "$BIN" ] || cargo build --release --bin switchyard
command -v vllm-router >/dev/null || { echo "bench_tier: vllm-router not found (pip install vllm-router==0.1.17)" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# CPU time (user + system, all threads) processes have used, in clock ticks.
cpu_ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
# Per node: requests, prefix-cache hit tokens and query tokens so far (one line).
node_counts() {
  for p in "${NODE_PORTS[@]}"; do
    curl -s "http://127.0.0.1:$p/metrics" | awk '/^switchyard_requests_total/ {r += $NF}
      /^switchyard_prefix_cache_hits_tokens_total/ {h += $NF}
      /^switchyard_prefix_cache_queries_tokens_total/ {q += $NF}
      END {printf "%d %d %d ", r, h, q}'
  done
  echo
}
wait_http() { for _ in $(seq 1 200); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "bench_tier: $1 never answered" >&2; exit 1; }

NODE_PORTS=()
NODE_PIDS=()
for n in 1 2; do
  port=$(free_port)
  cat > "$OUT/node$n.toml" <<EOF
profiles_dir = "$PWD/profiles"
[model]
spec = "llama-3.1-8b"
[[devices]]
id = "gpu"
backend = "sim"
profile = "${NODE_PROFILE[$((n-1))]}"
time_scale = $TIME_SCALE
EOF
  RUST_LOG=warn "$BIN" serve --addr "127.0.0.1:$port" --config "$OUT/node$n.toml" >"$OUT/node$n.log" 2>&1 &
  PIDS+=($!)
  NODE_PIDS+=($!)
  NODE_PORTS+=("$port")
done
TIER_PORT=$(free_port)
{
  printf 'profiles_dir = "%s/profiles"\n[model]\nspec = "llama-3.1-8b"\n[tier]\nscrape_interval_ms = 200\n' "$PWD"
  for n in 1 2; do
    printf '[[endpoints]]\nid = "n%s"\nurl = "http://127.0.0.1:%s"\nengine = "switchyard"\n' "$n" "${NODE_PORTS[$((n-1))]}"
  done
} > "$OUT/tier.toml"
env "${PROXY_ENV[@]}" RUST_LOG=warn "$BIN" serve --addr "127.0.0.1:$TIER_PORT" --config "$OUT/tier.toml" >"$OUT/tier.log" 2>&1 &
PIDS+=($!)
declare -A PROXY_PID=([switchyard-tier]=$!)
declare -A ROUTER_PORTS
for policy in round_robin cache_aware; do
  port=$(free_port)
  env "${PROXY_ENV[@]}" vllm-router --host 127.0.0.1 --port "$port" --policy "$policy" \
    --prometheus-port "$(free_port)" \
    --worker-urls "http://127.0.0.1:${NODE_PORTS[0]}" "http://127.0.0.1:${NODE_PORTS[1]}" \
    >"$OUT/vllm-router-$policy.log" 2>&1 &
  PIDS+=($!)
  ROUTER_PORTS[$policy]=$port
  short=${policy/round_robin/rr}
  PROXY_PID[vllm-router-${short/cache_aware/ca}]=$!
done
for p in "${NODE_PORTS[@]}" "$TIER_PORT"; do wait_http "http://127.0.0.1:$p/health"; done
for p in "${ROUTER_PORTS[@]}"; do
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$p/v1/models" >/dev/null && break; sleep 0.1; done
done

run() { # name target load requests; load: N streams, or rR req/s
  local load=(--concurrency "$3")
  [[ $3 == r* ]] && load=(--rate "${3#r}")
  "$BIN" loadgen --target "$2" --workload "fixed:prompt=$PROMPT,output=$OUTPUT" \
    "${load[@]}" --requests "$4" --token-ids --api-model llama-3.1-8b --quiet --out "$OUT/$1" >/dev/null
}
# Half of a load, for each of the two nodes called directly.
half() { if [[ $1 == r* ]]; then echo "r$(python3 -c "print(${1#r} / 2)")"; else echo $(($1 / 2)); fi; }
# Warm-up, then the measured runs. "direct" is two loadgens at once, one per node.
run warm "http://127.0.0.1:$TIER_PORT" 4 40
# Each proxy runs REPEAT times, in a rotated order each round, so no proxy
# always runs first (cold pools) or last (warm nodes).
PROXIES=(switchyard-tier vllm-router-rr vllm-router-ca)
declare -A PROXY_URL=(
  [switchyard-tier]="http://127.0.0.1:$TIER_PORT"
  [vllm-router-rr]="http://127.0.0.1:${ROUTER_PORTS[round_robin]}"
  [vllm-router-ca]="http://127.0.0.1:${ROUTER_PORTS[cache_aware]}"
)
for c in $STREAMS; do
  # One stream cannot be halved: no direct baseline then.
  if [[ $(half "$c") != 0 ]]; then
    run "direct-n1-$c" "http://127.0.0.1:${NODE_PORTS[0]}" "$(half "$c")" $((REQUESTS / 2)) &
    D1=$!
    run "direct-n2-$c" "http://127.0.0.1:${NODE_PORTS[1]}" "$(half "$c")" $((REQUESTS / 2))
    wait $D1
  fi
  # Each proxy first opens its connections at this concurrency (pools
  # grow on demand, and the cold first run would pay for them).
  for name in "${PROXIES[@]}"; do
    run "warm-$name-$c" "${PROXY_URL[$name]}" "$c" $((REQUESTS / 2))
  done
  for rep in $(seq 1 "$REPEAT"); do
    for k in 0 1 2; do
      name=${PROXIES[$(((k + rep - 1) % 3))]}
      before=$(cpu_ticks "${PROXY_PID[$name]}")
      nodes_before=$(cpu_ticks "${NODE_PIDS[@]}")
      counts_before=$(node_counts)
      run "$name-$c-$rep" "${PROXY_URL[$name]}" "$c" "$REQUESTS"
      printf '%s\n%s\n' "$counts_before" "$(node_counts)" > "$OUT/$name-$c-$rep/node_counts"
      echo $(($(cpu_ticks "${PROXY_PID[$name]}") - before)) > "$OUT/$name-$c-$rep/cpu_ticks"
      echo $(($(cpu_ticks "${NODE_PIDS[@]}") - nodes_before)) > "$OUT/$name-$c-$rep/node_cpu_ticks"
    done
  done
done

echo "proxy runtime workers: ${PROXY_WORKERS:-one per core, the default of each proxy}; nodes: ${NODE_PROFILE[*]}, time_scale $TIME_SCALE"
python3 - "$OUT" "$REPEAT" $STREAMS <<'PY'
import json, os, sys
out, repeat, streams = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
KEYS = ("ttft50", "ttft99", "itl99", "tpot99", "e2e99", "held", "tok", "cpu", "node_cpu", "n1", "hits")
TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")
def load(name):
    return json.load(open(f"{out}/{name}/results.json"))["runs"][0]
def cpu_ms_per_request(name, requests, file="cpu_ticks"):
    path = f"{out}/{name}/{file}"
    return int(open(path).read()) * TICK_MS / max(requests, 1) if os.path.exists(path) else float("nan")
def held_s(r, c):
    # Little's law over a closed loop: how long each stream held a request.
    rate = r["completed"] / r["duration_s"] if r["duration_s"] > 0 else 0
    return int(c) / rate if not c.startswith("r") and rate > 0 else float("nan")
def pick(r, name=None, c="r"):
    return dict(ttft50=r["ttft_s"]["p50"], ttft99=r["ttft_s"]["p99"], itl99=r["itl_s"]["p99"], tpot99=r["tpot_s"]["p99"],
                e2e99=r["e2e_s"]["p99"], held=held_s(r, c),
                tok=r["throughput"]["output_tokens_per_s"], ok=r["completed"], failed=r["failed"],
                cpu=cpu_ms_per_request(name, r["completed"] + r["failed"]) if name else float("nan"),
                node_cpu=cpu_ms_per_request(name, r["completed"] + r["failed"], "node_cpu_ticks") if name else float("nan"),
                **dict(zip(("n1", "hits"), split(name))))
def mean(runs):
    m = {k: sum(r[k] for r in runs) / len(runs) for k in KEYS}
    m.update(ok=sum(r["ok"] for r in runs), failed=sum(r["failed"] for r in runs))
    return m
def split(name):
    # Node 1's share of the run's requests, and the prefix-cache hit rate.
    path = f"{out}/{name}/node_counts"
    if not os.path.exists(path):
        return float("nan"), float("nan")
    before, after = ([int(x) for x in l.split()] for l in open(path).read().splitlines()[:2])
    d = [a - b for a, b in zip(after, before)]
    reqs, hits, queries = d[0] + d[3], d[1] + d[4], d[2] + d[5]
    return d[0] / max(reqs, 1), hits / max(queries, 1)
def row(name, r):
    print(f"{name:<24}{r['ok']:>6}{r['failed']:>6}{r['ttft50']*1e3:>13.2f}{r['ttft99']*1e3:>13.2f}"
          f"{r['itl99']*1e3:>12.2f}{r['tpot99']*1e3:>13.2f}{r['e2e99']*1e3:>12.2f}{r['held']*1e3:>10.1f}"
          f"{r['tok']:>9.0f}{r['cpu']:>18.3f}{r['node_cpu']:>18.3f}{r['n1']*100:>9.1f}{r['hits']*100:>10.1f}")
for c in streams:
    direct = None
    if os.path.exists(f"{out}/direct-n1-{c}/results.json"):
        a, b = pick(load(f"direct-n1-{c}")), pick(load(f"direct-n2-{c}"))
        direct = {k: (a[k] + b[k]) / 2 for k in a}
        direct.update(tok=a["tok"] + b["tok"], ok=a["ok"] + b["ok"], failed=a["failed"] + b["failed"])
    print(f"\n{c[1:] + ' req/s, open loop' if c.startswith('r') else c + ' streams'}")
    print(f"{'target':<24}{'ok':>6}{'fail':>6}{'TTFT p50 ms':>13}{'TTFT p99 ms':>13}{'ITL p99 ms':>12}{'TPOT p99 ms':>13}"
          f"{'e2e p99 ms':>12}{'held ms':>10}{'tok/s':>9}"
          f"{'proxy CPU ms/req':>18}{'nodes CPU ms/req':>18}{'node 1 %':>9}{'prefix %':>10}")
    if direct:
        row("direct (2 x half)", direct)
    means = {}
    for name in ("switchyard-tier", "vllm-router-rr", "vllm-router-ca"):
        runs = [pick(load(f"{name}-{c}-{i}"), f"{name}-{c}-{i}", c) for i in range(1, repeat + 1)]
        for i, r in enumerate(runs, 1):
            row(f"{name} #{i}", r)
        means[name] = mean(runs)
        row(f"{name} mean", means[name])
    tier = means["switchyard-tier"]
    for name in ("vllm-router-rr", "vllm-router-ca"):
        r = means[name]
        print(f"  tier vs {name} (means): {tier['tok']/r['tok']:.3f}x tokens/s, TTFT p99 {tier['ttft99']*1e3:.1f} vs {r['ttft99']*1e3:.1f} ms, "
              f"ITL p99 {tier['itl99']*1e3:.1f} vs {r['itl99']*1e3:.1f} ms, TPOT p99 {tier['tpot99']*1e3:.2f} vs {r['tpot99']*1e3:.2f} ms, "
              f"e2e p99 {tier['e2e99']*1e3:.1f} vs {r['e2e99']*1e3:.1f} ms, proxy CPU {tier['cpu']/r['cpu']:.2f}x per request")
    if direct:
        print(f"  tier over direct: TTFT p50 {(tier['ttft50']-direct['ttft50'])*1e3:+.2f} ms, p99 {(tier['ttft99']-direct['ttft99'])*1e3:+.2f} ms, "
          f"ITL p99 {(tier['itl99']-direct['itl99'])*1e3:+.2f} ms, TPOT p99 {(tier['tpot99']-direct['tpot99'])*1e3:+.2f} ms")
PY
