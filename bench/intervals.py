"""Are diagecg.delineation' measurements right? Checks on real PTB-XL records against independent references.

PTB-XL has no interval measurements here (``ptbxl_database.csv`` and PTB-XL+ are absent), so each
measurement is checked against what is known of the records:

(a) heart rate against an independent beat count: wfdb's ``processing.xqrs_detect`` on each lead (the
    median of the 12 leads' rates), and diagecg.features's 12-lead energy detector; 500 Hz records;
(b) RR irregularity: AFIB records against sinus rhythm (SR without AFIB): medians and AUC;
(c) QRS duration: complete bundle branch blocks (CLBBB, CRBBB: QRS >= 120 ms by definition) against NORM;
(d) axis: left axis deviation against NORM. PTB-XL has no LAD statement; the records counted as LAD are
    those with LAFB (left anterior fascicular block: axis -45 deg or beyond by definition) or whose report
    states it ("left axis deviation", "ueberdrehter linkstyp");
(e) PR: 1AVB (PR > 200 ms by definition) against NORM; (f) QTc: LNGQT against NORM.
Plus: the same records at 100 and 500 Hz (one recording, two rates) must give the same values; the
share of values each group leaves unmeasured, and why; the time per record; and check (c) with
neurokit2's own QRS bounds (``ecg_delineate`` ``dwt`` and ``prominence``, lead II), which the module
does not use, so that the reason is on record.

    python bench/intervals.py --data ../shared/data --out runs/intervals.json

Prints the tables; ``--out`` writes them and every record's values as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from diagecg.constants import CANONICAL_LEADS
from diagecg.datasets import resolve_data_roots
from diagecg.datasets.ptbxl import PtbxlDataset, PtbxlEntry
from diagecg.delineation import MEASUREMENT_NAMES, measure_intervals
from diagecg.dsp import butter_filtfilt
from diagecg.features import detect_beats
from diagecg.io import read_record

RATES: tuple[int, ...] = (100, 500)
NK_METHODS: tuple[str, ...] = ("dwt", "prominence")  # the baseline of check (c)
LAD_REPORT_WORDS: tuple[str, ...] = ("left axis deviation", "ueberdrehter linkstyp")


def in_group(entry: PtbxlEntry, group: str) -> bool:
    """PTB-XL group membership (statement codes; "SR" excludes AFIB; "LAD" as the module docstring says)."""
    codes = entry.scp_codes
    if group == "SR":
        return "SR" in codes and "AFIB" not in codes
    if group == "LAD":
        report = entry.report_de.lower()
        return "LAFB" in codes or any(w in report for w in LAD_REPORT_WORDS)
    return group in codes


def auc(pos: list[float], neg: list[float]) -> float | None:
    """Mann-Whitney AUC: P(a positive scores above a negative), ties counted half."""
    if not pos or not neg:
        return None
    p, q = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return float((p > q).mean() + 0.5 * (p == q).mean())


def xqrs_rate(signal: np.ndarray, fs_hz: float) -> float | None:
    """Median over leads of 60 / mean RR from wfdb's XQRS detector (leads with >= 3 beats)."""
    from wfdb import processing

    rates = []
    for row in signal:
        beats = processing.xqrs_detect(row.astype(np.float64), fs=fs_hz, verbose=False)
        if len(beats) >= 3:
            rates.append(60.0 * fs_hz / float(np.mean(np.diff(beats))))
    return float(np.median(rates)) if rates else None


def energy_rate(signal: np.ndarray, fs_hz: float) -> float | None:
    """60 / mean RR from diagecg.features.detect_beats (summed 12-lead slope energy, Pan-Tompkins style)."""
    beats = detect_beats(butter_filtfilt(signal.astype(np.float64), 2, 0.5, "highpass", fs_hz), fs_hz)
    return 60.0 * fs_hz / float(np.mean(np.diff(beats))) if beats.size >= 3 else None


