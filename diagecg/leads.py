"""Lead names -> the 12 canonical leads, through one declarative alias table; an unknown name raises.

Record headers spell leads many ways (``I``, ``lead I``, ``LI``, ``DI``; ``aVR``, ``AVR``, ``avr``; ``V1``,
``v1``, ``C1``), and hospital formats name them by code: DICOM's ``Lead I (Einthoven)`` with the SCP-ECG
code ``5.6.3-9-1`` (DICOM PS3.16 CID 3001), IEEE 11073 ``MDC_ECG_LEAD_I`` in HL7 aECG. A name is normalised
(trimmed, a trailing parenthesis such as ``(Einthoven)`` dropped, inner blanks and ``_``/``-`` dropped, case
folded, a leading ``lead`` or ``mdcecglead`` removed) and then looked up in ``LEAD_ALIASES``, an SCP-ECG code
in ``SCPECG_LEAD_CODES``; a miss is never skipped silently:

- a known non-12-lead channel (Frank ``vx/vy/vz``, ``X/Y/Z``, ``MLII``, right-sided or posterior chest
  leads) is dropped with a warning;
- anything else, a negated lead (``-aVR``: invert it before calling), a duplicate or a missing
  canonical lead is a :class:`~diagecg.errors.LeadError` naming the lead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from diagecg.constants import CANONICAL_LEADS
from diagecg.errors import LeadError


def _table(pairs: dict[str, tuple[str, ...]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for canonical, spellings in pairs.items():
        for s in spellings:
            out[s] = canonical
    return out


# normalised spelling -> canonical lead. Keys are already normalised (see normalise_lead_name).
LEAD_ALIASES: dict[str, str] = _table(
    {
        "I": ("i", "li", "di"),
        "II": ("ii", "lii", "dii"),
        "III": ("iii", "liii", "diii"),
        "aVR": ("avr",),
        "aVL": ("avl",),
        "aVF": ("avf",),
        # IEC names the chest leads C1..C6
        "V1": ("v1", "c1"),
        "V2": ("v2", "c2"),
        "V3": ("v3", "c3"),
        "V4": ("v4", "c4"),
        "V5": ("v5", "c5"),
        "V6": ("v6", "c6"),
    }
)

# SCP-ECG lead codes as DICOM writes them (coding scheme SCPECG, PS3.16 CID 3001 "ECG Leads")
SCPECG_LEAD_CODES: dict[str, str] = {
    "5.6.3-9-1": "I",
    "5.6.3-9-2": "II",
    "5.6.3-9-61": "III",
    "5.6.3-9-62": "aVR",
    "5.6.3-9-63": "aVL",
    "5.6.3-9-64": "aVF",
    "5.6.3-9-3": "V1",
    "5.6.3-9-4": "V2",
    "5.6.3-9-5": "V3",
    "5.6.3-9-6": "V4",
    "5.6.3-9-7": "V5",
    "5.6.3-9-8": "V6",
}

# normalised spelling -> why the channel is not one of the 12 leads; dropped with a warning.
KNOWN_EXTRA_LEADS: dict[str, str] = {
    "vx": "Frank orthogonal lead",
    "vy": "Frank orthogonal lead",
    "vz": "Frank orthogonal lead",
    "x": "Frank orthogonal lead",
    "y": "Frank orthogonal lead",
    "z": "Frank orthogonal lead",
    # modified lead II (Holter/monitoring electrodes on the torso): not the standard limb lead II
    "mlii": "modified monitoring lead, not the standard limb lead II",
    "mli": "modified monitoring lead",
    "mliii": "modified monitoring lead",
    "v7": "posterior chest lead",
    "v8": "posterior chest lead",
    "v9": "posterior chest lead",
    "v3r": "right-sided chest lead",
    "v4r": "right-sided chest lead",
    "v5r": "right-sided chest lead",
    "v6r": "right-sided chest lead",
}

# limb lead -> (weight of I, weight of II): Einthoven's III = II - I and Goldberger's augmented leads
# aVR = -(I + II)/2, aVL = I - II/2, aVF = II - I/2. Carts that store only the 8 independent leads
# (I, II, V1-V6: GE MUSE, many DICOM and aECG files) leave the other four to the reader.
DERIVED_LIMB_LEADS: dict[str, tuple[float, float]] = {
    "III": (-1.0, 1.0),
    "aVR": (-0.5, -0.5),
    "aVL": (1.0, -0.5),
    "aVF": (-0.5, 1.0),
}

_BLANKS = re.compile(r"[\s_\-]+")
_TRAILING_PARENTHESIS = re.compile(r"\s*\([^()]*\)\s*$")  # "Lead I (Einthoven)", "aVR (Goldberger)"
_PREFIXES = ("mdcecglead", "lead")  # IEEE 11073 MDC_ECG_LEAD_V1; "Lead V1"


def normalise_lead_name(name: str) -> str:
    """The lookup key of a lead name: ``" Lead aVR "`` -> ``"avr"``, ``"V1 "`` -> ``"v1"``,
    ``"Lead I (Einthoven)"`` -> ``"i"``, ``"MDC_ECG_LEAD_AVR"`` -> ``"avr"``, ``"5.6.3-9-62"`` -> ``"avr"``.

    A leading minus (a negated lead) is kept so that it cannot match a lead.
    """
    text = name.strip()
    if text in SCPECG_LEAD_CODES:
        return SCPECG_LEAD_CODES[text].casefold()
    sign = ""
    if text.startswith("-"):
        sign, text = "-", text[1:]
    text = _TRAILING_PARENTHESIS.sub("", text) or text
    key = _BLANKS.sub("", text).casefold()
    for prefix in _PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            key = key[len(prefix) :]
            break
    return sign + key


def canonical_lead_order(names: Sequence[str]) -> tuple[list[int], list[str]]:
    """Map a record's lead names onto ``CANONICAL_LEADS``.

    Args:
        names: the record's lead names, in storage order.

    Returns:
        ``(indices, warnings)``: ``indices[k]`` is the position in ``names`` of canonical lead ``k``
        (so ``signal[indices]`` is in canonical order, shape (12, samples)); ``warnings`` names each
        dropped extra lead.

    Raises:
        LeadError: a negated, unknown or duplicate lead, or a canonical lead that is missing.
    """
    found: dict[str, int] = {}
    warnings: list[str] = []
    dropped: list[str] = []
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise LeadError(f"lead name at position {i} is {name!r}, not a string")
        key = normalise_lead_name(name)
        if key.startswith("-"):
            raise LeadError(
                f"lead {name!r} is a negated lead; invert the signal and name it "
                f"{LEAD_ALIASES.get(key[1:], key[1:])!r} before reading"
            )
        canonical = LEAD_ALIASES.get(key)
        if canonical is None:
            if key in KNOWN_EXTRA_LEADS:
                dropped.append(f"{name.strip()} ({KNOWN_EXTRA_LEADS[key]})")
                continue
            raise LeadError(f"cannot map lead {name!r} to one of the 12 leads {list(CANONICAL_LEADS)}")
        if canonical in found:
            first = names[found[canonical]]
            raise LeadError(
                f"duplicate lead {canonical}: {first!r} (position {found[canonical]}) "
                f"and {name!r} (position {i})"
            )
        found[canonical] = i
    missing = [lead for lead in CANONICAL_LEADS if lead not in found]
    if missing:
        hint = ""
        if "II" in missing and any(normalise_lead_name(n) == "mlii" for n in names):
            hint = " (MLII is a modified monitoring lead, not the standard limb lead II)"
        raise LeadError(
            f"missing lead{'s' if len(missing) > 1 else ''} {', '.join(missing)}{hint}; "
            f"the record has {[str(n) for n in names]}"
        )
    if dropped:
        warnings.append(f"dropped {len(dropped)} non-12-lead channel(s): {', '.join(dropped)}")
    return [found[lead] for lead in CANONICAL_LEADS], warnings


def derive_limb_leads(signal: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, list[str], list[str]]:
    """Append the limb leads of ``DERIVED_LIMB_LEADS`` that a record lacks, computed from I and II.

    Args:
        signal: shape (leads, samples), every row in the same unit.
        names: the record's lead names (any spelling ``LEAD_ALIASES`` knows), one per row.

    Returns:
        ``(signal, names, warnings)``: float64 with the derived rows appended (shape (leads + k, samples))
        and a warning naming them; the input unchanged when no limb lead is missing or when I or II is
        absent (``canonical_lead_order`` then names what is missing).
    """
    rows = {
        LEAD_ALIASES.get(normalise_lead_name(n)) if isinstance(n, str) else None: i
        for i, n in enumerate(names)
    }
    missing = [lead for lead in DERIVED_LIMB_LEADS if lead not in rows]
    if not missing or "I" not in rows or "II" not in rows:
        return signal, list(names), []
    x = np.asarray(signal, dtype=np.float64)
    lead_i, lead_ii = x[rows["I"]], x[rows["II"]]
    derived = [w_i * lead_i + w_ii * lead_ii for w_i, w_ii in (DERIVED_LIMB_LEADS[m] for m in missing)]
    warning = (
        f"lead{'s' if len(missing) > 1 else ''} {', '.join(missing)} derived from I and II "
        f"(the file stores {len(names)} leads)"
    )
    return np.concatenate([x, np.stack(derived)]), [*names, *missing], [warning]
