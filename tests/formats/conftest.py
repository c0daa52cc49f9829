"""Shared by the format reader tests: the real sample files and the real PTB-XL record the writers copy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from diagecg.io import read_record
from diagecg.types import EcgRecord

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="session")
def wfdb_source() -> EcgRecord:
    """PTB-XL ecg_id 2 at 500 Hz (10 s, 12 leads, 1 uV resolution) as the WFDB reader returns it; the
    Challenge copy C00002 holds the same samples plus the patient's age (19) and sex (male)."""
    return read_record(FIXTURES / "records" / "C00002")


def _one_line_message(error: BaseException, path: Path) -> str:
    message = str(error)
    assert "\n" not in message, message
    assert message.startswith(str(path)), message
    return message


@pytest.fixture
def one_line() -> Callable[[BaseException, Path], str]:
    """``one_line(excinfo.value, path)``: the message of a reader error, asserted to be one line that
    starts with the file's path."""
    return _one_line_message
