"""Where answers go besides stdout: batch files (``-o``) and the audit trail (``--audit-log``), torch-free.

**Batch files** (:class:`AnswerFile`): ``.jsonl`` (one ``Answer.to_dict()`` or error line per record and
question) or ``.csv`` (the same, flattened to :data:`CSV_COLUMNS`: option probabilities as ``p_<option>``
columns, warning codes and statement codes joined by ``;``). The format comes from the suffix; an
existing file is refused (nothing is overwritten).

**Audit trail** (:class:`AuditLog`): one JSON line per answer or failure, written for the hospital's
records: UTC time, request id, client (the service's token identity or address; ``local`` on the
command line), the record's id and the SHA-256 of its files, the question and the question answered,
the answer, its probabilities and warning codes, the bundle's manifest SHA-256 and quant, the runtime
version and the latency. Never signal data. Each line is one ``write`` on a file opened in append mode,
under a lock, then flushed: lines never interleave, even with many threads; at ``max_bytes`` the file is
rotated to ``.1`` (``.2``, ... up to ``backups``).
"""

from __future__ import annotations

import contextvars
import csv
import hashlib
import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from diagecg import __version__
from diagecg.errors import InputError
from diagecg.types import EcgRecord

__all__ = [
    "AUDIT_CLIENT",
    "AUDIT_RECORD_SHA256",
    "CSV_COLUMNS",
    "AnswerFile",
    "AuditLog",
    "audit_line",
    "record_sha256",
]

# who asked, for the audit line of the answer being made (the service sets it per request)
AUDIT_CLIENT: contextvars.ContextVar[str] = contextvars.ContextVar("diagecg_audit_client", default="local")

# the SHA-256 of the files of the record being answered, when the caller knows them better than the
# pipeline does (the service: the staged upload's files, whose name alone reaches the pipeline)
AUDIT_RECORD_SHA256: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "diagecg_audit_record", default=None
)

CSV_COLUMNS = (
    "request_id",
    "created_utc",
    "record",
    "record_id",
    "task",
    "question",
    "answered_question",
    "answer",
    "confidence",
    "p_yes",
    "p_no",
    "p_not_sure",
    "calibrated",
    "statements",
    "warning_codes",
    "reliability",
    "plot",
    "error_type",
    "error",
    "manifest_sha256",
    "quant",
)


def record_sha256(record: str | Path | EcgRecord) -> str:
    """SHA-256 of a record: over its files (a WFDB header and the signal files it names beside it, or the
    one file), or, for a record built in memory, over its signal, rate and lead names."""
    h = hashlib.sha256()
    if isinstance(record, EcgRecord) and record.source and Path(record.source).is_file():
        return record_sha256(record.source)
    if isinstance(record, EcgRecord):
        h.update(np.ascontiguousarray(record.signal, dtype=np.float32).tobytes())
        h.update(repr((float(record.fs_hz), tuple(record.lead_names))).encode())
        return h.hexdigest()
    path = Path(record)
    files = [path]
    if path.suffix.lower() == ".hea":
        lines = path.read_text(errors="replace").splitlines()
        names = {ln.split()[0] for ln in lines[1:] if ln.strip() and not ln.startswith("#")}
        files += sorted(path.parent / n for n in names if (path.parent / n).is_file())
    for f in files:
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _flat(line: Mapping[str, Any], plot: str | None = None) -> dict[str, Any]:
    probs = line.get("option_probabilities") or {}
    mq = line.get("matched_question") or {}
    bundle = line.get("bundle") or {}
    return {
        "request_id": line.get("request_id", ""),
        "created_utc": line.get("created_utc", ""),
        "record": line.get("record", ""),
        "record_id": line.get("record_id", ""),
        "task": line.get("task", ""),
        "question": line.get("question", ""),
        "answered_question": mq.get("answered") or mq.get("canonical") or "",
        "answer": line.get("answer", ""),
        "confidence": line.get("confidence"),
        "p_yes": probs.get("yes"),
        "p_no": probs.get("no"),
        "p_not_sure": probs.get("not sure"),
        "calibrated": line.get("calibrated", False),
        "statements": ";".join(
            f"{s.get('code') or s.get('text')}={'1' if s.get('present') else '0'}"
            for s in line.get("statements") or []
        ),
        "warning_codes": ";".join(w["code"] for w in line.get("warnings") or []),
        "reliability": (line.get("reliability") or {}).get("status", ""),
        "plot": plot or "",
        "error_type": line.get("error_type", ""),
        "error": line.get("error", ""),
        "manifest_sha256": bundle.get("manifest_sha256", ""),
        "quant": bundle.get("quant", ""),
    }


