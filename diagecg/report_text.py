"""Tidy a generated report: one statement once, the specific kept over the general, sentence case.

Generated reports are statements ended by periods (``diagecg.datasets.reports``: ``"sinus rhythm. complete
left bundle branch block."``). A model may repeat a statement, or add the general form of one it
already made (``"complete left bundle branch block. left bundle branch block."``). :func:`tidy_report`
drops a statement when it equals another or its words are a contiguous run of a longer statement's
words (so it is implied by it: ``left bundle branch block`` by ``complete left bundle branch block``),
keeps the first-seen order, and writes each statement in sentence case. Torch-free; the runtime
applies it to every report (a long record's window reports are joined and tidied once).
"""

from __future__ import annotations

import re

__all__ = ["report_statements", "tidy_report"]

_SPLIT = re.compile(r"(?<!\d)\.(?!\d)|\n|;")


def report_statements(text: str) -> list[str]:
    """The statements of a report, lower-cased, whitespace collapsed, empty ones dropped (decimal
    points such as ``0.5 mv`` do not split)."""
    return [s for s in (" ".join(p.split()).lower() for p in _SPLIT.split(text)) if s]


def _implied(short: list[str], long: list[str]) -> bool:
    n = len(short)
    return n < len(long) and any(long[i : i + n] == short for i in range(len(long) - n + 1))


def tidy_report(text: str) -> str:
    """Statements deduplicated, general ones implied by a more specific one dropped, each in
    sentence case and ended by a period; ``""`` for a report without statements."""
    statements: list[str] = []
    for s in report_statements(text):
        if s not in statements:
            statements.append(s)
    words = [s.split() for s in statements]
    kept = [
        s for s, w in zip(statements, words, strict=True) if not any(_implied(w, other) for other in words)
    ]
    return " ".join(s[0].upper() + s[1:] + "." for s in kept)
