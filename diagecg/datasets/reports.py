"""Report targets from PTB-XL statements: the SCP-ECG table and an English rendering per record.

PTB-XL reports are mostly German free text (Wagner et al. 2020, Sci. Data 7:154). For an English
report-generation target we render the record's SCP-ECG statements with the English descriptions
of ``scp_statements.csv``: rhythm statements first, then diagnostic, then form statements, each
lower-cased, deduplicated and ended with a period, e.g. ``"sinus bradycardia. normal ecg."``.
A statement that is both diagnostic and form (NDT, NST_, DIG, LNGQT) counts as diagnostic.
Within a group the record's own statement order is kept. Likelihoods are not rendered.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from diagecg.datasets.ptbxl import PtbxlEntry

SCP_STATEMENTS_FILE = "scp_statements.csv"

REPORT_LANGUAGES: tuple[str, ...] = ("en", "de")
_CATEGORY_ORDER: tuple[str, ...] = ("rhythm", "diagnostic", "form")


@dataclass(frozen=True)
class ScpStatement:
    """One row of PTB-XL's ``scp_statements.csv``."""

    code: str
    description: str  # English description, as written in the table
    diagnostic: bool
    form: bool
    rhythm: bool
    diagnostic_class: str | None  # superclass (NORM, MI, STTC, CD, HYP) for diagnostic statements
    diagnostic_subclass: str | None

    @property
    def category(self) -> str:
        """``"rhythm"``, ``"diagnostic"`` or ``"form"`` (diagnostic wins over form)."""
        if self.rhythm:
            return "rhythm"
        if self.diagnostic:
            return "diagnostic"
        return "form"


def _flag(text: str) -> bool:
    return text.strip() not in ("", "0", "0.0")


def load_scp_table(ptbxl_root: str | Path) -> dict[str, ScpStatement]:
    """Read ``<ptbxl_root>/scp_statements.csv`` into ``{code: ScpStatement}``.

    Args:
        ptbxl_root: the PTB-XL folder (holds ``ptbxl_labels.csv`` and ``scp_statements.csv``).

    Raises:
        FileNotFoundError: the table is missing.
        ValueError: a row has no code or no description.
    """
    path = Path(ptbxl_root) / SCP_STATEMENTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"SCP statement table not found: {path}")
    table: dict[str, ScpStatement] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            code = (row.get("") or "").strip()  # the first column has no header
            description = (row.get("description") or "").strip()
            if not code or not description:
                raise ValueError(f"{path}: row without code or description: {row}")
            table[code] = ScpStatement(
                code=code,
                description=description,
                diagnostic=_flag(row.get("diagnostic", "")),
                form=_flag(row.get("form", "")),
                rhythm=_flag(row.get("rhythm", "")),
                diagnostic_class=(row.get("diagnostic_class") or "").strip() or None,
                diagnostic_subclass=(row.get("diagnostic_subclass") or "").strip() or None,
            )
    return table


def statement_sentences(codes: list[str] | tuple[str, ...], scp_table: dict[str, ScpStatement]) -> list[str]:
    """Lower-cased descriptions of ``codes`` ordered rhythm, diagnostic, form; duplicates dropped.

    Raises:
        ValueError: a code is not in ``scp_table``.
    """
    unknown = [c for c in codes if c not in scp_table]
    if unknown:
        raise ValueError(f"SCP codes not in scp_statements.csv: {unknown}")
    out: list[str] = []
    for category in _CATEGORY_ORDER:
        for code in codes:
            stmt = scp_table[code]
            text = stmt.description.lower()
            if stmt.category == category and text not in out:
                out.append(text)
    return out


def report_text(
    entry: PtbxlEntry, scp_table: dict[str, ScpStatement], language: Literal["en", "de"] = "en"
) -> str:
    """The record's report: English rendering of its statements, or the German original.

    Args:
        entry: a PTB-XL record.
        scp_table: from :func:`load_scp_table`.
        language: ``"en"`` renders the SCP statements (``"sinus rhythm. normal ecg."``);
            ``"de"`` returns PTB-XL's German free-text report (``""`` where PTB-XL has none).

    Returns:
        The report; ``""`` for an English rendering of a record without statements.

    Raises:
        ValueError: unknown language, or a statement code missing from ``scp_table``.
    """
    if language not in REPORT_LANGUAGES:
        raise ValueError(f"language must be one of {REPORT_LANGUAGES}, not {language!r}")
    if language == "de":
        return entry.report_de.strip()
    sentences = statement_sentences(list(entry.scp_codes), scp_table)
    return " ".join(f"{s}." for s in sentences)
