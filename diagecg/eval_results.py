"""The results of ``diagecg eval`` as plain-text tables and as strict JSON (torch-free, so the bundle
benches print the same tables without torch)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

PREDICTIONS_SUFFIX = ".predictions.jsonl"  # beside out_file


def format_results(results: dict[str, Any]) -> str:
    """Plain-text tables: QA accuracy per group beside both baselines, per wording; then report metrics.

    Args:
        results: the dict ``diagecg.training.evaluate.main`` returns.
    """
    lines = [
        f"checkpoint {results['checkpoint_dir']}  folds {results['folds']}  "
        f"records {results['n_records']}  (baselines counted on folds {results['train_folds']})"
    ]
    header = f"{'group':<26} {'n':>6} {'model':>7} {'ablated':>8} {'maj/tpl':>8} {'maj/q':>7}"
    for wording, block in results["qa"].items():
        lines += [
            "",
            f"QA exact match, {wording} wording  (answers in the template's options: "
            f"{block['valid_format']:.1%}; ablated = each record's ECG swapped for another's)",
            header,
            "-" * len(header),
        ]
        for group, row in block["groups"].items():
            abl = f"{row['ablated']:>8.3f}" if "ablated" in row else f"{'-':>8}"
            lines.append(
                f"{group:<26} {int(row['n']):>6} {row['model']:>7.3f} {abl} "
                f"{row['majority_template']:>8.3f} {row['majority_question']:>7.3f}"
            )
    lines += format_findings(results.get("findings") or {})
    reports = results.get("reports")
    if reports:
        m = reports["metrics"]
        lines += [
            "",
            f"Report generation ({reports['n']} records)",
            "  ".join(
                f"{k.upper() if k.startswith('bleu') else k}={m[k]:.3f}"
                for k in ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge1", "rouge2", "rougeL")
            ),
        ]
    if results.get("predictions_file"):
        lines += ["", f"predictions: {results['predictions_file']}"]
    return "\n".join(lines)


def format_findings(findings: dict[str, Any]) -> list[str]:
    """The per-finding table of each wording: AUC, sensitivity, specificity, balanced accuracy of the
    model and the AUC / balanced accuracy of its ECG ablation; then the macro means."""
    lines: list[str] = []
    for wording, block in findings.items():
        if not isinstance(block, dict) or not block.get("model"):  # "findings": the names asked
            continue
        model, abl = block["model"], block.get("ablated")
        ruler = findings.get("ruler") or {}
        header = (
            f"{'finding':<10} {'pos/n':>8} {'AUC':>6} {'sens':>6} {'spec':>6} {'balacc':>7} "
            f"{'AUC abl':>8} {'balacc abl':>11} {'ruler AUC':>10}  measurement"
        )
        lines += [
            "",
            f"Findings, {wording} wording: p(present) = 1 - p(no) from the answer logits",
            header,
            "-" * len(header),
        ]

        def f3(v: float | None) -> str:
            return "  -  " if v is None or v != v else f"{v:.3f}"

        for code, row in model["per_finding"].items():
            a = abl["per_finding"][code] if abl else None
            lines.append(
                f"{code:<10} {row['n_pos']:>3}/{row['n']:<4} {f3(row['auc']):>6} "
                f"{f3(row['sensitivity']):>6} {f3(row['specificity']):>6} "
                f"{f3(row['balanced_accuracy']):>7} {f3(a['auc'] if a else None):>8} "
                f"{f3(a['balanced_accuracy'] if a else None):>11} "
                f"{f3(ruler[code]['auc'] if code in ruler else None):>10}  "
                f"{ruler[code]['feature'] if code in ruler else ''}"
            )
        for key, label in (("superclass", "superclasses"), ("statement", "statements")):
            m = model["macro"]
            am = abl["macro"] if abl else {}
            lines.append(
                f"macro, {label} ({m[f'n_{label}']}): AUC {f3(m[f'{key}_auc'])} "
                f"(ablated {f3(am.get(f'{key}_auc'))}), balanced accuracy "
                f"{f3(m[f'{key}_balanced_accuracy'])} "
                f"(ablated {f3(am.get(f'{key}_balanced_accuracy'))})"
            )
        cal = model.get("calibration")
        if cal:
            lines.append(
                f"calibration (ECE, {cal['presence']['n']} questions): p(present) "
                f"{f3(cal['presence']['ece'])}, confidence of the yes/no call "
                f"{f3(cal['answer']['ece'])}"
            )
    return lines


def json_safe(obj: Any) -> Any:
    """``obj`` with every NaN float (an AUC without both classes) as None, so the JSON stays strict."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def write_results(results: dict[str, Any], rows: list[dict[str, Any]], out_file: str | Path) -> Path:
    """Write the results JSON and the predictions JSON lines beside it; returns the latter's path."""
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    pred_path = (
        out.with_name(out.name + PREDICTIONS_SUFFIX)
        if out.suffix != ".json"
        else out.with_suffix(PREDICTIONS_SUFFIX)
    )
    with pred_path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=True) + "\n")
    results["predictions_file"] = str(pred_path)
    out.write_text(json.dumps(json_safe(results), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return pred_path
