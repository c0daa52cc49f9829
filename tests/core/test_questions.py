"""The question catalogue and the matcher of free-text questions (diagecg.questions)."""

from __future__ import annotations

import pytest
from builders import QA_VOCAB

from diagecg.questions import (
    TEMPLATES,
    CatalogueEntry,
    QuestionCatalogue,
    build_catalogue,
    normalize_question,
)


@pytest.fixture(scope="module")
def catalogue() -> QuestionCatalogue:
    return build_catalogue(QA_VOCAB)


def test_catalogue_lists_every_generated_template_and_round_trips(catalogue: QuestionCatalogue) -> None:
    assert set(catalogue.entries) == set(TEMPLATES)
    verify = catalogue.entries[1]
    assert verify.options == ("no", "not sure", "yes") and "atrial fibrillation" in verify.attributes
    assert "none" not in verify.attributes and "myocardial infarction" in verify.attributes
    again = QuestionCatalogue.from_dict(catalogue.to_dict())
    assert again.entries == catalogue.entries and again.synonyms == catalogue.synonyms
    # a bundle's synonyms are read together with the built-in ones (a newer diagecg knows more names)
    older = QuestionCatalogue.from_dict({**catalogue.to_dict(), "synonyms": {"atrial fibrillation": ["af"]}})
    assert older.match("a-fib?") is not None and older.match("heart attack?") is not None
    assert len(catalogue.describe()) == len(TEMPLATES)
    with pytest.raises(ValueError, match="no answer options"):
        build_catalogue({**QA_VOCAB, "7": []})


def test_yes_or_no_wordings_stay_the_verify_template(catalogue: QuestionCatalogue) -> None:
    for question in ("Is there AF or not?", "AF, yes or no?", "Atrial fibrillation?"):
        match = catalogue.match(question)
        assert match is not None and match.template_id == 1, question


@pytest.mark.parametrize(
    ("question", "attribute"),
    [
        (
            "Does this ECG show symptoms of complete left bundle branch block?",
            "complete left bundle branch block",
        ),
        ("LBBB?", "complete left bundle branch block"),
        ("Is there a left bundle-branch block?", "complete left bundle branch block"),
        ("Is there incomplete left bundle branch block?", "incomplete left bundle branch block"),
        ("AF?", "atrial fibrillation"),
        ("Any sign of AFib here?", "atrial fibrillation"),
        ("1st degree AVB?", "first degree av block"),
        ("First-degree AV block present?", "first degree av block"),
        ("Does the patient have LVH?", "left ventricular hypertrophy"),
        ("Any PVCs?", "ventricular premature complex"),
        ("Are there signs of a heart attack?", "myocardial infarction"),
        ("Is the QT prolonged?", "long qt-interval"),
        ("Sinus brady?", "sinus bradycardia"),
    ],
)
def test_one_finding_is_the_verify_template(
    catalogue: QuestionCatalogue, question: str, attribute: str
) -> None:
    m = catalogue.match(question)
    assert m is not None and m.template_id == 1 and m.attributes == (attribute,), (question, m)
    assert m.canonical == f"Does this ECG show symptoms of {attribute}?"
    assert m.options == ("no", "not sure", "yes") and m.closed


@pytest.mark.parametrize(
    ("question", "template_id"),
    [
        ("Is this a normal ECG?", 2),
        ("Would you read this ECG as normal?", 2),
        ("Is the ECG within normal limits?", 2),
        ("Does this ECG show any kind of abnormal symptoms?", 12),
        ("Does this ECG show any diagnostic symptoms, excluding uncertain symptoms?", 14),
        ("Are there diagnostic findings in this ECG?", 13),
        ("Is the waveform shape of this ECG abnormal?", 15),
        ("Does this ECG show any rhythm-related symptoms?", 16),
        ("Which rhythm does this ECG show?", 10),
        ("Describe the rhythm findings of this ECG.", 10),
        ("List the form-related findings seen in this ECG.", 11),
        ("What diagnostic symptoms does this ECG show, including uncertain symptoms?", 8),
    ],
)
def test_record_level_questions(catalogue: QuestionCatalogue, question: str, template_id: int) -> None:
    m = catalogue.match(question)
    assert m is not None and m.template_id == template_id, (question, m)
    assert m.canonical == TEMPLATES[template_id].text
    assert m.closed == (TEMPLATES[template_id].question_type != "single-query")


def test_two_findings_with_or_are_the_choose_template_of_their_group(catalogue: QuestionCatalogue) -> None:
    m = catalogue.match("Is the rhythm atrial fibrillation or sinus rhythm?")
    assert m is not None and m.template_id == 7 and m.attributes == ("atrial fibrillation", "sinus rhythm")
    assert m.options == ("atrial fibrillation", "sinus rhythm", "atrial fibrillation; sinus rhythm", "none")
    m = catalogue.match("Which is found in this ECG: MI or hypertrophy?")
    assert m is not None and m.template_id == 3
    m = catalogue.match("Counting only certain findings, which is present: LBBB or 1st degree AV block?")
    assert m is not None and m.template_id == 5
    assert catalogue.match("AF and LBBB?") is None  # two findings at once: not a template


@pytest.mark.parametrize(
    "question",
    [
        "What is the heart rate?",
        "What is the QTc interval in ms?",
        "What is the capital of France?",
        "How many PVCs are there?",
        "What is the electrical axis?",
        "Does this show WPW?",
        "?",
        "hello",
        # a choice between a known finding and one the model was not trained on is not a yes/no
        # question about the known one (it was answered "yes" as "Does this ECG show sinus rhythm?")
        "Which rhythm-related symptom does this ECG show, sinus rhythm or trigeminal pattern (unknown)?",
        "Is it sinus rhythm or WPW?",
        "Which leads show atrial fibrillation?",
    ],
)
def test_unsupported_questions_match_nothing_and_get_suggestions(
    catalogue: QuestionCatalogue, question: str
) -> None:
    assert catalogue.match(question) is None
    closest = catalogue.closest(question)
    assert 1 <= len(closest) <= 3 and all("${" not in q for q in closest)
    assert all(catalogue.match(q) is not None for q in closest)


def test_normalisation_and_catalogue_validation() -> None:
    assert normalize_question("  Is there  A\u2013Fib?? ") == "is there a-fib"
    assert normalize_question("St/T change, really.") == "st/t change really"
    with pytest.raises(ValueError, match="at least one"):
        QuestionCatalogue([])
    with pytest.raises(ValueError, match="no answer options"):
        QuestionCatalogue([CatalogueEntry(1, "single-verify", "code", "X?", (), ())])
