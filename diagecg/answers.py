"""QA answer sets as text: the trained format and a lenient reader (torch-free).

ECG-QA answers are sets (Oh et al. 2023, arXiv 2306.15681). The model is trained to write a set
as its members sorted and joined by ``constants.ANSWER_SEPARATOR`` (:func:`format_answer`).
Generated text is read leniently by :func:`normalize_answer` (case, spacing, trailing period,
``", "`` as separator outside parentheses), and a prediction is correct when its set equals the
reference set, ECG-QA's exact-match accuracy. Training, evaluation and the runtime all use this one module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from diagecg.constants import ANSWER_SEPARATOR

__all__ = ["ANSWER_SEPARATOR", "format_answer", "normalize_answer"]

_SEPARATOR_CHAR = ANSWER_SEPARATOR.strip()
_ANSWER_PREFIX_RE = re.compile(r"^\s*(?:the\s+)?answer\s*(?:is)?\s*[:\-]?\s*", re.IGNORECASE)


def format_answer(answers: Iterable[str]) -> str:
    """The training target for an answer set: members deduplicated, sorted, joined by ``"; "``.

    Args:
        answers: the answer set, e.g. ``("sinus rhythm", "left axis deviation")``.

    Returns:
        ``"left axis deviation; sinus rhythm"``.

    Raises:
        ValueError: the set is empty, a member is blank or contains the separator.
    """
    members = set(answers)
    if not members:
        raise ValueError("cannot format an empty answer set")
    bad = sorted(m for m in members if not m.strip() or _SEPARATOR_CHAR in m)
    if bad:
        raise ValueError(f"answer members must be non-blank and free of {_SEPARATOR_CHAR!r}: {bad}")
    return ANSWER_SEPARATOR.join(sorted(members))


def _split_outside_parentheses(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == sep and depth <= 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def normalize_answer(text: str) -> frozenset[str]:
    """Read a generated answer into a set of lower-cased members.

    Accepts ``"; "``-joined sets (the trained format) and ``", "``-joined ones; commas inside
    parentheses stay (``"bigeminal pattern (unknown origin, supraventricular, or ventricular)"``).
    Only the first line counts. A leading ``"Answer:"`` and trailing periods are dropped; inner
    whitespace is collapsed.

    Example: ``normalize_answer("Sinus rhythm, left axis deviation.")`` is
    ``frozenset({"sinus rhythm", "left axis deviation"})``.
    """
    stripped = text.strip()
    text = _ANSWER_PREFIX_RE.sub("", stripped.splitlines()[0] if stripped else "")
    sep = _SEPARATOR_CHAR if _SEPARATOR_CHAR in text else ","
    out = set()
    for part in _split_outside_parentheses(text, sep):
        item = " ".join(part.split()).strip().rstrip(".").strip().lower()
        if item:
            out.add(item)
    return frozenset(out)