def neurokit_qrs(signal: np.ndarray, fs_hz: float, method: str) -> tuple[float | None, float]:
    """neurokit2's own QRS duration (ms) in lead II: ``ecg_delineate(method)`` R onset -> R offset,
    median over beats; and the share of beats where it found both. What diagecg.delineation does not use."""
    import neurokit2 as nk

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rate = int(fs_hz)
            clean = nk.ecg_clean(signal[CANONICAL_LEADS.index("II")].astype(np.float64), sampling_rate=rate)
            _, info = nk.ecg_peaks(clean, sampling_rate=rate)
            _, waves = nk.ecg_delineate(clean, info["ECG_R_Peaks"], sampling_rate=rate, method=method)
        except Exception:  # noqa: BLE001 - a failure counts as nothing found
            return None, 0.0
    on = np.asarray(waves["ECG_R_Onsets"], dtype=float)
    off = np.asarray(waves["ECG_R_Offsets"], dtype=float)
    n = min(on.size, off.size)
    qrs = (off[:n] - on[:n]) * 1000.0 / fs_hz
    ok = np.isfinite(qrs) & (qrs > 0)
    return (float(np.median(qrs[ok])) if ok.any() else None), float(ok.mean()) if n else 0.0


def neurokit_baseline(ptbxl: PtbxlDataset, ids: list[int], fs_hz: int, progress: bool) -> dict[str, Any]:
    """Check (c) with neurokit2's own QRS bounds (``dwt``, ``prominence``) in lead II."""
    out: dict[str, Any] = {}
    rows: dict[str, dict[int, tuple[float | None, float]]] = {m: {} for m in NK_METHODS}
    for i in tqdm(ids, desc="neurokit2 QRS", disable=not progress):
        record = read_record(ptbxl.record_path(i, fs_hz))
        for m in NK_METHODS:
            rows[m][i] = neurokit_qrs(record.signal, record.fs_hz, m)
    for m, per in rows.items():
        block: dict[str, Any] = {}
        for g in ("CLBBB", "CRBBB", "NORM"):
            members = [i for i in per if in_group(ptbxl.entries[i], g)]
            vals = [v for i in members if (v := per[i][0]) is not None]
            block[g] = _summary(vals, len(members), lambda v: v >= 120)
            block[g]["beats_found"] = float(np.mean([per[i][1] for i in members])) if members else None
        out[m] = block
    return out


def measure_all(ptbxl: PtbxlDataset, ids: list[int], fs_hz: int, progress: bool) -> Results:
    """ecg_id -> {"values", "reasons", "ms"} (``ms``: wall time of measure_intervals)."""
    out: Results = {}
    for i in tqdm(ids, desc=f"measure {fs_hz} Hz", disable=not progress):
        record = read_record(ptbxl.record_path(i, fs_hz))
        t = time.perf_counter()
        m = measure_intervals(record)
        ms = (time.perf_counter() - t) * 1000.0
        out[i] = {
            "values": m.values(),
            "reasons": {x.name: x.reason for x in m if x.reason},
            "n_beats": m.n_beats,
            "peak_lead": m.peak_lead,
            "ms": ms,
        }
    return out


Results = dict[int, dict[str, Any]]  # ecg_id -> {"values", "reasons", "n_beats", "peak_lead", "ms"}


def _values(results: Results, ptbxl: PtbxlDataset, group: str, name: str) -> tuple[list[float], int]:
    """The measured values of ``name`` in ``group`` and the group's size."""
    ids = [i for i in results if in_group(ptbxl.entries[i], group)]
    vals = [results[i]["values"][name] for i in ids]
    return [float(v) for v in vals if v is not None], len(ids)


def _summary(vals: list[float], n: int, rule: Callable[[float], bool] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"n": n, "n_measured": len(vals)}
    if vals:
        q1, med, q3 = np.percentile(vals, [25, 50, 75])
        row.update(median=float(med), q1=float(q1), q3=float(q3))
        if rule is not None:
            row["fraction"] = float(np.mean([rule(v) for v in vals]))
    return row


