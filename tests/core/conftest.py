"""Helpers for the core input tests: copy a real fixture record into tmp_path and corrupt the copy."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

RECORDS = Path(__file__).resolve().parents[1] / "fixtures" / "records"


class RecordCopy:
    """A writable copy of a format-16 WFDB fixture record, with helpers to corrupt it."""

    def __init__(self, src: Path, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for f in src.parent.glob(src.name + ".*"):
            shutil.copy(f, folder / f.name)
            (folder / f.name).chmod(0o644)
        self.hea = folder / f"{src.name}.hea"
        self.dat = folder / f"{src.name}.dat"
        first = self.lines[0].split()
        self.n_sig, self.n = int(first[1]), int(first[3])

    @property
    def lines(self) -> list[str]:
        return self.hea.read_text().splitlines()

    def write_lines(self, lines: list[str]) -> None:
        self.hea.write_text("\n".join(lines) + "\n")

    def edit_field(self, line: int, field: int, value: str | None) -> None:
        """Set (or with None, cut the line at) whitespace field ``field`` of header line ``line``."""
        lines = self.lines
        parts = lines[line].split()
        if value is None:
            parts = parts[:field]
        else:
            parts[field] = value
        lines[line] = " ".join(parts)
        self.write_lines(lines)

    def rename_lead(self, old: str, new: str) -> None:
        lines = self.lines
        for i, line in enumerate(lines[1:], 1):
            parts = line.split()
            if parts[-1] == old:
                lines[i] = " ".join([*parts[:-1], new])
        self.write_lines(lines)

    def digital(self) -> np.ndarray:
        """int64 digital samples, (leads, samples)."""
        return np.fromfile(self.dat, dtype="<i2").reshape(self.n, self.n_sig).T.astype(np.int64)

    def write_digital(self, d: np.ndarray) -> None:
        """Write (leads, samples) samples as format 16 and fix length, initial values and checksums."""
        n = d.shape[1]
        d.T.astype("<i2").tofile(self.dat)
        lines = self.lines
        first = lines[0].split()
        first[3] = str(n)
        lines[0] = " ".join(first)
        for i in range(self.n_sig):
            parts = lines[1 + i].split()
            parts[5] = str(int(d[i, 0]))
            parts[6] = str(int(np.sum(d[i], dtype=np.int64)) % 65536)
            lines[1 + i] = " ".join(parts)
        self.write_lines(lines)
        self.n = n


@pytest.fixture
def records_dir() -> Path:
    return RECORDS


@pytest.fixture
def copy_record(tmp_path: Path) -> Callable[..., RecordCopy]:
    """``copy_record("00002_lr", sub="x")`` -> a RecordCopy under tmp_path/sub."""

    def make(name: str = "00002_lr", sub: str = "rec") -> RecordCopy:
        return RecordCopy(RECORDS / name, tmp_path / sub)

    return make
