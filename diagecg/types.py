"""Array aliases and the EcgRecord dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

F32Array = NDArray[np.float32]
I64Array = NDArray[np.int64]


# what a caller may give for a patient (the CLI's option ranges; the runtime API checks the same)
PATIENT_LIMITS: dict[str, tuple[float, float]] = {"age_years": (0.0, 125.0), "height_cm": (30.0, 260.0),
                                                  "weight_kg": (1.0, 400.0)}
PATIENT_SEXES: tuple[str, ...] = ("male", "female")


@dataclass
class PatientInfo:
    """Tabular patient features used in the structured prompt; None when unknown."""

    age_years: float | None = None
    sex: str | None = None  # "male" | "female" | None
    height_cm: float | None = None
    weight_kg: float | None = None

    def with_overrides(self, other: PatientInfo | None) -> PatientInfo:
        """A copy where every non-None field of ``other`` replaces this one's (None keeps ours)."""
        if other is None:
            return self
        return PatientInfo(**{k: (v if v is not None else getattr(self, k)) for k, v in vars(other).items()})


@dataclass
class EcgRecord:
    """One ECG, read and validated.

    Attributes:
        signal: float32 mV, shape (leads, samples), leads in `lead_names` order.
        fs_hz: sampling rate in Hz.
        lead_names: canonical lead names (see constants.CANONICAL_LEADS).
        patient: tabular features parsed from the header comments, when present.
        record_id: the record name (file stem).
        source: the path the record was read from.
        warnings: non-fatal issues met while reading (dropped extra leads...).
        diagnoses: diagnosis codes from the header (PhysioNet Challenge ``#Dx:`` SNOMED CT codes).
    """

    signal: F32Array
    fs_hz: float
    lead_names: tuple[str, ...]
    patient: PatientInfo = field(default_factory=PatientInfo)
    record_id: str = ""
    source: str = ""
    warnings: list[str] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return self.signal.shape[1] / self.fs_hz
