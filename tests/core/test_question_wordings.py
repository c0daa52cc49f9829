"""Questions are answered as they were asked: a table of wordings and how each must be read.

Every row is a wording of ours (not a template or paraphrase the model was trained on) and its
expected reading against the shipped bundle's catalogue: the finding asked about and the polarity
(``+`` the catalogue question itself, ``-`` its negation, whose answer is inverted), or the reason it
is refused. Groups: positive, negated, opposite, double-negated, misspelt, more specific or unknown
findings, and others that must be refused.
"""

from __future__ import annotations

import json

import pytest

from diagecg.bundle import default_bundle
from diagecg.constants import MANIFEST_NAME, ManifestKey
from diagecg.questions import (
    REFUSAL_REASONS,
    TEMPLATES,
    MatchedQuestion,
    QuestionCatalogue,
    Refusal,
    fill_attributes,
)

AF, AFL, SR = "atrial fibrillation", "atrial flutter", "sinus rhythm"
LBBB, RBBB = "complete left bundle branch block", "complete right bundle branch block"
IRBBB, ILBBB = "incomplete right bundle branch block", "incomplete left bundle branch block"
MI, IMI, ASMI = (
    "myocardial infarction",
    "myocardial infarction in inferior leads",
    "myocardial infarction in anteroseptal leads",
)
AMI, LMI = "myocardial infarction in anterior leads", "myocardial infarction in lateral leads"
LVH, CD, HYP, STTC = "left ventricular hypertrophy", "conduction disturbance", "hypertrophy", "st/t change"
AVB1, LQT, PVC, PAC = (
    "first degree av block",
    "long qt-interval",
    "ventricular premature complex",
    "atrial premature complex",
)
SBRAD, STACH, SVT = "sinus bradycardia", "sinus tachycardia", "supraventricular tachycardia"
STD, STE, ISC = "non-specific st depression", "non-specific st elevation", "non-specific ischemic"
INVT, QW, LPR = "inverted t-waves", "q waves present", "prolonged pr interval"
NORMAL = "T2"  # "Is this a normal ECG?"

