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

This module holds the routes only: the request and response bodies are ``runtime.serve_models``, the
work of a request (staging, worker threads, timeouts, the error line and its status) is
``runtime.serve_service``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, BinaryIO

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from diagecg import __version__
from diagecg.runtime.answer import TASK_QA, TASK_REPORT, answer_schema
from diagecg.runtime.openapi import openapi_30, typed_openapi
from diagecg.runtime.pipeline import DiagEcgPipeline
from diagecg.runtime.serve_admission import AdmissionMiddleware, ServeConfig, error_body
from diagecg.runtime.serve_metrics import Metrics, MetricsMiddleware
from diagecg.runtime.serve_models import PICTURE_TYPES, ErrorLine, JsonRecordRequest, patient_fields
from diagecg.runtime.serve_service import Service
from diagecg.runtime.uploads import UploadError

API_TITLE = "diagecg"
API_DESCRIPTION = (
    "Local HTTP service of the diagecg runtime: questions and reports about 12-lead ECG "
    "records. Answers are `diagecg infer --json` lines (schema: GET /v1/schema)."
)


_ANSWER_DOC = {
    "type": "object",
    "description": "Answer.to_dict() (GET /v1/schema)",
    "additionalProperties": True,
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorLine, "description": text}
    for code, text in (
        (400, "bad question, patient field or upload"),
        (401, "missing or wrong bearer token"),
        (403, "path outside the allowed folder"),
        (404, "no record at that path"),
        (408, "the headers or body did not arrive within the read timeout"),
        (413, "body, upload or record too large"),
        (422, "the record cannot be read or used, or bad form fields"),
        (500, "an engine failed"),
        (501, "/v1/plot on a server without matplotlib"),
        (503, "busy (Retry-After) or shutting down"),
        (504, "no answer within the server's timeout"),
    )
}
_ANSWERS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "one answer per question, in order",
        "content": {"application/json": {"schema": {"type": "array", "items": _ANSWER_DOC}}},
    },
    **_ERRORS,
}
_REPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "the report", "content": {"application/json": {"schema": _ANSWER_DOC}}},
    **_ERRORS,
}


OPENAPI_VERSIONS = ("3.1", "3.0")


def _uploaded(files: list[UploadFile] | None) -> list[tuple[str | None, BinaryIO]] | None:
    return None if files is None else [(f.filename, f.file) for f in files]


Questions = Annotated[list[str], Form(description="a question; repeat the field to ask several")]
OptionalQuestions = Annotated[
    list[str] | None,
    Form(description="a question whose answer is printed on the picture; repeat the field to ask several"),
]
ImageFormat = Annotated[str, Form(description="png, svg or pdf")]
Files = Annotated[
    list[UploadFile] | None,
    File(description="the record: one file, a WFDB header with its signal files, or one zip/tar of them"),
]
RecordPath = Annotated[
    str | None, Form(description="a record inside the server's --allow-folder (instead of files)")
]
Age = Annotated[float | None, Form(description="patient age in years (overrides the record's)")]
Sex = Annotated[str | None, Form(description="'male' or 'female' (overrides the record's)")]
Height = Annotated[float | None, Form(description="patient height in cm")]
Weight = Annotated[float | None, Form(description="patient weight in kg")]


