#!/usr/bin/env bash
# Installs what building, serving and testing need on a fresh machine.
# Idempotent; sourced by scripts/test.sh and scripts/serve.sh.
set -euo pipefail
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

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
