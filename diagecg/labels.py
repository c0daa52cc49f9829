"""A site's own labels of its ECGs, in the project's finding codes (torch-free; ``diagecg validate``).

Three sources, all read into one :class:`SiteLabels` (record -> finding code -> present):

* **WFDB headers** with PhysioNet Challenge ``#Dx:`` lines: SNOMED CT concept ids (2020/2021
  Challenges), or the abbreviations of the 2018 CPSC headers (``AF``, ``I-AVB``, ``RBBB``, ``LBBB``,
  ``PAC``, ``PVC``, ``STD``, ``STE``, ``Normal``). The list is taken as complete: a finding the
  labelling vocabulary can express and the header does not list is absent. What a vocabulary can
  express: SNOMED CT concepts that the statement table (``diagecg.statements``) maps exactly, and the
  Challenge's merged classes (:data:`CHALLENGE_SNOMED`); CPSC's nine classes. Everything else stays
  unknown, never "absent".
* A **PTB-XL style CSV** (``ecg_id`` or ``filename_lr``/``filename_hr``, and ``scp_codes`` as a Python
  dict literal): every SCP statement is known (present with any likelihood), and the superclasses
  from ``diagnostic_superclass`` when the column is there.
* A **plain CSV** ``record,finding,present``: ``finding`` is an SCP code, a superclass, a SNOMED CT id
  or a finding's name; ``present`` is 1/0, yes/no or true/false. Only the findings listed are known.

Codes that cannot be mapped are counted in :attr:`SiteLabels.unmapped`, never dropped silently.
Records are matched by name: the file stem (``00180_lr``), or for PTB-XL's ``ecg_id`` the number
(``180`` matches ``00180_lr`` and ``00180_hr``).
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from diagecg.errors import InputError
from diagecg.statements import BY_CODE, STATEMENTS, find_statement

__all__ = [
    "CHALLENGE_SNOMED",
    "CPSC_ABBREVIATIONS",
    "SiteLabels",
    "labels_from_diagnoses",
    "read_labels",
    "record_key",
]

# the Challenge 2020/2021 scored some classes under more than one concept, and merged RBBB with CRBBB,
# VPB with PVC and SVPB with PAC when scoring (its "equivalent classes"); these map beside the table's
CHALLENGE_SNOMED: dict[str, str] = {
    "59118001": "CRBBB",  # right bundle branch block
    "733534002": "CLBBB",  # complete left bundle branch block
    "17338001": "PVC",  # ventricular premature beats
    "63593006": "PAC",  # supraventricular premature beats
    "164865005": "MI",  # myocardial infarction (the superclass)
}
# the nine classes of the 2018 China Physiological Signal Challenge, as its headers write them
CPSC_ABBREVIATIONS: dict[str, str] = {
    "normal": "NORM",
    "af": "AFIB",
    "i-avb": "1AVB",
    "iavb": "1AVB",
    "rbbb": "CRBBB",
    "lbbb": "CLBBB",
    "pac": "PAC",
    "pvc": "PVC",
    "std": "STD_",
    "ste": "STE_",
}
_SNOMED: dict[str, str] = {
    st.snomed.code: st.code for st in STATEMENTS if st.snomed is not None and st.snomed.match == "exact"
} | CHALLENGE_SNOMED
_SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")
_TRUE = {"1", "yes", "true", "y", "present"}
_FALSE = {"0", "no", "false", "n", "absent"}


def record_key(name: str) -> str:
    """The name labels and records are matched by: the file stem, lower case."""
    return Path(name.strip().replace("\\", "/")).stem.lower()


def _ecg_id_key(stem: str) -> str | None:
    """``00180_lr`` / ``00180_hr`` / ``00180`` -> ``"180"`` (PTB-XL's ecg_id), else None."""
    m = re.fullmatch(r"0*(\d+)(?:_[lh]r)?", stem)
    return m.group(1) if m else None


@dataclasses.dataclass
class SiteLabels:
    """Finding labels of a site's records.

    Attributes:
        labels: record key (:func:`record_key`) -> finding code -> present.
        unmapped: label codes that map to no finding -> how many times they were seen.
        source: where the labels came from (a file, or "WFDB #Dx headers").
    """

    labels: dict[str, dict[str, bool]] = dataclasses.field(default_factory=dict)
    unmapped: Counter[str] = dataclasses.field(default_factory=Counter)
    source: str = ""

    def of(self, record_name: str) -> dict[str, bool] | None:
        """The labels of a record (by file stem, or by PTB-XL ecg_id), or None."""
        key = record_key(record_name)
        hit = self.labels.get(key)
        if hit is None and (ecg_id := _ecg_id_key(key)) is not None:
            hit = self.labels.get(ecg_id)
        return hit

    def add(self, record_name: str, codes: Mapping[str, bool]) -> None:
        self.labels.setdefault(record_key(record_name), {}).update(codes)


def map_code(code: str) -> str | None:
    """A label code -> the project's finding code: an SCP code or superclass, a SNOMED CT id, a CPSC
    abbreviation, or a finding's name; None when it maps to none."""
    c = code.strip()
    if not c:
        return None
    if c in BY_CODE:
        return c
    if c.upper() in BY_CODE:
        return c.upper()
    if c in _SNOMED:
        return _SNOMED[c]
    if c.lower() in CPSC_ABBREVIATIONS:
        return CPSC_ABBREVIATIONS[c.lower()]
    st = find_statement(c)
    return None if st is None else st.code


def labels_from_diagnoses(diagnoses: Iterable[str], unmapped: Counter[str] | None = None) -> dict[str, bool]:
    """The labels a Challenge header's ``#Dx`` list gives: listed findings present, the findings its
    vocabulary can express and does not list absent (module docstring)."""
    listed = [d.strip() for d in diagnoses if d.strip()]
    cpsc = any(d.lower() in CPSC_ABBREVIATIONS for d in listed)
    expressible = set(CPSC_ABBREVIATIONS.values()) if cpsc else set(_SNOMED.values())
    out = {code: False for code in expressible}
    for d in listed:
        code = map_code(d) if not d.isdigit() else _SNOMED.get(d)
        if code is None:
            if unmapped is not None:
                unmapped[d] += 1
            continue
        out[code] = True
    return out


def _present(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise InputError(f"{where}: present={value!r} is not 1/0, yes/no or true/false")


def read_labels(path: str | Path) -> SiteLabels:
    """Read a labels CSV: PTB-XL style (``scp_codes``) or plain (``record,finding,present``).

    Raises:
        InputError: the file is missing, empty, or neither layout.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"labels file {path} not found")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in reader.fieldnames or []]
        rows = list(reader)
    if not rows:
        raise InputError(f"labels file {path} holds no rows")
    out = SiteLabels(source=str(path))
    if "scp_codes" in fields:
        for k, row in enumerate(rows, start=2):
            row = {key.strip().lower(): v for key, v in row.items() if key}
            name = row.get("ecg_id") or row.get("filename_lr") or row.get("filename_hr") or row.get("record")
            if not name:
                raise InputError(f"{path}:{k}: no ecg_id, filename_lr, filename_hr or record")
            try:
                scp = ast.literal_eval(row["scp_codes"] or "{}")
            except (ValueError, SyntaxError):
                bad = row["scp_codes"][:60]
                raise InputError(f"{path}:{k}: scp_codes {bad!r} is not a dict literal") from None
            if not scp:  # a record without statements says nothing about them
                continue
            codes = {c: False for c in BY_CODE if c not in _SUPERCLASSES or c == "NORM"}
            for c in scp:
                if c in BY_CODE:
                    codes[c] = True
                else:
                    out.unmapped[str(c)] += 1
            if row.get("diagnostic_superclass"):
                try:
                    supers = set(ast.literal_eval(row["diagnostic_superclass"]))
                except (ValueError, SyntaxError):
                    raise InputError(f"{path}:{k}: diagnostic_superclass is not a list literal") from None
                codes.update({s: s in supers for s in _SUPERCLASSES})
            out.add(str(name), codes)
        return out
    if not {"record", "finding", "present"} <= set(fields):
        raise InputError(
            f"labels file {path}: columns {fields} are neither a PTB-XL layout (ecg_id, "
            f"scp_codes) nor record,finding,present"
        )
    for k, row in enumerate(rows, start=2):
        row = {key.strip().lower(): v for key, v in row.items() if key}
        code = map_code(row["finding"])
        if code is None:
            out.unmapped[row["finding"].strip()] += 1
            continue
        out.add(row["record"], {code: _present(row["present"], f"{path}:{k}")})
    return out
