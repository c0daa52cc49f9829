"""The HTTP routes of ``diagecg serve`` (FastAPI; the ``serve`` extra). ``create_app`` builds an app for a
loaded pipeline, so tests and host programs can run it under any ASGI server.

==========================  ======  =======================================================================
route                       method  answer
==========================  ======  =======================================================================
``/v1/answer``              POST    JSON array, one ``Answer.to_dict()`` per ``question`` field, in order
``/v1/report``              POST    one ``Answer.to_dict()`` (task ``report``)
``/v1/plot``                POST    the record drawn as a printed ECG (PNG, SVG or PDF), with the answers to
                                    any ``question`` fields and the windows they were read from
``/v1/json/answer``         POST    as ``/v1/answer``, for clients that cannot build multipart: a JSON body
``/v1/json/report``         POST    as ``/v1/report``, a JSON body
``/v1/questions``           GET     the bundle's question catalogue (``diagecg questions --json``); 404: none
``/v1/bundle``              GET     bundle versions and hashes, device, schema version, the server's limits
``/v1/schema``              GET     the JSON Schema of answers and error lines (``answer.schema.json``)
``/healthz``                GET     ``{"status": "ok"}`` while the process runs
``/readyz``                 GET     200 while it accepts work; 503 while shutting down
``/openapi.json``           GET     this API, OpenAPI 3.1 (also checked in as ``docs/openapi.json``)
``/openapi-3.0.json``       GET     the same as OpenAPI 3.0.3 for older generators (``docs/openapi-3.0.json``)
==========================  ======  =======================================================================

``/v1/answer`` and ``/v1/report`` take ``multipart/form-data``: the record as ``files`` (one file, a WFDB
header and its signal files, or one zip/tar of them: ``diagecg.runtime.uploads``) or as ``path`` (only with
``--allow-folder``), optional ``age_years``, ``sex``, ``height_cm``, ``weight_kg`` (override the record's),
and for ``/v1/answer`` one or more ``question`` fields. ``/v1/json/answer`` and ``/v1/json/report`` take
the same as one JSON object (``JsonRecordRequest``): ``files`` is a list of ``{"name", "content_base64"}``,
``questions`` a list; the format is detected from the content as for uploads (the suffix matters only
among a WFDB record's files), and an optional ``format`` is checked against what is detected. The answers
are exactly ``diagecg infer --json``'s, except ``record``, which is the uploaded file's name (the server's
private copy is never shown), and ``timings_ms.read``, which includes reading the staged upload.

Errors: 4xx/5xx with the error line of ``diagecg infer --json`` (``error_dict``: ``error`` is one line,
``error_type`` the exception class), or ``{"error", "error_type"}`` for a refusal before any record:
400 bad question/patient/upload, 401 token, 403 path outside the allowed folder, 404 no such path,
408 headers or body slower than the read timeout, 413 body or record too large, 422 a record that cannot
be read or used (and malformed form fields), 500 an engine failure (or any unexpected one: still this JSON),
503 busy (``Retry-After``) or shutting down, 504 no answer (staging included) within the timeout.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import dataclasses
import io
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from diagecg import __version__
from diagecg.errors import DiagEcgError, InputError, RecordError
from diagecg.formats import FORMAT_NAMES, detect_format
from diagecg.plot import require_matplotlib
from diagecg.runtime.answer import SCHEMA_VERSION, TASK_QA, TASK_REPORT, Answer, answer_schema, error_dict
from diagecg.runtime.device import trim_heap
from diagecg.runtime.openapi import openapi_30, typed_openapi
from diagecg.runtime.outputs import AUDIT_CLIENT, AUDIT_RECORD_SHA256, record_sha256
from diagecg.runtime.pipeline import DiagEcgPipeline
from diagecg.runtime.record_input import as_record
from diagecg.runtime.serve_admission import AdmissionMiddleware, JobGate, ServeConfig, Ticket, error_body
from diagecg.runtime.serve_metrics import Metrics, MetricsMiddleware
from diagecg.runtime.uploads import (
    RecordTooLongError,
    StagedRecord,
    UploadError,
    UploadTimeoutError,
    allowed_record_path,
    safe_file_name,
    stage_upload,
)
from diagecg.types import PatientInfo

logger = logging.getLogger(__name__)

API_TITLE = "diagecg"
API_DESCRIPTION = ("Local HTTP service of the diagecg runtime: questions and reports about 12-lead ECG "
                   "records. Answers are `diagecg infer --json` lines (schema: GET /v1/schema).")


class ErrorLine(BaseModel):
    """An error answer: ``error`` (one line) and ``error_type``; the record's envelope when there is one."""

    model_config = ConfigDict(extra="allow")
    error: str
    error_type: str