# (question, expected): expected is (finding or NORMAL or "T<id>", "+" / "-") or a refusal reason
POSITIVE = [
    ("Is there atrial fibrillation?", (AF, "+")),
    ("Does the patient have AF?", (AF, "+")),
    ("AFib present?", (AF, "+")),
    ("Any evidence of a-fib on this tracing?", (AF, "+")),
    ("Could this be atrial flutter?", (AFL, "+")),
    ("Is the rhythm sinus?", (SR, "+")),
    ("Normal sinus rhythm?", (SR, "+")),
    ("Is there an inferior MI?", (IMI, "+")),
    ("Inferior wall myocardial infarction?", (IMI, "+")),
    ("Is there an anteroseptal infarct?", (ASMI, "+")),
    ("Signs of an anterior MI?", (AMI, "+")),
    ("lateral myocardial infarction?", (LMI, "+")),
    ("Has the patient had a heart attack?", (MI, "+")),
    ("Is there ST depression?", (STD, "+")),
    ("Any ST elevation?", (STE, "+")),
    ("ST segment depression present?", (STD, "+")),
    ("Is the QT long?", (LQT, "+")),
    ("Is the QT interval prolonged?", (LQT, "+")),
    ("Prolonged QTc?", (LQT, "+")),
    ("Is the PR interval prolonged?", (LPR, "+")),
    ("Is there a left bundle branch block?", (LBBB, "+")),
    ("Right BBB?", (RBBB, "+")),
    ("Block of the right bundle?", (RBBB, "+")),
    ("Is there an incomplete RBBB?", (IRBBB, "+")),
    ("Partial left bundle branch block?", (ILBBB, "+")),
    ("First-degree heart block?", (AVB1, "+")),
    ("Does the ECG show LVH?", (LVH, "+")),
    ("Are there PVCs?", (PVC, "+")),
    ("Any premature atrial contractions?", (PAC, "+")),
    ("Are there negative T waves?", (INVT, "+")),
    ("T wave inversion?", (INVT, "+")),
    ("Pathologic Q waves?", (QW, "+")),
    ("Is there sinus bradycardia?", (SBRAD, "+")),
    ("Sinus tachy?", (STACH, "+")),
    ("SVT?", (SVT, "+")),
    ("Is there ST/T change?", (STTC, "+")),
    ("Is there a conduction disturbance?", (CD, "+")),
    ("Is this ECG normal?", (NORMAL, "+")),
    ("Is the ECG within normal limits?", (NORMAL, "+")),
    ("Is the ECG OK?", (NORMAL, "+")),
    ("Does this ECG show any rhythm-related symptoms?", ("T16", "+")),
    ("Are there waveform abnormalities?", ("T15", "+")),
    ("Any diagnostic findings in this ECG?", ("T13", "+")),
    ("Does this ECG show any kind of abnormal symptoms?", ("T12", "+")),
    ("Is AF present or absent?", (AF, "+")),
    ("AF or no AF?", (AF, "+")),
    ("Is there AF, yes or no?", (AF, "+")),
]
NEGATED = [
    ("Is there no AF?", (AF, "-")),
    ("Is AF absent?", (AF, "-")),
    ("Can you exclude AF?", (AF, "-")),
    ("Is AF ruled out?", (AF, "-")),
    ("Can AF be ruled out?", (AF, "-")),
    ("no AF?", (AF, "-")),
    ("Is the ECG without AF?", (AF, "-")),
    ("Is the ECG free of atrial fibrillation?", (AF, "-")),
    ("Is the patient negative for atrial fibrillation?", (AF, "-")),
    ("Is there an absence of atrial flutter?", (AFL, "-")),
    ("Does this ECG not show atrial flutter?", (AFL, "-")),
    ("Isn't there any LBBB?", (LBBB, "-")),
    ("Doesn't the patient have RBBB?", (RBBB, "-")),
    ("Is there no ST elevation?", (STE, "-")),
    ("No ST depression?", (STD, "-")),
    ("Is a myocardial infarction excluded?", (MI, "-")),
    ("Can an inferior MI be excluded?", (IMI, "-")),
    ("Does the ECG lack Q waves?", (QW, "-")),
    ("Is the QT not prolonged?", (LQT, "-")),
    ("Are PVCs absent?", (PVC, "-")),
    ("Is sinus rhythm absent?", (SR, "-")),
    ("Is there no sinus rhythm?", (SR, "-")),
    ("Is first degree AV block ruled out?", (AVB1, "-")),
    ("Rule out LVH?", (LVH, "-")),
    ("Is it false that there is AF?", (AF, "-")),
    ("The ECG cannot show atrial fibrillation, can it?", (AF, "-")),
    ("Never any SVT?", (SVT, "-")),
    ("Are negative T waves absent?", (INVT, "-")),
    ("Is there no conduction disturbance?", (CD, "-")),
    ("Is the ECG not normal?", (NORMAL, "-")),
    ("Is this not a normal ECG?", (NORMAL, "-")),
    ("Does this ECG show no rhythm-related symptoms?", ("T16", "-")),
    ("Are there no diagnostic findings?", ("T13", "-")),
    ("Is the waveform normal?", ("T15", "-")),
    ("Does this ECG show no abnormal symptoms of any kind?", ("T12", "-")),
]
OPPOSITE = [
    ("Is the ECG abnormal?", (NORMAL, "-")),
    ("Is this an abnormal ECG?", (NORMAL, "-")),
    ("Is anything abnormal in this ECG?", (NORMAL, "-")),
    ("Does this ECG contain any abnormal finding?", (NORMAL, "-")),
    ("Is there any abnormality?", (NORMAL, "-")),
    ("Is anything wrong with this ECG?", (NORMAL, "-")),
    ("Is this ECG pathological?", (NORMAL, "-")),
    ("Are there abnormalities on this tracing?", (NORMAL, "-")),
    ("Is the rhythm regular?", "no_such_finding"),
    ("Is the rhythm irregular?", "no_such_finding"),
    ("Is the heartbeat irregular?", "no_such_finding"),
    ("Is the rhythm normal?", "no_such_finding"),
    ("Is the rhythm abnormal?", "no_such_finding"),
    ("Irregular rhythm?", "unknown_finding"),
    ("Is there an arrhythmia?", "unknown_finding"),
    ("Is the rhythm irregularly irregular?", "unknown_finding"),
    ("Is the heart rate slow?", (SBRAD, "+")),
    ("Is the heart rate fast?", (STACH, "+")),
    ("Is the heart rate not fast?", (STACH, "-")),
    ("Is the T wave inversion absent or present?", (INVT, "+")),
]
DOUBLE_NEGATED = [
    ("Is it not true that there is no AF?", (AF, "+")),
    ("Can you not rule out AF?", (AF, "+")),
    ("Is AF not absent?", (AF, "+")),
    ("Is there no absence of atrial flutter?", (AFL, "+")),
    ("Can LBBB not be excluded?", (LBBB, "+")),
    ("Isn't it false that there is an inferior MI?", (IMI, "+")),
    ("Is the ECG not without ST depression?", (STD, "+")),
    ("Is nothing abnormal?", (NORMAL, "+")),
    ("Is the ECG not abnormal?", (NORMAL, "+")),
    ("No abnormalities?", (NORMAL, "+")),
    ("Is there nothing wrong with this ECG?", (NORMAL, "+")),
    ("Is the ECG not not normal?", (NORMAL, "+")),
    ("Is it not the case that PVCs are absent?", (PVC, "+")),
    ("Can we not exclude that there is no sinus rhythm?", (SR, "-")),  # three cues: negated
    ("Is there no lack of Q waves?", (QW, "+")),
]
MISSPELT = [
    ("atrial fibrilation?", (AF, "+")),
    ("Is there atrail fibrillation?", (AF, "+")),
    ("right bundle brunch block?", (RBBB, "+")),
    ("Is there a left bundel branch block?", (LBBB, "+")),
    ("Is there no atrial fibrilation?", (AF, "-")),
    ("Is there an inferior myocardial infraction?", (IMI, "+")),
    ("Sinus bradicardia?", (SBRAD, "+")),
    ("Sinus tachicardia present?", (STACH, "+")),
    ("Left ventricular hypertrohpy?", (LVH, "+")),
    ("Is there atrial fluter?", (AFL, "+")),
    ("Any ventricular premature complexs?", (PVC, "+")),
    ("Is there an incomplete right bundle brach block?", (IRBBB, "+")),
    ("Is the QT prolongued?", (LQT, "+")),
    ("Is the ECG abnormla?", (NORMAL, "-")),
    ("Is this ECG normla?", (NORMAL, "+")),
    ("Is the rythm regular?", "no_such_finding"),
    ("Does this ECG show any rythm-related symptoms?", ("T16", "+")),
    ("Is there myocardial ischaemia?", (ISC, "+")),
    ("Is there an anterior infarct?", (AMI, "+")),  # "anterior" is a word of its own, never "inferior"
    ("ST depresion?", (STD, "+")),
    ("Is there ST elevaton?", (STE, "+")),
    ("Is there a conduction disturbence?", (CD, "+")),
    ("Is there hypertropy?", (HYP, "+")),
    ("Is there a first degree av blok?", (AVB1, "+")),
    ("Pacemaker rhytm?", ("normal functioning artificial pacemaker", "+")),
]
SPECIFICITY = [
    ("Is there a posterior ischemia?", "more_specific"),
    ("Ischemia in the posterior leads?", "more_specific"),
    ("Is there a septal MI?", "more_specific"),
    ("Apical infarction?", "more_specific"),
    ("MI in leads V1-V3?", "more_specific"),
    ("Is there right ventricular hypertrophy?", "unknown_finding"),
    ("Is there septal hypertrophy?", "unknown_finding"),
    ("Second degree AV block?", "unknown_finding"),
    ("Is there complete heart block?", "unknown_finding"),
    ("Mobitz type 2?", "unknown_finding"),
    ("Does this show WPW?", "unknown_finding"),
    ("Is there ventricular tachycardia?", "unknown_finding"),
    ("Brugada pattern?", "unknown_finding"),
    ("Is there left axis deviation?", "unknown_finding"),
    ("Are there premature beats?", "unknown_finding"),
    ("Is there noise in this ECG?", "unknown_finding"),
    ("Is there subendocardial injury?", "unknown_finding"),
]
BROADER_OR_NARROWER = [  # answered as the nearest catalogue finding, flagged
    ("Is there heart block?", (CD, "+"), "broader"),
    ("AV block?", (CD, "+"), "broader"),
    ("Is there a bundle branch block?", (CD, "+"), "broader"),
    ("Is there no bundle branch block?", (CD, "-"), "broader"),
    ("Acute MI?", (MI, "+"), "broader"),
    ("Is there an old inferior infarct?", (IMI, "+"), "broader"),
    ("STEMI?", (MI, "+"), "broader"),
    ("PSVT?", (SVT, "+"), "broader"),
    ("Is there ischemia?", (ISC, "+"), "narrower"),
    ("Is there no ischemia?", (ISC, "-"), "narrower"),
    ("Bradycardia?", (SBRAD, "+"), "narrower"),
    ("Is the patient tachycardic?", (STACH, "+"), "narrower"),
    ("Is there ventricular hypertrophy?", (HYP, "+"), "broader"),
]
OTHER_REFUSALS = [
    ("What is the heart rate?", "numeric"),
    ("How long is the QT interval?", "numeric"),
    ("What is the QTc in ms?", "numeric"),
    ("How many PVCs are there?", "numeric"),
    ("Heart rate?", "numeric"),
    ("Is there AF and LBBB?", "several_findings"),
    ("AF, LBBB or RBBB?", "several_findings"),
    ("Which is absent, AF or sinus rhythm?", "negated_choice"),
    ("Does this ECG not show AF or flutter?", "negated_choice"),
    ("Which rhythm findings are not present?", "negated_query"),
    ("Does this ECG show anything other than sinus rhythm?", "other_than"),
    ("Any findings besides LVH?", "other_than"),
    ("Which leads show atrial fibrillation?", "not_understood"),
    ("What is the capital of France?", "not_understood"),
    ("hello", "not_understood"),
    ("?", "empty"),
]
TABLE = (
    POSITIVE
    + NEGATED
    + OPPOSITE
    + DOUBLE_NEGATED
    + MISSPELT
    + SPECIFICITY
    + OTHER_REFUSALS
    + [(q, e) for q, e, _ in BROADER_OR_NARROWER]
)


