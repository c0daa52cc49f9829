"""The lead alias table: every spelling maps, nothing unknown is skipped silently."""

from __future__ import annotations

import pytest

from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import LeadError
from diagecg.leads import LEAD_ALIASES, canonical_lead_order, normalise_lead_name

SPELLINGS = {
    "I": ["I", "i", "LI", "lead I", "Lead_I", " I ", "DI"],
    "II": ["II", "ii", "LII", "LEAD II"],
    "III": ["III", "iii", "DIII"],
    "aVR": ["aVR", "AVR", "avr", "lead aVR"],
    "aVL": ["aVL", "AVL", "avl"],
    "aVF": ["aVF", "AVF", "avf"],
    "V1": ["V1", "V1 ", "v1", "C1"],
    "V6": ["V6", "v6", "C6", "lead-V6"],
}


@pytest.mark.parametrize(("canonical", "spelling"), [(c, s) for c, ss in SPELLINGS.items() for s in ss])
def test_spellings_map_to_canonical(canonical: str, spelling: str) -> None:
    assert LEAD_ALIASES.get(normalise_lead_name(spelling)) == canonical


def test_alias_table_covers_every_canonical_lead_and_keys_are_normalised() -> None:
    assert set(LEAD_ALIASES.values()) == set(CANONICAL_LEADS)
    assert all(normalise_lead_name(k) == k for k in LEAD_ALIASES)


@pytest.mark.parametrize("name", ["MLII", "V5R", "RESP", "lead 1", "-aVR", ""])
def test_non_leads_have_no_canonical_name(name: str) -> None:
    assert LEAD_ALIASES.get(normalise_lead_name(name)) is None


def test_order_of_shuffled_ptb_names() -> None:
    names = ["v6", "v5", "v4", "v3", "v2", "v1", "avf", "avl", "avr", "iii", "ii", "i"]
    indices, warnings = canonical_lead_order(names)
    assert indices == list(range(11, -1, -1)) and warnings == []


def test_canonical_order_is_identity() -> None:
    assert canonical_lead_order(CANONICAL_LEADS) == (list(range(12)), [])


def test_frank_leads_are_dropped_with_warning() -> None:
    names = [*CANONICAL_LEADS, "vx", "vy", "vz"]
    indices, warnings = canonical_lead_order(names)
    assert indices == list(range(12))
    assert len(warnings) == 1 and "3 non-12-lead" in warnings[0] and "vz (Frank" in warnings[0]


def test_missing_lead_is_named() -> None:
    with pytest.raises(LeadError, match="missing lead aVF;"):
        canonical_lead_order([n for n in CANONICAL_LEADS if n != "aVF"])


def test_several_missing_leads() -> None:
    with pytest.raises(LeadError, match="missing leads V4, V5, V6"):
        canonical_lead_order(CANONICAL_LEADS[:9])


def test_mlii_is_not_lead_ii() -> None:
    names = ["MLII" if n == "II" else n for n in CANONICAL_LEADS]
    with pytest.raises(LeadError, match="missing lead II.*MLII is a modified"):
        canonical_lead_order(names)


def test_unknown_lead_is_an_error() -> None:
    with pytest.raises(LeadError, match="cannot map lead 'PLETH'"):
        canonical_lead_order([*CANONICAL_LEADS, "PLETH"])


def test_negated_lead_is_an_error() -> None:
    names = ["-aVR" if n == "aVR" else n for n in CANONICAL_LEADS]
    with pytest.raises(LeadError, match="negated lead.*invert"):
        canonical_lead_order(names)


def test_duplicate_lead_is_an_error() -> None:
    with pytest.raises(LeadError, match="duplicate lead V1: 'V1' .* and 'C1'"):
        canonical_lead_order([*CANONICAL_LEADS, "C1"])


def test_non_string_name_is_an_error() -> None:
    with pytest.raises(LeadError, match="not a string"):
        canonical_lead_order([*CANONICAL_LEADS[:11], 6])  # type: ignore[list-item]
