#!/usr/bin/env bash
# Installs what the test suite needs: Python test requirements (with Ray, for the cluster backend's
# tests), Debian's Chromium (for the real-browser test; Playwright drives it, nothing is downloaded
# by Playwright) and iproute2 (the Ray tests run their cluster in a loopback-only network namespace).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium iproute2 >/dev/null
fi
python -m pip install -q -r requirements-test.txt -r requirements-cluster.txt
