"""Load the system C++ runtime before any extension that bundles its own.

usearch's extension carries a static copy of libstdc++ and exports its symbols (locale
facets among them, as GNU-unique symbols). Loaded first, that copy takes over those symbols
for every C++ library loaded later in the process, and ONNX Runtime then fails inside its
kernels. Loading the system libstdc++ globally first keeps it the one every library binds
to. `store/indexes.py` imports this module before it imports usearch for that reason
(tests/test_cross_encoder.py runs ONNX Runtime after usearch).
"""

from __future__ import annotations

import ctypes
import ctypes.util

try:  # the usual soname first: find_library runs `ldconfig -p`, which takes a while
    ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
except OSError:
    _NAME = ctypes.util.find_library("stdc++")
    if _NAME:
        ctypes.CDLL(_NAME, mode=ctypes.RTLD_GLOBAL)
