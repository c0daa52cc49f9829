"""A 12-lead ECG drawn as a printed one: ``diagecg plot``, and ``--plot`` of ``infer`` and ``report``.

The standard clinical layout (as in e.g. AHA/ACCF/HRS recommendations for the standardization and
interpretation of the electrocardiogram, Part I, Kligfield et al., Circulation 2007): paper speed
25 mm/s and gain 10 mm/mV on a grid of 1 mm minor and 5 mm major lines; a 3 x 4 grid of 2.5 s
segments (rows I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6), each column the next 2.5 s of the same
10 s, then a 10 s lead II rhythm strip; a 1 mV calibration pulse at the start of every row.

One axes holds the whole grid in data units of seconds (x) and millivolts (y); its size in the
figure is computed from the paper speed and the gain, so 1 s is exactly 25 mm and 1 mV exactly
10 mm on the page at any DPI. Under the rhythm strip sit the record's seconds and the analysed
windows (``diagecg.preprocess.record_windows``; the runtime's ``Answer.windows``), each marked by a
shaded band over the strip and a bracket with its times. A record longer than 10 s shows the first
analysed window's 10 s (or ``start_s``), and the header says which seconds.

matplotlib (``pip install 'diagecg[plot]'``) is imported only when a figure is drawn, and only
through its Agg canvas: no pyplot, no GUI, no global state.
"""

from __future__ import annotations

import importlib
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from diagecg import dsp
from diagecg.constants import CANONICAL_LEADS
from diagecg.leads import canonical_lead_order
from diagecg.types import EcgRecord, PatientInfo

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# --- paper ------------------------------------------------------------------------------------------------
PAPER_SPEED_MM_S = 25.0
GAIN_MM_MV = 10.0
MM_PER_INCH = 25.4
SEGMENT_S = 2.5  # one lead's time slice in the 3 x 4 grid
SPAN_S = 4 * SEGMENT_S  # the 10 s shown
GRID_LEADS: tuple[tuple[str, ...], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
RHYTHM_LEAD = "II"
ROW_MV = 5.0  # 50 mm per row; a trace is clipped to its row's band, +-2.5 mV around its baseline
CAL_S = 0.4  # 10 mm left of t = 0 for the calibration pulse
TIME_ZONE_MV = 1.5  # 15 mm under the rhythm strip: the record's seconds and the window brackets
CAL_PULSE = ((-0.36, 0.0), (-0.3, 0.0), (-0.3, 1.0), (-0.1, 1.0), (-0.1, 0.0), (-0.04, 0.0))  # (s, mV)
FILTER_ORDER = 2  # as PreprocessConfig.filter_order
MIN_HIGHPASS_HZ = 0.05  # the lowest high-pass a diagnostic ECG uses; lower ones ring for hours of samples
MAX_NAME_BYTES = 255  # one path component, as ext4, APFS and NTFS allow

# --- page (mm) --------------------------------------------------------------------------------------------
MARGIN_MM = 10.0
HEADER_LINE_MM = 5.5
GAP_MM = 5.0
FOOTER_MM = 7.0
TEXT_PT = 8.5
LINE_MM = TEXT_PT * 1.45 / 72 * MM_PER_INCH
MAX_TEXT_LINES = 40
DEFAULT_DPI = 150
FORMATS = (".png", ".pdf", ".svg")

# --- colours ----------------------------------------------------------------------------------------------
PAPER = "#fffafa"
MINOR = "#f6cccc"
MAJOR = "#e38b8b"
TRACE = "#111111"
WINDOW = "#2c6fbb"
WINDOW_PT = 7.0
INK = "#222222"
SEPARATOR = "   \u00b7   "

PLOT_EXTRA_HINT = "pip install 'diagecg[plot]'"


def require_matplotlib() -> ModuleType:
    """matplotlib, or one line naming the extra that installs it.

    Raises:
        ImportError: matplotlib is not installed.
    """
    try:
        return importlib.import_module("matplotlib")
    except ImportError:
        raise ImportError(f"plotting needs matplotlib: {PLOT_EXTRA_HINT}") from None


def check_output_path(out: str | Path) -> Path:
    """``out`` as a Path, checked before anything is drawn: a known suffix, in a folder that exists.

    Raises:
        ValueError: a suffix other than ``FORMATS``.
        FileNotFoundError: the folder does not exist (or is not a folder).
    """
    path = Path(out)
    if "\x00" in str(out):
        raise ValueError(f"cannot write {str(out)!r}: the name contains a NUL byte")
    long = [part for part in path.parts if len(os.fsencode(part)) > MAX_NAME_BYTES]
    if long:
        n_bytes = len(os.fsencode(long[0]))
        raise ValueError(
            f"cannot write {long[0][:40]}...: the name is {n_bytes} bytes long; a file system "
            f"takes at most {MAX_NAME_BYTES}"
        )
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"cannot write {path}: the file name must end in one of {', '.join(FORMATS)}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a folder")
    return path


