"""Report tidying (diagecg.report_text)."""

from __future__ import annotations

from diagecg.report_text import report_statements, tidy_report


def test_duplicates_and_implied_statements_go_specific_ones_stay() -> None:
    raw = "sinus rhythm. complete left bundle branch block. left bundle branch block. sinus rhythm."
    assert tidy_report(raw) == "Sinus rhythm. Complete left bundle branch block."
    # the general statement first: still dropped, the order of the rest kept
    assert (
        tidy_report("left bundle branch block. sinus rhythm. complete left bundle branch block")
        == "Sinus rhythm. Complete left bundle branch block."
    )
    # a word inside another word is no implication
    assert (
        tidy_report("st elevation. non-specific st elevation. abnormal qrs.")
        == "Non-specific st elevation. Abnormal qrs."
    )
    assert tidy_report("qrs. abnormal qrs") == "Abnormal qrs."


def test_statements_split_on_periods_not_decimals() -> None:
    statements = report_statements("ST depression 0.5 mV. Sinus rhythm.\n")
    assert statements == ["st depression 0.5 mv", "sinus rhythm"]
    assert tidy_report("  ") == "" and tidy_report("...") == ""
