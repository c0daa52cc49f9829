"""The HTML page of a ``diagecg validate`` run: one self-contained file (inline CSS and SVG, no script,
nothing fetched) that opens offline in any browser.

It shows the bundle's identity and hashes, the date and the command, the macro numbers, one table row
per finding (AUC with its interval beside the ECG-ablated model's and the measurement's, sensitivity,
specificity, PPV, NPV, balanced accuracy, ECE), a ROC curve and a reliability diagram per finding, and
everything that was left out and why (records that failed, unlabelled records, findings the bundle
cannot answer, findings with one class only, label codes that map to no finding).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

from diagecg.runtime.validate import Row

__all__ = ["render_html", "roc_points"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#1b1f24;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:6px 0;font-size:12.5px}
td,th{padding:3px 8px;border-bottom:1px solid #eaeef2;
text-align:right;white-space:nowrap}th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
.muted{color:#57606a}.warn{color:#9a6700}.bad{color:#cf222e}.grid{display:flex;flex-wrap:wrap;gap:14px}
.card{border:1px solid #d0d7de;border-radius:6px;padding:8px}.card h3{font-size:13px;margin:0 0 4px}
code{font-size:12px;background:#f6f8fa;padding:1px 4px;border-radius:4px;word-break:break-all}
.legend span{margin-right:12px}
"""
_COLORS = {"model": "#0969da", "ablated": "#8c959f", "measurement": "#bf8700"}


def _e(x: Any) -> str:
    return html.escape(str(x))


def _num(x: Any, k: int = 3) -> str:
    return "-" if x is None else f"{float(x):.{k}f}"


def _ci(ci: Any, k: int = 2) -> str:
    if not ci or ci[0] is None:
        return ""
    return f' <span class="muted">[{float(ci[0]):.{k}f}, {float(ci[1]):.{k}f}]</span>'


def roc_points(truth: Sequence[bool], score: Sequence[float]) -> list[tuple[float, float]]:
    """(false positive rate, true positive rate) of every threshold, from (0, 0) to (1, 1)."""
    t = np.asarray(truth, bool)
    s = np.asarray(score, float)
    order = np.argsort(-s, kind="mergesort")
    t, s = t[order], s[order]
    n_pos, n_neg = max(int(t.sum()), 1), max(int((~t).sum()), 1)
    last = np.r_[s[1:] != s[:-1], True]  # the end of each run of tied scores
    tp, fp = np.cumsum(t)[last], np.cumsum(~t)[last]
    return [(0.0, 0.0)] + [(float(f / n_neg), float(p / n_pos)) for f, p in zip(fp, tp, strict=True)]


def _svg_roc(curves: dict[str, list[tuple[float, float]]], size: int = 180) -> str:
    pad = 22
    w = size - pad - 6

    def xy(p: tuple[float, float]) -> str:
        return f"{pad + p[0] * w:.1f},{6 + (1 - p[1]) * w:.1f}"

    lines = [
        f'<polyline fill="none" stroke="{_COLORS[k]}" stroke-width="1.8" points="{" ".join(map(xy, pts))}"/>'
        for k, pts in curves.items()
        if pts
    ]
    return (
        f'<svg width="{size}" height="{size}" viewBox="0 0 {size} {size}" role="img" '
        f'aria-label="ROC curve"><rect x="{pad}" y="6" width="{w}" height="{w}" fill="#fff" '
        f'stroke="#d0d7de"/><line x1="{pad}" y1="{6 + w}" x2="{pad + w}" y2="6" stroke="#eaeef2" '
        f'stroke-dasharray="3 3"/>'
        + "".join(lines)
        + f'<text x="{pad + w / 2}" y="{size - 1}" font-size="9" text-anchor="middle">'
        f"1 - specificity</text>"
        f'<text x="9" y="{6 + w / 2}" font-size="9" text-anchor="middle" '
        f'transform="rotate(-90 9 {6 + w / 2})">sensitivity</text></svg>'
    )


