"""PTB-XL over ``shared/data/ptbxl``: labels, patient-stratified folds, reports, record paths.

PTB-XL's ``strat_fold`` (1-10) keeps all records of a patient in one fold; the
recommended split is folds 1-8 train, 9 validation, 10 test (Wagner et al. 2020).
"""

from __future__ import annotations

import ast
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from diagecg.types import PatientInfo

TRAIN_FOLDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
VALID_FOLDS: tuple[int, ...] = (9,)
TEST_FOLDS: tuple[int, ...] = (10,)

# sampling rate -> (records folder, file suffix)
_RECORD_LAYOUT: dict[int, tuple[str, str]] = {100: ("records100", "lr"), 500: ("records500", "hr")}


@dataclass
class PtbxlEntry:
    """One labelled PTB-XL ECG."""

    ecg_id: int
    patient_id: int | None
    strat_fold: int
    scp_codes: dict[str, float]  # statement -> likelihood (0-100; 0 = stated without likelihood)
    report_de: str
    patient: PatientInfo
    superclasses: list[str] = field(default_factory=list)


def _float_or_none(text: str) -> float | None:
    if text is None or text.strip() == "":
        return None
    v = float(text)
    return None if math.isnan(v) else v


class PtbxlDataset:
    """Labels of ``root/ptbxl_labels.csv`` and the record files that exist under ``root``.

    Args:
        root: the ``ptbxl`` folder (holds ``ptbxl_labels.csv``, ``records100/``...).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        labels = self.root / "ptbxl_labels.csv"
        if not labels.is_file():
            raise FileNotFoundError(f"PTB-XL labels not found: {labels} (expected shared/data/ptbxl)")
        self.entries: dict[int, PtbxlEntry] = {}
        with labels.open(newline="") as f:
            for row in csv.DictReader(f):
                sex_code = _float_or_none(row["sex"])
                patient = PatientInfo(
                    age_years=_float_or_none(row["age"]),
                    sex=None if sex_code is None else ("female" if sex_code == 1 else "male"),
                )
                pid = _float_or_none(row["patient_id"])
                raw_super = row["diagnostic_superclass"]
                superclasses = json.loads(raw_super) if raw_super else []
                ecg_id = int(row["ecg_id"])
                self.entries[ecg_id] = PtbxlEntry(
                    ecg_id=ecg_id,
                    patient_id=None if pid is None else int(pid),
                    strat_fold=int(row["strat_fold"]),
                    scp_codes={k: float(v) for k, v in ast.literal_eval(row["scp_codes"]).items()},
                    report_de=row["report"] or "",
                    patient=patient,
                    superclasses=superclasses,
                )

    def record_path(self, ecg_id: int, fs_hz: int = 100) -> Path:
        """Path of the record's header without suffix, e.g. ``records100/00000/00002_lr``."""
        if fs_hz not in _RECORD_LAYOUT:
            raise ValueError(f"PTB-XL records exist at {sorted(_RECORD_LAYOUT)} Hz, not {fs_hz}")
        folder, suffix = _RECORD_LAYOUT[fs_hz]
        bucket = f"{(ecg_id // 1000) * 1000:05d}"
        return self.root / folder / bucket / f"{ecg_id:05d}_{suffix}"

    def has_record(self, ecg_id: int, fs_hz: int = 100) -> bool:
        return self.record_path(ecg_id, fs_hz).with_suffix(".hea").is_file()

    def ids(self, folds: tuple[int, ...] | None = None, fs_hz: int = 100) -> list[int]:
        """ecg_ids in ``folds`` (all folds if None) whose record exists at ``fs_hz``, sorted."""
        return sorted(
            i for i, e in self.entries.items()
            if (folds is None or e.strat_fold in folds) and self.has_record(i, fs_hz)
        )


# --- findings: what a record is labelled with, as one flat namespace ---------------------------

SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")  # PTB-XL diagnostic superclasses


def has_finding(entry: PtbxlEntry, code: str) -> bool:
    """Whether ``entry`` shows ``code``: a superclass (``diagnostic_superclass``) or an SCP statement
    present with any likelihood. NORM is both and means the same either way."""
    if code in SUPERCLASSES and code != "NORM":
        return code in entry.superclasses
    return code in entry.scp_codes


def finding_labels(ptbxl: PtbxlDataset, ids: list[int], findings: tuple[str, ...]) -> list[list[float]]:
    """0/1 labels, one row per id and one column per finding (:func:`has_finding`)."""
    return [[float(has_finding(ptbxl.entries[i], c)) for c in findings] for i in ids]


def frequent_findings(ptbxl: PtbxlDataset, ids: list[int], min_positives: int) -> tuple[str, ...]:
    """The superclasses, then every SCP statement present in at least ``min_positives`` of ``ids``
    (most frequent first; ties by code): the findings a summary head can learn from these records."""
    counts: dict[str, int] = {}
    for i in ids:
        for code in ptbxl.entries[i].scp_codes:
            counts[code] = counts.get(code, 0) + 1
    statements = sorted((c for c, k in counts.items() if k >= min_positives and c not in SUPERCLASSES),
                        key=lambda c: (-counts[c], c))
    return (*SUPERCLASSES, *statements)