@pytest.fixture(scope="module")
def catalogue() -> QuestionCatalogue:
    """The shipped bundle's catalogue, read from its manifest alone (what a user's question meets)."""
    manifest = json.loads((default_bundle() / MANIFEST_NAME).read_text(encoding="utf-8"))
    return QuestionCatalogue.from_dict(manifest[ManifestKey.QUESTIONS])


def _reading(read: MatchedQuestion | Refusal) -> object:
    if isinstance(read, Refusal):
        return read.reason
    what = read.attributes[0] if read.template_id == 1 else f"T{read.template_id}"
    return what, read.polarity[0].replace("p", "+").replace("n", "-")


def test_the_table_is_large_and_unique() -> None:
    questions = [q for q, _ in TABLE]
    assert len(questions) >= 150 and len(set(questions)) == len(questions)
    assert {e for _, e in TABLE if isinstance(e, str)} <= set(REFUSAL_REASONS)


@pytest.mark.parametrize(("question", "expected"), TABLE, ids=[q for q, _ in TABLE])
def test_each_wording_is_read_as_asked(catalogue: QuestionCatalogue, question: str, expected: object) -> None:
    read = catalogue.read(question)
    assert _reading(read) == expected, read
    if isinstance(read, Refusal):  # a refusal says why and what can be asked instead
        assert read.message and read.suggestions and all("${" not in s for s in read.suggestions)
        assert all(isinstance(catalogue.read(s), MatchedQuestion) for s in read.suggestions), read
    else:
        assert read.canonical == read.answered or read.negated or read.canonical != question


