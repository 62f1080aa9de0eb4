#!/usr/bin/env bash
# Install the CJK TrueType font (WenQuanYi Micro Hei) that the document tests draw Chinese
# PDFs, slides and scanned pages with, and Noto CJK for the web UI's screenshots.
# Idempotent: does nothing when both are installed. Needs root (or sudo) only to install.
set -euo pipefail

missing=()
[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing+=(fonts-wqy-microhei)
[ -f /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ] || missing+=(fonts-noto-cjk)
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || {
        echo "install-fonts: ${missing[*]} missing; run as root or install sudo" >&2
        exit 1
    }
    SUDO="sudo"
fi
LOG="${TMPDIR:-/tmp}/sourcebook-install-fonts.log"
started=$SECONDS
echo "install-fonts: installing ${missing[*]} with apt-get (log: $LOG)..." >&2
# the package lists install-browser.sh just fetched are reused (fresher than an hour)
fresh=$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -60 2>/dev/null | head -n 1)
if ! { { [ -n "$fresh" ] || $SUDO apt-get update -q; } &&
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
            "${missing[@]}"; } >"$LOG" 2>&1; then
    tail -n 20 "$LOG" >&2
    echo "install-fonts: apt-get failed; the whole output is in $LOG" >&2
    exit 1
fi
echo "install-fonts: ${missing[*]} installed in $((SECONDS - started)) s" >&2