def label_checks(results: Results, ptbxl: PtbxlDataset) -> dict[str, Any]:
    """Checks (b)-(f): per group the median [IQR] of the measurement and the share meeting the rule."""
    checks: dict[str, Any] = {}
    for name in ("rr_cv_percent", "rr_rmssd_ms"):
        af, n_af = _values(results, ptbxl, "AFIB", name)
        sr, n_sr = _values(results, ptbxl, "SR", name)
        checks[f"b:{name}"] = {"AFIB": _summary(af, n_af), "SR": _summary(sr, n_sr), "auc": auc(af, sr)}
    spec: list[tuple[str, str, tuple[str, ...], Callable[[float], bool], str]] = [
        ("c", "qrs_ms", ("CLBBB", "CRBBB", "NORM"), lambda v: v >= 120, "QRS >= 120 ms"),
        ("d", "qrs_axis_deg", ("LAD", "LAFB", "NORM"), lambda v: v < -30, "axis < -30 deg"),
        ("e", "pr_ms", ("1AVB", "NORM"), lambda v: v > 200, "PR > 200 ms"),
        ("f", "qtc_bazett_ms", ("LNGQT", "NORM"), lambda v: v > 450, "QTc (Bazett) > 450 ms"),
    ]
    for key, name, groups, rule, text in spec:
        block: dict[str, Any] = {"rule": text}
        for g in groups:
            vals, n = _values(results, ptbxl, g, name)
            block[g] = _summary(vals, n, rule)
        checks[f"{key}:{name}"] = block
    return checks


COVERAGE_GROUPS: tuple[str, ...] = ("NORM", "SR", "AFIB", "AFLT", "CLBBB", "CRBBB", "1AVB", "LNGQT", "PACE")


def coverage(
    results: Results, ptbxl: PtbxlDataset, groups: tuple[str, ...] = COVERAGE_GROUPS
) -> dict[str, Any]:
    """Per group and measurement: the share of records left unmeasured (None), and the commonest reasons."""
    out: dict[str, Any] = {}
    for g in ("all", *groups):
        ids = [i for i in results if g == "all" or in_group(ptbxl.entries[i], g)]
        if not ids:
            continue
        none = {
            name: float(np.mean([results[i]["values"][name] is None for i in ids]))
            for name in MEASUREMENT_NAMES
        }
        out[g] = {"n": len(ids), "none": none}
    reasons: dict[str, int] = {}
    for r in results.values():
        for name, why in r["reasons"].items():
            if name in ("qtc_bazett_ms", "qtc_fridericia_ms", "rr_rmssd_ms"):
                continue  # the same reason as qt_ms / rr_cv_percent
            short = re.sub(r"\s*\([^)]*\)", "", why)  # without the numbers in parentheses
            short = re.sub(r"\d+(\.\d+)? ms is", "N ms is", short)
            reasons[f"{name}: {short}"] = reasons.get(f"{name}: {short}", 0) + 1
    out["reasons"] = dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:12])
    return out


def rate_agreement(low: Results, high: Results) -> dict[str, Any]:
    """The same recordings at 100 and 500 Hz: per measurement, mean and median |difference| where both
    are measured, and how often exactly one of them is None."""
    common = sorted(set(low) & set(high))
    out: dict[str, Any] = {"n": len(common)}
    for name in MEASUREMENT_NAMES:
        diffs, one_none = [], 0
        for i in common:
            a, b = low[i]["values"][name], high[i]["values"][name]
            if a is not None and b is not None:
                d = abs(a - b)
                diffs.append(min(d, 360.0 - d) if name == "qrs_axis_deg" else d)
            elif (a is None) != (b is None):
                one_none += 1
        out[name] = {
            "n_both": len(diffs),
            "mae": float(np.mean(diffs)) if diffs else None,
            "median_ae": float(np.median(diffs)) if diffs else None,
            "p90_ae": float(np.percentile(diffs, 90)) if diffs else None,
            "one_none": one_none,
        }
    return out


