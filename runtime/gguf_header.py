"""The hyperparameters of a GGUF file, read from its key/value header before llama.cpp allocates anything.

llama.cpp sizes its context from the ``n_ctx`` it is given (the manifest's ``generation.n_ctx``): an
absurd value allocates gigabytes before failing, and one above 2**32 wraps silently (the C field is
32-bit). The model's own hyperparameters bound it: its trained context length, and the KV cache that
context needs. llama.cpp's vocabulary-only load does not read them, so the header is parsed here
(GGUF v2/v3: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md): magic ``GGUF``, version,
tensor count and key/value count, then each key with a typed value; every length is checked against
the file's size before it is read.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Any, BinaryIO

from diagecg.errors import BundleError

GGUF_MAGIC = b"GGUF"
MAX_KV = 1 << 16  # a real header has a few dozen keys
# GGUF value types -> struct format of one scalar (8: string, 9: array are read apart)
_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9


@dataclasses.dataclass(frozen=True)
class GgufHparams:
    """What bounds a context: the architecture's trained context length and its KV-cache geometry."""

    architecture: str
    context_length: int
    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int

    def kv_cache_bytes(self, n_ctx: int, bytes_per_value: int = 2) -> int:
        """Bytes of the K and V caches for ``n_ctx`` tokens (f16 cells, llama.cpp's default)."""
        kv_width = self.embedding_length * self.head_count_kv // max(1, self.head_count)
        return 2 * self.block_count * n_ctx * kv_width * bytes_per_value


class _Reader:
    def __init__(self, f: BinaryIO, size: int, path: Path) -> None:
        self.f, self.size, self.path = f, size, path

    def take(self, n: int) -> bytes:
        if n < 0 or self.f.tell() + n > self.size:
            raise BundleError(
                f"{self.path}: GGUF header is truncated or damaged (a field of {n} bytes at "
                f"offset {self.f.tell()} runs past the end of the {self.size}-byte file)"
            )
        return self.f.read(n)

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.scalar("<Q")).decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        if n < 0 or self.f.tell() + n > self.size:
            self.take(n)  # raises
        self.f.seek(n, 1)

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.scalar("<I"), self.scalar("<Q")
            if etype in _SCALARS:
                self.skip(count * struct.calcsize(_SCALARS[etype]))
            elif etype == _STRING:  # e.g. the vocabulary: each string's length is read, its bytes skipped
                if count > self.size:
                    self.take(count)  # raises
                for _ in range(count):
                    self.skip(self.scalar("<Q"))
            else:
                raise BundleError(f"{self.path}: GGUF array of value type {etype} is not supported")
            return None
        raise BundleError(f"{self.path}: GGUF value type {vtype} is unknown (damaged header?)")


def read_gguf_hparams(path: str | Path) -> GgufHparams:
    """The context-bounding hyperparameters of a GGUF file (``<arch>.context_length`` ...).

    Raises:
        BundleError: not a GGUF file, a truncated or damaged header, or a missing or zero value.
    """
    p = Path(path)
    size = p.stat().st_size
    kv: dict[str, Any] = {}
    with p.open("rb") as f:
        r = _Reader(f, size, p)
        if r.take(4) != GGUF_MAGIC:
            raise BundleError(f"{p}: not a GGUF file (no 'GGUF' magic)")
        version = r.scalar("<I")
        if version not in (2, 3):
            raise BundleError(f"{p}: GGUF version {version} is not supported (2 or 3)")
        r.scalar("<Q")  # tensor count
        n_kv = r.scalar("<Q")
        if n_kv > MAX_KV:
            raise BundleError(f"{p}: GGUF header declares {n_kv} keys (damaged header?)")
        for _ in range(n_kv):
            key = r.string()
            kv[key] = r.value(r.scalar("<I"))
    arch = kv.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise BundleError(f"{p}: GGUF header has no general.architecture")
    values = {}
    for name, key in (
        ("context_length", "context_length"),
        ("block_count", "block_count"),
        ("embedding_length", "embedding_length"),
        ("head_count", "attention.head_count"),
    ):
        v = kv.get(f"{arch}.{key}")
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise BundleError(f"{p}: GGUF header's {arch}.{key} is {v!r}; a positive integer is needed")
        values[name] = v
    head_kv = kv.get(f"{arch}.attention.head_count_kv", values["head_count"])
    if isinstance(head_kv, bool) or not isinstance(head_kv, int) or head_kv <= 0:
        head_kv = values["head_count"]
    return GgufHparams(architecture=arch, head_count_kv=head_kv, **values)
