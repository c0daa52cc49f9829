"""Coded ECG statements: what an answer or report says, as SCP-ECG codes with SNOMED CT concepts.

Automated ECG interpretation speaks in coded statements. The model answers in the English descriptions
of PTB-XL's SCP-ECG statement table (``scp_statements.csv``, Wagner et al. 2020, CC-BY 4.0) and in
ECG-QA's spellings of them (``"myocardial infarction in inferior leads"`` for IMI); :data:`STATEMENTS`
maps each back to its code and, where a public mapping gives one, to a SNOMED CT concept.

SNOMED CT source: the PhysioNet/Computing in Cardiology Challenge 2021 diagnosis tables
(``dx_mapping_scored.csv``, ``dx_mapping_unscored.csv`` of physionetchallenges/evaluation-2021,
BSD-2-Clause), which give the SNOMED CT code each PTB-XL statement was released under in the Challenge's
``#Dx`` header lines (the tables' PTB_XL column counts agree with PTB-XL's statement counts). ``match``
says how close the concept is: ``exact``; ``broader`` (the Challenge mapped several PTB-XL statements to a
more general concept, e.g. every myocardial infarction localisation to 164865005); ``approximate``
(a related but different concept: PTB-XL's bigeminal pattern of unknown origin became ventricular
bigeminy). Statements without a concept there (normal ECG, digitalis effect, subendocardial injury...)
have none rather than a guessed one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from diagecg.question_templates import QuestionType

SnomedMatch = Literal["exact", "broader", "approximate"]


@dataclass(frozen=True)
class Snomed:
    code: str  # SNOMED CT concept id
    term: str  # the Challenge table's name of it
    match: SnomedMatch


@dataclass(frozen=True)
class Statement:
    """One codable finding."""

    code: str  # SCP-ECG statement code as PTB-XL writes it, a PTB-XL superclass, or a heart-axis class
    system: str  # "SCP-ECG", "PTB-XL superclass" or "PTB-XL heart axis"
    description: str  # PTB-XL's English description (ECG-QA's wording for superclasses and axes)
    snomed: Snomed | None
    aliases: tuple[str, ...] = ()  # other spellings the model answers with (ECG-QA's)

    def to_dict(self) -> dict[str, Any]:
        s = self.snomed
        return {
            "code": self.code,
            "system": self.system,
            "description": self.description,
            "snomed_ct": None if s is None else {"code": s.code, "term": s.term, "match": s.match},
        }


def _s(code: str, term: str, match: SnomedMatch = "exact") -> Snomed:
    return Snomed(code, term, match)


_MI = _s("164865005", "myocardial infarction", "broader")
_ISCHEMIA = _s("164861001", "myocardial ischemia", "broader")
_T_ABNORMAL = _s("164934002", "t wave abnormal", "broader")
_SCP = "SCP-ECG"

STATEMENTS: tuple[Statement, ...] = (
    # --- diagnostic statements -------------------------------------------------------------------------
    Statement("NORM", _SCP, "normal ECG", None),  # no "normal ECG" concept in the Challenge tables
    Statement(
        "IMI", _SCP, "inferior myocardial infarction", _MI, ("myocardial infarction in inferior leads",)
    ),
    Statement(
        "ASMI",
        _SCP,
        "anteroseptal myocardial infarction",
        _MI,
        ("myocardial infarction in anteroseptal leads",),
    ),
    Statement(
        "ILMI",
        _SCP,
        "inferolateral myocardial infarction",
        _MI,
        ("myocardial infarction in inferolateral leads",),
    ),
    Statement(
        "AMI",
        _SCP,
        "anterior myocardial infarction",
        _s("54329005", "anterior myocardial infarction"),
        ("myocardial infarction in anterior leads",),
    ),
    Statement(
        "ALMI",
        _SCP,
        "anterolateral myocardial infarction",
        _MI,
        ("myocardial infarction in anterolateral leads",),
    ),
    Statement("LMI", _SCP, "lateral myocardial infarction", _MI, ("myocardial infarction in lateral leads",)),
    Statement(
        "IPLMI",
        _SCP,
        "inferoposterolateral myocardial infarction",
        _MI,
        ("myocardial infarction in inferoposterolateral leads",),
    ),
    Statement(
        "IPMI",
        _SCP,
        "inferoposterior myocardial infarction",
        _MI,
        ("myocardial infarction in inferoposterior leads",),
    ),
    Statement(
        "PMI", _SCP, "posterior myocardial infarction", _MI, ("myocardial infarction in posterior leads",)
    ),
    Statement("LVH", _SCP, "left ventricular hypertrophy", _s("164873001", "left ventricular hypertrophy")),
    Statement("RVH", _SCP, "right ventricular hypertrophy", _s("89792004", "right ventricular hypertrophy")),
    Statement("SEHYP", _SCP, "septal hypertrophy", _s("266249003", "ventricular hypertrophy", "broader")),
    Statement(
        "LAO/LAE", _SCP, "left atrial overload/enlargement", _s("67741000119109", "left atrial enlargement")
    ),
    Statement(
        "RAO/RAE", _SCP, "right atrial overload/enlargement", _s("446358003", "right atrial hypertrophy")
    ),
    Statement(
        "LAFB", _SCP, "left anterior fascicular block", _s("445118002", "left anterior fascicular block")
    ),
    Statement(
        "LPFB", _SCP, "left posterior fascicular block", _s("445211001", "left posterior fascicular block")
    ),
    Statement(
        "IRBBB",
        _SCP,
        "incomplete right bundle branch block",
        _s("713426002", "incomplete right bundle branch block"),
    ),
    Statement(
        "CRBBB",
        _SCP,
        "complete right bundle branch block",
        _s("713427006", "complete right bundle branch block"),
    ),
    # the Challenge released PTB-XL's CLBBB as 164909002 and scores it the same as 733534002
    Statement(
        "CLBBB", _SCP, "complete left bundle branch block", _s("164909002", "left bundle branch block")
    ),
    Statement(
        "ILBBB",
        _SCP,
        "incomplete left bundle branch block",
        _s("251120003", "incomplete left bundle branch block"),
    ),
    Statement(
        "IVCD",
        _SCP,
        "non-specific intraventricular conduction disturbance (block)",
        _s("698252002", "nonspecific intraventricular conduction disorder"),
    ),
    Statement("1AVB", _SCP, "first degree AV block", _s("270492004", "1st degree av block")),
    Statement("2AVB", _SCP, "second degree AV block", _s("195042002", "2nd degree av block")),
    Statement("3AVB", _SCP, "third degree AV block", _s("27885002", "complete heart block")),
    Statement("WPW", _SCP, "Wolf-Parkinson-White syndrome", _s("74390002", "wolff parkinson white pattern")),
    Statement("ISC_", _SCP, "non-specific ischemic", _s("164861001", "myocardial ischemia")),
    Statement("ISCAL", _SCP, "ischemic in anterolateral leads", _ISCHEMIA),
    Statement("ISCAS", _SCP, "ischemic in anteroseptal leads", _ISCHEMIA),
    Statement("ISCIL", _SCP, "ischemic in inferolateral leads", _ISCHEMIA),
    Statement("ISCIN", _SCP, "ischemic in inferior leads", _s("425419005", "inferior ischaemia")),
    Statement("ISCLA", _SCP, "ischemic in lateral leads", _s("425623009", "lateral ischaemia")),
    Statement("ISCAN", _SCP, "ischemic in anterior leads", _s("426434006", "anterior ischemia")),
    Statement("INJAS", _SCP, "subendocardial injury in anteroseptal leads", None),
    Statement("INJAL", _SCP, "subendocardial injury in anterolateral leads", None),
    Statement("INJIN", _SCP, "subendocardial injury in inferior leads", None),
    Statement("INJLA", _SCP, "subendocardial injury in lateral leads", None),
    Statement("INJIL", _SCP, "subendocardial injury in inferolateral leads", None),
    Statement("ANEUR", _SCP, "ST-T changes compatible with ventricular aneurysm", None),
    Statement("EL", _SCP, "electrolytic disturbance or drug (former EDIS)", None),
    Statement("DIG", _SCP, "digitalis-effect", None),  # ECG-QA: "digitalis effect" (same key)
    Statement("LNGQT", _SCP, "long QT-interval", _s("111975006", "prolonged qt interval")),
    Statement("NDT", _SCP, "non-diagnostic T abnormalities", _T_ABNORMAL),
    Statement("NST_", _SCP, "non-specific ST changes", _s("55930002", "s t changes")),
    # --- form statements ---------------------------------------------------------------------------------
    Statement("ABQRS", _SCP, "abnormal QRS", _s("164951009", "abnormal QRS")),
    Statement("PVC", _SCP, "ventricular premature complex", _s("164884008", "ventricular ectopics")),
    Statement("STD_", _SCP, "non-specific ST depression", _s("429622005", "st depression")),
    Statement("STE_", _SCP, "non-specific ST elevation", _s("164931005", "st elevation")),
    Statement(
        "VCLVH",
        _SCP,
        "voltage criteria (QRS) for left ventricular hypertrophy",
        _s("164873001", "left ventricular hypertrophy", "broader"),
    ),
    Statement("QWAVE", _SCP, "Q waves present", _s("164917005", "qwave abnormal")),
    Statement("LOWT", _SCP, "low amplitude T-waves", None, ("low amplitude t-wave",)),
    Statement("NT_", _SCP, "non-specific T-wave changes", _T_ABNORMAL),
    Statement("PAC", _SCP, "atrial premature complex", _s("284470004", "premature atrial contraction")),
    Statement("LPR", _SCP, "prolonged PR interval", _s("164947007", "prolonged pr interval")),
    Statement("INVT", _SCP, "inverted T-waves", _s("59931005", "t wave inversion")),
    Statement(
        "LVOLT",
        _SCP,
        "low QRS voltages in the frontal and horizontal leads",
        _s("251146004", "low qrs voltages"),
    ),
    Statement("HVOLT", _SCP, "high QRS voltage", None),
    Statement("TAB_", _SCP, "T-wave abnormality", _s("164934002", "t wave abnormal")),
    Statement("PRC(S)", _SCP, "premature complex(es)", None),
    # --- rhythm statements -------------------------------------------------------------------------------
    Statement("SR", _SCP, "sinus rhythm", _s("426783006", "sinus rhythm")),
    Statement("AFIB", _SCP, "atrial fibrillation", _s("164889003", "atrial fibrillation")),
    Statement("AFLT", _SCP, "atrial flutter", _s("164890007", "atrial flutter")),
    Statement("STACH", _SCP, "sinus tachycardia", _s("427084000", "sinus tachycardia")),
    Statement("SBRAD", _SCP, "sinus bradycardia", _s("426177001", "sinus bradycardia")),
    Statement("SARRH", _SCP, "sinus arrhythmia", _s("427393009", "sinus arrhythmia")),
    Statement("PACE", _SCP, "normal functioning artificial pacemaker", _s("10370003", "pacing rhythm")),
    Statement(
        "SVARR",
        _SCP,
        "supraventricular arrhythmia",
        _s("63593006", "supraventricular premature beats", "approximate"),
    ),
    Statement("SVTAC", _SCP, "supraventricular tachycardia", _s("426761007", "supraventricular tachycardia")),
    Statement(
        "PSVT",
        _SCP,
        "paroxysmal supraventricular tachycardia",
        _s("67198005", "paroxysmal supraventricular tachycardia"),
    ),
    Statement(
        "BIGU",
        _SCP,
        "bigeminal pattern (unknown origin, SV or Ventricular)",
        _s("11157007", "ventricular bigeminy", "approximate"),
        ("bigeminal pattern (unknown origin, supraventricular, or ventricular)",),
    ),
    Statement(
        "TRIGU",
        _SCP,
        "trigeminal pattern (unknown origin, SV or Ventricular)",
        _s("251180001", "ventricular trigeminy", "approximate"),
        ("trigeminal pattern (unknown origin, supraventricular, or ventricular)",),
    ),
    # --- PTB-XL diagnostic superclasses, as ECG-QA names them (NORM is the statement above) -------------
    Statement("MI", "PTB-XL superclass", "myocardial infarction", _s("164865005", "myocardial infarction")),
    Statement("STTC", "PTB-XL superclass", "ST/T change", None),
    Statement("CD", "PTB-XL superclass", "conduction disturbance", None),
    Statement("HYP", "PTB-XL superclass", "hypertrophy", None),
    # --- PTB-XL heart axis, as ECG-QA names it -------------------------------------------------------------
    Statement("LAD", "PTB-XL heart axis", "left axis deviation", _s("39732003", "left axis deviation")),
    Statement("RAD", "PTB-XL heart axis", "right axis deviation", _s("47665007", "right axis deviation")),
    Statement("AXIS_EXTREME", "PTB-XL heart axis", "extreme axis deviation", None),
    Statement("AXIS_NORMAL", "PTB-XL heart axis", "normal heart axis", None),
)

_NON_WORD = re.compile(r"[^0-9a-z]+")


def _key(text: str) -> str:
    """Lookup key: lower case, punctuation and blanks collapsed (``"Digitalis-effect."`` ->
    ``"digitalis effect"``)."""
    return _NON_WORD.sub(" ", text.casefold()).strip()


_BY_TEXT: dict[str, Statement] = {}
for _st in STATEMENTS:
    for _text in (_st.description, *_st.aliases):
        assert _key(_text) not in _BY_TEXT, f"two statements spelled {_text!r}"
        _BY_TEXT[_key(_text)] = _st
BY_CODE: dict[str, Statement] = {st.code: st for st in STATEMENTS}
assert len(BY_CODE) == len(STATEMENTS), "duplicate statement codes"


def find_statement(text: str) -> Statement | None:
    """The statement a finding's text names (case and punctuation ignored), or None."""
    return _BY_TEXT.get(_key(text))


