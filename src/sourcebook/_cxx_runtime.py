"""Load the system C++ runtime before any extension that bundles its own.

usearch's extension carries a static copy of libstdc++ and exports its symbols (locale
facets among them, as GNU-unique symbols). Loaded first, that copy takes over those symbols
for every C++ library loaded later in the process, and ONNX Runtime then fails inside its
kernels. Loading the system libstdc++ globally first keeps it the one every library binds
to. `sourcebook/__init__.py` imports this module before anything else for that reason,
whatever is loaded later and in which order (tests/test_cross_encoder.py runs ONNX Runtime
after usearch; a knowledge base built with the ONNX e5 engine loads usearch after it).
"""

from __future__ import annotations

import ctypes

try:  # the usual soname first: find_library runs `ldconfig -p`, which takes a while
    ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
except OSError:
    import ctypes.util

    _NAME = ctypes.util.find_library("stdc++")
    if _NAME:
        ctypes.CDLL(_NAME, mode=ctypes.RTLD_GLOBAL)
