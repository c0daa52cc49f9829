"""The bodies of ``diagecg serve``'s requests and responses, as pydantic models (``runtime.serve_app``
uses them in its routes, and FastAPI writes them into the OpenAPI document under these class names and
docstrings): the JSON request (:class:`JsonRecordRequest` of :class:`RecordFile`), the error line
(:class:`ErrorLine`) and the picture formats ``/v1/plot`` draws.

Kept apart from the routes: a new field of a request changes this module (and the OpenAPI document),
not the routes or the service behind them.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, Field

from diagecg.formats import FORMAT_NAMES
from diagecg.runtime.uploads import UploadError, safe_file_name

PICTURE_TYPES = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}


class ErrorLine(BaseModel):
    """An error answer: ``error`` (one line) and ``error_type``; the record's envelope when there is one."""

    model_config = ConfigDict(extra="allow")
    error: str
    error_type: str


class RecordFile(BaseModel):
    """One file of a record in a JSON request."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(
        description="the file's name with its suffix, e.g. 00180_lr.hea (a WFDB header names "
        "its signal files, so their names must be kept); letters, digits, '.', "
        "'_', '-'"
    )
    content_base64: str = Field(description="the file's bytes, base64 (RFC 4648, standard alphabet)")


class JsonRecordRequest(BaseModel):
    """A record and what to do with it, as one JSON object (``/v1/json/answer``, ``/v1/json/report``)."""

    model_config = ConfigDict(extra="forbid")
    files: list[RecordFile] = Field(
        min_length=1,
        description="the record: one file, a WFDB header with its signal files, or one zip/tar of them",
    )
    questions: list[str] = Field(
        default_factory=list, description="the questions (/v1/json/answer: at least one)"
    )
    format: str | None = Field(
        None,
        description="the record's format, checked against the one detected "
        f"from its content: one of {', '.join(FORMAT_NAMES)}",
    )
    age_years: float | None = Field(None, description="patient age in years (overrides the record's)")
    sex: str | None = Field(None, description="'male' or 'female' (overrides the record's)")
    height_cm: float | None = Field(None, description="patient height in cm")
    weight_kg: float | None = Field(None, description="patient weight in kg")

    def decoded(self) -> list[tuple[str | None, BinaryIO]]:
        """(name, bytes) per file, each name checked before anything is decoded.

        Raises:
            UploadError: a bad name, base64 that does not decode, or an unknown ``format``.
        """
        if self.format is not None and self.format not in FORMAT_NAMES:
            raise UploadError(f"format {self.format!r} is not one of {', '.join(FORMAT_NAMES)}")
        names = [safe_file_name(f.name) for f in self.files]
        out: list[tuple[str | None, BinaryIO]] = []
        for name, f in zip(names, self.files, strict=True):
            try:
                out.append((name, io.BytesIO(base64.b64decode(f.content_base64, validate=True))))
            except (binascii.Error, ValueError) as e:
                raise UploadError(f"{name}: content_base64 is not base64 ({e})") from None
        return out

    def patient(self) -> dict[str, Any]:
        return patient_fields(self.age_years, self.sex, self.height_cm, self.weight_kg)


def patient_fields(
    age_years: float | None, sex: str | None, height_cm: float | None, weight_kg: float | None
) -> dict[str, Any]:
    """The patient overrides of a request, as keyword arguments of ``PatientInfo``."""
    return {"age_years": age_years, "sex": sex, "height_cm": height_cm, "weight_kg": weight_kg}
