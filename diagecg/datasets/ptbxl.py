"""PTB-XL over ``shared/data/ptbxl`` and ``shared/data/ptbxl_full``: labels, patient-stratified folds,
reports, record paths, and which labels a record has at all.

PTB-XL's ``strat_fold`` (1-10) keeps all records of a patient in one fold; the
recommended split is folds 1-8 train, 9 validation, 10 test (Wagner et al. 2020).

Two sources (``shared/data/README.md``, ``shared/data/ptbxl_full/README.md``):

* ``ptbxl/``: 1,600 records with ``ecg_id`` < 2000 (a random sample of PTB-XL), every one labelled with
  its SCP statements. Its labels file also has rows for some records with ``ecg_id`` >= 2000 and no
  signal here: they are records of ``ptbxl_full/`` (the two files agree on them).
* ``ptbxl_full/``: 19,784 more records (``ecg_id`` >= 2000, 100 Hz only), packed; unpacked once into the
  cache (:mod:`diagecg.datasets.cache`). Every record has its diagnostic superclasses and its split; the
  SCP statements (and report, age, sex) only 5,239 have, and those are **AF-enriched** (about 27% AFIB,
  against about 7% in PTB-XL). So:

  - a statement finding of a record without statements is *unknown*, never "absent"
    (:func:`finding_state` returns None, :func:`finding_labels` NaN; ``PtbxlEntry.statements_labelled``);
  - :meth:`PtbxlDataset.statement_weights` gives each statement-labelled record an importance weight
    that brings the weighted AFIB prevalence of the enriched subset back to PTB-XL's (estimated on
    ``ptbxl/``'s training folds): use it wherever prevalence matters (priors, calibration, thresholds,
    majority baselines, class weights);
  - the exact ``strat_fold`` of 11,682 training-split records is not known (only that it is one of
    1-8). **Fold rule:** such a record is in :meth:`PtbxlDataset.ids` exactly when the requested folds
    contain all of the training folds 1-8 (or no folds are given); for any other fold set it is left out,
    with a log line. It can therefore never reach folds 9 or 10, nor a subset of the training folds
    where fold membership would matter (e.g. cross-validation).
"""

from __future__ import annotations

import ast
import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from diagecg.types import F64Array, PatientInfo

logger = logging.getLogger(__name__)

TRAIN_FOLDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
VALID_FOLDS: tuple[int, ...] = (9,)
TEST_FOLDS: tuple[int, ...] = (10,)

LABELS_FILE = "ptbxl_labels.csv"  # in ptbxl/
FULL_LABELS_FILE = "ptbxl_labels_full.csv"  # in ptbxl_full/
FULL_CACHE_NAME = "ptbxl_full"  # sub-folder of the cache root (diagecg.datasets.cache)
# the packed files of ptbxl_full/ (sizes) and its id list (sha256): what identifies an unpacked copy
FULL_PACKED_FILES: tuple[str, ...] = ("records100.bin.xz", "headers100.tar.xz")
FULL_ID_LIST = "ids.txt"
FULL_FIRST_ID = 2000  # ptbxl_full holds ecg_id >= 2000; ptbxl/'s rows with such ids are its labelled subset
ENRICHED_STATEMENT = "AFIB"  # what ptbxl_full's statement-labelled subset was collected for

Split = Literal["train", "val", "test"]
Source = Literal["ptbxl", "ptbxl_full"]
_SPLIT_FOLDS: dict[str, tuple[int, ...]] = {"train": TRAIN_FOLDS, "val": VALID_FOLDS, "test": TEST_FOLDS}

# sampling rate -> (records folder, file suffix)
_RECORD_LAYOUT: dict[int, tuple[str, str]] = {100: ("records100", "lr"), 500: ("records500", "hr")}


@dataclass
class PtbxlEntry:
    """One PTB-XL ECG and what is known about it."""

    ecg_id: int
    patient_id: int | None
    strat_fold: int | None  # None: a training-split record of ptbxl_full whose exact fold is unknown
    scp_codes: dict[str, float]  # statement -> likelihood (0-100; 0 = stated without likelihood)
    report_de: str  # the report as written (mostly German; English for some); "" where none
    patient: PatientInfo
    superclasses: list[str] = field(default_factory=list)
    # False: the record's SCP statements are not known (``scp_codes`` is empty for that reason, not
    # because nothing was found); only its superclasses are
    statements_labelled: bool = True
    source: Source = "ptbxl"  # which folder holds the signal

    @property
    def split(self) -> Split:
        """ "train" (folds 1-8, or an unknown training fold), "val" (9) or "test" (10)."""
        if self.strat_fold is None or self.strat_fold in TRAIN_FOLDS:
            return "train"
        return "val" if self.strat_fold in VALID_FOLDS else "test"