def heart_rate_check(
    results: Results, ptbxl: PtbxlDataset, ids: list[int], fs_hz: int, progress: bool
) -> dict[str, Any]:
    """Check (a): |HR - reference| for each reference detector, where both are measured."""
    refs: dict[str, Callable[[np.ndarray, float], float | None]] = {"xqrs": xqrs_rate, "measure": energy_rate}
    out: dict[str, Any] = {"n": len(ids)}
    rows = []
    for i in tqdm(ids, desc="reference beats", disable=not progress):
        record = read_record(ptbxl.record_path(i, fs_hz))
        rows.append((i, {k: f(record.signal, record.fs_hz) for k, f in refs.items()}))
    for key in refs:
        errors, missing = [], 0
        worst: list[tuple[float, int, float, float]] = []
        for i, ref in rows:
            hr, expected = results[i]["values"]["heart_rate_bpm"], ref[key]
            if hr is None or expected is None:
                missing += 1
                continue
            errors.append(abs(hr - expected))
            worst.append((abs(hr - expected), i, hr, expected))
        e = np.asarray(errors)
        out[key] = {
            "n_compared": int(e.size),
            "missing": missing,
            "mae": float(e.mean()),
            "median_ae": float(np.median(e)),
            "within_2": float((e <= 2).mean()),
            "within_5": float((e <= 5).mean()),
            "worst": [
                {"ecg_id": i, "hr": hr, "ref": round(ref, 1)}
                for _, i, hr, ref in sorted(worst, reverse=True)[:5]
            ],
        }
    return out


def _f(v: float | None, fmt: str = ".0f") -> str:
    return "-" if v is None else format(v, fmt)


