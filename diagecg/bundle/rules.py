"""What the bundle writer and the loader both enforce: how a file is hashed, and how many ECG codes the
vocabulary holds for a given FSQ codebook and summary."""

from __future__ import annotations

import hashlib
from pathlib import Path

from diagecg.config import FSQConfig, SummaryConfig, VocabConfig


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def check_n_codes(
    vocab: VocabConfig, fsq: FSQConfig, summary: SummaryConfig | None, error: type[Exception], src: str
) -> None:
    """``vocab.n_codes`` must be the frame codebook plus the summary's ``findings * levels`` codes."""
    extra = f" + summary codes={summary.n_codes} (findings*levels + measurement bins)" if summary else ""
    if vocab.n_codes != fsq.codebook_size + (summary.n_codes if summary else 0):
        raise error(f"{src}: vocab.n_codes={vocab.n_codes} != prod(fsq.levels)={fsq.codebook_size}{extra}")
