"""What the routes of ``diagecg serve`` share (:class:`Service`): the pipeline, the worker threads, the
admission gate and the private upload folder, and the work of one request: stage the record, answer
in a worker thread under the request's timeout, respond with the answers, the picture or the error line
(:func:`http_status` maps an error to its status, as ``runtime.serve_app``'s module docstring lists).

Kept apart from the routes (``runtime.serve_app``), which only parse a request and hand it here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from diagecg import __version__
from diagecg.errors import DiagEcgError, InputError, RecordError
from diagecg.formats import detect_format
from diagecg.plot import require_matplotlib
from diagecg.runtime.answer import SCHEMA_VERSION, TASK_QA, TASK_REPORT, Answer, error_dict
from diagecg.runtime.device import trim_heap
from diagecg.runtime.outputs import AUDIT_CLIENT, AUDIT_RECORD_SHA256, record_sha256
from diagecg.runtime.pipeline import DiagEcgPipeline
from diagecg.runtime.record_input import as_record
from diagecg.runtime.serve_admission import JobGate, ServeConfig, Ticket
from diagecg.runtime.serve_models import PICTURE_TYPES
from diagecg.runtime.uploads import (
    RecordTooLongError,
    StagedRecord,
    UploadError,
    UploadTimeoutError,
    allowed_record_path,
    stage_upload,
)
from diagecg.types import PatientInfo

logger = logging.getLogger(__name__)


class PlotUnavailableError(DiagEcgError):
    """The server cannot draw: matplotlib (the ``plot`` extra) is not installed (HTTP 501)."""

    http_status = 501


def check_picture(picture: str) -> None:
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


def http_status(error: BaseException) -> int:
    """The status a failed request answers with (``runtime.serve_app``'s module docstring)."""
    status = getattr(error, "http_status", None)
    if isinstance(status, int):
        return status
    if isinstance(error, RecordError):
        return 422
    if isinstance(error, (InputError, ValueError)):
        return 400
    return 500


class Service:
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

    def stage(
        self,
        files: list[tuple[str | None, BinaryIO]] | None,
        path: str | None,
        deadline: float,
        fmt: str | None = None,
    ) -> StagedRecord:
        """The record of a request: its uploaded files (client name, stream) staged in a private folder,
        or a path in the allowed folder; ``fmt``, when named, must be the format detected."""
        if (files is None) == (path is None) or (files is not None and not files):
            raise UploadError("send the record either as 'files' or as 'path', one of them")
        if path is not None:
            staged = allowed_record_path(path, self.config.allow_folder)
        else:
            assert self.uploads is not None, "the app's lifespan has not started"
            staged = stage_upload(
                files or [],
                Path(tempfile.mkdtemp(dir=self.uploads)),
                max_bytes=self.config.max_extracted_bytes,
                max_files=self.config.max_files,
                deadline=deadline,
            )
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

    def work(
        self,
        staged: StagedRecord,
        task: str,
        questions: list[str],
        patient: PatientInfo | None,
        progress: dict[str, str],
        client: str = "unknown",
        picture: str | None = None,
    ) -> tuple[list[dict[str, Any]], bytes | None]:
        """Read the record once and answer each question (in a worker thread), and draw it when
        ``picture`` names an image format; the audit log, if any, names ``client`` and the staged files'
        SHA-256."""
        who, digest = (
            AUDIT_CLIENT.set(client),
            AUDIT_RECORD_SHA256.set(record_sha256(staged.path) if self.pipe.audit is not None else None),
        )
        try:
            return self._work(staged, task, questions, patient, progress, picture)
        finally:
            AUDIT_CLIENT.reset(who)
            AUDIT_RECORD_SHA256.reset(digest)

    def _work(
        self,
        staged: StagedRecord,
        task: str,
        questions: list[str],
        patient: PatientInfo | None,
        progress: dict[str, str],
        picture: str | None,
    ) -> tuple[list[dict[str, Any]], bytes | None]:
        t = time.perf_counter()
        rec = as_record(staged.path, self.pipe.quality)
        if rec.duration_s > self.config.max_record_s:
            raise RecordTooLongError(
                f"{staged.name}: the record lasts {rec.duration_s:.0f} s, longer than "
                f"this server answers ({self.config.max_record_s:g} s)"
            )
        rec = dataclasses.replace(rec, source=staged.name)
        read_ms = (time.perf_counter() - t) * 1e3
        out, answers = [], []
        for question in questions:
            progress["question"] = question
            ans = (
                self.pipe.report(rec, patient=patient)
                if task == TASK_REPORT
                else self.pipe.answer(rec, question, patient=patient)
            )
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
            out = plot_ecg(
                record,
                Path(folder) / f"ecg.{picture}",
                text=answer_text(answers) or None,
                windows=windows or None,
                highpass_hz=preprocess.highpass_hz,
                lowpass_hz=preprocess.lowpass_hz,
                patient=shown,
            )
            return out.read_bytes()

    def failure(
        self,
        error: BaseException,
        record: str,
        question: str,
        task: str,
        started: float,
        staged: StagedRecord | None = None,
    ) -> JSONResponse:
        """The error line of a failed request, with its status; never the private folder's path."""
        if not isinstance(error, DiagEcgError):
            logger.error("unexpected error on %s", record or "a request", exc_info=error)
        line = error_dict(
            record,
            error,
            question,
            task=task,
            bundle=self.public_bundle,
            elapsed_ms=(time.perf_counter() - started) * 1e3,
        )
        if staged is not None:
            line["error"] = staged.public_text(line["error"])
        return JSONResponse(line, status_code=http_status(error))

    async def run(
        self,
        request: Request,
        task: str,
        questions: list[str],
        files: list[tuple[str | None, BinaryIO]] | None,
        path: str | None,
        patient_fields: dict[str, Any],
        *,
        fmt: str | None = None,
        picture: str | None = None,
    ) -> Response:
        """Stage the record, answer in a worker thread under the request's timeout, and respond: the
        answers' JSON, or the picture when ``picture`` names an image format."""
        started = time.perf_counter()
        ticket: Ticket | None = request.scope.get("state", {}).get("ticket")
        first = questions[0] if questions else ""
        timeout = self.config.request_timeout_s
        try:
            checked = (
                [self.pipe.check_question(q) for q in questions]
                if task == TASK_QA
                else [self.pipe.prompt_config.report_question]
            )
            patient = PatientInfo(**patient_fields)
            if picture is not None:
                check_picture(picture)
            # staging (an archive's decompression included) runs under the request's timeout too
            staged = await asyncio.wait_for(
                run_in_threadpool(self.stage, files, path, time.monotonic() + timeout, fmt), timeout
            )
        except asyncio.TimeoutError:
            slow = UploadTimeoutError(
                f"staging the upload took longer than {timeout:g} s (the server's timeout)"
            )
            return self.failure(slow, "", first, task, started)
        except Exception as e:
            return self.failure(e, "", first, task, started)
        progress = {"question": checked[0] if checked else ""}
        try:
            assert self.executor is not None, "the app's lifespan has not started"
            client = f"{request.client.host if request.client else 'unknown'}" + (
                " (bearer token)" if self.config.token else ""
            )
            future = self.executor.submit(
                self.work, staged, task, checked, patient, progress, client, picture
            )
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
            late = TimeoutError(
                f"no answer within {self.config.request_timeout_s:g} s (the server's timeout); {fate}"
            )
            line = error_dict(
                staged.name,
                late,
                progress["question"],
                task=task,
                bundle=self.public_bundle,
                elapsed_ms=(time.perf_counter() - started) * 1e3,
            )
            return JSONResponse(line, status_code=504)
        except Exception as e:
            return self.failure(e, staged.name, progress["question"], task, started, staged)
        if image is not None:
            return Response(image, media_type=PICTURE_TYPES[picture or ""])
        return JSONResponse(lines if task == TASK_QA else lines[0])

    def describe(self) -> dict[str, Any]:
        c = self.config
        bundle = self.pipe.bundle
        return {
            "diagecg_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "bundle": self.public_bundle,
            "quants": list(bundle.quants),
            "device": self.pipe.device.to_dict(),
            "question_catalogue": bundle.questions is not None,
            "load_warnings": list(self.pipe.load_warnings),
            "limits": {
                "workers": c.workers,
                "queue_size": c.queue_size,
                "request_timeout_s": c.request_timeout_s,
                "max_upload_bytes": c.max_upload_bytes,
                "max_extracted_bytes": c.max_extracted_bytes,
                "max_files": c.max_files,
                "max_record_s": c.max_record_s,
                "allow_folder": c.allow_folder is not None,
                "auth": c.token is not None,
            },
        }


def _finish(ticket: Ticket | None, staged: StagedRecord) -> None:
    staged.cleanup()
    trim_heap()
    if ticket is not None:
        ticket.release(timed=True)
