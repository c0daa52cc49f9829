"""From the model's replies to the answer of the question as asked (torch-free; used by the pipeline).

The pipeline asks the model the catalogue's canonical question window by window and combines the
windows (``runtime.windows.aggregate``: a closed question takes the window with the strongest evidence
of a finding). This module then:

* **answers the question as asked** (:func:`as_asked`): a negated question ("Is there no AF?") gets
  the model's answer and option probabilities inverted (yes <-> no), per window too;
* **gives every statement a probability** (:class:`StatementReader`): the probability that the
  finding is present as the model reads it, from its answer to the catalogue's yes/no question about
  that finding (1 - p(no); p(yes) for "normal ECG"). A closed question's statements take it from the
  answer itself; a query's members and a report's statements are each asked that yes/no question on
  every window, and the windows are combined by the same rule as a closed question (the window with
  the strongest evidence of the finding; for "normal ECG" the least normal window). A statement whose
  yes/no answer is "no" is dropped (``STATEMENT_NOT_CONFIRMED``), so a report never says what the
  answer to the direct question denies; then statements that contradict a more probable one are
  dropped (``STATEMENT_CONTRADICTED``, ``diagecg.consistency``);
* **keeps answers about one record consistent** (:meth:`StatementReader.decide`, one rule for closed
  questions, query members and report statements alike): a class is yes when one of its findings is
  (``ANSWER_FROM_MEMBER``), and of two findings no ECG has together the less probable is answered no
  (``ANSWER_CONTRADICTED``). It costs one yes/no
  scoring per related finding and window (the prompt prefix is reused): about 35 for "is this a normal
  ECG?", up to 15 for a class, a few otherwise;
* **says what was answered and how far to trust it**: notes for a broader or narrower reading and for
  ECG-QA's "any statement" templates, and the ``reliability`` summary with a note per finding below
  the floor (``diagecg.reliability``).

``confidence`` has one meaning: the probability of the given answer of a closed question (verify or
choose; after inversion for a negated one). Queries and reports have none (null): their statements
carry ``probability`` each instead of a probability of the whole decoded sequence.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from diagecg.answers import format_answer, normalize_answer
from diagecg.consistency import (
    CONTRADICTIONS,
    SUPERCLASS_MEMBERS,
    contradicting_pairs,
    resolve,
    statement_code,
)
from diagecg.notes import Note, W
from diagecg.questions import (
    NONE_ANSWER,
    NORMAL_STATEMENT,
    SEMANTICS,
    MatchedQuestion,
    QuestionCatalogue,
    QuestionType,
    Refusal,
)
from diagecg.reliability import PPV_FLOOR, ReliabilityTable
from diagecg.report_text import report_statements, tidy_report
from diagecg.statements import find_statement

__all__ = [
    "NORMAL_NAME",
    "Reading",
    "StatementReader",
    "as_asked",
    "choose_consistently",
    "presence",
    "question_notes",
    "refusal_note",
    "reliability_notes",
    "reliability_of",
    "statement_probabilities",
]

NORMAL_NAME = NORMAL_STATEMENT  # the finding "Is this a normal ECG?" asks about (PTB-XL's NORM)
# (window index, the catalogue's yes/no question about a finding) -> the reply of runtime.replies.choose
ScoreFn = Callable[[int, MatchedQuestion], dict[str, Any]]


def as_asked(
    match: MatchedQuestion | None,
    text: str,
    probs: dict[str, float] | None,
    confidence: float | None,
    windows: list[dict[str, Any]],
) -> tuple[str, dict[str, float] | None, float | None, list[dict[str, Any]]]:
    """The answer, option probabilities, confidence and windows of the question as asked (inverted
    for a negated question; unchanged otherwise)."""
    if match is None or not match.negated:
        return text, probs, confidence, windows
    inverted = match.probabilities_as_asked(probs) if probs is not None else None
    answer = match.as_asked(text)
    flipped = [
        {
            **w,
            "answer": match.as_asked(w["answer"]),
            "option_probabilities": match.probabilities_as_asked(w["option_probabilities"])
            if w.get("option_probabilities") is not None
            else None,
        }
        for w in windows
    ]
    return answer, inverted, (inverted or {}).get(answer, confidence), flipped


def presence(match: MatchedQuestion, probs: dict[str, float]) -> float:
    """The probability that the finding of a yes/no catalogue question is present: p(yes) for a
    record-level question about a statement ("is this a normal ECG?"), 1 - p(no) otherwise ("not sure"
    counts as present, as in ``diagecg eval``)."""
    if match.template.statement is not None:
        return float(probs.get("yes", 0.0))
    return float(1.0 - probs.get("no", 0.0))


def statement_probabilities(match: MatchedQuestion, probs: dict[str, float] | None) -> dict[str, float]:
    """The probability of each finding a closed question names (model side, before any inversion):
    a verify question's p(present); for a choice, the probability of every option that contains it."""
    if probs is None:
        return {}
    if match.question_type is QuestionType.VERIFY:
        statement = match.template.statement
        if statement is None:
            names = list(match.attributes)
        else:  # a record-level question about a statement: its table name ("normal ECG")
            st = find_statement(statement)
            names = [st.description] if st is not None else []
        return {n: round(presence(match, probs), 6) for n in names}
    if match.question_type is QuestionType.CHOOSE:
        return {
            a: round(sum(p for o, p in probs.items() if a in normalize_answer(o)), 6)
            for a in match.attributes
        }
    return {}


