#!/usr/bin/env bash
# Install what the web UI tests need from Debian: `chromium` (tests/test_web.py drives it with
# Playwright, whose own browser download is not used) and `fonts-noto-cjk` (without it
# Chromium draws Chinese as boxes). Only these packages and their hard dependencies, no
# recommended extras (--no-install-recommends). apt's output goes to a log file; one line
# says what was installed and how long it took. Does nothing when both are present. Needs
# root (or sudo) only when it has to install.
set -euo pipefail

chromium_present() { command -v chromium >/dev/null 2>&1 || [ -x /usr/lib/chromium/chromium ]; }
fonts_present() { dpkg-query -W -f='${Status}' fonts-noto-cjk 2>/dev/null | grep -q "ok installed"; }

if chromium_present && fonts_present; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "install-browser: chromium or fonts-noto-cjk is missing; run as root or install sudo" >&2
        exit 1
    }
    SUDO="sudo"
fi

LOG="${TMPDIR:-/tmp}/sourcebook-install-browser.log"
started=$SECONDS
echo "install-browser: installing chromium and fonts-noto-cjk with apt-get (log: $LOG)..." >&2
before=$(dpkg-query -W -f='${binary:Package}\n' | wc -l)
if ! { $SUDO apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
            chromium fonts-noto-cjk; } >"$LOG" 2>&1; then
    tail -n 20 "$LOG" >&2
    echo "install-browser: apt-get failed; the whole output is in $LOG" >&2
    exit 1
fi
after=$(dpkg-query -W -f='${binary:Package}\n' | wc -l)
echo "install-browser: chromium and fonts-noto-cjk installed ($((after - before)) Debian packages) in $((SECONDS - started)) s" >&2
