"""How a free-text question is matched to a template of the bundle's question catalogue (torch-free).

The catalogue (``diagecg.catalogue``) lists the templates the model was trained on.
:meth:`QuestionCatalogue.read` reads an incoming question into a :class:`MatchedQuestion`
(``diagecg.matched_question``: the template, the findings named and how each was read, the polarity,
the answer options, and the *canonical* wording, the template sentence the model was trained with,
which is what the runtime sends to the model) or a :class:`Refusal` (``diagecg.refusals``: a stable
reason code, one sentence, and the supported questions nearest to it). Reading:

1. Normalise (``diagecg.question_text``): lower case, typographic quotes and dashes made plain,
   punctuation other than ``/ - ( ) ,`` dropped, contractions expanded (``isn't`` -> ``is not``),
   British spellings made American, whitespace collapsed.
2. Find the findings named (``diagecg.finding_names``), longest name first and never overlapping:
   the catalogue names (``complete left bundle branch block``), a trailing ``s`` (``PVCs``), synonyms
   and abbreviations (``AF``, ``LBBB``, ``1st degree AVB``, ``inferior MI``, ``ST depression``, ``long
   QT``...), then small misspellings of them (``atrial fibrilation``, ``right bundle brunch block``).
   Because the longest name wins, ``incomplete left bundle branch block`` is never read as ``LBBB``.
   A general name is read as a broader or narrower catalogue finding *with a note* (``heart block``
   as conduction disturbance, ``ischemia`` as non-specific ischemic); a finding the model never learnt
   (``WPW``, ``right ventricular hypertrophy``) or a localisation it lacks (``posterior ischemia``) is
   refused by name.
3. Read the polarity (``diagecg.polarity``): negations outside the findings' names ("no", "not",
   "without", "absent", "ruled out", "exclude", "free of", "negative for"...) and opposites
   ("abnormal" for "normal") each flip it, so double negations cancel.
4. Pick the template from what was found:

   * one finding: "does the ECG show X?" (template 1), negated or not, unless the question asks for
     a number (``how many``, ``what is the rate``...), which no template answers;
   * two findings joined by ``or`` / ``which`` / ``between``: the choose template of the group
     both belong to (superclasses, rhythm, form, diagnostic statements; "certain" / "excluding
     uncertain" selects the certain-only variant); a negated choice is refused;
   * none: record-level questions by keyword: normal ECG (2; "abnormal", "anything wrong" are its
     negation), ECG-QA's "any kind of abnormal symptoms" (12, in its own words only), any
     diagnostic (13/14), form (15) or rhythm (16) statement, and "what/which/list" questions about the
     diagnostic (8/9), rhythm (10) or form (11) findings. "Is the rhythm regular / irregular /
     normal?" names no finding the model knows and is refused. :data:`SEMANTICS` says what each
     answer means.

   Anything else (a numeric measurement, several findings at once, a question about something the
   model never learnt, "What is the capital of France?") is **refused**: the runtime then gives no
   clinical answer, says why, and names the supported questions nearest to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from diagecg.answers import format_answer
from diagecg.catalogue import Catalogue, CatalogueEntry, catalogue_entries
from diagecg.finding_names import (
    SITE_WORDS,
    STAGE_WORDS,
    SYNONYMS,
    FindingTerm,
    FoundName,
    is_spelling_slip,
)
from diagecg.matched_question import MatchedQuestion
from diagecg.polarity import count_negations, opposite_flips, strip_framing
from diagecg.question_templates import (
    NONE_ANSWER,
    NORMAL_ECG_TEMPLATE,
    NORMAL_STATEMENT,
    SEMANTICS,
    TEMPLATES,
    QuestionTemplate,
    QuestionType,
    fill_attributes,
)
from diagecg.question_text import FILLER, KEYWORDS, normalize_question
from diagecg.refusals import REFUSAL_REASONS, Refusal, Suggestions
from diagecg.statements import find_statement

# the templates', the catalogue's, a match's and a refusal's names are re-exported: this is where readers
# of questions look for them
__all__ = [
    "NONE_ANSWER",
    "NORMAL_ECG_TEMPLATE",
    "NORMAL_STATEMENT",
    "REFUSAL_REASONS",
    "SEMANTICS",
    "SYNONYMS",
    "TEMPLATES",
    "CatalogueEntry",
    "MatchedQuestion",
    "QuestionCatalogue",
    "QuestionTemplate",
    "QuestionType",
    "Refusal",
    "build_catalogue",
    "fill_attributes",
    "normalize_question",
]

# words that make a question ask for a number or a measurement, which no template answers
_NUMERIC = re.compile(
    r"\b(how many|how much|how long|how fast|how slow|how high|what is the (heart )?rate|"
    r"what rate|bpm|ms|milliseconds?|duration|interval in|qtc? (interval )?value|value of|"
    r"measure|axis|age|how old|weight|height)\b"
)
_CHOICE = re.compile(r"\b(or|which|between|whether)\b")
_ONE_OF_TWO = re.compile(r"\bor\b(?!\s+(not|no)\b)")  # "A or B", not "... or not?" / "yes or no"
_WH = re.compile(r"^(what|which|list|name|describe|tell|give|show me|report|enumerate)\b")
_CERTAIN_ONLY = re.compile(
    r"\b(certain|excluding uncertain|definite|confirmed|only certain|"
    r"without uncertain)\b"
)
_UNCERTAIN_TOO = re.compile(
    r"\b(including uncertain|counting uncertain|"
    r"uncertain (findings|symptoms|ones) too)\b"
)
_OTHER_THAN = re.compile(r"\b(other than|besides|apart from|except|instead of|rather than|beyond)\b")
_AFTER_NAME = re.compile(r"\s+in (the )?([a-z0-9,/ ]+ )?(leads?|wall|territory)\b")
# record-level wordings (when no finding is named)
_ECGQA_ABNORMAL = re.compile(r"\b(any kind of )?abnormal symptoms?\b")
_FORM = re.compile(r"\b(form|waveform|wave form|morpholog\w*|shape)")
_RHYTHM = re.compile(r"\brhythm")
_RHYTHM_GROUP = re.compile(r"\brhythm(-related| related)? (symptom|finding|statement)s?\b|\brhythm-related\b")
_NORMAL = re.compile(r"\b(normal|unremarkable|ok|okay|healthy|fine)\b")
_DIAGNOSTIC = re.compile(r"\b(diagnos|finding|symptom|statement)")
_REGULARITY = re.compile(r"\b(regular(ly)?|irregular(ly|ity)?|arrh?ythmi\w*|dysrhythmi\w*)\b")
_RATE = re.compile(r"\b(heart ?rate|rate|pulse)\b")


class QuestionCatalogue(Catalogue):
    """The templates a bundle answers (:class:`~diagecg.catalogue.Catalogue`), and the reader of
    free-text questions onto them.

    Args:
        entries: the trained templates.
        synonyms: attribute name -> other surface forms; the bundle's list is read together with
            :data:`diagecg.finding_names.SYNONYMS`; entries whose attribute is not in the catalogue are
            ignored.

    Raises:
        ValueError: duplicate template ids, or a template without options.
    """

    def __init__(
        self, entries: Iterable[CatalogueEntry], synonyms: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        super().__init__(entries, synonyms)
        self._suggest = Suggestions(self)

    # --- reading -------------------------------------------------------------------------------

    def find_attributes(self, question: str) -> list[str]:
        """Catalogue findings a question names, in order of appearance (each once)."""
        out: list[str] = []
        for hit in self.names.find(normalize_question(question)):
            if hit.form.finding and hit.form.finding not in out:
                out.append(hit.form.finding)
        return out

    def _matched(
        self,
        entry: CatalogueEntry,
        attributes: Sequence[str],
        *,
        negated: bool = False,
        terms: Sequence[FindingTerm] = (),
        spelling: Sequence[tuple[str, str]] = (),
    ) -> MatchedQuestion:
        attrs = tuple(attributes)
        if entry.question_type is QuestionType.CHOOSE:
            options = (*attrs, format_answer(attrs), NONE_ANSWER)
        else:
            options = entry.options
        return MatchedQuestion(
            entry.template_id,
            entry.question_type,
            entry.render(attrs),
            attrs,
            options,
            negated=negated,
            terms=tuple(terms),
            spelling=tuple(spelling),
        )

    def finding_question(self, statement: str) -> MatchedQuestion | None:
        """The catalogue's yes/no question about a statement (a catalogue name, or another spelling of
        the same PTB-XL statement, such as a report's ``inferior myocardial infarction``): the template
        about one named finding, or the record-level one asking about that statement ("Is this a normal
        ECG?" for ``normal ECG``); None when the catalogue cannot ask about it."""
        st = find_statement(statement)
        for t in TEMPLATES.values() if st is not None else ():
            asks = t.statement
            found = find_statement(asks) if asks is not None else None
            if asks is not None and found is not None and st is not None and found.code == st.code:
                entry = self.statement_entry(asks)
                return None if entry is None else self._matched(entry, ())
        names = [statement, *((st.description, *st.aliases) if st is not None else ())]
        by_key = {_key(f): f for f in self.findings}
        entry = self.finding_entry()
        name = next((by_key[_key(n)] for n in names if _key(n) in by_key), None)
        if entry is None or name is None or name not in entry.attributes:
            return None
        return self._matched(entry, (name,))

    def match(self, question: str) -> MatchedQuestion | None:
        """The template a question asks, or None when it is refused (:meth:`read` says why)."""
        read = self.read(question)
        return read if isinstance(read, MatchedQuestion) else None

    def read(self, question: str) -> MatchedQuestion | Refusal:
        """Read a question: the template it asks, with its findings and polarity, or a
        :class:`Refusal` (see the module docstring)."""
        text = normalize_question(question)
        if not text:
            return Refusal("empty", "the question is empty", self._suggest.by_template(""))
        hits = self.names.find(text)
        outside = _blank(text, hits)  # the words that name no finding
        spelling = [p for h in hits for p in h.slips]
        for hit in hits:
            if not hit.form.finding:
                return self._refuse_unknown(hit)
        terms: list[FindingTerm] = []
        for hit in hits:
            term = self._term(text, hit)
            if isinstance(term, Refusal):
                return term
            if all(t.finding != term.finding for t in terms):
                terms.append(term)
        if _NUMERIC.search(outside):
            rate = [a for a in ("sinus bradycardia", "sinus tachycardia") if a in self.findings]
            suggestions = (
                tuple(self._suggest.verify_question(a) for a in rate)
                if _RATE.search(outside) and not terms
                else self._suggest.nearby(text, terms)
            )
            return Refusal(
                "numeric",
                "the question asks for a number or a measurement, which this model does not give",
                suggestions,
            )
        negations = count_negations(outside)
        certain = bool(_CERTAIN_ONLY.search(text))
        attrs = [t.finding for t in terms]
        if attrs and _OTHER_THAN.search(outside):
            return Refusal(
                "other_than",
                f"the question asks about findings other than {attrs[0]}; ask about a finding by name",
                self._suggest.nearby(text, terms),
            )
        if len(attrs) == 1:
            if _WH.search(text) or _ONE_OF_TWO.search(outside):
                return Refusal(
                    "not_understood",
                    f"the question names {attrs[0]} but is not a yes/no question about it",
                    self._suggest.nearby(text, terms),
                )
            entry = self.finding_entry()
            if entry is None or attrs[0] not in entry.attributes:
                return Refusal(
                    "not_understood",
                    f"this model cannot be asked about {attrs[0]} alone",
                    self._suggest.nearby(text, terms),
                )
            return self._matched(entry, attrs, negated=negations % 2 == 1, terms=terms, spelling=spelling)
        if len(attrs) == 2:
            if not _CHOICE.search(outside):
                return Refusal(
                    "several_findings",
                    f"the question asks about {attrs[0]} and {attrs[1]} at once; ask about each in turn",
                    self._suggest.nearby(text, terms),
                )
            if negations % 2:
                return Refusal(
                    "negated_choice",
                    f"a negated choice between {attrs[0]} and {attrs[1]} has no "
                    f"answer this model was trained to give; ask about each in "
                    f"turn",
                    self._suggest.nearby(text, terms, negated=True),
                )
            said = "certain" if certain else "uncertain_too" if _UNCERTAIN_TOO.search(text) else "unsaid"
            order = _CHOICE_ORDER[said]
            choices = self.routed(lambda t: t.question_type is QuestionType.CHOOSE and t.uncertain in order)
            choices.sort(key=lambda e: order.index(TEMPLATES[e.template_id].uncertain))  # stable: by id
            for entry in choices:
                if all(a in entry.attributes for a in attrs):
                    return self._matched(entry, attrs, terms=terms, spelling=spelling)
            return Refusal(
                "several_findings",
                f"{attrs[0]} and {attrs[1]} are never offered as one choice; ask about each in turn",
                self._suggest.nearby(text, terms),
            )
        if attrs:
            return Refusal(
                "several_findings",
                f"the question names {len(attrs)} findings ({', '.join(attrs)}); ask about each in turn",
                self._suggest.nearby(text, terms),
            )
        return self._record_level(text, certain, negations, spelling)

    def _term(self, text: str, hit: FoundName) -> FindingTerm | Refusal:
        """How a found name is read; a refusal when the words around it ask for something more specific
        than the catalogue holds ("posterior ischemia", "MI in leads V1-V3")."""
        form = hit.form
        before = text[: hit.start].split()
        site = next((w for w in (" ".join(before[-2:]), *before[-1:]) if w in SITE_WORDS), None)
        after = _AFTER_NAME.match(text[hit.end :])
        if site is not None or after is not None:
            asked = f"{site} {hit.typed}" if site else f"{hit.typed}{after.group() if after else ''}"
            localised = [
                a
                for a in self.findings
                if a != form.finding and _base(a) == _base(form.finding) and " leads" in a
            ]
            related = localised or [form.finding]
            known = "; ".join(related[:6]) + ("; ..." if len(related) > 6 else "")
            return Refusal(
                "more_specific",
                f"'{asked}' is more specific than any finding this model was trained on (it knows: {known})",
                tuple(self._suggest.verify_question(a) for a in related[:3]),
            )
        via = "spelling" if hit.slips else form.via
        scope, note = form.scope, form.note
        if before and before[-1] in STAGE_WORDS and "infarction" in form.finding and scope == "same":
            scope, note = "broader", "the model does not tell an acute infarction from an old one"
        return FindingTerm(hit.typed, form.finding, via, scope, note)

    def _refuse_unknown(self, hit: FoundName) -> Refusal:
        related = [r for r in hit.form.related if r in self.findings]
        known = f" (related findings it knows: {'; '.join(related)})" if related else ""
        suggestions = tuple(self._suggest.verify_question(r) for r in related[:3]) or self._suggest.nearest(
            hit.typed
        )
        return Refusal(
            "unknown_finding", f"'{hit.typed}' is not a finding this model was trained on{known}", suggestions
        )

    def _record_level(
        self, text: str, certain: bool, negations: int, spelling: list[tuple[str, str]]
    ) -> MatchedQuestion | Refusal:
        def keyword(m: re.Match[str]) -> str:  # record-level keywords misspelt ("rythm", "normla")
            w = m.group()
            if w in self.names.known_words or w in FILLER:
                return w
            fixed = next((k for k in KEYWORDS if is_spelling_slip(w, k, self.names.known_words)), None)
            if fixed is None:
                return w
            spelling.append((w, fixed))
            return fixed

        text = re.sub(r"[a-z]+", keyword, text)
        wh = bool(_WH.search(text))
        kind = QuestionType.QUERY if wh else QuestionType.VERIFY  # "what/which/list" asks for the set
        flips = 0
        if _ECGQA_ABNORMAL.search(text) and not wh:
            entry = self.record_entry(kind, "abnormal")
        elif _FORM.search(text):
            entry = self.record_entry(kind, "form")
            flips = len(_NORMAL.findall(text))  # a normal waveform: no form symptom
        elif _REGULARITY.search(text) or (
            _RHYTHM.search(text) and (_NORMAL.search(text) or opposite_flips(text))
        ):
            rhythms = ("sinus rhythm", "atrial fibrillation", "sinus arrhythmia")
            return Refusal(
                "no_such_finding",
                "a regular, irregular, normal or abnormal rhythm is not a "
                "finding this model was trained on (nor is its opposite): ask "
                "about a rhythm by name",
                tuple(self._suggest.verify_question(a) for a in rhythms if a in self.findings),
            )
        elif _RHYTHM.search(text):
            if wh or _RHYTHM_GROUP.search(text):
                entry = self.record_entry(kind, "rhythm")
            else:
                return Refusal(
                    "not_understood",
                    "the question asks about the rhythm without naming one: "
                    "ask about a rhythm by name or 'What rhythm-related "
                    "symptoms does this ECG show?'",
                    self._suggest.nearby(text, []),
                )
        elif (_NORMAL.search(text) or opposite_flips(text)) and not wh:
            entry, flips = self.statement_entry(NORMAL_STATEMENT), opposite_flips(text)
        elif _DIAGNOSTIC.search(text):
            uncertain = "excluded" if certain else "included"
            entry = next(
                iter(
                    self.routed(
                        lambda t: t.record_level and t.question_type is kind and t.uncertain == uncertain
                    )
                ),
                None,
            )
        elif _RATE.search(text):
            return Refusal(
                "numeric",
                "the heart rate is a number this model does not give; ask about sinus "
                "bradycardia or sinus tachycardia",
                tuple(
                    self._suggest.verify_question(a)
                    for a in ("sinus tachycardia", "sinus bradycardia")
                    if a in self.findings
                ),
            )
        else:
            return Refusal(
                "not_understood",
                "the question matches none of the questions this model was trained to answer",
                self._suggest.nearby(text, []),
            )
        if entry is None:
            return Refusal(
                "not_understood",
                "this bundle has no template for the question",
                self._suggest.nearby(text, []),
            )
        negated = (negations + flips) % 2 == 1
        if negated and not {"yes", "no"} <= set(entry.options):
            return Refusal(
                "negated_query",
                "a negated 'which findings' question has no answer this model was trained to give",
                (entry.text,),
            )
        return self._matched(entry, (), negated=negated, spelling=spelling)

    # --- suggestions ---------------------------------------------------------------------------

    def closest(self, question: str, k: int = 3) -> list[str]:
        """Up to ``k`` supported questions nearest to ``question`` by name and meaning (a refused
        question's suggestions; for a supported one, its own canonical wording first)."""
        read = self.read(question)
        if isinstance(read, MatchedQuestion):
            return [read.canonical]
        return list(read.suggestions[:k]) or list(self._suggest.by_template(question, k))

    # --- description ---------------------------------------------------------------------------

    def is_rhythm(self, match: MatchedQuestion) -> bool:
        """Whether a matched question is about the rhythm only (a rhythm template, or the verify
        template asking about a rhythm statement): answerable from the limb leads alone."""
        entry = self.entries.get(match.template_id)
        if entry is not None and entry.group == "rhythm":
            return True
        rhythm = {
            a
            for e in self.entries.values()
            if e.group == "rhythm" and e.question_type is not QuestionType.VERIFY
            for a in e.options
        }
        rhythm.discard(NONE_ANSWER)
        named = match.template.one_finding and match.template.n_attributes == 1
        return named and bool(match.attributes) and set(match.attributes) <= rhythm


# the order a choice between two findings tries the choose templates in, by what the question says of
# uncertain findings; each value is a template's ``uncertain`` (None: its wording says nothing of them)
_CHOICE_ORDER: dict[str, tuple[str | None, ...]] = {
    "certain": ("excluded", "included"),
    "uncertain_too": ("included", None, "excluded"),
    "unsaid": (None, "included", "excluded"),
}


def _blank(text: str, hits: Sequence[FoundName]) -> str:
    """``text`` with the finding names blanked out (their words are names, not cues), the words typed
    between a name's words ("QT is *not* prolonged") kept, and framing phrases ("or not") dropped."""
    out, at = [], 0
    for h in hits:
        out += [text[at : h.start], *h.gap]
        at = h.end
    return strip_framing(" ".join(" ".join([*out, text[at:]]).split()))


def _key(name: str) -> str:
    """A name with case and punctuation ignored (``digitalis-effect`` is ``digitalis effect``)."""
    return " ".join(re.findall(r"[0-9a-z]+", name.lower()))


def _base(finding: str) -> str:
    """A localised finding's kind: ``myocardial infarction in inferior leads`` -> ``myocardial
    infarction``; ``non-specific ischemic`` -> ``ischemic``."""
    return re.sub(r"^non-specific | in \w+ leads$", "", finding)


def build_catalogue(answer_vocab: Mapping[str, Sequence[str]]) -> QuestionCatalogue:
    """The catalogue of :data:`TEMPLATES` with ECG-QA's answers per template (for a bundle):
    :func:`diagecg.catalogue.catalogue_entries`, read by a :class:`QuestionCatalogue`.

    Args:
        answer_vocab: ECG-QA template id (as a string) -> allowed answers
            (``answers_for_each_template.csv``, the manifest's ``answer_vocabularies``).

    Raises:
        ValueError: a template has no answer options in ``answer_vocab``.
    """
    return QuestionCatalogue(catalogue_entries(answer_vocab))