_ANSWER_DOC = {"type": "object", "description": "Answer.to_dict() (GET /v1/schema)",
               "additionalProperties": True}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorLine, "description": text} for code, text in (
        (400, "bad question, patient field or upload"), (401, "missing or wrong bearer token"),
        (403, "path outside the allowed folder"), (404, "no record at that path"),
        (408, "the headers or body did not arrive within the read timeout"),
        (413, "body, upload or record too large"),
        (422, "the record cannot be read or used, or bad form fields"),
        (500, "an engine failed"), (501, "/v1/plot on a server without matplotlib"),
        (503, "busy (Retry-After) or shutting down"),
        (504, "no answer within the server's timeout"))}


OPENAPI_VERSIONS = ("3.1", "3.0")
PICTURE_TYPES = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}


class PlotUnavailableError(DiagEcgError):
    """The server cannot draw: matplotlib (the ``plot`` extra) is not installed (HTTP 501)."""

    http_status = 501


def _check_picture(picture: str) -> None:
    """
    Raises:
        InputError: not an image format the server draws. PlotUnavailableError: no matplotlib.
    """
    if picture not in PICTURE_TYPES:
        raise InputError(f"image_format {picture!r} is not one of {', '.join(PICTURE_TYPES)}")
    try:
        require_matplotlib()
    except ImportError as e:
        raise PlotUnavailableError(f"this server cannot draw ECGs: {e}") from None


