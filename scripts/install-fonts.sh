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
echo "install-fonts: installing ${missing[*]} with apt-get..." >&2
$SUDO apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
