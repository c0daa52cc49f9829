"""The template table's routing data (diagecg.question_templates): complete and consistent for every
template, and the published answer schema's question types equal to :class:`QuestionType`."""

from __future__ import annotations

import importlib.resources
import json
import re

import pytest

from diagecg.question_templates import (
    NEGATED_TEXT,
    NONE_ANSWER,
    NORMAL_STATEMENT,
    SEMANTICS,
    TEMPLATES,
    QuestionTemplate,
    QuestionType,
    finding_template,
)
from diagecg.statements import find_statement

_PLACEHOLDER = re.compile(r"\$\{attribute[12]?\}")


def test_the_answer_schema_lists_exactly_the_question_types() -> None:
    """``diagecg/schemas/answer.schema.json`` is checked in: a new QuestionType must be added there too."""
    schema = json.loads(
        importlib.resources.files("diagecg")
        .joinpath("schemas/answer.schema.json")
        .read_text(encoding="utf-8")
    )
    matched = schema["$defs"]["answer"]["properties"]["matched_question"]["oneOf"]
    obj = next(s for s in matched if s.get("type") == "object")
    assert obj["properties"]["question_type"]["enum"] == [t.value for t in QuestionType]


def test_question_types_are_written_as_their_strings() -> None:
    assert [str(t) for t in QuestionType] == ["single-verify", "single-choose", "single-query"]
    assert json.dumps({"t": QuestionType.CHOOSE}) == '{"t": "single-choose"}'
    assert [t.closed for t in QuestionType] == [True, True, False]


@pytest.mark.parametrize("template", list(TEMPLATES.values()), ids=lambda t: f"template{t.template_id}")
def test_every_template_has_complete_routing_data(template: QuestionTemplate) -> None:
    t = template
    assert TEMPLATES[t.template_id] is t
    assert isinstance(t.question_type, QuestionType)
    assert t.group and t.text and t.train_paraphrases and t.heldout_paraphrases
    # the paraphrases take the same placeholders as the wording, so every one can be filled alike
    placeholders = set(_PLACEHOLDER.findall(t.text))
    for text in (*t.train_paraphrases, *t.heldout_paraphrases):
        assert set(_PLACEHOLDER.findall(text)) == placeholders, text
    # the number of named findings follows from the type: a choice names two, a query none
    allowed = {QuestionType.VERIFY: {0, 1}, QuestionType.CHOOSE: {2}, QuestionType.QUERY: {0}}
    assert t.n_attributes in allowed[t.question_type]
    assert t.record_level == (t.n_attributes == 0)
    # what the wording says of uncertain statements is what the routing says
    said = [
        w
        for w, text in (("included", "including uncertain"), ("excluded", "excluding uncertain"))
        if text in t.text
    ]
    assert t.uncertain == (said[0] if said else None)
    # a record-level verify question has ECG-QA's attribute (the generated samples carry it); no other does
    record_verify = t.record_level and t.question_type is QuestionType.VERIFY
    assert (t.record_attribute is not None) == record_verify
    if t.statement is not None:  # a statement is a PTB-XL one, asked by a record-level verify template
        assert record_verify and find_statement(t.statement) is not None
    assert t.one_finding == (
        t.question_type is QuestionType.VERIFY and (t.n_attributes == 1 or t.statement is not None)
    )
    expected_negative = {
        QuestionType.CHOOSE: NONE_ANSWER,
        QuestionType.QUERY: NONE_ANSWER,
        QuestionType.VERIFY: "yes" if t.statement == NORMAL_STATEMENT else "no",
    }
    assert t.negative_option == expected_negative[t.question_type]
    if t.any_statement:  # its warning says what "any" means
        assert record_verify and t.template_id in SEMANTICS


def test_the_reader_can_tell_every_template_apart() -> None:
    """What the reader of questions looks templates up by is unique: one template about a named
    finding, one per statement, one record-level template per (type, group, uncertain), and the
    choose templates of one group differ in what they say of uncertain findings."""
    assert finding_template().template_id == 1
    assert [t.template_id for t in TEMPLATES.values() if t.one_finding and t.n_attributes == 1] == [1]
    statements = [t.statement for t in TEMPLATES.values() if t.statement is not None]
    assert len(statements) == len(set(statements))
    record = [(t.question_type, t.group, t.uncertain) for t in TEMPLATES.values() if t.record_level]
    assert len(record) == len(set(record))
    choose = [(t.group, t.uncertain) for t in TEMPLATES.values() if t.question_type is QuestionType.CHOOSE]
    assert len(choose) == len(set(choose))
    assert set(NEGATED_TEXT) <= {t.template_id for t in TEMPLATES.values() if t.statement is not None}
    assert set(SEMANTICS) <= set(TEMPLATES)
