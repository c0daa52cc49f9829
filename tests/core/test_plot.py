"""diagecg.plot: a real PTB-XL record drawn as a printed 12-lead ECG; the paper's scale checked through the
figure's own data-to-page transform, the layout through the traces it holds."""

from __future__ import annotations

import dataclasses
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from diagecg import plot
from diagecg.config import PreprocessConfig
from diagecg.constants import CANONICAL_LEADS
from diagecg.io import read_record
from diagecg.plot import plot_ecg
from diagecg.preprocess import record_windows
from diagecg.types import EcgRecord, PatientInfo

pytest.importorskip("matplotlib")  # the dev extra has it (diagecg[plot])

RECORDS = Path(__file__).resolve().parents[1] / "fixtures" / "records"


@pytest.fixture(scope="module")
def record() -> EcgRecord:
    return read_record(RECORDS / "00002_hr.hea")  # PTB-XL, 500 Hz, 10 s


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _traces(fig) -> list:
    """The ECG traces of the grid axes, in drawing order (3 x 4 grid row by row, then the rhythm strip)."""
    return [
        line
        for line in fig.axes[0].lines
        if line.get_color() == plot.TRACE and len(line.get_xdata()) > len(plot.CAL_PULSE)
    ]


def _texts(fig) -> list[str]:
    return [t.get_text() for t in (*fig.texts, *fig.axes[0].texts)]


def test_png_has_the_page_size_at_the_dpi(record: EcgRecord, tmp_path: Path) -> None:
    for dpi in (60, 100):
        out = plot_ecg(record, tmp_path / f"ecg{dpi}.png", text="Answer: yes", dpi=dpi)
        fig = plot._figure(record, text="Answer: yes", dpi=dpi)
        w_in, h_in = fig.get_size_inches()
        assert w_in * plot.MM_PER_INCH == pytest.approx(280.0)  # 260 mm of grid and 10 mm margins
        width, height = _png_size(out)
        assert abs(width - w_in * dpi) < 1 and abs(height - h_in * dpi) < 1  # Agg truncates to whole pixels


@pytest.mark.parametrize("dpi", [72, 150])
def test_grid_is_25_mm_per_s_and_10_mm_per_mv_on_the_page(record: EcgRecord, dpi: int) -> None:
    fig = plot._figure(record, dpi=dpi)
    ax = fig.axes[0]
    (x0, y0), (x1, y1) = ax.transData.transform([(0.0, 0.0), (1.0, 1.0)])  # display pixels
    mm_per_px = plot.MM_PER_INCH / fig.dpi
    assert (x1 - x0) * mm_per_px == pytest.approx(25.0, rel=1e-9)
    assert (y1 - y0) * mm_per_px == pytest.approx(10.0, rel=1e-9)
    # grid lines every 1 mm, every fifth one major, and a major line through t = 0 and every baseline
    xs = {
        round(line.get_xdata()[0] * plot.PAPER_SPEED_MM_S, 6): line.get_color()
        for line in ax.lines
        if line.get_color() in (plot.MINOR, plot.MAJOR) and line.get_xdata()[0] == line.get_xdata()[1]
    }
    assert sorted(xs) == [float(mm) for mm in range(-10, 251)]
    assert all((c == plot.MAJOR) == (mm % 5 == 0) for mm, c in xs.items())
    ys = {
        round(line.get_ydata()[0] * plot.GAIN_MM_MV, 6): line.get_color()
        for line in ax.lines
        if line.get_color() in (plot.MINOR, plot.MAJOR) and line.get_ydata()[0] == line.get_ydata()[1]
    }
    assert sorted(ys) == [float(mm) for mm in range(0, 216)]
    assert all(ys[round(plot._baseline(row) * plot.GAIN_MM_MV, 6)] == plot.MAJOR for row in range(4))


