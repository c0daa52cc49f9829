"""Capture what native code (llama.cpp) writes to the process's stderr."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Route fd 2 (where llama.cpp logs) to a temp file; the yielded list receives the text.

    Python's ``sys.stderr`` redirection does not reach native code, so the file descriptor itself is
    swapped. Used to quiet llama.cpp's vocabulary load (``diagecg.bundle.engines``) and by
    ``export.quantize`` around the quantiser.
    """
    out: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode("utf-8", errors="replace"))