@dataclasses.dataclass(frozen=True)
class Reading:
    """How the model reads one finding of a record, windows combined: the probability that it is
    present, whether its yes/no answer says present, and the reply that answer comes from."""

    presence: float
    present: bool
    reply: dict[str, Any]


class StatementReader:
    """Reads findings of one record with the model's yes/no answers, under one rule that keeps any two
    answers about the record from contradicting each other.

    The rule (``decide``): a finding's reading is its yes/no answer on the window with the strongest
    evidence of it ("normal ECG": the least normal window). A superclass (myocardial infarction, ST/T
    change, conduction disturbance, hypertrophy) is present when it or any of its member findings reads
    present, with the largest of their probabilities. A finding that reads present is answered "no"
    when a finding no ECG carries together with it (``diagecg.consistency.CONTRADICTIONS``) reads present
    and ranks higher: a finding the bundle's evaluation validated (held-out numbers in the manifest)
    ranks above one it never validated, then the larger margin over its own yes threshold, in log-odds
    (``logit(p) - logit(threshold)``: the calibrated probability and threshold where the bundle has a
    calibration, else the model's p(present) against 0.5), then the name. Calibrated probabilities are
    probabilities of presence, so a common finding's is high on most records and a rare one's low even
    when the model reads it clearly: compared raw, "sinus rhythm" (most of PTB-XL) overruled atrial
    fibrillation on most AF records; the margin compares how far each reading is past its own decision
    rule. An unchecked reading never overturns a checked one: with the shipped bundle, "sinus
    arrhythmia" (never validated) overruled "atrial fibrillation" (validated, slightly less probable)
    on the AF record 00318, and "incomplete LBBB" (never validated) "complete LBBB" on the LBBB record
    00180. A rival that the rule itself answers no does not overrule (as in reports: a dropped
    statement drops nothing). What this rule did to balanced accuracy, against the alternatives, is in
    the README ("Answers about one record never contradict each other"). So "complete LBBB: yes" implies
    "conduction disturbance: yes", and "sinus bradycardia" and "sinus tachycardia", "atrial fibrillation"
    and "sinus rhythm", "normal ECG" and an infarction are never both yes. Closed questions, a query's
    members and a report's statements all go through it.

    Args:
        catalogue: the bundle's question catalogue.
        score: asks a window (by index) a catalogue yes/no question and returns the reply of
            ``runtime.replies.choose`` (``text``, ``option_probabilities``).
        n_windows: how many windows the record was analysed in.
        validated: the findings (catalogue names) the bundle's evaluation validated; None: every
            finding ranks alike.
        thresholds: each finding's yes threshold on its presence (catalogue name -> threshold: the
            bundle's calibration); a finding not in it: 0.5.
        shared: readings scored for earlier questions about the same prompt (record windows, patient,
            calibration); the reader adds the ones it scores, so later questions about the record do
            not score them again. None: kept for this reader only.
    """

    def __init__(
        self,
        catalogue: QuestionCatalogue,
        score: ScoreFn,
        n_windows: int,
        validated: frozenset[str] | None = None,
        shared: dict[str, Reading | None] | None = None,
        thresholds: Mapping[str, float] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.score = score
        self.n_windows = n_windows
        self.validated = validated
        self.thresholds = dict(thresholds or {})
        self._shared = {} if shared is None else shared
        self._readings: dict[str, Reading | None] = {}
        # PTB-XL code -> the catalogue's name of it ("normal ecg" for NORM, asked by template 2)
        self._names: dict[str, str] = {"NORM": NORMAL_NAME}
        for name in catalogue.findings:
            code = statement_code(name)
            if code is not None and catalogue.finding_question(name) is not None:
                self._names.setdefault(code, name)

    def seed(self, finding: str, reply: dict[str, Any]) -> None:
        """Record a reading already made (the asked question's own, windows combined)."""
        question = self.catalogue.finding_question(finding)
        if question is not None:
            self._readings[finding] = Reading(
                presence(question, reply["option_probabilities"]),
                _says_present(question, reply["text"]),
                reply,
            )

    def reading(self, finding: str) -> Reading | None:
        """A finding's reading (cached), or None when the catalogue cannot ask about it."""
        if finding not in self._readings and finding in self._shared:
            self._readings[finding] = self._shared[finding]
        if finding not in self._readings:
            question = self.catalogue.finding_question(finding)
            if question is None:
                self._readings[finding] = None
            else:
                replies = [self.score(k, question) for k in range(self.n_windows)]
                # the window with the strongest evidence of a finding: the least normal one when
                # "yes" says there is none ("is this a normal ECG?")
                sign = -1.0 if question.template.negative_option == "yes" else 1.0
                best = max(replies, key=lambda r: sign * presence(question, r["option_probabilities"]))
                self._readings[finding] = Reading(
                    presence(question, best["option_probabilities"]),
                    _says_present(question, best["text"]),
                    best,
                )
            self._shared[finding] = self._readings[finding]
        return self._readings[finding]

    def _effective(self, code: str) -> Reading | None:
        """A finding's reading with a superclass present when a member is (largest probability)."""
        own = self.reading(self._names[code]) if code in self._names else None
        members = [
            r
            for c in sorted(SUPERCLASS_MEMBERS.get(code, ()))
            if c in self._names and (r := self.reading(self._names[c])) is not None and r.present
        ]
        if not members:
            return own
        best = max(members, key=lambda r: r.presence)
        if own is not None and own.present and own.presence >= best.presence:
            return own
        return best

    def decide(self, finding: str) -> tuple[Reading | None, Note | None]:
        """The reading of a finding under the rule (class docstring) and a note when the rule changed
        the model's own answer; None when the catalogue cannot ask about the finding."""
        code = statement_code(finding)
        own = self.reading(finding)
        if code is None or own is None:
            return own, None
        rivals = sorted(c for pair in CONTRADICTIONS if code in pair for c in pair if c != code)
        effective = own  # a class's members are read only when they can change the answer (they cost)
        if code in SUPERCLASS_MEMBERS and (
            not own.present or any((r := self._effective(c)) is not None and r.present for c in rivals)
        ):
            effective = self._effective(code) or own
        note = None
        if effective.present and not own.present:
            member = next(
                n
                for c, n in self._names.items()
                if c in SUPERCLASS_MEMBERS.get(code, ()) and self._readings.get(n) is effective
            )
            note = Note(
                W.ANSWER_FROM_MEMBER,
                f"{finding}: answered yes because the model reads {member}, "
                f"one kind of it, as present (p = {effective.presence:.2f})",
            )
        if not effective.present:
            return effective, note
        for other in rivals:
            rival = self._effective(other)
            name = self._names.get(other, other)
            if (
                rival is None
                or not rival.present
                or (self._rank(name, rival) <= self._rank(finding, effective))
            ):
                continue
            # a rival the rule itself overrules does not overrule (ranks rise along the chain, so it ends)
            if name in self._names.values() and not (self.decide(name)[0] or rival).present:
                continue
            note = Note(
                W.ANSWER_CONTRADICTED,
                f"{finding}: the model reads it as present (p = {effective.presence:.2f}) but "
                f"{name}, which no ECG has together with it, as more probable (p = "
                f"{rival.presence:.2f}): answered no",
            )
            no = {"text": "no", "option_probabilities": effective.reply["option_probabilities"]}
            return Reading(effective.presence, False, no), note
        return effective, note

    def _rank(self, finding: str, reading: Reading) -> tuple[bool, float, str]:
        """Which of two contradicting readings stands (class docstring): validated, then the larger
        log-odds margin over its own threshold."""
        checked = self.validated is None or finding.lower() in self.validated
        return checked, _log_odds(reading.presence) - _log_odds(self.thresholds.get(finding, 0.5)), finding

    def verify(
        self, match: MatchedQuestion, text: str, probs: dict[str, float]
    ) -> tuple[str, dict[str, float], list[Note]]:
        """A closed yes/no question about one finding (template 1) or "is this a normal ECG?", answered
        under the rule: the answer, its option probabilities, and the note when the rule changed it."""
        finding = match.finding
        assert finding is not None, f"template {match.template_id} is not a question about one finding"
        self.seed(finding, {"text": text, "option_probabilities": probs})
        decided, note = self.decide(finding)
        if decided is None or note is None:
            return text, probs, []
        return decided.reply["text"], dict(decided.reply["option_probabilities"]), [note]

    def read(self, statement: str) -> tuple[float | None, bool, Note | None]:
        """The record's probability of a statement, whether the rule keeps it, and why not (True for a
        statement the catalogue cannot ask about: nothing contradicts it)."""
        question = self.catalogue.finding_question(statement)
        if question is None:
            return None, True, None
        finding = question.finding
        assert finding is not None, f"template {question.template_id} is not a question about one finding"
        decided, note = self.decide(finding)
        assert decided is not None
        p = round(decided.presence, 6)
        if not decided.present and note is None:
            note = Note(
                W.STATEMENT_NOT_CONFIRMED,
                f"'{statement}' was generated but dropped: asked "
                f"directly, the model answers no (p(present) = {p:.2f})",
            )
        elif not decided.present and note is not None:
            note = Note(W.STATEMENT_CONTRADICTED, f"'{statement}' was generated but dropped: {note.message}")
        return p, decided.present, note if not decided.present else None

    def confirm(self, said: Sequence[Sequence[str]]) -> tuple[list[str], dict[str, float | None], list[Note]]:
        """The statements the windows said (``said[k]``: window k's), kept when the rule keeps them;
        their probabilities; notes for the ones dropped."""
        order: list[str] = []
        windows: dict[str, int] = {}
        for statements in said:
            for s in dict.fromkeys(statements):
                if s not in windows:
                    order.append(s)
                windows[s] = windows.get(s, 0) + 1
        probs: dict[str, float | None] = {}
        notes: list[Note] = []
        confirmed = []
        for s in order:
            probs[s], ok, note = self.read(s)
            if ok:
                confirmed.append(s)
            elif note is not None:
                notes.append(note)
        # statements the catalogue cannot ask about may still contradict one another
        kept, dropped = resolve([(s, probs[s], windows[s]) for s in confirmed])
        for s, other in dropped:
            notes.append(
                Note(
                    W.STATEMENT_CONTRADICTED,
                    f"'{s}' was dropped: it contradicts '{other}', which is more probable",
                )
            )
        return kept, {s: probs[s] for s in kept}, notes

    def query(self, texts: Sequence[str]) -> tuple[str, dict[str, float | None], list[Note]]:
        """A query's answer from its windows' answers: the members the rule keeps, or ``none``."""
        said = [sorted(normalize_answer(t) - {NONE_ANSWER}) for t in texts]
        kept, probs, notes = self.confirm(said)
        return (format_answer(kept) if kept else NONE_ANSWER), probs, notes

    def report(self, texts: Sequence[str]) -> tuple[str, dict[str, float | None], list[Note]]:
        """A report from its windows' reports: the statements the rule keeps, tidied."""
        kept, probs, notes = self.confirm([report_statements(t) for t in texts])
        text = tidy_report(". ".join(kept))
        shown = report_statements(text)
        return text, {s: probs.get(s) for s in shown}, notes


def _log_odds(p: float) -> float:
    q = min(max(float(p), 1e-6), 1 - 1e-6)
    return math.log(q / (1 - q))


def _says_present(question: MatchedQuestion, answer: str) -> bool:
    """Whether a yes/no catalogue answer says the finding is present ("not sure" counts, as in eval)."""
    return answer == "yes" if question.template.statement is not None else answer != "no"


def choose_consistently(match: MatchedQuestion, text: str, probs: dict[str, float]) -> tuple[str, list[Note]]:
    """A choice's answer that names two findings no ECG has together ("atrial fibrillation; sinus
    rhythm") is replaced by the most probable option that does not."""
    if not contradicting_pairs(sorted(normalize_answer(text))):
        return text, []
    allowed = [o for o in match.options if not contradicting_pairs(sorted(normalize_answer(o)))]
    best = max(allowed, key=lambda o: probs.get(o, 0.0))
    return best, [
        Note(
            W.ANSWER_CONTRADICTED,
            f"'{text}' names findings no ECG has together: answered the most probable other option, '{best}'",
        )
    ]


def question_notes(match: MatchedQuestion) -> list[Note]:
    """What an answer does not say: a broader or narrower reading of a finding, and ECG-QA's "any
    statement" templates whose "yes" counts sinus rhythm."""
    notes = []
    for t in match.terms:
        if t.scope == "broader":
            notes.append(
                Note(
                    W.QUESTION_BROADER, f"'{t.asked}' was answered as {t.finding}, which is broader: {t.note}"
                )
            )
        elif t.scope == "narrower":
            notes.append(
                Note(
                    W.QUESTION_NARROWER,
                    f"'{t.asked}' was answered as {t.finding}, which is narrower: {t.note}",
                )
            )
    if match.template.any_statement:
        notes.append(Note(W.ECGQA_ANY_STATEMENT, SEMANTICS[match.template_id]))
    return notes


def refusal_note(refusal: Refusal) -> Note:
    """The warning of a refused question: why, and the supported questions nearest to it."""
    closest = "; ".join(repr(q) for q in refusal.suggestions)
    return Note(
        W.QUESTION_UNSUPPORTED,
        f"question not supported, so no answer is given: {refusal.message} "
        f"(closest supported: {closest}; `diagecg questions` lists them all)",
    )


def reliability_notes(summary: dict[str, Any], present: dict[str, bool]) -> list[Note]:
    """A note per finding of an answer below the floor or never validated, and per finding said present
    whose held-out "yes" was wrong more often than right; one for a template no better than its
    majority answer."""
    notes = []
    floor = summary["floor"]
    for row in summary["findings"]:
        name, codes = row["finding"], row["warnings"]
        if W.FINDING_NOT_VALIDATED in codes:
            notes.append(
                Note(
                    W.FINDING_NOT_VALIDATED,
                    f"{name}: not validated (no held-out numbers in this "
                    f"bundle): treat the answer as unchecked",
                )
            )
        if W.FINDING_FEW_POSITIVES in codes:
            notes.append(
                Note(
                    W.FINDING_FEW_POSITIVES,
                    f"{name}: validated on only {row['n_positives']} positive records (floor "
                    f"{floor['min_positives']}): its numbers could be far off",
                )
            )
        if W.FINDING_LOW_AUC in codes:
            notes.append(
                Note(
                    W.FINDING_LOW_AUC,
                    f"{name}: held-out AUC {row['auc']} is below the floor ({floor['min_auc']})",
                )
            )
        ppv = row.get("ppv")
        if present.get(name) and ppv is not None and ppv < PPV_FLOOR:
            notes.append(
                Note(
                    W.FINDING_LOW_PPV,
                    f"{name}: on held-out records a 'yes' was right {ppv:.0%} of the time (PPV {ppv:.2f})",
                )
            )
    template = summary.get("template")
    if template and template["warnings"]:
        notes.append(
            Note(
                W.TEMPLATE_NOT_BETTER_THAN_MAJORITY,
                f"held out, this question was answered right {template['exact_match']:.0%} of the "
                f"time, no better than always giving its most common answer "
                f"({template['majority_baseline']:.0%})",
            )
        )
    return notes


def reliability_of(
    table: ReliabilityTable,
    catalogue: QuestionCatalogue,
    match: MatchedQuestion | None,
    statements: Sequence[dict[str, Any]],
    task_is_report: bool,
) -> tuple[dict[str, Any] | None, dict[str, bool]]:
    """An answer's ``reliability`` and which of its findings it says present (by catalogue name): the
    findings of its statements (a verify question's, a choice's, a query's members, a report's) and,
    for a question about a template rather than one finding, the template; None for a free question."""
    if match is None and not task_is_report:
        return None, {}
    present: dict[str, bool] = {}
    for st in statements:
        question = catalogue.finding_question(st["text"])
        name = st["text"] if question is None or question.finding is None else question.finding
        present[name] = present.get(name, False) or bool(st["present"])
    template_id = None
    # a question about one finding has that finding's numbers; any other also its template's
    if match is not None and not match.template.one_finding:
        template_id = match.template_id
    return table.summary(present, template_id), present
