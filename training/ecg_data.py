"""PTB-XL signals for the ECG tokenizer: read (diagecg.io) -> preprocess (diagecg.preprocess) -> torch.

The records are small (1,600 x 12 x 1,000 float32 at 100 Hz is 77 MB), so a
dataset preloads all of them once into one array. Preprocessing is the numpy
pipeline shared with the runtime (STYLE R11); this module only calls it.
Records that fail validation are skipped and counted, never dropped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diagecg.config import PreprocessConfig
from diagecg.constants import N_LEADS
from diagecg.errors import DiagEcgError
from diagecg.io import read_record
from diagecg.preprocess import preprocess
from diagecg.training.ptbxl import PtbxlDataset
from diagecg.types import F32Array

logger = logging.getLogger(__name__)

PTBXL_FOLDER = "ptbxl"  # sub-folder of the shared data root
PTBXL_LABELS = "ptbxl_labels.csv"


def resolve_ptbxl_root(data_dir: str | Path) -> Path:
    """The PTB-XL folder, given either the shared data root (holding ``ptbxl/``) or that folder itself.

    Raises:
        FileNotFoundError: neither ``data_dir`` nor ``data_dir/ptbxl`` holds the labels file.
    """
    d = Path(data_dir)
    for candidate in (d, d / PTBXL_FOLDER):
        if (candidate / PTBXL_LABELS).is_file():
            return candidate
    raise FileNotFoundError(f"no PTB-XL data under {d}: expected {d / PTBXL_FOLDER / PTBXL_LABELS} "
                            f"or {d / PTBXL_LABELS}")


def source_fs_hz(model_fs_hz: int) -> int:
    """Which PTB-XL release (100 or 500 Hz) to read for a model rate; preprocess resamples the rest."""
    return 100 if model_fs_hz <= 100 else 500


def load_signals(
    ptbxl: PtbxlDataset,
    ids: Sequence[int],
    preprocess_cfg: PreprocessConfig,
    progress: bool = True,
) -> tuple[list[int], F32Array, dict[int, str]]:
    """Read and preprocess PTB-XL records.

    Args:
        ptbxl: the labelled dataset (gives record paths).
        ids: ecg_ids to load; their records must exist at ``source_fs_hz(preprocess_cfg.fs_hz)``.
        preprocess_cfg: the model's preprocessing.
        progress: show a tqdm bar.

    Returns:
        kept ids, float32 signals (len(kept), 12, n_samples) z-scored per lead, and
        skipped id -> reason for the records that failed validation.
    """
    fs_src = source_fs_hz(preprocess_cfg.fs_hz)
    kept: list[int] = []
    skipped: dict[int, str] = {}
    out = np.empty((len(ids), N_LEADS, preprocess_cfg.n_samples), dtype=np.float32)
    for ecg_id in tqdm(ids, desc=f"reading PTB-XL {fs_src} Hz", unit="rec", disable=not progress):
        path = ptbxl.record_path(ecg_id, fs_src).with_suffix(".hea")
        try:
            x = preprocess(read_record(path), preprocess_cfg)  # (leads, n_samples) float32
        except DiagEcgError as e:
            skipped[ecg_id] = str(e)
            continue
        out[len(kept)] = x
        kept.append(ecg_id)
    if skipped:
        first = "; ".join(f"{i}: {r}" for i, r in list(skipped.items())[:3])
        logger.warning("skipped %d of %d records that failed validation (%s%s)", len(skipped), len(ids),
                       first, " ..." if len(skipped) > 3 else "")
    return kept, out[: len(kept)], skipped


class EcgSignalDataset(torch.utils.data.Dataset):
    """Preloaded, preprocessed PTB-XL signals; item i is a float32 tensor (12, n_samples).

    Args:
        ptbxl: the labelled dataset.
        ids: ecg_ids to load (e.g. ``ptbxl.ids(folds, fs_hz=source_fs_hz(cfg.fs_hz))``).
        preprocess_cfg: the model's preprocessing.
        progress: show a tqdm bar while loading.

    Attributes:
        ids: ecg_ids that loaded, in item order.
        signals: float32 tensor (len(ids), 12, n_samples).
        skipped: ecg_id -> reason, for records that failed validation.
    """

    def __init__(self, ptbxl: PtbxlDataset, ids: Sequence[int], preprocess_cfg: PreprocessConfig,
                 progress: bool = True) -> None:
        self.ids, signals, self.skipped = load_signals(ptbxl, ids, preprocess_cfg, progress=progress)
        self.signals = torch.from_numpy(signals)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.signals[i]
