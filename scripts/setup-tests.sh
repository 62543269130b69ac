#!/usr/bin/env bash
# Installs what the test suite needs: Python test requirements and Debian's Chromium
# (for the real-browser test; Playwright drives it, nothing is downloaded by Playwright).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
python -m pip install -q -r requirements-test.txt