def format_report(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    hr = report.get("heart_rate")
    if hr:
        lines += [
            "",
            f"(a) heart rate vs independent beat counts, {hr['n']} records at {hr['fs_hz']} Hz",
            f"{'reference':<44} {'n':>4} {'MAE':>6} {'med':>5} {'<=2':>5} {'<=5':>5}",
        ]
        names = {
            "xqrs": "wfdb xqrs_detect, median of 12 leads' rates",
            "measure": "diagecg.features 12-lead energy",
        }
        for key, text in names.items():
            r = hr[key]
            lines.append(
                f"{text:<44} {r['n_compared']:>4} {r['mae']:>6.2f} {r['median_ae']:>5.2f} "
                f"{r['within_2']:>5.0%} {r['within_5']:>5.0%}"
            )
    for fs, block in report["rates"].items():
        lines += [
            "",
            f"=== {fs} Hz: {block['n_records']} records, {block['ms_median']:.0f} ms/record median "
            f"({block['ms_mean']:.0f} mean) ===",
        ]
        lines.append(f"{'check':<44} {'group':<6} {'n':>8} {'median [IQR]':>18} {'share':>6}  AUC")
        for key, check in block["checks"].items():
            letter, name = key.split(":")
            rule = check.get("rule", "")
            for g, row in check.items():
                if not isinstance(row, dict):
                    continue
                med = f"{row['median']:.1f} [{row['q1']:.0f}-{row['q3']:.0f}]" if "median" in row else "-"
                share = f"{row['fraction']:.0%}" if "fraction" in row else ""
                a = _f(check.get("auc"), ".3f") if g == "AFIB" else ""
                lines.append(
                    f"({letter}) {name + (': ' + rule if rule else ''):<40} {g:<6} "
                    f"{row['n_measured']:>3}/{row['n']:<4} {med:>18} {share:>6}  {a}"
                )
        lines.append("unmeasured (None) share per group:")
        cov = block["coverage"]
        short = {
            n: n.replace("_percent", "").replace("_bpm", "").replace("_ms", "").replace("_deg", "")
            for n in MEASUREMENT_NAMES
        }
        lines.append(f"  {'group':<6} {'n':>5} " + " ".join(f"{short[n]:>14}" for n in MEASUREMENT_NAMES))
        for g, row in cov.items():
            if g == "reasons":
                continue
            lines.append(
                f"  {g:<6} {row['n']:>5} " + " ".join(f"{row['none'][n]:>14.0%}" for n in MEASUREMENT_NAMES)
            )
        lines.append("commonest reasons (records):")
        lines += [f"  {v:>4} {k}" for k, v in cov["reasons"].items()]
    base = report.get("neurokit_qrs")
    if base:
        lines += [
            "",
            f"(c) baseline: neurokit2's own QRS bounds (ecg_delineate R onset -> R offset, "
            f"lead II), {base['fs_hz']} Hz; not used by diagecg.delineation",
            f"  {'method':<11} {'group':<6} {'n':>8} {'median [IQR]':>18} {'>=120':>6} {'beats found':>12}",
        ]
        for m in NK_METHODS:
            for g, row in base[m].items():
                med = f"{row['median']:.1f} [{row['q1']:.0f}-{row['q3']:.0f}]" if "median" in row else "-"
                share = f"{row['fraction']:.0%}" if "fraction" in row else ""
                found = _f(row["beats_found"], ".0%") if row["beats_found"] is not None else "-"
                lines.append(
                    f"  {m:<11} {g:<6} {row['n_measured']:>3}/{row['n']:<4} {med:>18} {share:>6} {found:>12}"
                )
    agree = report.get("rate_agreement")
    if agree:
        lines += [
            "",
            f"100 Hz vs 500 Hz, the same {agree['n']} recordings: |difference| where both measured",
            f"  {'measurement':<18} {'n':>4} {'MAE':>6} {'median':>7} {'p90':>6} {'one None':>9}",
        ]
        for name in MEASUREMENT_NAMES:
            r = agree[name]
            lines.append(
                f"  {name:<18} {r['n_both']:>4} {_f(r['mae'], '.1f'):>6} "
                f"{_f(r['median_ae'], '.1f'):>7} {_f(r['p90_ae'], '.1f'):>6} {r['one_none']:>9}"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="shared data root (holds ptbxl/) or the PTB-XL folder")
    ap.add_argument("--rates", default="100,500", help="sampling rates to measure, comma-separated")
    ap.add_argument("--max-records", type=int, default=None, help="per rate, the first N records")
    ap.add_argument(
        "--hr-records",
        type=int,
        default=None,
        help="check (a) on the first N 500 Hz records (default all measured)",
    )
    ap.add_argument("--no-baseline", action="store_true", help="skip check (c) with neurokit2's QRS bounds")
    ap.add_argument("--out")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    rates = tuple(int(r) for r in a.rates.split(",") if r)
    if not set(rates) <= set(RATES):
        ap.error(f"--rates: PTB-XL records exist at {RATES} Hz, not {rates}")
    ptbxl = PtbxlDataset(resolve_data_roots(a.data).ptbxl)
    progress = not a.no_progress
    measure_intervals(read_record(ptbxl.record_path(ptbxl.ids(fs_hz=rates[0])[0], rates[0])))  # imports

    machine = {"python": platform.python_version(), "processor": platform.processor() or platform.machine()}
    report: dict[str, Any] = {"rates": {}, "machine": machine}
    per_rate: dict[int, Results] = {}
    for fs in rates:
        ids = ptbxl.ids(fs_hz=fs)[: a.max_records]
        results = measure_all(ptbxl, ids, fs, progress)
        per_rate[fs] = results
        times = [r["ms"] for r in results.values()]
        report["rates"][str(fs)] = {
            "n_records": len(ids),
            "ms_median": statistics.median(times),
            "ms_mean": statistics.fmean(times),
            "coverage": coverage(results, ptbxl),
            "checks": label_checks(results, ptbxl),
        }
    if 500 in per_rate:
        ids = sorted(per_rate[500])[: a.hr_records]
        report["heart_rate"] = {"fs_hz": 500, **heart_rate_check(per_rate[500], ptbxl, ids, 500, progress)}
    if len(per_rate) == 2:
        report["rate_agreement"] = rate_agreement(per_rate[100], per_rate[500])
    if not a.no_baseline:
        fs = max(rates)
        report["neurokit_qrs"] = {"fs_hz": fs, **neurokit_baseline(ptbxl, sorted(per_rate[fs]), fs, progress)}
    print("\n".join(format_report(report)))
    if a.out:
        report["records"] = {str(fs): {str(i): r for i, r in res.items()} for fs, res in per_rate.items()}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