def create_app(pipeline: DiagEcgPipeline, config: ServeConfig) -> FastAPI:
    """The ``diagecg serve`` app for a loaded pipeline (the caller keeps it and closes it).

    Worker threads and the private upload folder live from the app's startup to its shutdown, which
    waits for admitted work to end.
    """
    service = Service(pipeline, config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = FastAPI(
        title=API_TITLE,
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )  # the docs pages load scripts from a CDN: not offline
    app.state.service = service

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = typed_openapi(
                get_openapi(
                    title=app.title, version=app.version, description=app.description, routes=app.routes
                ),
                answer_schema()["$defs"],
                _ANSWER_DOC,
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(AdmissionMiddleware, config=config, gate=service.gate)
    gate = service.gate
    metrics = Metrics(
        lambda: {
            "diagecg_slots_in_use": gate.in_use,
            # admitted requests beyond the workers: waiting for a thread (or still sending their body)
            "diagecg_queue_depth": max(0, gate.in_use - gate.workers),
            "diagecg_slots_capacity": gate.capacity,
            "diagecg_workers": gate.workers,
        }
    )
    app.state.metrics = metrics
    # added last: outermost, sees every refusal
    app.add_middleware(MetricsMiddleware, metrics=metrics, access_log=config.access_log)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # 404, 405 ... in the service's envelope, not FastAPI's {"detail": ...}
        name = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, f"HTTP{exc.status_code}")
        return JSONResponse(
            error_body(str(exc.detail), name),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(RequestValidationError)
    async def bad_form(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [
            f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'body'}: {e.get('msg', '')}"
            for e in exc.errors()
        ]
        return JSONResponse(
            error_body("bad request: " + "; ".join(parts), "RequestValidationError"), status_code=422
        )

    @app.post(
        "/v1/answer",
        responses=_ANSWERS_RESPONSES,
    )
    async def answer(
        request: Request,
        question: Questions,
        files: Files = None,
        path: RecordPath = None,
        age_years: Age = None,
        sex: Sex = None,
        height_cm: Height = None,
        weight_kg: Weight = None,
    ) -> Response:
        """Answer questions about one ECG record (as `diagecg infer RECORD -q ... --json`)."""
        return await service.run(
            request,
            TASK_QA,
            question,
            _uploaded(files),
            path,
            patient_fields(age_years, sex, height_cm, weight_kg),
        )

    @app.post(
        "/v1/report",
        responses=_REPORT_RESPONSES,
    )
    async def report(
        request: Request,
        files: Files = None,
        path: RecordPath = None,
        age_years: Age = None,
        sex: Sex = None,
        height_cm: Height = None,
        weight_kg: Weight = None,
    ) -> Response:
        """Write the report of one ECG record (as `diagecg report RECORD --json`)."""
        return await service.run(
            request,
            TASK_REPORT,
            [],
            _uploaded(files),
            path,
            patient_fields(age_years, sex, height_cm, weight_kg),
        )

    @app.post(
        "/v1/plot",
        response_class=Response,
        responses={
            200: {
                "description": "the record drawn as a printed ECG (25 mm/s, 10 mm/mV), with the answers "
                "to the questions asked, if any, and the windows they were read from",
                "content": {
                    media: {"schema": {"type": "string", "format": "binary"}}
                    for media in PICTURE_TYPES.values()
                },
            },
            **_ERRORS,
        },
    )
    async def plot(
        request: Request,
        question: OptionalQuestions = None,
        files: Files = None,
        path: RecordPath = None,
        image_format: ImageFormat = "png",
        age_years: Age = None,
        sex: Sex = None,
        height_cm: Height = None,
        weight_kg: Weight = None,
    ) -> Response:
        """Draw one ECG record as a printed ECG (as `diagecg infer RECORD --plot FILE`)."""
        return await service.run(
            request,
            TASK_QA,
            question or [],
            _uploaded(files),
            path,
            patient_fields(age_years, sex, height_cm, weight_kg),
            picture=image_format,
        )

    async def run_json(request: Request, task: str, body: JsonRecordRequest) -> Response:
        """A JSON-body request: its files decoded (a bad one is the error line), then as an upload."""
        try:
            files = body.decoded()
        except UploadError as e:
            return service.failure(
                e, "", body.questions[0] if body.questions else "", task, time.perf_counter()
            )
        return await service.run(request, task, body.questions, files, None, body.patient(), fmt=body.format)

    @app.post(
        "/v1/json/answer",
        responses=_ANSWERS_RESPONSES,
    )
    async def json_answer(request: Request, body: JsonRecordRequest) -> Response:
        """Answer questions about one ECG record sent as JSON (base64 files)."""
        if not body.questions:
            return JSONResponse(error_body("ask at least one question ('questions')", "InputError"), 400)
        return await run_json(request, TASK_QA, body)

    @app.post(
        "/v1/json/report",
        responses=_REPORT_RESPONSES,
    )
    async def json_report(request: Request, body: JsonRecordRequest) -> Response:
        """Write the report of one ECG record sent as JSON (base64 files); ``questions`` must be empty."""
        if body.questions:
            return JSONResponse(error_body("a report takes no 'questions'", "InputError"), 400)
        return await run_json(request, TASK_REPORT, body)

    @app.get(
        "/v1/questions", responses={404: {"model": ErrorLine, "description": "the bundle has no catalogue"}}
    )
    async def questions() -> JSONResponse:
        """The questions the bundle's model was trained to answer (`diagecg questions --json`)."""
        catalogue = service.pipe.bundle.questions
        if catalogue is None:
            return JSONResponse(
                error_body(
                    "this bundle has no question catalogue: every question goes to the model as typed",
                    "BundleError",
                ),
                status_code=404,
            )
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
