#!/usr/bin/env bash
# Installs headless Chromium and its WebDriver (Debian packages chromium, chromium-driver) for
# tests/test_ui_browser.py; does nothing when both are already there.
# Usage: bash .ci/browser.sh   (as root, like .ci/postgres.sh)
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
echo "headless browser for tests: $(chromium --version 2>/dev/null | head -1), $(chromedriver --version | head -1)"
