"""A client of ``diagecg serve`` on the standard library alone (``urllib``): no extra to install.

    from diagecg.runtime.client import DiagEcgClient

    client = DiagEcgClient("http://127.0.0.1:8765", token_file="~/.diagecg-token")  # if the server has one
    [ans] = client.answer("ptbxl/00001_lr.hea", "Does this ECG show atrial fibrillation?")
    print(ans["answer"], ans["confidence"])
    print(client.report("ecg.dcm")["answer"])

A WFDB header is sent with its signal files (the files beside it that share its name: ``00001_lr.dat``,
``.mat``); any other file is sent alone; several paths are sent together as one record, and a zip or tar
of a record is sent as it is. ``answer_path`` names a record on the server's disk instead
(``--allow-folder``).
Every method returns the decoded JSON (``Answer.to_dict()`` lines) or raises ``ServerError`` with the
server's one-line ``error``, its ``status`` and, on 503, ``retry_after_s``.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diagecg.errors import DiagEcgError

_SIGNAL_SUFFIXES = (".dat", ".mat")


class ServerError(DiagEcgError):
    """The server refused or failed a request: ``status`` (HTTP; 0 = unreachable), ``error`` (one line),
    ``error_type``, ``retry_after_s`` (503 only), ``body`` (the decoded JSON, if any)."""

    def __init__(
        self,
        status: int,
        error: str,
        error_type: str = "",
        retry_after_s: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"HTTP {status}: {error}" if status else error)
        self.status, self.error, self.error_type = status, error, error_type
        self.retry_after_s, self.body = retry_after_s, body


def record_files(record: str | Path | Sequence[str | Path]) -> list[Path]:
    """The files that make up a record: a ``.hea`` with the signal files beside it that share its stem,
    any other file alone, or the given paths as they are."""
    if not isinstance(record, (str, Path)):
        return [Path(p) for p in record]
    path = Path(record)
    if path.suffix.lower() != ".hea":
        return [path]
    siblings = [path.with_suffix(s) for s in (*_SIGNAL_SUFFIXES, *(s.upper() for s in _SIGNAL_SUFFIXES))]
    return [path, *sorted({p for p in siblings if p.is_file()})]


def _multipart(fields: list[tuple[str, str]], files: list[Path]) -> tuple[bytes, str]:
    boundary = f"diagecg-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    for path in files:
        name = path.name.replace('"', "%22")
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + path.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class DiagEcgClient:
    """Talks to one ``diagecg serve``.

    Args:
        base_url: e.g. ``http://127.0.0.1:8765``.
        token: the bearer token, if the server requires one.
        token_file: or a file holding it (``~`` expanded).
        timeout_s: socket timeout of each request.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8765",
        *,
        token: str | None = None,
        token_file: str | Path | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        if token is not None and token_file is not None:
            raise ValueError("give token or token_file, not both")
        if token_file is not None:
            token = Path(os.path.expanduser(str(token_file))).read_text(encoding="utf-8").strip()
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def _request(
        self,
        method: str,
        route: str,
        body: bytes | None = None,
        content_type: str | None = None,
        *,
        binary: bool = False,
    ) -> Any:
        request = urllib.request.Request(self.base_url + route, data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                data = response.read()
                return data if binary else json.loads(data)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            error = data.get("error") if isinstance(data, dict) else None
            retry = e.headers.get("Retry-After")
            raise ServerError(
                e.code,
                error or raw.decode("utf-8", "replace")[:200] or str(e.reason),
                data.get("error_type", "") if isinstance(data, dict) else "",
                float(retry) if retry and retry.isdigit() else None,
                data,
            ) from None
        except urllib.error.URLError as e:
            raise ServerError(0, f"cannot reach {self.base_url}: {e.reason}") from None

    def _post(self, route: str, fields: list[tuple[str, str]], files: list[Path]) -> Any:
        body, content_type = _multipart(fields, files)
        return self._request("POST", route, body, content_type)

    @staticmethod
    def _patient_fields(patient: dict[str, Any] | None) -> list[tuple[str, str]]:
        return [(k, str(v)) for k, v in (patient or {}).items() if v is not None]

    def answer(
        self,
        record: str | Path | Sequence[str | Path],
        question: str | Sequence[str],
        *,
        patient: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Upload a record and ask one question or several; one answer per question, in order.

        Args:
            record: a record file (a ``.hea`` brings its signal files), an archive, or a list of files.
            question: the question(s).
            patient: ``age_years``, ``sex``, ``height_cm``, ``weight_kg`` overriding the record's.
        """
        questions = [question] if isinstance(question, str) else list(question)
        fields = [("question", q) for q in questions] + self._patient_fields(patient)
        result: list[dict[str, Any]] = self._post("/v1/answer", fields, record_files(record))
        return result

    def report(
        self, record: str | Path | Sequence[str | Path], *, patient: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Upload a record and get its report."""
        result: dict[str, Any] = self._post("/v1/report", self._patient_fields(patient), record_files(record))
        return result

    def plot(
        self,
        record: str | Path | Sequence[str | Path],
        question: str | Sequence[str] = (),
        *,
        image_format: str = "png",
        patient: dict[str, Any] | None = None,
    ) -> bytes:
        """Upload a record and get it drawn as a printed ECG (``png``, ``svg`` or ``pdf`` bytes), with the
        answers to ``question`` (none: the traces only) and the windows they were read from."""
        questions = [question] if isinstance(question, str) else list(question)
        fields = [
            ("image_format", image_format),
            *(("question", q) for q in questions),
            *self._patient_fields(patient),
        ]
        body, content_type = _multipart(fields, record_files(record))
        image: bytes = self._request("POST", "/v1/plot", body, content_type, binary=True)
        return image

    def answer_path(
        self, path: str, question: str | Sequence[str], *, patient: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Ask about a record on the server's disk, inside its ``--allow-folder``."""
        questions = [question] if isinstance(question, str) else list(question)
        fields = [("path", path), *(("question", q) for q in questions), *self._patient_fields(patient)]
        result: list[dict[str, Any]] = self._post("/v1/answer", fields, [])
        return result

    def questions(self) -> dict[str, Any]:
        """The bundle's question catalogue."""
        result: dict[str, Any] = self._request("GET", "/v1/questions")
        return result

    def bundle(self) -> dict[str, Any]:
        """The loaded bundle, device and limits."""
        result: dict[str, Any] = self._request("GET", "/v1/bundle")
        return result

    def ready(self) -> bool:
        """Whether the server accepts work now."""
        try:
            return bool(self._request("GET", "/readyz").get("ready"))
        except ServerError:
            return False
