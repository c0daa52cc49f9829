"""Encode PTB-XL records into FSQ indices with a trained tokenizer (input of the LLM stages).

The cache is an ``.npz`` (``constants.ECG_TOKEN_CACHE``) whose keys are
``str(ecg_id)`` and whose values are int64 ``(tokens,)`` index arrays (summary codes, then frames).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diagecg.constants import ECG_TOKEN_CACHE
from diagecg.datasets.ptbxl import PtbxlDataset
from diagecg.nn.checkpoint import load_tokenizer
from diagecg.nn.ecg_tokenizer import EcgTokenizer
from diagecg.training.ecg_data import load_signals, source_fs_hz
from diagecg.types import F32Array, I64Array

logger = logging.getLogger(__name__)

_READ_CHUNK = 512  # records read and preprocessed at a time, to bound memory on the full 500 Hz set


def encode_signals(
    tokenizer: EcgTokenizer, signals: F32Array, features: F32Array | None = None, batch_size: int = 64
) -> I64Array:
    """Preprocessed signals (and their measurements) -> ECG token indices.

    Args:
        tokenizer: a trained tokenizer (its device is used).
        signals: float32 (B, leads, samples), z-scored per lead (diagecg.preprocess).
        features: float32 (B, M) measurements (diagecg.features); required when the tokenizer has a
            summary head, ignored otherwise.
        batch_size: records per forward pass.

    Returns:
        int64 (B, tokens) indices in [0, tokenizer.n_codes): the summary codes, then the frames.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is invalid: must be >= 1")
    device = next(tokenizer.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(signals, dtype=np.float32))
    f = None
    if tokenizer.summary is not None:
        if features is None:
            raise ValueError("this ECG tokenizer has summary tokens: pass the records' measurements")
        f = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    tokenizer.check_signal(x)
    was_training = tokenizer.training
    tokenizer.eval()
    out = [
        tokenizer.encode(
            x[i : i + batch_size].to(device), None if f is None else f[i : i + batch_size].to(device)
        ).cpu()
        for i in range(0, len(x), batch_size)
    ]
    tokenizer.train(was_training)
    if not out:
        return np.zeros((0, tokenizer.n_tokens), dtype=np.int64)
    return torch.cat(out).numpy().astype(np.int64, copy=False)


def encode_ptbxl(
    tokenizer_dir: str | Path,
    data_dir: str | Path,
    out_path: str | Path | None = None,
    batch_size: int = 64,
    folds: tuple[int, ...] | None = None,
    progress: bool = True,
    full: bool = True,
) -> dict[int, I64Array]:
    """Encode every PTB-XL record available at the tokenizer's rate and save the token cache.

    Args:
        tokenizer_dir: checkpoint folder of ``diagecg train tokenizer``.
        data_dir: shared data root (holding ``ptbxl/``) or the ptbxl folder.
        out_path: where to write the ``.npz``; default ``tokenizer_dir / constants.ECG_TOKEN_CACHE``.
        batch_size: records per forward pass.
        folds: only these PTB-XL folds; None = every record (the LLM stages pick their splits).
        progress: show a tqdm bar.
        full: also the records of ``ptbxl_full/`` when the data root has it (unpacked into the cache
            on first use; :class:`diagecg.datasets.ptbxl.PtbxlDataset`).

    Returns:
        ecg_id -> int64 (tokens,) indices, for the records that passed validation
        (failures are skipped and logged with a count).
    """
    path = Path(out_path) if out_path is not None else Path(tokenizer_dir) / ECG_TOKEN_CACHE
    if path.suffix != ".npz":
        raise ValueError(f"out_path={str(path)!r} must end in .npz")
    tokenizer, pre_cfg, _, _ = load_tokenizer(tokenizer_dir)
    ptbxl = PtbxlDataset.from_data_dir(data_dir, full=full)
    ids = ptbxl.ids(folds, fs_hz=source_fs_hz(pre_cfg.fs_hz))
    tokens: dict[int, I64Array] = {}
    n_skipped = 0
    with tqdm(total=len(ids), desc="encoding ECGs", unit="rec", disable=not progress) as bar:
        for start in range(0, len(ids), _READ_CHUNK):
            chunk = ids[start : start + _READ_CHUNK]
            loaded = load_signals(ptbxl, chunk, pre_cfg, progress=False)
            n_skipped += len(loaded.skipped)
            rows = encode_signals(tokenizer, loaded.signals, loaded.features, batch_size)
            for ecg_id, row in zip(loaded.ids, rows, strict=True):
                tokens[ecg_id] = row
            bar.update(len(chunk))
    if n_skipped:
        logger.warning("encode_ptbxl: %d of %d records skipped (failed validation)", n_skipped, len(ids))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{str(k): v for k, v in tokens.items()})  # type: ignore[arg-type]
    logger.info("wrote %d token sequences to %s", len(tokens), path)
    return tokens


def load_token_cache(path: str | Path) -> dict[int, I64Array]:
    """Read a cache written by ``encode_ptbxl``: ecg_id -> int64 (frames,) indices."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ECG token cache {p} not found (write it with encode_ptbxl)")
    with np.load(p) as data:
        return {int(k): data[k].astype(np.int64, copy=False) for k in data.files}