@pytest.mark.parametrize(("question", "expected", "scope"), BROADER_OR_NARROWER)
def test_a_broader_or_narrower_reading_is_flagged_with_what_it_does_not_say(
    catalogue: QuestionCatalogue, question: str, expected: object, scope: str
) -> None:
    read = catalogue.read(question)
    assert isinstance(read, MatchedQuestion) and read.scope == scope, read
    assert all(t.note for t in read.terms if t.scope != "same")


def test_misspelt_names_show_what_they_were_read_as(catalogue: QuestionCatalogue) -> None:
    read = catalogue.read("right bundle brunch block?")
    assert isinstance(read, MatchedQuestion) and read.spelling == (("brunch", "branch"),)
    assert [t.to_dict() for t in read.terms] == [
        {
            "asked": "right bundle brunch block",
            "finding": RBBB,
            "via": "spelling",
            "scope": "same",
            "note": "",
        }
    ]
    assert read.to_dict()["spelling"] == [["brunch", "branch"]]


def test_negated_answers_and_probabilities_are_inverted(catalogue: QuestionCatalogue) -> None:
    read = catalogue.read("Is AF absent?")
    assert isinstance(read, MatchedQuestion) and read.negated
    assert read.canonical == f"Does this ECG show symptoms of {AF}?"  # what the model is asked
    assert read.answered == f"Does this ECG show no symptoms of {AF}?"  # what the answer answers
    assert [read.as_asked(a) for a in ("yes", "no", "not sure")] == ["no", "yes", "not sure"]
    probs = read.probabilities_as_asked({"no": 0.7, "not sure": 0.1, "yes": 0.2})
    assert probs == {"no": 0.2, "not sure": 0.1, "yes": 0.7} and list(probs) == list(read.options)
    d = read.to_dict()
    assert d["polarity"] == "negated" and d["answered"] == read.answered and d["canonical"] == read.canonical
    abnormal = catalogue.read("Is the ECG abnormal?")
    assert isinstance(abnormal, MatchedQuestion) and abnormal.answered.startswith("Is this ECG abnormal")