class AnswerFile:
    """Answers streamed into one ``.jsonl`` or ``.csv`` file (module docstring).

    Raises:
        InputError: another suffix, an existing file, or a folder that does not exist.
    """

    SUFFIXES = (".jsonl", ".csv")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in self.SUFFIXES:
            raise InputError(f"-o {self.path}: the format comes from the suffix: .jsonl or .csv")
        if self.path.exists():
            raise InputError(f"-o {self.path} exists: give a new file (nothing is overwritten)")
        if not self.path.parent.is_dir():
            raise InputError(f"-o {self.path}: folder {self.path.parent} does not exist")
        self.csv = self.path.suffix.lower() == ".csv"
        self._f = self.path.open("x", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._f, CSV_COLUMNS) if self.csv else None
        if self._writer is not None:
            self._writer.writeheader()
        self.n_written = 0

    def write(self, line: Mapping[str, Any], plot: str | None = None) -> None:
        """One answer (``Answer.to_dict()``) or error line; ``plot``: the picture drawn of its record."""
        if self._writer is not None:
            self._writer.writerow(_flat(line, plot))
        else:
            out = {**line, "plot": plot} if plot else dict(line)
            self._f.write(json.dumps(out, ensure_ascii=False) + "\n")
        self._f.flush()
        self.n_written += 1

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> AnswerFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def audit_line(line: Mapping[str, Any], record_hash: str, client: str | None = None) -> dict[str, Any]:
    """The audit record of one answer or error line (module docstring): no signal data."""
    mq = line.get("matched_question") or {}
    bundle = line.get("bundle") or {}
    return {
        "utc": line.get("created_utc"),
        "request_id": line.get("request_id"),
        "client": client if client is not None else AUDIT_CLIENT.get(),
        "record_id": line.get("record_id"),
        "record_sha256": record_hash,
        "task": line.get("task"),
        "question": line.get("question"),
        "answered_question": mq.get("answered") or mq.get("canonical"),
        "answer": line.get("answer"),
        "option_probabilities": line.get("option_probabilities"),
        "statements": [
            {"code": s.get("code"), "present": s.get("present"), "probability": s.get("probability")}
            for s in line.get("statements") or []
        ],
        "warning_codes": [w["code"] for w in line.get("warnings") or []],
        "calibration": bundle.get("calibration"),
        "manifest_sha256": bundle.get("manifest_sha256"),
        "quant": bundle.get("quant"),
        "diagecg_version": __version__,
        "latency_ms": (line.get("timings_ms") or {}).get("total"),
        "error_type": line.get("error_type"),
        "error": line.get("error"),
    }


class AuditLog:
    """An append-only JSON-lines audit file, safe under concurrency, rotated by size (module docstring).

    Args:
        path: the file (created with its folder if missing; appended to if it exists).
        max_bytes: rotate when a line would take the file past this size (0: never).
        backups: rotated files kept (``path.1`` newest ... ``path.<backups>``).
    """

    def __init__(self, path: str | Path, max_bytes: int = 100 << 20, backups: int = 10) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise InputError(f"--audit-log {self.path} is a folder: give a file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.backups = max_bytes, backups
        self._lock = threading.Lock()
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one line (one ``write`` call, under the lock)."""
        data = (json.dumps(record, ensure_ascii=False, sort_keys=True, default=str) + "\n").encode()
        with self._lock:
            if self.max_bytes and os.fstat(self._fd).st_size + len(data) > self.max_bytes:
                self._rotate()
            view = memoryview(data)
            while view:  # a regular file takes it whole; the loop only guards a short write
                view = view[os.write(self._fd, view) :]

    def _rotate(self) -> None:
        os.close(self._fd)
        for k in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{k}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{k + 1}"))
        if self.backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._fd = self._open()

    def log(
        self, line: Mapping[str, Any], record: str | Path | EcgRecord | None, client: str | None = None
    ) -> None:
        """Audit one answer or error line about ``record``."""
        digest = AUDIT_RECORD_SHA256.get()
        if digest is None:
            try:
                digest = record_sha256(record) if record is not None else ""
            except OSError:  # a record that could not be read: its error line says why
                digest = ""
        self.write(audit_line(line, digest, client))

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