def _float_or_none(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    v = float(text)
    return None if math.isnan(v) else v


def _patient(row: dict[str, str]) -> PatientInfo:
    sex_code = _float_or_none(row.get("sex"))
    return PatientInfo(
        age_years=_float_or_none(row.get("age")),
        sex=None if sex_code is None else ("female" if sex_code == 1 else "male"),
    )


def _entry(row: dict[str, str], source: Source) -> PtbxlEntry:
    """One row of either labels file (ptbxl_full's rows may lack ``scp_codes`` and ``strat_fold``)."""
    pid = _float_or_none(row.get("patient_id"))
    raw_super = row.get("diagnostic_superclass") or ""
    raw_codes = (row.get("scp_codes") or "").strip()
    fold = _float_or_none(row.get("strat_fold"))
    ecg_id = int(row["ecg_id"])
    if fold is None and row.get("split") != "train":
        raise ValueError(f"ecg_id {ecg_id}: no strat_fold, and split {row.get('split')!r} is not 'train'")
    if fold is not None and row.get("split") and int(fold) not in _SPLIT_FOLDS[row["split"]]:
        raise ValueError(f"ecg_id {ecg_id}: strat_fold {int(fold)} is not in split {row['split']!r}")
    return PtbxlEntry(
        ecg_id=ecg_id,
        patient_id=None if pid is None else int(pid),
        strat_fold=None if fold is None else int(fold),
        scp_codes={k: float(v) for k, v in ast.literal_eval(raw_codes).items()} if raw_codes else {},
        report_de=row.get("report") or "",
        patient=_patient(row),
        superclasses=json.loads(raw_super) if raw_super else [],
        statements_labelled=bool(raw_codes),
        source=source,
    )


class PtbxlDataset:
    """Labels of ``root/ptbxl_labels.csv`` (and of ``full_root/ptbxl_labels_full.csv`` when given) and the
    record files that exist.

    Args:
        root: the ``ptbxl`` folder (holds ``ptbxl_labels.csv``, ``records100/``...).
        full_root: the ``ptbxl_full`` folder, or None to read ``ptbxl/`` alone. Its signals are unpacked
            into the cache the first time a record of it is asked for.
        cache_dir: cache root for the unpacked signals; None = ``$DIAGECG_CACHE`` or ``~/.cache/diagecg``.

    Where both labels files have a row for an ecg_id (about 2,800 of ptbxl_full's labelled records), the
    row of ``ptbxl/`` is kept: it is PTB-XL's own database row, and the two agree on the statements and
    folds of every one of them. Its signal is ptbxl_full's.
    """

    def __init__(
        self, root: str | Path, full_root: str | Path | None = None, cache_dir: str | Path | None = None
    ) -> None:
        self.root = Path(root)
        self.full_root = None if full_root is None else Path(full_root)
        self.cache_dir = cache_dir
        self._full_records: Path | None = None
        labels = self.root / LABELS_FILE
        if not labels.is_file():
            raise FileNotFoundError(f"PTB-XL labels not found: {labels} (expected shared/data/ptbxl)")
        self.entries: dict[int, PtbxlEntry] = {}
        with labels.open(newline="") as f:
            for row in csv.DictReader(f):
                e = _entry(row, "ptbxl")
                self.entries[e.ecg_id] = e
        if self.full_root is not None:
            full_labels = self.full_root / FULL_LABELS_FILE
            if not full_labels.is_file():
                raise FileNotFoundError(f"ptbxl_full labels not found: {full_labels}")
            with full_labels.open(newline="") as f:
                for row in csv.DictReader(f):
                    e = _entry(row, "ptbxl_full")
                    if e.ecg_id in self.entries:
                        self.entries[e.ecg_id].source = "ptbxl_full"
                    else:
                        self.entries[e.ecg_id] = e
        self._weights: dict[int, float] | None = None

    @classmethod
    def from_data_dir(
        cls, data_dir: str | Path, full: bool = True, cache_dir: str | Path | None = None
    ) -> PtbxlDataset:
        """The dataset of a shared data root (or of the ptbxl folder itself), with ``ptbxl_full/`` when
        ``full`` and the data root has it (:func:`diagecg.datasets.resolve_data_roots`)."""
        from diagecg.datasets import resolve_data_roots

        roots = resolve_data_roots(data_dir)
        return cls(roots.ptbxl, roots.ptbxl_full_or_none if full else None, cache_dir)

    @property
    def full_records_root(self) -> Path:
        """The folder holding ptbxl_full's unpacked ``records100/`` (unpacked now if it is not yet).

        Raises:
            ValueError: this dataset has no ``full_root``.
        """
        if self.full_root is None:
            raise ValueError("this PtbxlDataset was built without ptbxl_full")
        if self._full_records is None:
            from diagecg.datasets.cache import unpacked

            self._full_records = unpacked(
                self.full_root, FULL_CACHE_NAME, FULL_PACKED_FILES, (FULL_ID_LIST,), cache_dir=self.cache_dir
            )
        return self._full_records

    def record_path(self, ecg_id: int, fs_hz: int = 100) -> Path:
        """Path of the record's header without suffix, e.g. ``.../records100/00000/00002_lr``: under
        ``root``, or for a ptbxl_full record at 100 Hz under the unpacked cache."""
        if fs_hz not in _RECORD_LAYOUT:
            raise ValueError(f"PTB-XL records exist at {sorted(_RECORD_LAYOUT)} Hz, not {fs_hz}")
        folder, suffix = _RECORD_LAYOUT[fs_hz]
        e = self.entries.get(ecg_id)
        in_full = e is not None and e.source == "ptbxl_full" and fs_hz == 100
        base = self.full_records_root if in_full else self.root
        bucket = f"{(ecg_id // 1000) * 1000:05d}"
        return base / folder / bucket / f"{ecg_id:05d}_{suffix}"

    def has_record(self, ecg_id: int, fs_hz: int = 100) -> bool:
        return self.record_path(ecg_id, fs_hz).with_suffix(".hea").is_file()

    def ids(self, folds: Sequence[int] | None = None, fs_hz: int = 100) -> list[int]:
        """ecg_ids in ``folds`` (all folds if None) whose record exists at ``fs_hz``, sorted.

        A record whose training fold is unknown (ptbxl_full) is included exactly when ``folds`` is None
        or contains every one of the training folds 1-8 (see the module docstring).
        """
        with_unknown = folds is None or set(TRAIN_FOLDS) <= set(folds)
        out, left_out = [], 0
        for i, e in self.entries.items():
            if e.strat_fold is None:
                if not with_unknown:
                    left_out += 1
                    continue
            elif folds is not None and e.strat_fold not in folds:
                continue
            if self.has_record(i, fs_hz):
                out.append(i)
        if left_out and folds is not None and set(folds) & set(TRAIN_FOLDS):
            logger.info(
                "%d training records of ptbxl_full whose fold is unknown are left out of folds %s "
                "(they are used only when all of folds 1-8 are asked for)",
                left_out,
                tuple(folds),
            )
        return sorted(out)

    def statements_labelled_ids(self, ids: Sequence[int]) -> list[int]:
        """The ``ids`` whose SCP statements are known, in order."""
        return [i for i in ids if self.entries[i].statements_labelled]

    def statement_weights(self, ids: Sequence[int]) -> F64Array:
        """Importance weight of each record for statement-level prevalence, float64 (len(ids),).

        ``ptbxl/``'s records (a random sample of PTB-XL) weigh 1. The statement-labelled records of the
        AF-enriched subset (``ecg_id`` >= 2000) weigh ``p / q`` with AFIB and ``(1 - p) / (1 - q)``
        without, where ``p`` is the AFIB prevalence of ``ptbxl/``'s training folds and ``q`` that of the
        subset's training records: weighted, the subset shows PTB-XL's AFIB prevalence, and its total
        weight stays its size. Records without statements weigh 0 (they never count for a statement).
        Use the weights for statement priors, calibration, thresholds, majority baselines and class
        weights; superclass labels are known for every record and need none.
        """
        if self._weights is None:
            self._weights = self._compute_weights()
        return np.array([self._weights[i] for i in ids], dtype=np.float64)

    def _compute_weights(self) -> dict[int, float]:
        ref = [
            e
            for e in self.entries.values()
            if e.statements_labelled and e.ecg_id < FULL_FIRST_ID and e.strat_fold in TRAIN_FOLDS
        ]
        enriched = [
            e
            for e in self.entries.values()
            if e.statements_labelled and e.ecg_id >= FULL_FIRST_ID and e.split == "train"
        ]
        w_pos = w_neg = 1.0
        if ref and enriched:
            p = sum(ENRICHED_STATEMENT in e.scp_codes for e in ref) / len(ref)
            q = sum(ENRICHED_STATEMENT in e.scp_codes for e in enriched) / len(enriched)
            if 0 < q < 1:
                w_pos, w_neg = p / q, (1 - p) / (1 - q)
            logger.info(
                "statement weights: %s prevalence %.3f in ptbxl/ training folds (%d records), "
                "%.3f in the enriched subset (%d): weights %.3f with, %.3f without",
                ENRICHED_STATEMENT,
                p,
                len(ref),
                q,
                len(enriched),
                w_pos,
                w_neg,
            )
        out: dict[int, float] = {}
        for i, e in self.entries.items():
            if not e.statements_labelled:
                out[i] = 0.0
            elif e.ecg_id < FULL_FIRST_ID:
                out[i] = 1.0
            else:
                out[i] = w_pos if ENRICHED_STATEMENT in e.scp_codes else w_neg
        return out


# --- findings: what a record is labelled with, as one flat namespace ---------------------------

SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")  # PTB-XL diagnostic superclasses


def is_statement_finding(code: str) -> bool:
    """Whether ``code`` is an SCP statement known only where a record's statements are labelled (the
    superclasses, NORM included, are known for every record)."""
    return code not in SUPERCLASSES


def finding_state(entry: PtbxlEntry, code: str) -> bool | None:
    """Whether ``entry`` shows ``code``: a superclass (``diagnostic_superclass``) or an SCP statement
    present with any likelihood; None where it is not known (a statement of a record without statement
    labels). NORM is both and means the same either way."""
    if code in SUPERCLASSES and (code != "NORM" or not entry.statements_labelled):
        return code in entry.superclasses
    if not entry.statements_labelled:
        return None
    return code in entry.scp_codes


def has_finding(entry: PtbxlEntry, code: str) -> bool:
    """:func:`finding_state` for a finding that must be known.

    Raises:
        ValueError: ``code`` is a statement and ``entry`` has no statement labels (unknown is not "no").
    """
    state = finding_state(entry, code)
    if state is None:
        raise ValueError(f"ecg_id {entry.ecg_id} has no statement labels: whether it shows {code} is unknown")
    return state


def finding_labels(ptbxl: PtbxlDataset, ids: Sequence[int], findings: Sequence[str]) -> list[list[float]]:
    """1/0 labels, one row per id and one column per finding (:func:`finding_state`); NaN where unknown."""
    rows = []
    for i in ids:
        e = ptbxl.entries[i]
        states = (finding_state(e, c) for c in findings)
        rows.append([math.nan if s is None else float(s) for s in states])
    return rows


def finding_weights(ptbxl: PtbxlDataset, ids: Sequence[int], findings: Sequence[str]) -> F64Array:
    """The weight of each cell of :func:`finding_labels`, float64 (len(ids), len(findings)): 1 for a
    superclass, :meth:`PtbxlDataset.statement_weights` for a statement (0 where it is unknown)."""
    w = ptbxl.statement_weights(ids)[:, None]  # (N, 1)
    is_statement = np.array([is_statement_finding(c) for c in findings], dtype=bool)[None, :]  # (1, F)
    return np.where(is_statement, w, 1.0).astype(np.float64)


def frequent_findings(ptbxl: PtbxlDataset, ids: Sequence[int], min_positives: int) -> tuple[str, ...]:
    """The superclasses, then every SCP statement present in at least ``min_positives`` of the ``ids``
    whose statements are labelled (most frequent first; ties by code): the findings a summary head can
    learn from these records."""
    counts: dict[str, int] = {}
    for i in ids:
        e = ptbxl.entries[i]
        if not e.statements_labelled:
            continue
        for code in e.scp_codes:
            counts[code] = counts.get(code, 0) + 1
    statements = sorted(
        (c for c, k in counts.items() if k >= min_positives and c not in SUPERCLASSES),
        key=lambda c: (-counts[c], c),
    )
    return (*SUPERCLASSES, *statements)