class RecordFile(BaseModel):
    """One file of a record in a JSON request."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="the file's name with its suffix, e.g. 00180_lr.hea (a WFDB header names "
                                  "its signal files, so their names must be kept); letters, digits, '.', "
                                  "'_', '-'")
    content_base64: str = Field(description="the file's bytes, base64 (RFC 4648, standard alphabet)")


class JsonRecordRequest(BaseModel):
    """A record and what to do with it, as one JSON object (``/v1/json/answer``, ``/v1/json/report``)."""

    model_config = ConfigDict(extra="forbid")
    files: list[RecordFile] = Field(min_length=1, description="the record: one file, a WFDB header with its "
                                                             "signal files, or one zip/tar of them")
    questions: list[str] = Field(default_factory=list, description="the questions (/v1/json/answer: at "
                                                                   "least one)")
    format: str | None = Field(None, description="the record's format, checked against the one detected "
                                                 f"from its content: one of {', '.join(FORMAT_NAMES)}")
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
        return _patient(self.age_years, self.sex, self.height_cm, self.weight_kg)


def http_status(error: BaseException) -> int:
    """The status a failed request answers with (module docstring)."""
    status = getattr(error, "http_status", None)
    if isinstance(status, int):
        return status
    if isinstance(error, RecordError):
        return 422
    if isinstance(error, (InputError, ValueError)):
        return 400
    return 500


class _Service:
    """What the routes share: the pipeline, the worker threads, the gate and the private upload folder."""

    def __init__(self, pipeline: DiagEcgPipeline, config: ServeConfig) -> None:
        self.pipe = pipeline
        self.config = config
        self.gate = JobGate(config.capacity, config.workers)
        self.executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.uploads: Path | None = None

    @property
    def public_bundle(self) -> dict[str, Any]:
        """The bundle as answers name it, with its folder's name instead of the server's path."""
        return {**self.pipe.bundle_info, "path": self.pipe.bundle.root.name}

    def start(self) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(self.config.workers, "diagecg-serve")
        self.uploads = Path(tempfile.mkdtemp(prefix="diagecg-serve-"))  # mode 0700

    def stop(self) -> None:
        self.gate.draining = True
        if self.executor is not None:
            self.executor.shutdown(wait=True)  # what is queued still runs: those requests were admitted
        if self.uploads is not None:
            shutil.rmtree(self.uploads, ignore_errors=True)

    def stage(self, files: list[tuple[str | None, BinaryIO]] | None, path: str | None, deadline: float,
              fmt: str | None = None) -> StagedRecord:
        """The record of a request: its uploaded files (client name, stream) staged in a private folder,
        or a path in the allowed folder; ``fmt``, when named, must be the format detected."""
        if (files is None) == (path is None) or (files is not None and not files):
            raise UploadError("send the record either as 'files' or as 'path', one of them")
        if path is not None:
            staged = allowed_record_path(path, self.config.allow_folder)
        else:
            assert self.uploads is not None, "the app's lifespan has not started"
            staged = stage_upload(files or [], Path(tempfile.mkdtemp(dir=self.uploads)),
                                  max_bytes=self.config.max_extracted_bytes, max_files=self.config.max_files,
                                  deadline=deadline)
        if fmt is not None:
            try:
                found = detect_format(staged.path)
            except BaseException:
                staged.cleanup()
                raise
            if found != fmt:
                staged.cleanup()
                raise UploadError(f"{staged.name}: 'format' says {fmt}, but the content is {found}")
        return staged

    def work(self, staged: StagedRecord, task: str, questions: list[str], patient: PatientInfo | None,
             progress: dict[str, str], client: str = "unknown",
             picture: str | None = None) -> tuple[list[dict[str, Any]], bytes | None]:
        """Read the record once and answer each question (in a worker thread), and draw it when
        ``picture`` names an image format; the audit log, if any, names ``client`` and the staged files'
        SHA-256."""
        who, digest = AUDIT_CLIENT.set(client), AUDIT_RECORD_SHA256.set(
            record_sha256(staged.path) if self.pipe.audit is not None else None)
        try:
            return self._work(staged, task, questions, patient, progress, picture)
        finally:
            AUDIT_CLIENT.reset(who)
            AUDIT_RECORD_SHA256.reset(digest)

    def _work(self, staged: StagedRecord, task: str, questions: list[str], patient: PatientInfo | None,
              progress: dict[str, str], picture: str | None) -> tuple[list[dict[str, Any]], bytes | None]:
        t = time.perf_counter()
        rec = as_record(staged.path, self.pipe.quality)
        if rec.duration_s > self.config.max_record_s:
            raise RecordTooLongError(f"{staged.name}: the record lasts {rec.duration_s:.0f} s, longer than "
                                     f"this server answers ({self.config.max_record_s:g} s)")
        rec = dataclasses.replace(rec, source=staged.name)
        read_ms = (time.perf_counter() - t) * 1e3
        out, answers = [], []
        for question in questions:
            progress["question"] = question
            ans = self.pipe.report(rec, patient=patient) if task == TASK_REPORT \
                else self.pipe.answer(rec, question, patient=patient)
            answers.append(ans)
            line = ans.to_dict()
            line["bundle"] = self.public_bundle  # the bundle's name, never the server's path
            timings = line["timings_ms"]  # charged to the first answer, as answer_batch does
            timings["read"] = round(timings.get("read", 0.0) + read_ms, 3)
            timings["total"] = round(timings.get("total", 0.0) + read_ms, 3)
            read_ms = 0.0
            out.append(line)
        image = None if picture is None else self.draw(rec, answers, patient, picture)
        return out, image

    def draw(self, record: Any, answers: list[Answer], patient: PatientInfo | None, picture: str) -> bytes:
        """The record as a printed ECG (``diagecg.plot``) in the format ``picture``, with the answers'
        text and windows, filtered as the model saw it."""
        from diagecg.plot import plot_ecg
        from diagecg.runtime.plots import answer_text

        preprocess = self.pipe.bundle.preprocess
        windows = [(float(w["start_s"]), float(w["end_s"])) for w in answers[0].windows] if answers else []
        shown = PatientInfo(**answers[0].patient) if answers else patient
        with tempfile.TemporaryDirectory(dir=self.uploads) as folder:
            out = plot_ecg(record, Path(folder) / f"ecg.{picture}", text=answer_text(answers) or None,
                           windows=windows or None, highpass_hz=preprocess.highpass_hz,
                           lowpass_hz=preprocess.lowpass_hz, patient=shown)
            return out.read_bytes()

    def failure(self, error: BaseException, record: str, question: str, task: str, started: float,
                staged: StagedRecord | None = None) -> JSONResponse:
        """The error line of a failed request, with its status; never the private folder's path."""
        if not isinstance(error, DiagEcgError):
            logger.error("unexpected error on %s", record or "a request", exc_info=error)
        line = error_dict(record, error, question, task=task, bundle=self.public_bundle,
                          elapsed_ms=(time.perf_counter() - started) * 1e3)
        if staged is not None:
            line["error"] = staged.public_text(line["error"])
        return JSONResponse(line, status_code=http_status(error))

    async def run(self, request: Request, task: str, questions: list[str],
                  files: list[tuple[str | None, BinaryIO]] | None, path: str | None,
                  patient_fields: dict[str, Any], *, fmt: str | None = None,
                  picture: str | None = None) -> Response:
        """Stage the record, answer in a worker thread under the request's timeout, and respond: the
        answers' JSON, or the picture when ``picture`` names an image format."""
        started = time.perf_counter()
        ticket: Ticket | None = request.scope.get("state", {}).get("ticket")
        first = questions[0] if questions else ""
        timeout = self.config.request_timeout_s
        try:
            checked = [self.pipe.check_question(q) for q in questions] if task == TASK_QA \
                else [self.pipe.prompt_config.report_question]
            patient = PatientInfo(**patient_fields)
            if picture is not None:
                _check_picture(picture)
            # staging (an archive's decompression included) runs under the request's timeout too
            staged = await asyncio.wait_for(
                run_in_threadpool(self.stage, files, path, time.monotonic() + timeout, fmt), timeout)
        except asyncio.TimeoutError:
            slow = UploadTimeoutError(f"staging the upload took longer than {timeout:g} s (the server's "
                                      f"timeout)")
            return self.failure(slow, "", first, task, started)
        except Exception as e:
            return self.failure(e, "", first, task, started)
        progress = {"question": checked[0] if checked else ""}
        try:
            assert self.executor is not None, "the app's lifespan has not started"
            client = f"{request.client.host if request.client else 'unknown'}" + (
                " (bearer token)" if self.config.token else "")
            future = self.executor.submit(self.work, staged, task, checked, patient, progress, client,
                                          picture)
        except BaseException as e:
            staged.cleanup()
            return self.failure(e, staged.name, first, task, started, staged)
        if ticket is not None:  # the slot is freed when the work ends, not when the answer is sent
            ticket.handed_off = True
        future.add_done_callback(lambda _: _finish(ticket, staged))
        try:
            left = max(0.0, timeout - (time.perf_counter() - started))
            lines, image = await asyncio.wait_for(asyncio.wrap_future(future), left)
        except asyncio.TimeoutError:
            fate = "dropped before it started" if future.cancelled() else "it still runs"
            late = TimeoutError(f"no answer within {self.config.request_timeout_s:g} s (the server's "
                                f"timeout); {fate}")
            line = error_dict(staged.name, late, progress["question"], task=task,
                              bundle=self.public_bundle, elapsed_ms=(time.perf_counter() - started) * 1e3)
            return JSONResponse(line, status_code=504)
        except Exception as e:
            return self.failure(e, staged.name, progress["question"], task, started, staged)
        if image is not None:
            return Response(image, media_type=PICTURE_TYPES[picture or ""])
        return JSONResponse(lines if task == TASK_QA else lines[0])

    def describe(self) -> dict[str, Any]:
        c = self.config
        bundle = self.pipe.bundle
        return {"diagecg_version": __version__, "schema_version": SCHEMA_VERSION,
                "bundle": self.public_bundle, "quants": list(bundle.quants),
                "device": self.pipe.device.to_dict(), "question_catalogue": bundle.questions is not None,
                "load_warnings": list(self.pipe.load_warnings),
                "limits": {"workers": c.workers, "queue_size": c.queue_size,
                           "request_timeout_s": c.request_timeout_s, "max_upload_bytes": c.max_upload_bytes,
                           "max_extracted_bytes": c.max_extracted_bytes, "max_files": c.max_files,
                           "max_record_s": c.max_record_s, "allow_folder": c.allow_folder is not None,
                           "auth": c.token is not None}}