def _svg_reliability(bins: list[dict[str, Any]], size: int = 180) -> str:
    pad = 22
    w = size - pad - 6
    parts = [
        f'<svg width="{size}" height="{size}" viewBox="0 0 {size} {size}" role="img" '
        f'aria-label="reliability diagram"><rect x="{pad}" y="6" width="{w}" height="{w}" fill="#fff" '
        f'stroke="#d0d7de"/><line x1="{pad}" y1="{6 + w}" x2="{pad + w}" y2="6" stroke="#eaeef2" '
        f'stroke-dasharray="3 3"/>'
    ]
    n_max = max([b["n"] for b in bins] or [1])
    for b in bins:
        x, y = pad + b["mean_prob"] * w, 6 + (1 - b["observed"]) * w
        r = 2 + 5 * (b["n"] / n_max) ** 0.5
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" fill="{_COLORS["model"]}" '
            f'fill-opacity="0.6"><title>p {b["lo"]:.1f}-{b["hi"]:.1f}: n {b["n"]}, mean p '
            f"{b['mean_prob']:.2f}, observed {b['observed']:.2f}</title></circle>"
        )
    parts.append(
        f'<text x="{pad + w / 2}" y="{size - 1}" font-size="9" '
        f'text-anchor="middle">p(present)</text>'
        f'<text x="9" y="{6 + w / 2}" font-size="9" text-anchor="middle" '
        f'transform="rotate(-90 9 {6 + w / 2})">observed</text></svg>'
    )
    return "".join(parts)


