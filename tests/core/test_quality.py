"""check_signal on a real record and on controlled damage to it; thresholds come from QualityConfig."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diagecg.config import QualityConfig
from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import SignalQualityError
from diagecg.io import read_record
from diagecg.quality import check_signal, flat_leads


@pytest.fixture(scope="module")
def mv() -> np.ndarray:
    rec = read_record(Path(__file__).resolve().parents[1] / "fixtures" / "records" / "00003_lr")
    return rec.signal.astype(np.float64)  # (12, 1000) mV, 100 Hz


def test_real_record_passes(mv: np.ndarray) -> None:
    assert check_signal(mv, 100.0, CANONICAL_LEADS, "rec") == []


def test_dc_offset_alone_is_not_implausible(mv: np.ndarray) -> None:
    assert check_signal(mv + 50.0, 100.0, CANONICAL_LEADS, "rec") == []  # 50 mV offset, normal ECG on top


def test_partial_clipping_warns(mv: np.ndarray) -> None:
    x = mv.copy()
    hi = np.quantile(x[9], 0.95)
    x[9] = np.minimum(x[9], hi)  # 5% of V4 at its max
    warnings = check_signal(x, 100.0, CANONICAL_LEADS, "rec")
    assert len(warnings) == 1 and "V4" in warnings[0] and "clipping" in warnings[0]
    with pytest.raises(SignalQualityError, match="saturated.*V4"):
        cfg = QualityConfig(rail_fraction=0.04, rail_warn_fraction=0.02)
        check_signal(x, 100.0, CANONICAL_LEADS, "rec", cfg)


def test_thresholds_come_from_config(mv: np.ndarray) -> None:
    with pytest.raises(SignalQualityError, match="implausible amplitude"):
        check_signal(mv, 100.0, CANONICAL_LEADS, "rec", QualityConfig(max_abs_mv=0.5))
    with pytest.raises(SignalQualityError, match="too short: 10.000 s"):
        check_signal(mv, 100.0, CANONICAL_LEADS, "rec", QualityConfig(min_duration_s=11))
    std = mv.std(axis=1)
    between = float((np.sort(std)[0] + np.sort(std)[1]) / 2)  # flags exactly the quietest lead
    with pytest.raises(SignalQualityError, match=f"flat lead\\(s\\) {CANONICAL_LEADS[int(np.argmin(std))]} "):
        check_signal(mv, 100.0, CANONICAL_LEADS, "rec", QualityConfig(flat_std_mv=between))


def test_inf_and_shape_errors_name_the_source(mv: np.ndarray) -> None:
    x = mv.copy()
    x[0, 3] = np.inf
    with pytest.raises(SignalQualityError, match="^my.hea: NaN/inf.*I: 1"):
        check_signal(x, 100.0, CANONICAL_LEADS, "my.hea")
    with pytest.raises(SignalQualityError, match="does not match 11 leads"):
        check_signal(mv, 100.0, CANONICAL_LEADS[:11], "my.hea")


def test_degraded_mode_reads_flat_precordial_leads_with_a_warning(mv: np.ndarray) -> None:
    x = mv.copy()
    x[6:9] = 0.0  # V1-V3 disconnected
    with pytest.raises(SignalQualityError, match="flat lead.*V1, V2, V3.*--allow-degraded"):
        check_signal(x, 100.0, CANONICAL_LEADS, "rec")
    (warning,) = check_signal(x, 100.0, CANONICAL_LEADS, "rec", QualityConfig(allow_flat_leads=True))
    assert "V1, V2, V3" in warning and "rhythm questions can still be trusted" in warning
    assert flat_leads(x).tolist() == [False] * 6 + [True] * 3 + [False] * 3
    x[1] = 0.0  # lead II too: nothing can be trusted
    (warning,) = check_signal(x, 100.0, CANONICAL_LEADS, "rec", QualityConfig(allow_flat_leads=True))
    assert "II, V1, V2, V3" in warning and "no answer can be trusted" in warning
    with pytest.raises(SignalQualityError, match="every lead is flat"):  # still refused
        check_signal(np.zeros_like(mv), 100.0, CANONICAL_LEADS, "rec", QualityConfig(allow_flat_leads=True))