def test_layout_3_by_4_consecutive_columns_and_a_10_s_lead_ii_strip(record: EcgRecord) -> None:
    fig = plot._figure(record)
    traces = _traces(fig)
    assert len(traces) == 13
    signal = record.signal.astype(np.float64)
    shown = signal - np.median(signal, axis=1, keepdims=True)  # each lead on its baseline
    order = [*(lead for row in plot.GRID_LEADS for lead in row), "II"]
    assert order[:4] == ["I", "aVR", "V1", "V4"] and order[4:8] == ["II", "aVL", "V2", "V5"]
    n = int(plot.SEGMENT_S * record.fs_hz)
    for k, (lead, line) in enumerate(zip(order, traces, strict=True)):
        row, col = (k // 4, k % 4) if k < 12 else (3, 0)
        x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
        # column `col` shows its own 2.5 s of the record: seconds [2.5 col, 2.5 (col + 1))
        i0, i1 = (col * n, (col + 1) * n) if k < 12 else (0, record.signal.shape[1])
        assert x[0] == pytest.approx(i0 / record.fs_hz) and len(x) == i1 - i0
        expected = np.clip(shown[CANONICAL_LEADS.index(lead), i0:i1], -2.5, 2.5) + plot._baseline(row)
        np.testing.assert_allclose(y, expected, atol=1e-9)
    labels = [t for t in fig.axes[0].texts if t.get_text() in CANONICAL_LEADS]
    assert sorted(t.get_text() for t in labels) == sorted([*CANONICAL_LEADS, "II"])
    calibration = [line for line in fig.axes[0].lines if len(line.get_xdata()) == len(plot.CAL_PULSE)]
    assert len(calibration) == 4
    for line in calibration:  # 1 mV high, before t = 0
        assert np.ptp(line.get_ydata()) == pytest.approx(1.0) and max(line.get_xdata()) < 0


def test_header_and_text_box(record: EcgRecord) -> None:
    report = "sinus rhythm. " * 60
    fig = plot._figure(
        record,
        text=f"Question: Is it normal?\nAnswer: yes\n{report}",
        highpass_hz=0.5,
        patient=PatientInfo(age_years=63, sex="male", weight_kg=80),
    )
    texts = _texts(fig)
    header = " ".join(texts[:3])
    for part in (
        "00002_hr",
        "00002_hr.hea",
        "63 y, male, 80 kg",
        "500 Hz",
        "10.0 s recorded",
        "25 mm/s",
        "10 mm/mV",
        "filter 0.5 Hz high-pass",
    ):
        assert part in header
    box = next(t for t in texts if t.startswith("Question: Is it normal?\nAnswer: yes\n"))
    lines = box.splitlines()
    assert len(lines) > 4 and all(len(line) <= 160 for line in lines)  # wrapped to the box
    assert " ".join(lines[2:]).split() == report.split()
    assert any("not a diagnosis" in t for t in texts)
    assert "unfiltered" in " ".join(_texts(plot._figure(record)))


def test_analysed_windows_are_marked_on_the_rhythm_strip(record: EcgRecord) -> None:
    long = dataclasses.replace(record, signal=np.concatenate([record.signal] * 3, axis=1))  # 30 s
    windows = [(a, b) for a, b, _ in record_windows(long, PreprocessConfig())]
    assert windows == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
    first = _texts(plot._figure(long, windows=windows))
    assert "analysed window 1 of 3: 0.0\u201310.0 s" in first
    assert not any("window 2 of 3" in t for t in first)  # outside the 10 s shown
    assert any("30.0 s recorded" in t and "shown 0.0\u201310.0 s" in t for t in first)
    assert any("analysed in 3 windows: 0.0\u201310.0, 10.0\u201320.0, 20.0\u201330.0 s" in t for t in first)
    later = plot._figure(long, windows=windows, start_s=5.0)
    texts = _texts(later)
    assert "analysed window 1 of 3: 0.0\u201310.0 s" in texts
    assert "analysed window 2 of 3: 10.0\u201320.0 s" in texts
    assert any("shown 5.0\u201315.0 s" in t for t in texts)
    spans = sorted((round(p.get_x(), 6), round(p.get_x() + p.get_width(), 6)) for p in later.axes[0].patches)
    assert spans == [(0.0, 5.0), (5.0, 10.0)]  # the seconds of each window on the page, x = t - start
    assert "5 s" in texts and "15 s" in texts  # the record's seconds under the strip
    single = _texts(plot._figure(record, windows=[(0.0, 10.0)]))
    assert "analysed window: 0.0\u201310.0 s" in single


def test_large_excursions_are_clipped_to_the_row_band_and_named(record: EcgRecord) -> None:
    loud = dataclasses.replace(record, signal=record.signal * 6)
    fig = plot._figure(loud)
    for k, line in enumerate(_traces(fig)):
        row = k // 4 if k < 12 else 3
        y = np.asarray(line.get_ydata()) - plot._baseline(row)
        assert np.abs(y).max() <= plot.ROW_MV / 2 + 1e-9
    assert any(t.startswith("clipped at \u00b12.5 mV: ") for t in _texts(fig))


def test_missing_matplotlib_is_one_line_naming_the_extra(
    record: EcgRecord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(ImportError) as err:
        plot_ecg(record, tmp_path / "ecg.png")
    assert str(err.value) == "plotting needs matplotlib: pip install 'diagecg[plot]'"
    assert not (tmp_path / "ecg.png").exists()


def test_bad_output_paths_are_refused_before_drawing(record: EcgRecord, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"folder .*missing does not exist"):
        plot_ecg(record, tmp_path / "missing" / "ecg.png")
    with pytest.raises(ValueError, match=r"must end in one of \.png, \.pdf, \.svg"):
        plot_ecg(record, tmp_path / "ecg.jpg")
    with pytest.raises(ValueError, match="outside the 10.00 s record"):
        plot_ecg(record, tmp_path / "ecg.png", start_s=12.0)
    assert list(tmp_path.iterdir()) == []


def test_pdf_and_svg_by_suffix(record: EcgRecord, tmp_path: Path) -> None:
    assert plot_ecg(record, tmp_path / "ecg.pdf").read_bytes()[:5] == b"%PDF-"
    assert b"<svg" in plot_ecg(record, tmp_path / "ecg.svg").read_bytes()[:2000]
