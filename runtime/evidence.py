"""The measured numbers an answer shows (torch-free; used by the pipeline): the evidence of a finding,
the defining measurement of ``diagecg.criteria`` read in the window the answer comes from, and a
report's measurements (``diagecg.features.report_measurements``).

Kept apart from ``runtime.pipeline`` (which asks the model) and ``runtime.windows`` (which combines
the windows' answers): a new criterion or a new printed measurement changes this module only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diagecg.criteria import criterion_for
from diagecg.features import FEATURE_NAMES, report_measurements
from diagecg.questions import MatchedQuestion
from diagecg.runtime.windows import WindowAnswer
from diagecg.statements import coded_statements

__all__ = ["evidence", "finding_code", "measurements"]


def evidence(
    window: WindowAnswer, match: MatchedQuestion | None, calibration: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The measured values a closed finding question rests on (``diagecg.criteria``), from the
    window the answer comes from; empty for findings without a defining measurement.

    Args:
        window: the window the answer comes from.
        match: the catalogue question answered; None (no catalogue, or a report): no evidence.
        calibration: the pipeline's calibration in use (its entries may name a finding's code).
    """
    if match is None or not match.attributes:
        return []
    start_s, end_s, features = window.start_s, window.end_s, window.features
    out = []
    for name in match.attributes:
        crit = criterion_for(finding_code(name, calibration) or "")
        if crit is None:
            continue
        value = float(features[FEATURE_NAMES.index(crit.feature)])
        out.append(
            {
                "finding": name,
                "code": crit.code,
                "measurement": crit.feature,
                "value": round(value, 3),
                "unit": crit.unit,
                "cutoff": crit.cutoff,
                "direction": "above" if crit.direction > 0 else "below",
                "suggests_finding": crit.suggests(value),
                "window_s": [start_s, end_s],
            }
        )
    return out


def finding_code(name: str, calibration: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The SCP code of a finding name the catalogue asks about (calibration entries name it; else
    the statement table)."""
    cal = calibration.get(name)
    if cal and cal.get("code"):
        return str(cal["code"])
    coded = coded_statements([(name, True)])
    return coded[0].get("code") if coded else None


def measurements(window: WindowAnswer) -> dict[str, Any]:
    """A report's ``measurements``: those of its first window, the numbers the model read, with the
    window's span."""
    return {"window_s": [window.start_s, window.end_s], **report_measurements(window.features)}
