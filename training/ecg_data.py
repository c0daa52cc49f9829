"""PTB-XL signals for the ECG tokenizer: read (diagecg.io) -> preprocess (diagecg.preprocess) -> torch.

The records are small (1,600 x 12 x 1,000 float32 at 100 Hz is 77 MB), so they are
preloaded once into one array, with their measurements (``diagecg.features``). Preprocessing is the numpy
pipeline shared with the runtime (conventions: defined once); this module only calls it.
Records that fail validation are skipped and counted, never dropped silently.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from diagecg.config import PreprocessConfig
from diagecg.constants import N_LEADS
from diagecg.datasets.ptbxl import PtbxlDataset
from diagecg.errors import DiagEcgError
from diagecg.features import FEATURE_NAMES
from diagecg.io import read_record
from diagecg.preprocess import measure_signal, prepare_signal, zscore
from diagecg.types import F32Array

logger = logging.getLogger(__name__)


def source_fs_hz(model_fs_hz: int) -> int:
    """Which PTB-XL release (100 or 500 Hz) to read for a model rate; preprocess resamples the rest."""
    return 100 if model_fs_hz <= 100 else 500


@dataclasses.dataclass
class LoadedRecords:
    """Preprocessed PTB-XL records, row-aligned.

    Attributes:
        ids: ecg_ids that passed validation, in row order.
        signals: float32 (N, 12, n_samples), z-scored per lead (the encoder input).
        features: float32 (N, len(diagecg.features.FEATURE_NAMES)) measurements of the same window.
        skipped: ecg_id -> reason, for the records that failed validation.
        prepared_mv: float32 (N, 12, n_samples) in mV before the z-score (``keep_mv=True`` only),
            for augmentations that must act on physical units.
    """

    ids: list[int]
    signals: F32Array
    features: F32Array
    skipped: dict[int, str]
    prepared_mv: F32Array | None = None


def load_signals(
    ptbxl: PtbxlDataset,
    ids: Sequence[int],
    preprocess_cfg: PreprocessConfig,
    progress: bool = True,
    keep_mv: bool = False,
) -> LoadedRecords:
    """Read, preprocess and measure PTB-XL records.

    Args:
        ptbxl: the labelled dataset (gives record paths).
        ids: ecg_ids to load; their records must exist at ``source_fs_hz(preprocess_cfg.fs_hz)``.
        preprocess_cfg: the model's preprocessing.
        progress: show a tqdm bar.
        keep_mv: also return the prepared signals in mV.

    Returns:
        The records that passed validation (signals, measurements) and the reasons of those that did not.
    """
    fs_src = source_fs_hz(preprocess_cfg.fs_hz)
    kept: list[int] = []
    skipped: dict[int, str] = {}
    n = preprocess_cfg.n_samples
    out = np.empty((len(ids), N_LEADS, n), dtype=np.float32)
    feats = np.empty((len(ids), len(FEATURE_NAMES)), dtype=np.float32)
    mv = np.empty((len(ids), N_LEADS, n), dtype=np.float32) if keep_mv else None
    for ecg_id in tqdm(ids, desc=f"reading PTB-XL {fs_src} Hz", unit="rec", disable=not progress):
        path = ptbxl.record_path(ecg_id, fs_src).with_suffix(".hea")
        try:
            record = read_record(path)
            x = prepare_signal(record.signal, record.fs_hz, preprocess_cfg, record.lead_names, record.source)
        except DiagEcgError as e:
            skipped[ecg_id] = str(e)
            continue
        k = len(kept)
        out[k] = zscore(x, preprocess_cfg)  # (leads, n_samples) float32
        feats[k] = measure_signal(
            record.signal, record.fs_hz, preprocess_cfg, record.lead_names, record.source
        )
        if mv is not None:
            mv[k] = x
        kept.append(ecg_id)
    if skipped:
        first = "; ".join(f"{i}: {r}" for i, r in list(skipped.items())[:3])
        logger.warning(
            "skipped %d of %d records that failed validation (%s%s)",
            len(skipped),
            len(ids),
            first,
            " ..." if len(skipped) > 3 else "",
        )
    n_kept = len(kept)
    return LoadedRecords(kept, out[:n_kept], feats[:n_kept], skipped, None if mv is None else mv[:n_kept])
