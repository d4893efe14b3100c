#!/usr/bin/env bash
# Installs the Debian packages Strata builds and tests with. Idempotent: skips apt when all are present.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config git unzip clang libclang-rt-14-dev
      liburing-dev libpcre2-dev nlohmann-json3-dev libcli11-dev libcpp-httplib-dev
      coinor-libclp-dev libglpk-dev libssl-dev libcurl4-openssl-dev libgtest-dev libgmock-dev libbenchmark-dev
      python3-jinja2 chromium)  # chromium: the web page's browser test (tests/py/test_web_page.py)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