def coded_statements(
    findings: Iterable[tuple[str, bool]], probabilities: Mapping[str, float | None] | None = None
) -> list[dict[str, Any]]:
    """JSON-ready coded statements of ``(text, present)`` findings, in order, each text once.

    Each item: ``text`` (as the model said it), ``present``, the statement's ``code``, ``system``,
    ``description`` and ``snomed_ct`` (``None`` where no public mapping gives one), and ``probability``:
    the probability that the finding is present as the model reads it (``probabilities[text]``; None
    where not known). A text that names no known statement keeps ``code`` and the rest ``None``, so
    nothing the model said is dropped.
    """
    probabilities = probabilities or {}
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for text, present in findings:
        if _key(text) in seen:
            continue
        seen.add(_key(text))
        st = find_statement(text)
        coded = st.to_dict() if st else {"code": None, "system": None, "description": None, "snomed_ct": None}
        out.append({"text": text, "present": present, **coded, "probability": probabilities.get(text)})
    return out


def answer_findings(
    question_type: QuestionType | None,
    attributes: Iterable[str],
    answers: Iterable[str],
    *,
    statement: str | None = None,
) -> list[tuple[str, bool]]:
    """The ``(finding, present)`` pairs a catalogued answer asserts.

    Args:
        question_type: the question's type (None: a free question; it asserts nothing codable).
        attributes: the findings the question names.
        answers: the answer set.
        statement: the statement a record-level verify question asks about
            (``QuestionTemplate.statement``: "Is this a normal ECG?" asks about ``normal ecg``, NORM);
            its yes/no is about that statement.

    A verify answer asserts each named finding present ("yes") or absent ("no"); "not sure" asserts
    nothing. A choose answer asserts its pick(s) present and the other named findings absent. A query
    answer asserts its members present ("none" asserts nothing: the options are not all listed).
    """
    answers = set(answers)
    named = [a for a in attributes if find_statement(a) is not None]
    if question_type == QuestionType.VERIFY:
        if statement is not None:
            st = find_statement(statement)
            named = [st.description] if st is not None else []
        if answers & {"yes", "no"}:
            return [(a, "yes" in answers) for a in named]
        return []
    if question_type == QuestionType.CHOOSE:
        return [(a, a in answers) for a in named] + [
            (a, True) for a in sorted(answers - set(named)) if find_statement(a) is not None
        ]
    if question_type == QuestionType.QUERY:
        return [(a, True) for a in sorted(answers) if a != "none"]
    return []
