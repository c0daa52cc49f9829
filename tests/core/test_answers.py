"""Answer sets as text: the trained format, its inverse, the lenient reader; torch-free."""

from __future__ import annotations

import subprocess
import sys

import pytest

from diagecg.answers import format_answer, normalize_answer
from diagecg.constants import ANSWER_SEPARATOR


def test_format_answer_sorts_and_joins_the_set():
    answers = ("sinus rhythm", "left axis deviation")
    text = format_answer(answers)
    assert text == "left axis deviation; sinus rhythm"
    assert ANSWER_SEPARATOR in text
    assert format_answer(("yes",)) == "yes"
    assert format_answer(["yes", "yes"]) == "yes"
    with pytest.raises(ValueError, match="empty"):
        format_answer(())
    with pytest.raises(ValueError, match="non-blank"):
        format_answer(("a;b",))
    with pytest.raises(ValueError, match="non-blank"):
        format_answer((" ",))


def test_normalize_answer_reads_sets_leniently():
    assert normalize_answer("no; yes") == normalize_answer("yes; no") == frozenset({"yes", "no"})
    expected = frozenset({"sinus rhythm", "left axis deviation"})
    assert normalize_answer("Sinus rhythm, Left axis deviation.") == expected
    assert normalize_answer("Answer: yes") == frozenset({"yes"})
    assert normalize_answer("The answer is: Not sure.") == frozenset({"not sure"})
    assert normalize_answer("yes\nbecause the ST segment...") == frozenset({"yes"})
    big = "bigeminal pattern (unknown origin, supraventricular, or ventricular)"
    assert normalize_answer(f"{big}, sinus rhythm") == frozenset({big, "sinus rhythm"})
    assert normalize_answer("") == frozenset()
    assert normalize_answer("  \n ") == frozenset()


def test_normalize_reads_every_formatted_answer_back():
    for answers in [("yes",), ("none",), ("st/t change", "myocardial infarction"), ("a", "b", "c")]:
        assert normalize_answer(format_answer(answers)) == frozenset(answers)


def test_answers_module_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None; "
        "from diagecg.answers import format_answer; print(format_answer(['b', 'a']))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "a; b"