def _finish(ticket: Ticket | None, staged: StagedRecord) -> None:
    staged.cleanup()
    trim_heap()
    if ticket is not None:
        ticket.release(timed=True)


def _uploaded(files: list[UploadFile] | None) -> list[tuple[str | None, BinaryIO]] | None:
    return None if files is None else [(f.filename, f.file) for f in files]


def _patient(age_years: float | None, sex: str | None, height_cm: float | None,
             weight_kg: float | None) -> dict[str, Any]:
    return {"age_years": age_years, "sex": sex, "height_cm": height_cm, "weight_kg": weight_kg}


Questions = Annotated[list[str], Form(description="a question; repeat the field to ask several")]
OptionalQuestions = Annotated[list[str] | None, Form(description="a question whose answer is printed on the "
                                                                 "picture; repeat the field to ask several")]
ImageFormat = Annotated[str, Form(description="png, svg or pdf")]
Files = Annotated[list[UploadFile] | None, File(description="the record: one file, a WFDB header with its "
                                                            "signal files, or one zip/tar of them")]
RecordPath = Annotated[str | None, Form(description="a record inside the server's --allow-folder (instead of "
                                                    "files)")]
Age = Annotated[float | None, Form(description="patient age in years (overrides the record's)")]
Sex = Annotated[str | None, Form(description="'male' or 'female' (overrides the record's)")]
Height = Annotated[float | None, Form(description="patient height in cm")]
Weight = Annotated[float | None, Form(description="patient weight in kg")]