def _findings_table(result: dict[str, Any]) -> str:
    head = (
        "<tr><th>finding</th><th>n</th><th>pos.</th><th>AUC [95% CI]</th><th>ablated AUC</th>"
        "<th>measurement AUC</th><th>sens.</th><th>spec.</th><th>PPV</th><th>NPV</th><th>bal. acc.</th>"
        "<th>ECE</th></tr>"
    )
    body = []
    for code, f in sorted(result["findings"].items(), key=lambda kv: -kv[1]["n_pos"]):
        ruler = f.get("ruler") or {}
        below = ruler.get("auc") is not None and f["auc"] is not None and f["auc"] < ruler["auc"] - 0.02
        cls = ' class="bad"' if below or (f["auc"] is not None and f["auc"] < 0.5) else ""
        body.append(
            f"<tr><td>{_e(f['finding'])} <span class='muted'>{_e(code)}</span></td><td>{f['n']}</td>"
            f"<td>{f['n_pos']}</td><td{cls}>{_num(f['auc'])}{_ci(f['auc_ci95'])}</td>"
            f"<td>{_num(f['ablated_auc'])}</td>"
            f"<td>{_num(ruler.get('auc'))}{' (' + _e(ruler['measurement']) + ')' if ruler else ''}</td>"
            f"<td>{_num(f['sensitivity'], 2)}{_ci(f['sensitivity_ci95'])}</td>"
            f"<td>{_num(f['specificity'], 2)}{_ci(f['specificity_ci95'])}</td>"
            f"<td>{_num(f['ppv'], 2)}</td><td>{_num(f['npv'], 2)}</td>"
            f"<td>{_num(f['balanced_accuracy'])}</td><td>{_num(f['ece'])}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _cards(result: dict[str, Any], rows: Sequence[Row]) -> str:
    cards = []
    for code, f in sorted(result["findings"].items(), key=lambda kv: -kv[1]["n_pos"]):
        rs = [r for r in rows if r.code == code]
        truth = [r.truth for r in rs]
        curves = {"model": roc_points(truth, [r.p_present for r in rs])}
        if all(r.p_ablated is not None for r in rs):
            curves["ablated"] = roc_points(truth, [float(r.p_ablated or 0.0) for r in rs])
        if all(r.measurement is not None for r in rs):
            curves["measurement"] = roc_points(truth, [float(r.measurement or 0.0) for r in rs])
        cards.append(
            f'<div class="card"><h3>{_e(f["finding"])} ({f["n_pos"]}/{f["n"]})</h3>'
            f"{_svg_roc(curves)}{_svg_reliability(f['reliability'])}</div>"
        )
    legend = "".join(f'<span style="color:{c}">&#9632; {k}</span>' for k, c in _COLORS.items())
    return (
        f'<p class="legend">ROC curves: {legend} &nbsp; reliability: circles sized by count</p>'
        f'<div class="grid">{"".join(cards)}</div>'
    )


def _left_out(result: dict[str, Any]) -> str:
    rec = result["records"]
    parts = []
    if rec["failed"]:
        parts.append(
            f"<p><b>{len(rec['failed'])} records could not be answered:</b></p><table>"
            "<tr><th>record</th><th>reason</th></tr>"
            + "".join(
                f"<tr><td>{_e(x['record'])}</td>"
                f"<td style='text-align:left;white-space:normal'>{_e(x['reason'])}</td></tr>"
                for x in rec["failed"]
            )
            + "</table>"
        )
    if rec["unlabelled"]:
        parts.append(
            f"<p><b>{len(rec['unlabelled'])} records have no labels</b> (not in the labels file, "
            f"no #Dx line): {_e(', '.join(rec['unlabelled'][:50]))}"
            f"{' ...' if len(rec['unlabelled']) > 50 else ''}</p>"
        )
    if result["not_answerable"]:
        parts.append(
            "<p><b>Labelled findings the bundle cannot answer</b> (records labelled): "
            + _e(", ".join(f"{c} ({n})" for c, n in result["not_answerable"].items()))
            + "</p>"
        )
    if result["one_class"]:
        parts.append(
            "<p><b>Findings with only positives or only negatives</b> (no AUC): "
            + _e(", ".join(f"{c} ({v['n_pos']} of {v['n']})" for c, v in result["one_class"].items()))
            + "</p>"
        )
    if result["labels"]["unmapped_codes"]:
        parts.append(
            "<p><b>Label codes that map to no finding</b> (times seen): "
            + _e(", ".join(f"{c} ({n})" for c, n in result["labels"]["unmapped_codes"].items()))
            + "</p>"
        )
    return "".join(parts) or "<p>Nothing was left out.</p>"


def render_html(result: dict[str, Any], rows: Sequence[Row]) -> str:
    """The page of a validation result (``runtime.validate.validation_result``) and its rows."""
    b, rec, m = result["bundle"], result["records"], result["macro"]
    cal = b.get("calibration")
    identity = "".join(
        f"<tr><td>{_e(k)}</td><td style='text-align:left'><code>{_e(v)}</code></td></tr>"
        for k, v in (
            ("diagecg version (bundle)", b.get("diagecg_version")),
            ("manifest sha256", b.get("manifest_sha256")),
            ("quant", b.get("quant")),
            ("GGUF sha256", b.get("gguf_sha256")),
            (
                "calibration",
                "none"
                if not cal
                else f"{cal['source']} ({cal.get('created_utc') or 'date unknown'}), sha256 {cal['sha256']}",
            ),
        )
    )
    macro = ""
    if m:
        macro = (
            f"<table><tr><th>over {m['n_findings']} findings with &ge; {m['min_positives']} positives"
            "</th><th>AUC</th><th>ablated AUC</th><th>measurement AUC</th><th>bal. acc.</th>"
            "<th>sens.</th><th>spec.</th><th>ECE</th></tr>"
            f"<tr><td>macro mean</td><td>{_num(m['auc'])}</td><td>{_num(m['ablated_auc'])}</td>"
            f"<td>{_num(m['ruler_auc'])}</td>"
            f"<td>{_num(m['balanced_accuracy'])}</td><td>{_num(m['sensitivity'], 2)}</td>"
            f"<td>{_num(m['specificity'], 2)}</td><td>{_num(m['ece'])}</td></tr></table>"
        )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>diagecg validation: {_e(result["labels"]["source"])}</title><style>{_CSS}</style></head><body>
<h1>diagecg validation</h1>
<p class="muted">{_e(result["created_utc"])} &middot; diagecg {_e(result["diagecg_version"])} &middot;
<code>{_e(result["command"])}</code></p>
<p><b>{rec["answered"]}</b> of {rec["given"]} records answered ({len(rec["failed"])} failed,
{len(rec["unlabelled"])} without labels), {rec["n_questions"]} questions, labels from
{_e(result["labels"]["source"])}; {_e(rec["records_per_minute"])} records per minute.
Each finding's yes/no question is asked as the product asks it; the <i>ablated</i> model answers the same
question with another record's ECG, and the <i>measurement</i> is the finding's defining measurement alone
(heart rate, PR, QRS, RR irregularity, ...). A model that reads the ECG beats the first and should not lose
to the second. Red: AUC below 0.5 or more than 0.02 below the measurement's.</p>
<h2>Bundle</h2><table>{identity}</table>
<h2>Summary</h2>{macro}
<h2>Per finding</h2><p class="muted">Sensitivity, specificity, PPV and NPV at the bundle's decision rule
(the answer: its calibrated threshold where the bundle has one); intervals: 95% (AUC: bootstrap over
records; rates: Wilson).</p>{_findings_table(result)}
<h2>ROC curves and reliability</h2>{_cards(result, rows)}
<h2>Left out</h2>{_left_out(result)}
</body></html>
"""
