"""What a record's answer states about findings, and how far to trust it (torch-free; used by the pipeline).

Once the windows' answers are combined (``runtime.windows``):

* :func:`statement_reader` sets up the one consistency rule (``runtime.answering.StatementReader``) for a
  record's windows, and :func:`read_consistently` applies it: a
  closed answer is checked against the related findings, a query's members and a report's statements are
  each kept when the yes/no question about them confirms them;
* :func:`answer_statements` codes what the answer says (``diagecg.statements``): a report's sentences,
  or the findings a catalogue question's answer names, each with its probability;
* :func:`answer_reliability` gives the answer's ``reliability`` summary and notes
  (``diagecg.reliability``), marked :data:`IMPLAUSIBLE_RECORD` for a record that fails a plausibility
  check (the held-out numbers are of records that pass them).

Kept apart from ``runtime.pipeline`` (which asks the model and orders the work): a change to what an
answer states or how far it is trusted changes this module (and ``runtime.answering``) only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from diagecg.notes import Note
from diagecg.plausibility import CHECKS
from diagecg.questions import MatchedQuestion, QuestionCatalogue
from diagecg.reliability import ReliabilityTable
from diagecg.report_text import report_statements
from diagecg.runtime.answer import TASK_REPORT
from diagecg.runtime.answering import (
    ScoreFn,
    StatementReader,
    choose_consistently,
    question_notes,
    reliability_notes,
    reliability_of,
    statement_probabilities,
)
from diagecg.statements import answer_findings, coded_statements

__all__ = [
    "IMPLAUSIBLE_RECORD",
    "PLAUSIBILITY_CODES",
    "answer_reliability",
    "answer_statements",
    "read_consistently",
    "statement_reader",
]

PLAUSIBILITY_CODES = frozenset(CHECKS.values())  # record warnings of diagecg.plausibility
IMPLAUSIBLE_RECORD = "implausible_record"  # reliability status of an answer about such a record


def statement_reader(
    catalogue: QuestionCatalogue,
    ask: ScoreFn,
    n_windows: int,
    table: ReliabilityTable,
    readings: dict[str, Any],
    calibration: Mapping[str, Mapping[str, Any]],
) -> StatementReader:
    """The consistency rule's reader of one record's windows: ``ask`` puts a catalogue yes/no question to a
    window (by index), ``readings`` are those kept for this prompt (``EcgCodeReader.shared_readings``),
    the findings ``table`` validated rank first, and a calibrated finding is present above its threshold."""
    thresholds = {name: float(c["threshold"]) for name, c in calibration.items() if "threshold" in c}
    return StatementReader(catalogue, ask, n_windows, table.validated(), readings, thresholds)


def read_consistently(
    reader: StatementReader | None,
    match: MatchedQuestion | None,
    task: str,
    texts: Sequence[str],
    text: str,
    probs: dict[str, float] | None,
    confidence: float | None,
) -> tuple[str, dict[str, float] | None, float | None, dict[str, float | None], list[Note]]:
    """The record's answer under the consistency rule: its text, option probabilities, confidence, the
    probability of each statement, and notes for the warnings.

    Args:
        reader: the rule's reader of this record's windows; None (no catalogue): a choice is still kept
            free of contradictions, nothing else is read.
        match: the catalogue question answered, or None (a report, or no catalogue).
        task: ``TASK_QA`` or ``TASK_REPORT``.
        texts: each window's decoded text (a query's or report's statements are read from them).
        text, probs, confidence: the combined answer (``runtime.windows.aggregate``).
    """
    closed = match is not None and match.closed
    statement_probs: dict[str, float | None] = {}
    notes: list[Note] = []
    if match is not None and closed and probs is not None:
        if reader is not None and match.template.one_finding:
            text, probs, rule_notes = reader.verify(match, text, probs)
        else:
            text, rule_notes = choose_consistently(match, text, probs)
        notes.extend(rule_notes)
        confidence = probs[text]
        statement_probs = dict(statement_probabilities(match, probs))
    elif not closed:  # one meaning of confidence: a closed question's (queries, reports: per statement)
        confidence = None
        if reader is not None and (match is not None or task == TASK_REPORT):
            read_all = reader.report if task == TASK_REPORT else reader.query
            text, statement_probs, read_notes = read_all(texts)
            notes.extend(read_notes)
    return text, probs, confidence, statement_probs, notes


def answer_statements(
    task: str,
    match: MatchedQuestion | None,
    text: str,
    model_answers: frozenset[str],
    statement_probs: dict[str, float | None],
) -> list[dict[str, Any]]:
    """The answer's coded ``statements``: a report's sentences (``text``), or the findings the model's
    answer to a catalogue question (``model_answers``, before any inversion) names; none for a free
    question."""
    if task == TASK_REPORT:
        findings = [(s, True) for s in report_statements(text)]
    else:
        findings = (
            []
            if match is None
            else answer_findings(
                match.question_type, match.attributes, model_answers, statement=match.template.statement
            )
        )
    return coded_statements(findings, statement_probs)


def answer_reliability(
    table: ReliabilityTable,
    catalogue: QuestionCatalogue | None,
    match: MatchedQuestion | None,
    statements: Sequence[dict[str, Any]],
    task: str,
    record_notes: Sequence[Note],
) -> tuple[dict[str, Any] | None, list[Note]]:
    """The answer's ``reliability`` (None without a catalogue) and its notes: what the question does not
    say (``question_notes``) and the findings below the floor (``reliability_notes``)."""
    if catalogue is None:
        return None, []
    reliability, present = reliability_of(table, catalogue, match, statements, task == TASK_REPORT)
    notes = [*question_notes(match)] if match is not None else []
    notes.extend(reliability_notes(reliability, present) if reliability is not None else [])
    if reliability is not None and any(n.code in PLAUSIBILITY_CODES for n in record_notes):
        # the held-out numbers are of records that pass these checks; this one fails one
        reliability = {**reliability, "status": IMPLAUSIBLE_RECORD}
    return reliability, notes
