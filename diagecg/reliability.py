"""How far each finding can be trusted: the bundle's held-out evaluation, per finding (torch-free).

The manifest's ``evaluation`` holds, per finding, how the model did on held-out records (PTB-XL fold
10 for the shipped bundle; ``diagecg eval``): positives, AUC of p(present), sensitivity and
specificity at the decision rule. :class:`ReliabilityTable` reads it (unknown keys are ignored, so a
newer evaluation with more numbers still reads), adds what follows from those counts (PPV, NPV) and
95% intervals (Wilson for proportions, Hanley-McNeil for the AUC), and gives each finding a status:

* ``validated``: at least :data:`MIN_POSITIVES` positive records and AUC >= :data:`MIN_AUC`;
* ``below_floor``: evaluated, but with fewer positives (code ``FINDING_FEW_POSITIVES``: its numbers
  could be far off) or a lower AUC (``FINDING_LOW_AUC``);
* ``not_validated``: the evaluation has no numbers for it (``FINDING_NOT_VALIDATED``).

The floor: with fewer than 10 positives a sensitivity's 95% interval is wider than +/-0.3 (Wilson,
7/10: 0.40-0.89), too wide to say anything; an AUC under 0.75 ranks a random positive above a random
negative less than three times in four. A "yes" from a finding whose held-out PPV is under 0.5 carries
``FINDING_LOW_PPV``: on held-out records such a "yes" was wrong more often than right (PPV depends on
how common the finding is: these are at the evaluation's prevalence).

Questions about a template rather than a finding (choose, query, "any rhythm statement") carry the
template's held-out exact match beside the majority baseline (always the most common answer of the
template); ``TEMPLATE_NOT_BETTER_THAN_MAJORITY`` when the model does not beat it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from diagecg.constants import ManifestKey as K
from diagecg.notes import W

__all__ = ["MIN_AUC", "MIN_POSITIVES", "PPV_FLOOR", "ReliabilityTable", "hanley_mcneil", "wilson"]

MIN_POSITIVES = 10
MIN_AUC = 0.75
PPV_FLOOR = 0.5
Z95 = 1.959964
_STATUS_ORDER = ("validated", "below_floor", "not_validated")


def wilson(k: float, n: float) -> list[float] | None:
    """95% Wilson score interval of the proportion ``k / n``; None for ``n == 0``."""
    if n <= 0:
        return None
    p, z2 = k / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def hanley_mcneil(auc: float, n_pos: int, n_neg: int) -> list[float] | None:
    """95% interval of an AUC from its standard error (Hanley & McNeil, Radiology 1982)."""
    if n_pos <= 0 or n_neg <= 0 or not 0.0 <= auc <= 1.0:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    a2 = auc * auc
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - a2) + (n_neg - 1) * (q2 - a2)) / (n_pos * n_neg)
    se = math.sqrt(max(var, 0.0))
    return [round(max(0.0, auc - Z95 * se), 4), round(min(1.0, auc + Z95 * se), 4)]


def _number(row: Mapping[str, Any], key: str) -> float | None:
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(float(v)):
        return None
    return float(v)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


class ReliabilityTable:
    """Per-finding and per-template held-out numbers of a bundle, read from its manifest.

    Args:
        evaluation: the manifest's ``evaluation`` object (``{}`` for a bundle without one).
        calibration: the manifest's per-finding calibration (finding -> ``{"threshold", ...}``), if any:
            its thresholds are reported as the decision rule.
    """

    def __init__(
        self, evaluation: Mapping[str, Any] | None, calibration: Mapping[str, Any] | None = None
    ) -> None:
        evaluation = evaluation or {}
        findings = evaluation.get("findings") or {}
        model = ((findings.get("template") or {}).get("model") or {}) if isinstance(findings, Mapping) else {}
        per = model.get("per_finding") or {}
        folds = evaluation.get("folds") or []
        n_records = evaluation.get("n_records")
        self.source = (
            f"PTB-XL fold {', '.join(map(str, folds))} ({n_records} records), template wording"
            if folds
            else "the bundle's held-out evaluation"
        )
        self.calibration = dict(calibration or {})
        self._findings: dict[str, dict[str, Any]] = {}
        for code, row in per.items():
            if isinstance(row, Mapping) and row.get("name"):
                self._findings[str(row["name"]).lower()] = self._finding(str(code), row)
        qa = ((evaluation.get("qa") or {}).get("template") or {}).get("by_template") or {}
        self._templates = {str(k): v for k, v in qa.items() if isinstance(v, Mapping)}

    def _finding(self, code: str, row: Mapping[str, Any]) -> dict[str, Any]:
        n, n_pos = int(row.get("n") or 0), int(row.get("n_pos") or 0)
        n_neg = max(n - n_pos, 0)
        auc, sens, spec = _number(row, "auc"), _number(row, "sensitivity"), _number(row, "specificity")
        tp = round(sens * n_pos) if sens is not None else None
        tn = round(spec * n_neg) if spec is not None else None
        ppv = _number(row, "ppv")
        npv = _number(row, "npv")
        if ppv is None and tp is not None and tn is not None and tp + (n_neg - tn) > 0:
            ppv = tp / (tp + n_neg - tn)
        if npv is None and tp is not None and tn is not None and tn + (n_pos - tp) > 0:
            npv = tn / (tn + n_pos - tp)
        warnings = []
        if n_pos < MIN_POSITIVES:
            warnings.append(W.FINDING_FEW_POSITIVES)
        if auc is None or auc < MIN_AUC:
            warnings.append(W.FINDING_LOW_AUC)
        name = str(row["name"]).lower()
        threshold = _number(self.calibration.get(name) or {}, "threshold")
        return {
            "finding": name,
            "code": code,
            "status": "below_floor" if warnings else "validated",
            "n": n,
            "n_positives": n_pos,
            "auc": _round(auc),
            "auc_ci95": row.get("auc_ci95")
            or (hanley_mcneil(auc, n_pos, n_neg) if auc is not None else None),
            "sensitivity": _round(sens),
            "sensitivity_ci95": row.get("sensitivity_ci95")
            or (wilson(tp, n_pos) if tp is not None else None),
            "specificity": _round(spec),
            "specificity_ci95": row.get("specificity_ci95")
            or (wilson(tn, n_neg) if tn is not None else None),
            "ppv": _round(ppv),
            "ppv_ci95": row.get("ppv_ci95")
            or (wilson(tp, tp + n_neg - tn) if tp is not None and tn is not None else None),
            "npv": _round(npv),
            "npv_ci95": row.get("npv_ci95")
            or (wilson(tn, tn + n_pos - tp) if tp is not None and tn is not None else None),
            "decision": (
                f"calibrated p(present) >= {threshold:g}"
                if threshold is not None
                else "the most probable answer ('yes' or 'not sure' count as present)"
            ),
            "warnings": warnings,
        }

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> ReliabilityTable:
        """The table of a bundle's manifest (its ``evaluation``, and its ``calibration`` if any)."""
        calibration = manifest.get(K.CALIBRATION) or {}
        return cls(
            manifest.get(K.EVALUATION),
            calibration.get("findings") if isinstance(calibration, Mapping) else None,
        )

    def finding(self, name: str) -> dict[str, Any]:
        """The held-out numbers of a finding (catalogue name; ``normal ecg`` for "Is this a normal ECG?"),
        or a ``not_validated`` entry."""
        hit = self._findings.get(name.lower())
        if hit is not None:
            return dict(hit)
        return {
            "finding": name,
            "code": None,
            "status": "not_validated",
            "n": 0,
            "n_positives": 0,
            **{
                k: None
                for k in (
                    "auc",
                    "auc_ci95",
                    "sensitivity",
                    "sensitivity_ci95",
                    "specificity",
                    "specificity_ci95",
                    "ppv",
                    "ppv_ci95",
                    "npv",
                    "npv_ci95",
                    "decision",
                )
            },
            "warnings": [W.FINDING_NOT_VALIDATED],
        }

    def template(self, template_id: int) -> dict[str, Any] | None:
        """A template's held-out exact match beside its majority baseline, or None."""
        row = self._templates.get(str(template_id))
        if row is None:
            return None
        model, majority = _number(row, "model"), _number(row, "majority_template")
        warnings = (
            [W.TEMPLATE_NOT_BETTER_THAN_MAJORITY]
            if model is not None and majority is not None and model <= majority
            else []
        )
        return {
            "template_id": template_id,
            "n": int(row.get("n") or 0),
            "exact_match": _round(model),
            "majority_baseline": _round(majority),
            "warnings": warnings,
        }

    def validated(self) -> frozenset[str] | None:
        """The findings with held-out numbers (lower-case names), or None when the bundle has no
        evaluation at all (then no finding counts as checked more than another)."""
        return frozenset(self._findings) if self._findings else None

    def findings(self) -> list[dict[str, Any]]:
        """Every evaluated finding, by name."""
        return [dict(self._findings[k]) for k in sorted(self._findings)]

    def summary(self, findings: Iterable[str], template_id: int | None = None) -> dict[str, Any]:
        """The ``reliability`` of an answer: the findings it is about, the template's numbers, the
        worst status among them, the floor and where the numbers come from."""
        rows = [self.finding(f) for f in dict.fromkeys(findings)]
        template = self.template(template_id) if template_id is not None else None
        statuses = [r["status"] for r in rows]
        if template is not None:
            statuses.append("below_floor" if template["warnings"] else "validated")
        status = max(statuses, key=_STATUS_ORDER.index) if statuses else "not_validated"
        return {
            "status": status,
            "floor": {"min_positives": MIN_POSITIVES, "min_auc": MIN_AUC},
            "source": self.source,
            "findings": rows,
            "template": template,
        }
