"""Array aliases and the EcgRecord dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from diagecg.errors import InputError

F32Array = NDArray[np.float32]
I64Array = NDArray[np.int64]
F64Array = NDArray[np.float64]


# what a patient's features may be (PatientInfo checks them; the CLI's option ranges are the same)
PATIENT_LIMITS: dict[str, tuple[float, float]] = {
    "age_years": (0.0, 125.0),
    "height_cm": (30.0, 260.0),
    "weight_kg": (1.0, 400.0),
}
PATIENT_SEXES: tuple[str, ...] = ("male", "female")


@dataclass(frozen=True)
class PatientInfo:
    """Tabular patient features used in the structured prompt; None when unknown.

    Raises:
        InputError: a number that is not finite or outside ``PATIENT_LIMITS`` (a typo or an
            anonymisation marker such as PTB-XL's age 300, never an age), or a sex other than
            ``"male"`` / ``"female"``.
    """

    age_years: float | None = None
    sex: str | None = None  # "male" | "female" | None
    height_cm: float | None = None
    weight_kg: float | None = None

    def __post_init__(self) -> None:
        for name, (low, high) in PATIENT_LIMITS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or not low <= value <= high
            ):
                raise InputError(
                    f"patient {name}={value!r} is invalid: a number in [{low:g}, {high:g}] or None"
                )
        if self.sex is not None and self.sex not in PATIENT_SEXES:
            raise InputError(f"patient sex={self.sex!r} is invalid: one of {PATIENT_SEXES} or None")

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
        checked: set by ``diagecg.record`` when the record passed validation: a digest of the signal, rate,
            leads and the thresholds it was checked with. A record built by hand (or changed since) does
            not match it, so the pipeline checks it as it checks a file (``diagecg.record.check_record``).
    """

    signal: F32Array
    fs_hz: float
    lead_names: tuple[str, ...]
    patient: PatientInfo = field(default_factory=PatientInfo)
    record_id: str = ""
    source: str = ""
    warnings: list[str] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    checked: bytes = field(default=b"", init=False, repr=False, compare=False)

    @property
    def duration_s(self) -> float:
        return self.signal.shape[1] / self.fs_hz
