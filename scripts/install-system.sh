#!/usr/bin/env bash
# Install what the tests need from Debian, in one apt run: `chromium` (tests/test_web.py
# drives it with Playwright, whose own browser download is not used), `fonts-noto-cjk`
# (without it Chromium draws Chinese as boxes) and `fonts-wqy-microhei` (the TrueType CJK
# font the document tests draw Chinese PDFs, slides and scanned pages with). Only these
# packages and their hard dependencies (--no-install-recommends); apt's output goes to a log
# file and one line says what was installed and how long it took. Does nothing when all are
# present. Needs root (or sudo) only when it has to install.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/lib/chromium/chromium ] || missing+=(chromium)
dpkg-query -W -f='${Status}' fonts-noto-cjk 2>/dev/null | grep -q "ok installed" ||
    missing+=(fonts-noto-cjk)
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing+=(fonts-wqy-microhei)
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "install-system: ${missing[*]} missing; run as root or install sudo" >&2
        exit 1
    }
    SUDO="sudo"
fi
LOG="${TMPDIR:-/tmp}/sourcebook-install-system.log"
started=$SECONDS
echo "install-system: installing ${missing[*]} with apt-get (log: $LOG)..." >&2
before=$(dpkg-query -W -f='${binary:Package}\n' | wc -l)
if ! { $SUDO apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
            "${missing[@]}"; } >"$LOG" 2>&1; then
    tail -n 20 "$LOG" >&2
    echo "install-system: apt-get failed; the whole output is in $LOG" >&2
    exit 1
fi
after=$(dpkg-query -W -f='${binary:Package}\n' | wc -l)
echo "install-system: ${missing[*]} installed ($((after - before)) Debian packages) in $((SECONDS - started)) s" >&2
