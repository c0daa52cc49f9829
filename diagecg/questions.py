"""What a bundle was trained to answer, and how a free-text question is matched to it (torch-free).

The **question catalogue** lists the single-ECG ECG-QA templates the model was trained on: each
template's question type (verify / choose / query), the attribute values it may name, its closed
answer options and example wordings. The export writes it into the manifest (``questions``);
``diagecg questions`` prints it.

:meth:`QuestionCatalogue.match` reads an incoming question into a :class:`MatchedQuestion`: the
template, the attributes named, the answer options, and the *canonical* wording (the template
sentence the model was trained with), which is what the runtime sends to the model. Matching:

1. Normalise: lower case, typographic quotes and dashes made plain, punctuation other than
   ``/ - ( ) ,`` dropped, whitespace collapsed.
2. Find the attributes named, longest surface form first and never overlapping: the attribute
   names themselves (``complete left bundle branch block``), a trailing ``s`` (``PVCs``), and the
   synonyms and abbreviations of :data:`SYNONYMS` (``AF``, ``AFib``, ``LBBB``, ``1st degree AVB``,
   ``LVH``, ``PVC``...). Because the longest form wins, ``incomplete left bundle branch block`` is
   never read as ``LBBB``.
3. Pick the template from what was found:

   * one attribute: "does the ECG show X?" (template 1), unless the question asks for a number
     (``how many``, ``what is the rate``...), which no template answers;
   * two attributes joined by ``or`` / ``which`` / ``between``: the choose template of the group
     both belong to (superclasses, rhythm, form, diagnostic statements; "certain" / "excluding
     uncertain" selects the certain-only variant);
   * none: record-level questions by keyword: normal ECG (2), anything abnormal (12), any diagnostic
     (13/14), form (15) or rhythm (16) finding, and "what/which/list" questions about the
     diagnostic (8/9), rhythm (10) or form (11) findings.

   Anything else (a numeric measurement, several findings at once, a question about something the
   model never learnt, "What is the capital of France?") is **unsupported**: the runtime then gives
   no clinical answer and names the closest supported questions (:meth:`QuestionCatalogue.closest`).

Synonyms map to ECG-QA attribute names; one whose target is not in a bundle's catalogue is ignored.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from diagecg.answers import format_answer

__all__ = ["SYNONYMS", "TEMPLATES", "CatalogueEntry", "MatchedQuestion", "QuestionCatalogue",
           "QuestionTemplate", "build_catalogue", "fill_attributes", "normalize_question"]

ATTRIBUTE = "${attribute}"
ATTRIBUTE1, ATTRIBUTE2 = "${attribute1}", "${attribute2}"
NONE_ANSWER = "none"  # the answer of a choose or query question when no candidate is present
NORMAL_ECG_TEMPLATE = 2  # "Is this a normal ECG?": its "yes" is the absence of findings

# --- the templates (ECG-QA wording; see diagecg.datasets.ecgqa for where the wordings come from) --

@dataclasses.dataclass(frozen=True)
class QuestionTemplate:
    """One single-ECG ECG-QA template the instruction data is generated from: its wording, the attribute
    group it asks about, its training paraphrases and the held-out ones (kept for evaluation)."""

    template_id: int
    question_type: str
    group: str  # what it asks about (see CatalogueEntry.group)
    text: str  # ECG-QA wording; ${attribute}, ${attribute1}, ${attribute2} placeholders
    train_paraphrases: tuple[str, ...]
    heldout_paraphrases: tuple[str, ...]


_A, _A1, _A2 = ATTRIBUTE, ATTRIBUTE1, ATTRIBUTE2
_INC, _EXC = ", including uncertain symptoms", ", excluding uncertain symptoms"


def _t(
    tid: int, qtype: str, group: str, text: str, train: tuple[str, ...], held: tuple[str, ...]
) -> QuestionTemplate:
    return QuestionTemplate(tid, f"single-{qtype}", group, text, train, held)


TEMPLATES: dict[int, QuestionTemplate] = {t.template_id: t for t in (
    _t(1, "verify", "code", f"Does this ECG show symptoms of {_A}?",
       (f"Are there signs of {_A} in this ECG?", f"Does this ECG indicate {_A}?", f"Is there {_A}?",
        f"Does this ECG have {_A}?", f"Do you see {_A} in this ECG?", f"Is {_A} present?",
        f"Does the ECG show {_A}?", f"Does this recording show {_A}?", f"Any {_A} on this ECG?",
        f"Is {_A} found in this tracing?"),
       (f"Is there evidence of {_A} in this ECG?", f"Can {_A} be seen on this ECG?")),
    _t(2, "verify", "norm", "Is this a normal ECG?",
       ("Is this ECG normal?", "Is the ECG within normal limits?", "Is this a normal tracing?",
        "Is this ECG unremarkable?"),
       ("Would you read this ECG as normal?", "Does this ECG look normal?")),
    _t(3, "choose", "superclass", f"Which diagnostic symptom does this ECG show, {_A1} or {_A2}?",
       (f"Which of {_A1} and {_A2} does this ECG show?", f"Does this ECG show {_A1} or {_A2}?",
        f"{_A1} or {_A2}: which one is in this ECG?"),
       (f"Between {_A1} and {_A2}, which is present in this ECG?",
        f"Which is found in this ECG: {_A1} or {_A2}?")),
    _t(4, "choose", "dx_inc", f"Which diagnostic symptom does this ECG show, {_A1} or {_A2}{_INC}?",
       (f"Which of {_A1} and {_A2} does this ECG show{_INC}?",),
       (f"Counting uncertain findings too, which is present in this ECG: {_A1} or {_A2}?",)),
    _t(5, "choose", "dx_exc", f"Which diagnostic symptom does this ECG show, {_A1} or {_A2}{_EXC}?",
       (f"Which of {_A1} and {_A2} does this ECG show{_EXC}?",),
       (f"Counting only certain findings, which is present in this ECG: {_A1} or {_A2}?",)),
    _t(6, "choose", "form", f"Which form-related symptom does this ECG show, {_A1} or {_A2}?",
       (f"Which of the waveform findings {_A1} and {_A2} does this ECG show?",
        f"Does this ECG show {_A1} or {_A2}?"),
       (f"Looking at the waveform shape, which is present in this ECG: {_A1} or {_A2}?",)),
    _t(7, "choose", "rhythm", f"Which rhythm-related symptom does this ECG show, {_A1} or {_A2}?",
       (f"Which of the rhythm findings {_A1} and {_A2} does this ECG show?",
        f"Is the rhythm {_A1} or {_A2}?"),
       (f"Regarding the rhythm, which is present in this ECG: {_A1} or {_A2}?",)),
    _t(8, "query", "dx_inc", f"What diagnostic symptoms does this ECG show{_INC}?",
       (f"Which diagnostic findings does this ECG have{_INC}?",),
       ("List every diagnostic finding in this ECG, counting uncertain ones too.",)),
    _t(9, "query", "dx_exc", f"What diagnostic symptoms does this ECG show{_EXC}?",
       (f"Which diagnostic findings does this ECG have{_EXC}?",),
       ("List the diagnostic findings in this ECG, counting only certain ones.",)),
    _t(10, "query", "rhythm", "What rhythm-related symptoms does this ECG show?",
       ("Which rhythm findings does this ECG have?",), ("Describe the rhythm findings of this ECG.",)),
    _t(11, "query", "form", "What form-related symptoms does this ECG show?",
       ("Which waveform findings does this ECG have?",),
       ("List the form-related findings seen in this ECG.",)),
    _t(12, "verify", "abnormal", "Does this ECG show any kind of abnormal symptoms?",
       ("Is anything abnormal in this ECG?",), ("Does this ECG contain any abnormal finding?",)),
    _t(13, "verify", "dx_inc", f"Does this ECG show any diagnostic symptoms{_INC}?",
       (f"Are there diagnostic findings in this ECG{_INC}?",),
       ("Counting uncertain findings too, is there any diagnostic finding in this ECG?",)),
    _t(14, "verify", "dx_exc", f"Does this ECG show any diagnostic symptoms{_EXC}?",
       (f"Are there diagnostic findings in this ECG{_EXC}?",),
       ("Counting only certain findings, is there any diagnostic finding in this ECG?",)),
    _t(15, "verify", "form", "Does this ECG show any form-related symptoms?",
       ("Are there waveform abnormalities in this ECG?",),
       ("Is the waveform shape of this ECG abnormal in any way?",)),
    _t(16, "verify", "rhythm", "Does this ECG show any rhythm-related symptoms?",
       ("Are there rhythm findings in this ECG?",), ("Is any rhythm statement made for this ECG?",)),
)}


# abbreviations and common names -> ECG-QA attribute name (lower case; matched on word boundaries)
SYNONYMS: dict[str, tuple[str, ...]] = {
    "atrial fibrillation": ("af", "afib", "a-fib", "a fib", "atrial fib", "auricular fibrillation"),
    "atrial flutter": ("afl", "aflutter", "a-flutter", "flutter"),
    "complete left bundle branch block": ("lbbb", "clbbb", "left bundle branch block",
                                          "complete lbbb", "left bundle-branch block"),
    "complete right bundle branch block": ("rbbb", "crbbb", "right bundle branch block",
                                           "complete rbbb", "right bundle-branch block"),
    "incomplete left bundle branch block": ("ilbbb", "incomplete lbbb"),
    "incomplete right bundle branch block": ("irbbb", "incomplete rbbb"),
    "first degree av block": ("1st degree av block", "1st degree avb", "first degree avb", "1avb", "1 avb",
                              "first-degree av block", "1st-degree av block", "first degree heart block",
                              "1st degree heart block", "first degree atrioventricular block",
                              "1st degree atrioventricular block", "av block i", "avb i"),
    "left ventricular hypertrophy": ("lvh",),
    "left anterior fascicular block": ("lafb", "left anterior hemiblock", "lahb"),
    "left posterior fascicular block": ("lpfb", "left posterior hemiblock", "lphb"),
    "ventricular premature complex": ("pvc", "vpc", "vpb", "pvb", "premature ventricular contraction",
                                      "premature ventricular complex", "premature ventricular beat",
                                      "ventricular premature beat", "ventricular extrasystole",
                                      "ventricular ectopic beat"),
    "atrial premature complex": ("pac", "apc", "apb", "premature atrial contraction",
                                 "premature atrial complex",
                                 "premature atrial beat", "atrial premature beat", "atrial extrasystole",
                                 "supraventricular premature beat", "svpb"),
    "sinus bradycardia": ("sinus brady", "bradycardia"),
    "sinus tachycardia": ("sinus tach", "tachycardia"),
    "supraventricular tachycardia": ("svt", "psvt"),
    "sinus rhythm": ("nsr", "normal sinus rhythm"),
    "sinus arrhythmia": ("sarrh", "respiratory sinus arrhythmia"),
    "myocardial infarction": ("mi", "infarction", "infarct", "heart attack", "myocardial infarct"),
    "st/t change": ("st-t change", "st t change", "st/t abnormality", "st-t abnormality", "stt change",
                    "st/t changes", "st-t changes"),
    "conduction disturbance": ("conduction abnormality", "conduction defect", "conduction disorder"),
    "hypertrophy": ("ventricular hypertrophy", "chamber enlargement"),
    "left atrial overload/enlargement": ("left atrial enlargement", "left atrial overload", "lae", "lao"),
    "right atrial overload/enlargement": ("right atrial enlargement", "right atrial overload", "rae", "rao"),
    "long qt-interval": ("long qt", "long qt interval", "prolonged qt", "prolonged qt interval", "long qtc",
                         "prolonged qtc", "qt prolongation", "qt prolonged", "qtc prolonged"),
    "prolonged pr interval": ("long pr", "long pr interval", "prolonged pr", "pr prolongation"),
    "normal functioning artificial pacemaker": ("pacemaker", "paced rhythm", "pacing"),
    "non-specific intraventricular conduction disturbance (block)": (
        "ivcd", "intraventricular conduction delay", "nonspecific intraventricular block"),
    "low qrs voltages in the frontal and horizontal leads": ("low qrs voltage", "low voltage",
                                                             "low voltages"),
    "high qrs voltage": ("high voltage", "high qrs voltages"),
    "inverted t-waves": ("inverted t waves", "t wave inversion", "t-wave inversion", "inverted t"),
    "q waves present": ("q waves", "pathological q waves", "q-waves"),
    "digitalis effect": ("digoxin effect", "digitalis"),
}

# words that make a question ask for a number or a measurement, which no template answers
_NUMERIC = re.compile(r"\b(how many|how much|how long|how fast|what is the (heart )?rate|heart rate|bpm|"
                      r"\bms\b|milliseconds?|duration|interval in|qtc? (interval )?(is|value)|value of|"
                      r"measure|axis|age|how old|weight|height)\b")
_CHOICE = re.compile(r"\b(or|which|between|whether)\b")
_ONE_OF_TWO = re.compile(r"\bor\b(?!\s+(not|no)\b)")  # "A or B", not "... or not?" / "yes or no"
_WH = re.compile(r"^(what|which|list|name|describe|tell|give|show me|report|enumerate)\b")
_CERTAIN_ONLY = re.compile(r"\b(certain|excluding uncertain|definite|confirmed|only certain|"
                           r"without uncertain)\b")
_STRIP = re.compile(r"[^a-z0-9/\-(),.' ]+")


def normalize_question(text: str) -> str:
    """Lower case, plain quotes and dashes, no punctuation beyond ``/ - ( ) ,``, single spaces."""
    t = text.lower().replace("\u2019", "'").replace("\u2013", "-").replace("\u2014", "-")
    t = t.replace("°", " degree ")
    t = _STRIP.sub(" ", t)
    t = re.sub(r"(?<![a-z0-9])[.'](?![a-z0-9])", " ", t)  # sentence periods and stray quotes
    t = re.sub(r"[,.](?=\s|$)", " ", t)
    return " ".join(t.split())


def fill_attributes(text: str, attributes: Sequence[str]) -> str:
    """A template sentence (or paraphrase) with its placeholders filled: one attribute goes into
    ``${attribute}``, two into ``${attribute1}`` and ``${attribute2}``.

    Raises:
        ValueError: a placeholder is left unfilled.
    """
    if len(attributes) == 1:
        text = text.replace(ATTRIBUTE, attributes[0])
    elif len(attributes) == 2:
        text = text.replace(ATTRIBUTE1, attributes[0]).replace(ATTRIBUTE2, attributes[1])
    if "${" in text:
        raise ValueError(f"unfilled placeholder in {text!r} (attributes {list(attributes)})")
    return text


@dataclasses.dataclass(frozen=True)
class CatalogueEntry:
    """One trained question template.

    Attributes:
        template_id: the ECG-QA template id.
        question_type: ``"single-verify"``, ``"single-choose"`` or ``"single-query"``.
        group: what the template is about (``code``, ``norm``, ``superclass``, ``dx_inc``,
            ``dx_exc``, ``form``, ``rhythm``, ``abnormal``).
        text: the template sentence; ``${attribute}`` / ``${attribute1}`` / ``${attribute2}`` mark
            where attribute values go.
        attributes: the values the placeholders may take (empty for a template without one).
        options: the closed answer options (for a query: the members an answer set may have).
        examples: other wordings the model was trained with.
    """

    template_id: int
    question_type: str
    group: str
    text: str
    attributes: tuple[str, ...]
    options: tuple[str, ...]
    examples: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CatalogueEntry:
        return cls(template_id=int(data["template_id"]), question_type=str(data["question_type"]),
                   group=str(data["group"]), text=str(data["text"]),
                   attributes=tuple(data.get("attributes", ())), options=tuple(data["options"]),
                   examples=tuple(data.get("examples", ())))

    def render(self, attributes: Sequence[str] = ()) -> str:
        """The template sentence with ``attributes`` filled in (:func:`fill_attributes`)."""
        return fill_attributes(self.text, attributes)


@dataclasses.dataclass(frozen=True)
class MatchedQuestion:
    """A question read against the catalogue.

    Attributes:
        template_id, question_type: of the matched template.
        canonical: the template sentence with the attributes filled in (what the model is asked).
        attributes: the attribute values the question names.
        options: the answers it is decoded over. Verify and choose questions have a closed set (one
            of them is the answer); for a query it is the members an answer set may contain.
    """

    template_id: int
    question_type: str
    canonical: str
    attributes: tuple[str, ...]
    options: tuple[str, ...]

    @property
    def closed(self) -> bool:
        """Whether the answer is exactly one of ``options`` (verify and choose questions)."""
        return self.question_type != "single-query"

    def to_dict(self) -> dict[str, Any]:
        return {"template_id": self.template_id, "question_type": self.question_type,
                "canonical": self.canonical, "attributes": list(self.attributes),
                "options": list(self.options)}


class QuestionCatalogue:
    """The templates a bundle answers, and the matcher of free-text questions onto them.

    Args:
        entries: the trained templates.
        synonyms: attribute name -> other surface forms (default :data:`SYNONYMS`); entries whose
            attribute is not in the catalogue are ignored.

    Raises:
        ValueError: duplicate template ids, or a template without options.
    """

    def __init__(self, entries: Iterable[CatalogueEntry],
                 synonyms: Mapping[str, Sequence[str]] | None = None) -> None:
        self.entries = {e.template_id: e for e in entries}
        if not self.entries:
            raise ValueError("a question catalogue needs at least one template")
        for e in self.entries.values():
            if not e.options:
                raise ValueError(f"template {e.template_id} has no answer options")
        self.synonyms = {k: tuple(v) for k, v in (SYNONYMS if synonyms is None else synonyms).items()}
        names = {a for e in self.entries.values() for a in e.attributes}
        forms: dict[str, str] = {}
        for name in names:
            forms[name] = name
            for s in self.synonyms.get(name, ()):
                forms.setdefault(s, name)
        # longest first, so the longest surface form claims its words
        self._forms = sorted(forms.items(), key=lambda kv: (-len(kv[0]), kv[0]))
        self._patterns = [(re.compile(rf"(?<![a-z0-9]){re.escape(f)}s?(?![a-z0-9])"), n)
                          for f, n in self._forms]

    # --- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"templates": [e.to_dict() for e in self.entries.values()],
                "synonyms": {k: list(v) for k, v in sorted(self.synonyms.items())}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuestionCatalogue:
        return cls([CatalogueEntry.from_dict(t) for t in data["templates"]], data.get("synonyms"))

    # --- matching ------------------------------------------------------------------------------

    def find_attributes(self, question: str) -> list[str]:
        """Attribute names mentioned in a question, in order of appearance (each once)."""
        text = normalize_question(question)
        taken = [False] * len(text)
        found: list[tuple[int, str]] = []
        for pattern, name in self._patterns:
            for m in pattern.finditer(text):
                if any(taken[m.start():m.end()]):
                    continue
                taken[m.start():m.end()] = [True] * (m.end() - m.start())
                found.append((m.start(), name))
        out: list[str] = []
        for _, name in sorted(found):
            if name not in out:
                out.append(name)
        return out

    def _entry(self, *template_ids: int) -> CatalogueEntry | None:
        return next((self.entries[t] for t in template_ids if t in self.entries), None)

    def _matched(self, entry: CatalogueEntry, attributes: Sequence[str]) -> MatchedQuestion:
        attrs = tuple(attributes)
        if entry.question_type == "single-choose":
            options = (*attrs, format_answer(attrs), NONE_ANSWER)
        else:
            options = entry.options
        return MatchedQuestion(entry.template_id, entry.question_type, entry.render(attrs), attrs, options)

    def match(self, question: str) -> MatchedQuestion | None:
        """The template a question asks, with its attributes, or None when no template answers it."""
        text = normalize_question(question)
        if not text:
            return None
        attrs = self.find_attributes(question)
        certain = bool(_CERTAIN_ONLY.search(text))
        if _NUMERIC.search(text):
            return None
        if len(attrs) == 1:
            if _WH.search(text) or _ONE_OF_TWO.search(text):
                return None  # "which ..., A or B?" with B unknown: not a yes/no question about A
            entry = self._entry(1)
            if entry is not None and attrs[0] in entry.attributes:
                return self._matched(entry, attrs)
            return None
        if len(attrs) == 2:
            if not _CHOICE.search(text):
                return None  # "AF and LBBB?": two findings at once; ask them one by one
            order = (5, 4) if certain else (3, 7, 6, 4, 5)
            for tid in order:
                entry = self.entries.get(tid)
                if entry is not None and all(a in entry.attributes for a in attrs):
                    return self._matched(entry, attrs)
            return None
        if attrs:
            return None
        return self._record_level(text, certain)

    def _record_level(self, text: str, certain: bool) -> MatchedQuestion | None:
        wh = bool(_WH.search(text))
        abnormal = bool(re.search(r"\babnormal(ity|ities)?\b|\bpatholog|\banything wrong\b", text))
        normal = bool(re.search(r"\b(normal|unremarkable|within normal limits)\b", text))
        if normal and not abnormal and not wh:
            tid: tuple[int, ...] = (2,)
        elif re.search(r"\b(form|waveform|wave form|morpholog|shape)", text):
            tid = (11,) if wh else (15,)
        elif re.search(r"\brhythm", text):
            tid = (10,) if wh else (16,)
        elif abnormal and not wh:
            tid = (12,)
        elif re.search(r"\b(diagnos|finding|symptom|statement)", text):
            tid = ((9,) if certain else (8,)) if wh else ((14,) if certain else (13,))
        else:
            return None
        entry = self._entry(*tid)
        return None if entry is None else self._matched(entry, ())

    def is_rhythm(self, match: MatchedQuestion) -> bool:
        """Whether a matched question is about the rhythm only (a rhythm template, or the verify
        template asking about a rhythm statement): answerable from the limb leads alone."""
        entry = self.entries.get(match.template_id)
        if entry is not None and entry.group == "rhythm":
            return True
        rhythm = {a for e in self.entries.values()
                  if e.group == "rhythm" and e.question_type != "single-verify" for a in e.options}
        rhythm.discard(NONE_ANSWER)
        return match.template_id == 1 and bool(match.attributes) and set(match.attributes) <= rhythm

    def closest(self, question: str, k: int = 3) -> list[str]:
        """The ``k`` supported example questions closest to ``question`` (word overlap), for a
        helpful warning when it matches nothing."""
        words = set(normalize_question(question).split())
        scored = []
        for e in self.entries.values():
            fill = e.attributes[:2] if e.attributes else ()
            try:
                example = e.render(fill[:1] if ATTRIBUTE in e.text else fill)
            except ValueError:
                continue
            other = set(normalize_question(e.text.replace(ATTRIBUTE, "").replace(ATTRIBUTE1, "")
                                           .replace(ATTRIBUTE2, "")).split())
            overlap = len(words & other) / (len(words | other) or 1)
            scored.append((-overlap, e.template_id, example))
        return [ex for _, _, ex in sorted(scored)[:k]]

    def describe(self) -> list[str]:
        """Human-readable lines: each template, its options and how many attributes it takes."""
        lines = []
        for e in sorted(self.entries.values(), key=lambda e: e.template_id):
            opts = ", ".join(e.options) if len(e.options) <= 6 else f"{len(e.options)} options"
            attr = f" ({len(e.attributes)} attribute values)" if e.attributes else ""
            lines.append(f"[{e.template_id}] {e.question_type.removeprefix('single-')}: {e.text}{attr}"
                         f" -> {opts}")
        return lines


def build_catalogue(answer_vocab: Mapping[str, Sequence[str]]) -> QuestionCatalogue:
    """The catalogue of :data:`TEMPLATES` with ECG-QA's answers per template (for a bundle).

    Template 1 ("Does this ECG show symptoms of X?") takes every statement and superclass name the
    choose templates may name; choose templates take their own options; query and record-level
    verify templates take none. Examples are the training paraphrases (the held-out ones stay out).

    Args:
        answer_vocab: ECG-QA template id (as a string) -> allowed answers
            (``answers_for_each_template.csv``, the manifest's ``answer_vocabularies``).

    Raises:
        ValueError: a template has no answer options in ``answer_vocab``.
    """

    def options(tid: int) -> tuple[str, ...]:
        opts = tuple(answer_vocab.get(str(tid), ()))
        if not opts:
            raise ValueError(f"no answer options for ECG-QA template {tid}")
        return opts

    choose = [t for t in TEMPLATES.values() if t.question_type == "single-choose"]
    named = sorted({a for t in choose for a in options(t.template_id)} - {NONE_ANSWER})
    entries = []
    for tid, t in sorted(TEMPLATES.items()):
        if _A in t.text:
            attributes: tuple[str, ...] = tuple(named)
        elif t.question_type == "single-choose":
            attributes = tuple(a for a in options(tid) if a != NONE_ANSWER)
        else:
            attributes = ()
        entries.append(CatalogueEntry(template_id=tid, question_type=t.question_type, group=t.group,
                                      text=t.text, attributes=attributes, options=options(tid),
                                      examples=t.train_paraphrases))
    return QuestionCatalogue(entries)
