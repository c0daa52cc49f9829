"""Quantise an f16 GGUF with llama.cpp's own quantiser (``llama_model_quantize`` via llama-cpp-python).

llama.cpp quantises each matrix row in blocks: 32 values for Q8_0/Q4_0, 256 for the K-quants. A
tensor whose row width (``ne[0]``) is not a multiple of the block silently falls back to another
type inside llama.cpp (down to F16), so the requested quantisation would not be what ships. We
check the widths first and raise instead, unless the caller allows the fallback.
"""

from __future__ import annotations

import ctypes
import logging
import os
from pathlib import Path

import gguf

from diagecg.constants import QUANT_TYPES
from diagecg.native_stderr import native_stderr_captured

logger = logging.getLogger(__name__)

# quant name -> (llama_ftype value (llama.h LLAMA_FTYPE_MOSTLY_*), block width of its main type)
QUANT_FTYPES: dict[str, tuple[int, int]] = {
    "f16": (1, 1),
    "q8_0": (7, 32),
    "q4_0": (2, 32),
    "q4_k_m": (15, 256),
    "q5_k_m": (17, 256),
    "q6_k": (18, 256),
}
assert set(QUANT_FTYPES) == set(QUANT_TYPES), "QUANT_FTYPES must cover constants.QUANT_TYPES"


def incompatible_tensors(src: str | Path, block: int) -> list[tuple[str, int]]:
    """(name, row width) of every matrix in ``src`` whose rows are not a multiple of ``block``."""
    reader = gguf.GGUFReader(str(src), "r")
    out = []
    for t in reader.tensors:
        if len(t.shape) >= 2 and int(t.shape[0]) % block:
            out.append((t.name, int(t.shape[0])))
    return out


def quantize_gguf(
    src: str | Path,
    dst: str | Path,
    quant: str,
    *,
    allow_fallback: bool = False,
    n_threads: int | None = None,
) -> Path:
    """Quantise GGUF ``src`` (f16/f32) into ``dst``.

    Args:
        src: an f16 or f32 GGUF (``export.gguf_convert.convert_hf_to_gguf``).
        dst: the file to write.
        quant: one of ``constants.QUANT_TYPES`` (lower case: ``"q8_0"``, ``"q4_k_m"``...).
        allow_fallback: let llama.cpp store tensors with incompatible widths in another type
            (logged) instead of raising.
        n_threads: quantisation threads; default: all cores.

    Returns:
        ``dst``.

    Raises:
        ValueError: unknown quant, or row widths that the quant cannot hold (without ``allow_fallback``).
        RuntimeError: llama.cpp reported a failure.
    """
    if quant not in QUANT_FTYPES:
        raise ValueError(f"quant={quant!r} is not supported; choose one of {sorted(QUANT_FTYPES)}")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"GGUF {src} not found")
    ftype, block = QUANT_FTYPES[quant]
    bad = incompatible_tensors(src, block)
    if bad:
        listing = ", ".join(f"{n} ({w})" for n, w in bad[:6]) + (" ..." if len(bad) > 6 else "")
        msg = (
            f"{quant} needs row widths that are multiples of {block}; {len(bad)} tensor(s) of {src.name} "
            f"are not: {listing}"
        )
        if not allow_fallback:
            hint = " Use q8_0/q4_0 (blocks of 32)" if block > 32 else ""
            raise ValueError(
                msg + "." + hint + " or pass allow_fallback=True to let llama.cpp store them "
                "in a compatible type."
            )
        logger.warning("%s; llama.cpp stores those in a fallback type", msg)

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = int(n_threads or os.cpu_count() or 1)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with native_stderr_captured() as native_log:
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    log_text = "".join(native_log)
    logger.debug("llama.cpp quantize log:\n%s", log_text)
    if rc != 0 or not dst.is_file():
        tail = "\n".join(log_text.strip().splitlines()[-5:])
        raise RuntimeError(
            f"llama_model_quantize({src.name} -> {dst.name}, {quant}) failed with code {rc}:\n{tail}"
        )
    logger.info("quantised %s -> %s (%s, %.1f MB)", src.name, dst.name, quant, dst.stat().st_size / 1e6)
    return dst
