"""Summarise ``diagecg eval`` results and ``bench/ecg_dependence.py`` JSON for the README: the ruler
beside the model per finding, the macro AUCs with intervals, calibration, exact match beside its baselines.

    python bench/summarize_findings.py runs/demo/instruct/eval_results.json runs/ecg_dependence.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _f(v: Any) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


def _ci(v: Any) -> str:
    return "" if not v else f" [{v[0]:.2f}, {v[1]:.2f}]"


def findings_table(title: str, block: dict[str, Any], ruler: dict[str, Any]) -> list[str]:
    model, abl = block["model"], block.get("ablated")
    out = [
        f"\n{title}",
        "| finding | pos/n | model AUC [95% CI] | ablated | ruler AUC (measurement) | sens | spec |",
        "|---|---|---|---|---|---|---|",
    ]
    for code, row in model["per_finding"].items():
        a = abl["per_finding"].get(code) if abl else None
        r = ruler.get(code)
        ruler_text = f"{_f(r['auc'])} ({r['feature']})" if r else "-"
        out.append(
            f"| {code} | {row['n_pos']}/{row['n']} | {_f(row['auc'])}{_ci(row.get('auc_ci95'))} | "
            f"{_f(a['auc']) if a else '-'} | {ruler_text} | "
            f"{_f(row['sensitivity'])} | {_f(row['specificity'])} |"
        )
    m = model["macro"]
    am = abl["macro"] if abl else {}
    out.append(
        f"macro superclass AUC {_f(m['superclass_auc'])}{_ci(m.get('superclass_auc_ci95'))} "
        f"(ablated {_f(am.get('superclass_auc'))}); statements ({m['n_statements']}) "
        f"{_f(m['statement_auc'])}{_ci(m.get('statement_auc_ci95'))} "
        f"(ablated {_f(am.get('statement_auc'))}); "
        f"balanced accuracy superclass {_f(m['superclass_balanced_accuracy'])}, statements "
        f"{_f(m['statement_balanced_accuracy'])}"
    )
    cal = model.get("calibration") or {}
    if cal:
        out.append(f"ECE p(present) {_f(cal['presence']['ece'])}, yes/no call {_f(cal['answer']['ece'])}")
    return out


def main(paths: list[str]) -> None:
    for p in paths:
        r = json.loads(Path(p).read_text())
        print(f"\n## {p}")
        if "qa" in r:  # diagecg eval
            f = r["findings"]
            for w in ("template", "paraphrase"):
                if w in f:
                    print(
                        "\n".join(
                            findings_table(
                                f"eval, {w} wording ({r['n_records']} records)", f[w], f.get("ruler", {})
                            )
                        )
                    )
            for w, q in r["qa"].items():
                g = q["groups"].get("verify+choose") or {}
                if g:
                    print(
                        f"QA {w}: verify+choose n={g['n']} model {_f(g['model'])} maj/q "
                        f"{_f(g['majority_question'])} maj/tpl {_f(g['majority_template'])} ablated "
                        f"{_f(g.get('ablated'))}"
                    )
        for key in ("ptbxl", "challenge"):
            if key in r:
                b = r[key]
                for w in ("template", "paraphrase", "whole_record"):
                    if w in b:
                        rate = b.get("fs_hz") or "native"
                        title = f"runtime {key} {w} ({b['n_records']} records, {rate} Hz)"
                        print("\n".join(findings_table(title, b[w], b.get("ruler", {}))))


if __name__ == "__main__":
    main(sys.argv[1:])