def plot_ecg(
    record: EcgRecord,
    out: str | Path,
    *,
    text: str | None = None,
    windows: Sequence[tuple[float, float]] | None = None,
    start_s: float | None = None,
    highpass_hz: float | None = None,
    lowpass_hz: float | None = None,
    patient: PatientInfo | None = None,
    window_label: str = "analysed window",
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Draw a record as a printed 12-lead ECG and save it (PNG, PDF or SVG, from the suffix).

    Args:
        record: signal float32 mV (12, samples), any lead order ``canonical_lead_order`` maps.
        out: the file to write; its folder must exist.
        text: printed in a box under the grid, wrapped (an answer, a report); None: no box.
        windows: the analysed windows, ``(start_s, end_s)`` in seconds of the record; marked on the
            rhythm strip. None: not marked.
        start_s: first second shown (10 s from it); None: the first window's start, else 0.
        highpass_hz, lowpass_hz: zero-phase Butterworth filtering before drawing (the header says
            so); None: off. A low-pass at or above the record's Nyquist frequency changes nothing and
            is skipped.
        patient: overrides of the record header's patient features for the header line.
        window_label: what the window brackets are called.
        dpi: pixels per inch of a PNG (the page is about 280 mm wide).

    Returns:
        The path written.

    Raises:
        ImportError: matplotlib is not installed (one line naming ``diagecg[plot]``).
        ValueError: a bad suffix, start, window or cut-off. FileNotFoundError: the folder is missing.
        LeadError: leads that do not map to the 12 canonical ones.
    """
    path = check_output_path(out)
    fig = _figure(
        record,
        text=text,
        windows=windows,
        start_s=start_s,
        highpass_hz=highpass_hz,
        lowpass_hz=lowpass_hz,
        patient=patient,
        window_label=window_label,
        dpi=dpi,
    )
    fig.savefig(path, dpi=dpi, facecolor="white")
    return path


# --- the figure ---------------------------------------------------------------------------------------------


def _figure(
    record: EcgRecord,
    *,
    text: str | None = None,
    windows: Sequence[tuple[float, float]] | None = None,
    start_s: float | None = None,
    highpass_hz: float | None = None,
    lowpass_hz: float | None = None,
    patient: PatientInfo | None = None,
    window_label: str = "analysed window",
    dpi: int = DEFAULT_DPI,
) -> Figure:
    """The figure :func:`plot_ecg` saves (arguments as there); not yet drawn."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    if dpi < 10:
        raise ValueError(f"dpi={dpi} is too small: at least 10")
    windows = [(float(a), float(b)) for a, b in windows or ()]
    for a, b in windows:
        if not 0 <= a < b:
            raise ValueError(f"window ({a:g}, {b:g}) s is invalid: need 0 <= start < end")
    signal, filter_note = _filtered(record, highpass_hz, lowpass_hz)  # (12, samples) float64 mV
    t0 = _start(record, windows, start_s)
    t1 = min(t0 + SPAN_S, record.duration_s)
    shown = _shown(signal, record.fs_hz, t0, t1)  # (12, samples in [t0, t1)) mV, centred per lead
    over = {lead for lead, _, _, y in _segments(shown, record.fs_hz) if np.abs(y).max() > ROW_MV / 2}
    clipped = [lead for lead in CANONICAL_LEADS if lead in over]

    header = _header(record, patient, t0, t1, windows, filter_note, clipped)
    header_mm = 6.0 + HEADER_LINE_MM * len(header)
    grid_w_mm = (CAL_S + SPAN_S) * PAPER_SPEED_MM_S
    grid_h_mm = (4 * ROW_MV + TIME_ZONE_MV) * GAIN_MM_MV
    lines = _wrap(text, grid_w_mm) if text else []
    box_mm = (len(lines) + 0.9) * LINE_MM if lines else 0.0
    fig_w_mm = grid_w_mm + 2 * MARGIN_MM
    fig_h_mm = header_mm + grid_h_mm + (GAP_MM + box_mm if lines else 0.0) + FOOTER_MM
    fig = Figure(figsize=(fig_w_mm / MM_PER_INCH, fig_h_mm / MM_PER_INCH), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)  # Agg only: never a GUI backend

    def fx(mm: float) -> float:  # mm from the left edge -> figure fraction
        return mm / fig_w_mm

    def fy(mm: float) -> float:  # mm from the top edge -> figure fraction
        return 1.0 - mm / fig_h_mm

    # the grid's size on the page is what makes 1 s = 25 mm and 1 mV = 10 mm
    ax = fig.add_axes((fx(MARGIN_MM), fy(header_mm + grid_h_mm), fx(grid_w_mm), grid_h_mm / fig_h_mm))
    _paper(ax)
    _traces(ax, shown, record.fs_hz, t0, t1)
    _windows(ax, windows, t0, t1, window_label)

    for k, line in enumerate(header):
        fig.text(
            fx(MARGIN_MM),
            fy(6.0 + HEADER_LINE_MM * k),
            line,
            fontsize=10.5 if k == 0 else 8.5,
            color=INK,
            fontweight="bold" if k == 0 else "normal",
            va="baseline",
            ha="left",
        )
    if lines:
        top = header_mm + grid_h_mm + GAP_MM
        fig.add_artist(
            Rectangle(
                (fx(MARGIN_MM), fy(top + box_mm)),
                fx(grid_w_mm),
                box_mm / fig_h_mm,
                transform=fig.transFigure,
                facecolor="#f7f7f7",
                edgecolor="#888888",
                linewidth=0.8,
            )
        )
        fig.text(
            fx(MARGIN_MM + 2.5),
            fy(top + 0.45 * LINE_MM),
            "\n".join(lines),
            fontsize=TEXT_PT,
            color=INK,
            va="top",
            ha="left",
            linespacing=1.45,
        )
    fig.text(
        fx(MARGIN_MM + grid_w_mm),
        fy(fig_h_mm - 2.5),
        _footer(bool(text)),
        fontsize=6.5,
        color="#777777",
        ha="right",
        va="baseline",
    )
    return fig


def _filtered(
    record: EcgRecord, highpass_hz: float | None, lowpass_hz: float | None
) -> tuple[np.ndarray, str]:
    """The signal in canonical lead order, float64 mV (12, samples), filtered; and the filter note."""
    signal = np.asarray(record.signal, dtype=np.float64)
    assert signal.ndim == 2, f"signal must be (leads, samples), got {signal.shape}"
    if tuple(record.lead_names) != CANONICAL_LEADS:
        indices, _ = canonical_lead_order(record.lead_names)
        signal = signal[indices]
    nyquist = record.fs_hz / 2
    notes = []
    for btype, hz in (("highpass", highpass_hz), ("lowpass", lowpass_hz)):
        if hz is None:
            continue
        if not 0 < hz < nyquist:
            if btype == "lowpass" and hz >= nyquist:
                continue  # nothing of the record lies above it
            raise ValueError(
                f"{btype} cut-off {hz:g} Hz is invalid for a {record.fs_hz:g} Hz record: in (0, {nyquist:g})"
            )
        if btype == "highpass" and hz < MIN_HIGHPASS_HZ:
            raise ValueError(
                f"highpass cut-off {hz:g} Hz is below {MIN_HIGHPASS_HZ:g} Hz, the lowest a "
                f"diagnostic ECG uses (IEC 60601-2-25); 0 draws the record unfiltered"
            )
        signal = dsp.butter_filtfilt(signal, FILTER_ORDER, hz, btype, record.fs_hz)
        notes.append(f"{hz:g} Hz {'high' if btype == 'highpass' else 'low'}-pass")
    return signal, ("filter " + ", ".join(notes) if notes else "unfiltered")


def _start(record: EcgRecord, windows: list[tuple[float, float]], start_s: float | None) -> float:
    if start_s is None:
        return windows[0][0] if windows and windows[0][0] < record.duration_s else 0.0
    if not 0 <= start_s < record.duration_s:
        raise ValueError(f"start {start_s:g} s is outside the {record.duration_s:.2f} s record")
    return float(start_s)


def _baseline(row: int) -> float:
    """The baseline of grid row ``row`` (0 the top, 3 the rhythm strip) in mV on the axes."""
    return TIME_ZONE_MV + ROW_MV * (3 - row) + ROW_MV / 2


def _paper(ax: Axes) -> None:
    """Pink ECG paper: 1 mm minor and 5 mm major lines, every major line a whole 0.2 s / 0.5 mV."""
    ax.set_xlim(-CAL_S, SPAN_S)
    ax.set_ylim(0.0, 4 * ROW_MV + TIME_ZONE_MV)
    ax.set_facecolor(PAPER)
    minor_s, minor_mv = 1 / PAPER_SPEED_MM_S, 1 / GAIN_MM_MV
    xs = np.arange(round(CAL_S / minor_s) * -1, round(SPAN_S / minor_s) + 1) * minor_s
    ys = np.arange(0, round((4 * ROW_MV + TIME_ZONE_MV) / minor_mv) + 1) * minor_mv
    for k, x in enumerate(xs, start=-round(CAL_S / minor_s)):
        ax.axvline(
            x,
            color=MAJOR if k % 5 == 0 else MINOR,
            linewidth=0.7 if k % 5 == 0 else 0.35,
            zorder=0.5 if k % 5 == 0 else 0.4,
        )
    for k, y in enumerate(ys):
        ax.axhline(
            y,
            color=MAJOR if k % 5 == 0 else MINOR,
            linewidth=0.7 if k % 5 == 0 else 0.35,
            zorder=0.5 if k % 5 == 0 else 0.4,
        )
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color(MAJOR)
        spine.set_linewidth(0.9)


def _shown(signal: np.ndarray, fs_hz: float, t0: float, t1: float) -> np.ndarray:
    """The shown seconds, ``(12, samples) -> (12, samples in [t0, t1))``, each lead less its median
    there, so that it sits on its row's baseline (baseline wander is the filter's business)."""
    x = signal[:, int(round(t0 * fs_hz)) : int(round(t1 * fs_hz))]
    return x - np.median(x, axis=1, keepdims=True)


def _segments(shown: np.ndarray, fs_hz: float) -> list[tuple[str, int, float, np.ndarray]]:
    """What is drawn: ``(lead, row, x of its first sample in s, samples in mV)``; the 3 x 4 grid, each
    column its own 2.5 s, then the rhythm strip (row 3)."""
    index = {name: k for k, name in enumerate(CANONICAL_LEADS)}
    out = []
    for row, leads in enumerate(GRID_LEADS):
        for col, lead in enumerate(leads):
            i0, i1 = int(round(col * SEGMENT_S * fs_hz)), int(round((col + 1) * SEGMENT_S * fs_hz))
            if shown.shape[1] - i0 >= 2:
                out.append((lead, row, i0 / fs_hz, shown[index[lead], i0:i1]))
    out.append((RHYTHM_LEAD, 3, 0.0, shown[index[RHYTHM_LEAD]]))
    return out


def _traces(ax: Axes, shown: np.ndarray, fs_hz: float, t0: float, t1: float) -> None:
    """Draw the traces (clipped to their row's band), calibration pulses, lead labels and seconds."""
    half = ROW_MV / 2
    for _, row, x0, y in _segments(shown, fs_hz):
        ax.plot(
            x0 + np.arange(y.size) / fs_hz,
            np.clip(y, -half, half) + _baseline(row),
            color=TRACE,
            linewidth=0.7,
            solid_joinstyle="round",
            zorder=3,
        )
    for row, leads in enumerate(GRID_LEADS):
        for col, lead in enumerate(leads):
            _label(ax, lead, col * SEGMENT_S, row)
            if col:  # the printers' lead-change tick
                base = _baseline(row)
                ax.plot([col * SEGMENT_S] * 2, [base - 0.5, base + 0.5], color=TRACE, linewidth=1.0, zorder=3)
    _label(ax, RHYTHM_LEAD, 0.0, 3)
    xs, ys = zip(*CAL_PULSE, strict=True)
    for row in range(4):
        ax.plot(xs, np.array(ys) + _baseline(row), color=TRACE, linewidth=0.9, zorder=3)
    for second in range(int(np.ceil(t0)), int(np.floor(t1)) + 1):
        ax.text(
            second - t0,
            TIME_ZONE_MV - 0.12,
            f"{second} s",
            fontsize=6,
            color="#555555",
            ha="center",
            va="top",
            zorder=4,
            bbox={"boxstyle": "square,pad=0.1", "facecolor": PAPER, "edgecolor": "none"},
        )


def _label(ax: Axes, lead: str, x: float, row: int) -> None:
    ax.text(
        x + 0.06,
        _baseline(row) + 1.2,
        lead,
        fontsize=10,
        fontweight="bold",
        color=INK,
        ha="left",
        va="bottom",
        zorder=4,
        bbox={"boxstyle": "square,pad=0.1", "facecolor": PAPER, "edgecolor": "none", "alpha": 0.8},
    )


def _windows(ax: Axes, windows: list[tuple[float, float]], t0: float, t1: float, label: str) -> None:
    """Shade each analysed window over the rhythm strip and bracket it with its times."""
    shown = [(k, a, b) for k, (a, b) in enumerate(windows, 1) if a < t1 and b > t0]
    bottom, top = TIME_ZONE_MV, TIME_ZONE_MV + ROW_MV
    for level, (k, a, b) in enumerate(shown):
        x0, x1 = max(a, t0) - t0, min(b, t1) - t0
        ax.axvspan(
            x0,
            x1,
            ymin=bottom / ax.get_ylim()[1],
            ymax=top / ax.get_ylim()[1],
            color=WINDOW,
            alpha=0.07,
            linewidth=0,
            zorder=1,
        )
        y = 0.8 - 0.45 * (level % 2)  # alternate heights so overlapping windows stay apart
        ax.plot([x0, x1], [y, y], color=WINDOW, linewidth=1.2, zorder=4)
        for x, inside in ((x0, a >= t0), (x1, b <= t1)):
            if inside:  # a bracket end where the window ends; none where it runs past the page
                ax.plot([x, x], [y - 0.12, y + 0.12], color=WINDOW, linewidth=1.2, zorder=4)
        name = label if len(windows) == 1 else f"{label} {k} of {len(windows)}"
        text = f"{name}: {a:.1f}\u2013{b:.1f} s"
        half_s = len(text) * WINDOW_PT * 0.3 / 72 * MM_PER_INCH / PAPER_SPEED_MM_S  # ~0.6 em a character
        x = min(max((x0 + x1) / 2, half_s - CAL_S), SPAN_S - half_s)  # the label stays on the grid
        ax.text(
            x,
            y + 0.08,
            text,
            fontsize=WINDOW_PT,
            color=WINDOW,
            ha="center",
            va="bottom",
            zorder=5,
            bbox={"boxstyle": "square,pad=0.15", "facecolor": PAPER, "edgecolor": "none"},
        )


# --- text -----------------------------------------------------------------------------------------------


def _header(
    record: EcgRecord,
    patient: PatientInfo | None,
    t0: float,
    t1: float,
    windows: list[tuple[float, float]],
    filter_note: str,
    clipped: list[str],
) -> list[str]:
    """Who and what; how it is drawn; then, when there is any, the windows and the clipped leads."""
    p = record.patient.with_overrides(patient)
    first = [record.record_id or "ECG"]
    if record.source:
        first.append(Path(record.source).name)
    facts = [
        f"{p.age_years:g} y" if p.age_years is not None else "",
        p.sex or "",
        f"{p.height_cm:g} cm" if p.height_cm is not None else "",
        f"{p.weight_kg:g} kg" if p.weight_kg is not None else "",
    ]
    first.append(", ".join(f for f in facts if f) or "patient details unknown")
    second = [f"{record.fs_hz:g} Hz", f"{record.duration_s:.1f} s recorded"]
    if t0 > 0 or t1 < record.duration_s:
        second.append(f"shown {t0:.1f}\u2013{t1:.1f} s")
    second += [f"{PAPER_SPEED_MM_S:g} mm/s", f"{GAIN_MM_MV:g} mm/mV", filter_note]
    third = []
    if len(windows) > 1:
        spans = ", ".join(f"{a:.1f}\u2013{b:.1f}" for a, b in windows)
        third.append(f"analysed in {len(windows)} windows: {spans} s")
    if clipped:
        third.append(f"clipped at \u00b1{ROW_MV / 2:g} mV: {' '.join(clipped)}")
    return [SEPARATOR.join(part) for part in (first, second, third) if part]


def _wrap(text: str, width_mm: float) -> list[str]:
    """``text`` wrapped to the box (its own line breaks kept), at most ``MAX_TEXT_LINES`` lines."""
    # DejaVu Sans averages ~0.5 em a character in English text; 0.54 leaves room for wide ones
    chars = max(20, int((width_mm - 5.0) / MM_PER_INCH * 72 / (TEXT_PT * 0.54)))
    lines: list[str] = []
    for paragraph in text.strip().splitlines():
        lines += textwrap.wrap(paragraph, chars) or [""]
    if len(lines) > MAX_TEXT_LINES:
        lines = [*lines[: MAX_TEXT_LINES - 1], "\u2026"]
    return lines


def _footer(with_text: bool) -> str:
    from diagecg import __version__

    note = "; the text is a model's reading, not a diagnosis: have a clinician review it" if with_text else ""
    return f"drawn by diagecg {__version__}{note}"
