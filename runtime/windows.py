"""A record's windows and their answers combined into the record's answer (torch-free; used by the pipeline).

The whole record. A record longer than the model window by more than 5% is cut into evenly spaced
windows (``diagecg.preprocess.record_windows``), each asked the question (:class:`WindowAnswer`).
A closed answer comes from the window with the strongest evidence of a finding (the lowest
probability of the template's ``negative_option``, ``diagecg.question_templates``); a query's or a
report's statements are each kept by the same rule applied to the yes/no question about them
(``runtime.answering.StatementReader``).

Kept apart from ``runtime.pipeline`` (which asks the model about each window): a new way to combine
windows, or a new field of the answer's ``windows`` list, changes this module only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from diagecg.answers import format_answer, normalize_answer
from diagecg.notes import Note, W
from diagecg.questions import NONE_ANSWER, MatchedQuestion
from diagecg.report_text import tidy_report
from diagecg.runtime.answer import TASK_REPORT
from diagecg.types import EcgRecord, F32Array, I64Array

__all__ = ["WindowAnswer", "aggregate", "unanalysed_note", "window_list"]


@dataclasses.dataclass(frozen=True, eq=False)
class WindowAnswer:
    """One analysed window of a record and the model's reply about it: what the record's answer is
    combined from (:func:`aggregate`) and what its ``windows`` list."""

    start_s: float
    end_s: float
    codes: I64Array  # the window's ECG token indices (summary codes, then frames)
    cached: bool  # the codes came from the pipeline's cache
    n_prompt_tokens: int
    reply: dict[str, Any]  # runtime.replies.choose (closed question) or decode: text, confidence...
    features: F32Array  # the window's measurements, in diagecg.features.FEATURE_NAMES order


_AGGREGATION = {
    "closed": "the answer is the window with the strongest evidence of a finding (the lowest "
    "probability of 'no', of 'none', or of 'yes' to 'is this a normal ECG?')",
    "query": "each member a window gave is kept when the model's yes/no answer about it, from the window "
    "with the strongest evidence of it, confirms it",
    "report": "each statement a window wrote is kept when the model's yes/no answer about it, from the "
    "window with the strongest evidence of it, confirms it; then contradictions are resolved",
    "free": "the first window answers (this bundle has no question catalogue to aggregate with)",
}


def _aggregation_kind(match: MatchedQuestion | None, task: str) -> str:
    if task == TASK_REPORT:
        return "report"
    if match is None:
        return "free"
    return "closed" if match.closed else "query"


def aggregate(
    parts: list[WindowAnswer], match: MatchedQuestion | None, task: str, rec: EcgRecord
) -> tuple[WindowAnswer, str, float | None, list[Note]]:
    """The whole record's answer from its windows' (the module docstring says how): the window it comes
    from, its text, its confidence, and notes for the warnings."""
    replies = [p.reply for p in parts]
    if task == TASK_REPORT:
        text = tidy_report(" ".join(r["text"] for r in replies))
        confidence = min(r["confidence"] for r in replies)
        chosen = parts[0]
    elif len(parts) == 1:
        return parts[0], replies[0]["text"], replies[0]["confidence"], []
    elif match is not None and match.closed:
        negative = match.template.negative_option
        # the mass off the negative option, summed (not 1 - p: it keeps tiny probabilities apart)
        best = max(
            range(len(parts)),
            key=lambda i: sum(p for o, p in replies[i]["option_probabilities"].items() if o != negative),
        )
        chosen, text, confidence = parts[best], replies[best]["text"], replies[best]["confidence"]
    elif match is not None:  # a query: the union of the windows' answer sets
        members = set().union(*(normalize_answer(r["text"]) for r in replies)) - {NONE_ANSWER}
        text = format_answer(members) if members else NONE_ANSWER
        confidence, chosen = min(r["confidence"] for r in replies), parts[0]
    else:  # no catalogue: no way to tell a finding from its absence; the first window answers
        chosen, text, confidence = parts[0], replies[0]["text"], replies[0]["confidence"]
    if len(parts) == 1:
        return chosen, text, confidence, []
    note = (
        f"{rec.duration_s:.1f} s record analysed in {len(parts)} windows of "
        f"{parts[0].end_s - parts[0].start_s:g} s; {_AGGREGATION[_aggregation_kind(match, task)]} "
        f"(per-window answers in 'windows')"
    )
    return chosen, text, confidence, [Note(W.WINDOWS_COMBINED, note)]


def unanalysed_note(rec: EcgRecord, parts: list[WindowAnswer]) -> Note | None:
    """The warning that the end of ``rec`` after its last window was not analysed (a record under 1.5
    windows: its first window only); None when at most 0.5 s is left."""
    rest = rec.duration_s - parts[-1].end_s
    if rest <= 0.5:
        return None
    return Note(
        W.RECORD_PART_NOT_ANALYSED,
        f"the last {rest:.1f} s of the {rec.duration_s:.1f} s record were not "
        f"analysed: a second window would repeat most of the first",
    )


def window_list(parts: list[WindowAnswer], closed: bool) -> list[dict[str, Any]]:
    """The answer's ``windows``: each window's span, answer, and (a closed question's) confidence and
    option probabilities, before the answer is turned to the question as asked."""
    return [
        {
            "start_s": p.start_s,
            "end_s": p.end_s,
            "answer": p.reply["text"],
            "confidence": p.reply["confidence"] if closed else None,
            "option_probabilities": p.reply.get("option_probabilities"),
        }
        for p in parts
    ]