def create_app(pipeline: DiagEcgPipeline, config: ServeConfig) -> FastAPI:
    """The ``diagecg serve`` app for a loaded pipeline (the caller keeps it and closes it).

    Worker threads and the private upload folder live from the app's startup to its shutdown, which
    waits for admitted work to end.
    """
    service = _Service(pipeline, config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = FastAPI(title=API_TITLE, version=__version__, description=API_DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # the docs pages load scripts from a CDN: not offline
    app.state.service = service

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = typed_openapi(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes),
                answer_schema()["$defs"], _ANSWER_DOC)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(AdmissionMiddleware, config=config, gate=service.gate)
    gate = service.gate
    metrics = Metrics(lambda: {"diagecg_slots_in_use": gate.in_use, "diagecg_slots_capacity": gate.capacity,
                               "diagecg_workers": gate.workers})
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last: outermost, sees every refusal

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # 404, 405 ... in the service's envelope, not FastAPI's {"detail": ...}
        name = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, f"HTTP{exc.status_code}")
        return JSONResponse(error_body(str(exc.detail), name), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_form(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'body'}: {e.get('msg', '')}"
                 for e in exc.errors()]
        return JSONResponse(error_body("bad request: " + "; ".join(parts), "RequestValidationError"),
                            status_code=422)

    @app.post("/v1/answer", responses={200: {"description": "one answer per question, in order", "content": {
        "application/json": {"schema": {"type": "array", "items": _ANSWER_DOC}}}}, **_ERRORS})
    async def answer(request: Request, question: Questions, files: Files = None, path: RecordPath = None,
                     age_years: Age = None, sex: Sex = None, height_cm: Height = None,
                     weight_kg: Weight = None) -> Response:
        """Answer questions about one ECG record (as `diagecg infer RECORD -q ... --json`)."""
        return await service.run(request, TASK_QA, question, _uploaded(files), path,
                                 _patient(age_years, sex, height_cm, weight_kg))

    @app.post("/v1/report", responses={200: {"description": "the report", "content": {
        "application/json": {"schema": _ANSWER_DOC}}}, **_ERRORS})
    async def report(request: Request, files: Files = None, path: RecordPath = None, age_years: Age = None,
                     sex: Sex = None, height_cm: Height = None, weight_kg: Weight = None) -> Response:
        """Write the report of one ECG record (as `diagecg report RECORD --json`)."""
        return await service.run(request, TASK_REPORT, [], _uploaded(files), path,
                                 _patient(age_years, sex, height_cm, weight_kg))

    @app.post("/v1/plot", response_class=Response, responses={200: {
        "description": "the record drawn as a printed ECG (25 mm/s, 10 mm/mV), with the answers to the "
                       "questions asked, if any, and the windows they were read from",
        "content": {media: {"schema": {"type": "string", "format": "binary"}}
                    for media in PICTURE_TYPES.values()}}, **_ERRORS})
    async def plot(request: Request, question: OptionalQuestions = None, files: Files = None,
                   path: RecordPath = None, image_format: ImageFormat = "png", age_years: Age = None,
                   sex: Sex = None, height_cm: Height = None, weight_kg: Weight = None) -> Response:
        """Draw one ECG record as a printed ECG (as `diagecg infer RECORD --plot FILE`)."""
        return await service.run(request, TASK_QA, question or [], _uploaded(files), path,
                                 _patient(age_years, sex, height_cm, weight_kg), picture=image_format)

    @app.post("/v1/json/answer", responses={200: {"description": "one answer per question, in order",
                                                  "content": {"application/json": {
                                                      "schema": {"type": "array", "items": _ANSWER_DOC}}}},
                                            **_ERRORS})
    async def json_answer(request: Request, body: JsonRecordRequest) -> Response:
        """Answer questions about one ECG record sent as JSON (base64 files)."""
        if not body.questions:
            return JSONResponse(error_body("ask at least one question ('questions')", "InputError"), 400)
        try:
            files = body.decoded()
        except UploadError as e:
            return service.failure(e, "", body.questions[0], TASK_QA, time.perf_counter())
        return await service.run(request, TASK_QA, body.questions, files, None, body.patient(),
                                 fmt=body.format)

    @app.post("/v1/json/report", responses={200: {"description": "the report", "content": {
        "application/json": {"schema": _ANSWER_DOC}}}, **_ERRORS})
    async def json_report(request: Request, body: JsonRecordRequest) -> Response:
        """Write the report of one ECG record sent as JSON (base64 files); ``questions`` must be empty."""
        if body.questions:
            return JSONResponse(error_body("a report takes no 'questions'", "InputError"), 400)
        try:
            files = body.decoded()
        except UploadError as e:
            return service.failure(e, "", "", TASK_REPORT, time.perf_counter())
        return await service.run(request, TASK_REPORT, [], files, None, body.patient(), fmt=body.format)

    @app.get("/v1/questions",
             responses={404: {"model": ErrorLine, "description": "the bundle has no catalogue"}})
    async def questions() -> JSONResponse:
        """The questions the bundle's model was trained to answer (`diagecg questions --json`)."""
        catalogue = service.pipe.bundle.questions
        if catalogue is None:
            return JSONResponse(error_body("this bundle has no question catalogue: every question goes to "
                                           "the model as typed", "BundleError"), status_code=404)
        return JSONResponse(catalogue.to_dict())

    @app.get("/v1/bundle")
    async def bundle() -> dict[str, Any]:
        """The loaded bundle (versions, sha256), the device, the answer schema version and the limits."""
        return service.describe()

    @app.get("/v1/schema")
    async def schema() -> dict[str, Any]:
        """The JSON Schema (draft 2020-12) of answers and error lines."""
        return answer_schema()

    @app.get("/openapi-3.0.json", include_in_schema=False)
    async def openapi_3_0() -> dict[str, Any]:
        return openapi_30(app.openapi())

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics_text() -> PlainTextResponse:
        """Prometheus text format: requests by route and status, latency histogram, refusals by reason,
        slots in use (``runtime.serve_metrics``)."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "shutting down"}})
    async def readyz() -> JSONResponse:
        """Readiness: the bundle is loaded and new work is accepted (503 while shutting down)."""
        gate = service.gate
        body = {"ready": not gate.draining, "in_flight": gate.in_use, "capacity": gate.capacity}
        return JSONResponse(body, status_code=503 if gate.draining else 200)

    return app


def openapi_document(version: str = "3.1") -> dict[str, Any]:
    """The OpenAPI document of the app, ``version`` "3.1" (FastAPI's) or "3.0" (``runtime.openapi``); it
    does not depend on the bundle or the limits."""
    if version not in OPENAPI_VERSIONS:
        raise ValueError(f"OpenAPI version {version!r} is not one of {', '.join(OPENAPI_VERSIONS)}")
    app = create_app(None, ServeConfig())  # type: ignore[arg-type]  # routes are never called
    return app.openapi() if version == "3.1" else openapi_30(app.openapi())
