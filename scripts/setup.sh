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

# Debian packages: Prometheus (scraped by the observability test).
apt_need=()
command -v prometheus >/dev/null 2>&1 || apt_need+=(prometheus)
if [ ${#apt_need[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get install -y -q --no-install-recommends "${apt_need[@]}" >/dev/null 2>&1 \
    || { $sudo_cmd apt-get update -q >/dev/null && \
         $sudo_cmd apt-get install -y -q --no-install-recommends "${apt_need[@]}" >/dev/null; }
fi

# Python packages: the official OpenAI client (API compatibility test).
python3 -c "import openai" >/dev/null 2>&1 \
  || python3 -m pip install -q --disable-pip-version-check "openai>=1.40,<4" >/dev/null
