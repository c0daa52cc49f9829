"""The answer record and its JSON: :class:`Answer` (``to_dict()``, ``schema_version`` :data:`SCHEMA_VERSION`)
and a failed answer's error line (:func:`error_dict`), with the ``bundle`` field of both
(:func:`bundle_field`), all specified by the JSON Schema
``diagecg/schemas/answer.schema.json`` (:func:`answer_schema`; served at ``/v1/schema``, and in
``docs/openapi.json``).

Kept apart from ``runtime.pipeline``, which computes answers: this module changes when the answer's
format does (a field, the schema version), that one when the way of answering does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from diagecg.bundle import Bundle, sha256_file
from diagecg.calibration import calibration_identity
from diagecg.constants import MANIFEST_NAME
from diagecg.constants import ManifestKey as K
from diagecg.notes import Note
from diagecg.runtime.record_input import RecordLike
from diagecg.types import EcgRecord

SCHEMA_VERSION = 4
SCHEMA_RESOURCE = ("diagecg", "schemas/answer.schema.json")  # package data
TASK_QA = "qa"
TASK_REPORT = "report"
TIMING_STAGES: tuple[str, ...] = ("read", "preprocess", "tokenize", "prompt", "generate", "total")


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the millisecond (``2026-12-07T21:40:33.123Z``)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def bundle_field(bundle: Bundle, quant: str) -> dict[str, Any]:
    """What every answer's ``bundle`` field holds: path, format and package versions, manifest and GGUF
    sha256, quant, and the identity of the calibration in use."""
    return {
        "path": str(bundle.root),
        "format_version": bundle.manifest.get(K.FORMAT_VERSION),
        "diagecg_version": bundle.manifest.get(K.DIAGECG_VERSION),
        "manifest_sha256": sha256_file(bundle.root / MANIFEST_NAME),
        "quant": quant,
        "gguf_sha256": bundle.manifest[K.FILES][bundle.gguf_path(quant).name]["sha256"],
        "calibration": calibration_identity(bundle.manifest.get(K.CALIBRATION)),
    }


@dataclasses.dataclass
class Answer:
    """One answered record; ``to_dict()`` gives the stable JSON of ``diagecg/schemas/answer.schema.json``."""

    record: str
    record_id: str
    task: str
    question: str
    answer: str
    answers: list[str]
    stop_reason: str
    n_prompt_tokens: int
    n_answer_tokens: int
    n_ecg_tokens: int
    ecg_cached: bool
    n_reused_tokens: int
    bundle: dict[str, Any]
    device: dict[str, Any]
    timings_ms: dict[str, float]
    warnings: list[Note] = dataclasses.field(default_factory=list)
    question_supported: bool | None = None
    matched_question: dict[str, Any] | None = None
    confidence: float | None = None
    option_probabilities: dict[str, float] | None = None
    windows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    patient: dict[str, Any] = dataclasses.field(default_factory=dict)
    statements: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    measurements: dict[str, Any] | None = None
    reliability: dict[str, Any] | None = None
    refusal: dict[str, Any] | None = None
    evidence: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    calibrated: bool = False
    request_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    created_utc: str = dataclasses.field(default_factory=utc_now)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}


# what an error line holds for the answer fields without a default (the rest take their defaults)
_ERROR_FIELDS: dict[str, Any] = {
    "answer": "",
    "answers": [],
    "stop_reason": "error",
    "n_prompt_tokens": 0,
    "n_answer_tokens": 0,
    "n_ecg_tokens": 0,
    "ecg_cached": False,
    "n_reused_tokens": 0,
    "device": {},
}


def error_dict(
    record: RecordLike,
    error: BaseException,
    question: str = "",
    *,
    task: str = TASK_QA,
    bundle: dict[str, Any] | None = None,
    elapsed_ms: float = 0.0,
    device: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON line of an answer that failed: every key of an answer (empty where unknown; ``record``,
    ``record_id``, ``task``, ``question``, ``bundle``, ``device``, ``timings_ms.total`` filled in) plus
    ``error`` (one line) and ``error_type`` (the exception class name)."""
    if isinstance(record, EcgRecord):
        source, record_id = record.source, record.record_id
    elif isinstance(record, (str, Path)):
        source, record_id = str(record), Path(record).stem
    else:  # not a record at all (the error says so); its repr could be a whole array
        source, record_id = f"<{type(record).__name__}>", ""
    message = " ".join(str(error).split()) or type(error).__name__
    empty = {
        f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for f in dataclasses.fields(Answer)
        if f.name not in _ERROR_FIELDS
    }
    return {
        "schema_version": SCHEMA_VERSION,
        **empty,
        **_ERROR_FIELDS,
        "record": source,
        "record_id": record_id,
        "task": task,
        "question": question,
        "bundle": dict(bundle or {}),
        "device": dict(device or {}),
        "timings_ms": {"total": round(elapsed_ms, 3)},
        "error": message,
        "error_type": type(error).__name__,
    }


def answer_schema() -> dict[str, Any]:
    """The JSON Schema of the answer and error lines (``diagecg/schemas/answer.schema.json``)."""
    import importlib.resources
    import json

    package, name = SCHEMA_RESOURCE
    return json.loads(importlib.resources.files(package).joinpath(name).read_text(encoding="utf-8"))
