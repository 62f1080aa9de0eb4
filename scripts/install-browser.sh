#!/usr/bin/env bash
# Install Debian's chromium for the web UI tests (tests/test_web.py drives it with
# Playwright, whose own browser download is not used). Idempotent: does nothing when a
# chromium is already installed. Needs root (or sudo) only when it has to install.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 || [ -x /usr/lib/chromium/chromium ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "install-browser: chromium is missing; run as root or install sudo" >&2
        exit 1
    }
    SUDO="sudo"
fi

echo "install-browser: installing chromium with apt-get..." >&2
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