def test_refusals_name_what_was_asked_and_suggest_the_nearest_findings(catalogue: QuestionCatalogue) -> None:
    rvh = catalogue.read("Is there right ventricular hypertrophy?")
    assert isinstance(rvh, Refusal) and "right ventricular hypertrophy" in rvh.message
    assert rvh.suggestions[:2] == (
        f"Does this ECG show symptoms of {HYP}?",
        f"Does this ECG show symptoms of {LVH}?",
    )
    site = catalogue.read("Is there a posterior ischemia?")
    assert isinstance(site, Refusal) and "'posterior ischemia'" in site.message
    assert all("ischemic in" in s for s in site.suggestions)
    # nearest by name, not a fixed list: two different unknown wordings get different suggestions
    a, b = catalogue.closest("atrial flatter wave?"), catalogue.closest("Is there an infarkt of the heart?")
    assert a != b and any(AFL in s for s in a), (a, b)


def test_a_name_holding_or_is_one_finding_in_either_spelling(catalogue: QuestionCatalogue) -> None:
    bigu = "bigeminal pattern (unknown origin, supraventricular, or ventricular)"
    for spelled in (bigu, "bigeminal pattern (unknown origin, SV or Ventricular)"):  # ECG-QA's, PTB-XL's
        m = catalogue.read(f"Which rhythm-related symptom does this ECG show, sinus rhythm or {spelled}?")
        assert isinstance(m, MatchedQuestion) and (m.template_id, m.attributes) == (7, (SR, bigu)), m
        one = catalogue.read(f"Is there {spelled}?")
        assert isinstance(one, MatchedQuestion) and one.attributes == (bigu,), one
    # a word of another finding's name is never read as a misspelling ("trigeminal" is not "bigeminal")
    assert _reading(catalogue.read("Trigeminal pattern?")) == "unknown_finding"


def test_every_trained_wording_is_read_as_its_own_template(catalogue: QuestionCatalogue) -> None:
    """The templates and their training and held-out paraphrases, filled with every finding (choices
    with a sample of pairs), are read as their template, positive, with the findings named. ECG-QA's
    paraphrases of template 12 ("Is anything abnormal in this ECG?") mean "not normal" to a reader and
    are read so."""
    n = 0
    for tid, template in TEMPLATES.items():
        entry = catalogue.entries[tid]
        names = list(entry.attributes)
        for text in (template.text, *template.train_paraphrases, *template.heldout_paraphrases):
            if "${attribute}" in text:
                fills: list[tuple[str, ...]] = [(a,) for a in names]
            elif "${attribute1}" in text:
                fills = [(a, b) for i, a in enumerate(names) for b in names[i + 1 : i + 4]]
            else:
                fills = [()]
            for fill in fills:
                read = catalogue.read(fill_attributes(text, fill))
                n += 1
                assert isinstance(read, MatchedQuestion), (text, fill, read)
                if tid == 12 and text != template.text:
                    assert (read.template_id, read.negated) == (2, True), (text, read)
                    continue
                assert (read.template_id, read.negated, read.scope) == (tid, False, "same"), (text, read)
                assert set(read.attributes) == set(fill), (text, fill, read)
    assert n > 1500
