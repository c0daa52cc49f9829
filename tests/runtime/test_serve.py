"""``diagecg serve`` over real HTTP: a uvicorn server on a free loopback port (in a thread) with the tiny
bundle, exercised with httpx and with the package's own urllib client. Answers must equal the pipeline's
(``pipeline.answer``) for every way a record can arrive; refusals are one-line errors with the right status
and the server keeps answering after them."""

from __future__ import annotations

import io
import json
import os
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from diagecg.runtime.client import DiagEcgClient, ServerError  # noqa: E402
from diagecg.runtime.pipeline import DiagEcgPipeline  # noqa: E402
from diagecg.runtime.serve import ServeConfig  # noqa: E402
from diagecg.runtime.serve_app import create_app, openapi_document  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RECORDS = REPO / "tests" / "fixtures" / "records"
FORMATS = REPO / "tests" / "fixtures" / "formats"
QUESTION = "Is the rhythm regular?"
VOLATILE = ("record", "timings_ms", "ecg_cached", "n_reused_tokens")  # how, not what, was answered
TOKEN = "s3cret-token-of-24-chars"
APPS: dict[str, Any] = {}  # base URL -> the app it serves


@contextmanager
def live_server(pipe: Any, **config: Any) -> Iterator[str]:
    """A real uvicorn server for ``create_app(pipe, ServeConfig(**config))``; yields its base URL."""
    app = create_app(pipe, ServeConfig(port=0, **config))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    APPS[url] = app
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _same(line: dict[str, Any], expected: dict[str, Any]) -> None:
    strip = lambda d: {k: v for k, v in d.items() if k not in VOLATILE}  # noqa: E731
    assert strip(line) == strip(expected)


def _files(*paths: Path) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (p.name, p.read_bytes())) for p in paths]


def _ask(url: str, files: Any = None, question: str | list[str] = QUESTION, **data: Any) -> httpx.Response:
    questions = [question] if isinstance(question, str) else question
    return httpx.post(f"{url}/v1/answer", files=files, data={"question": questions, **data}, timeout=30)


def _one_line_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] and "\n" not in body["error"] and body["error_type"]
    return body


@pytest.fixture(scope="module")
def server(pipeline: DiagEcgPipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    allowed = tmp_path_factory.mktemp("allowed")
    for name in ("00002_lr.hea", "00002_lr.dat"):
        (allowed / name).write_bytes((RECORDS / name).read_bytes())
    with live_server(pipeline, allow_folder=allowed, max_upload_bytes=512 << 10,
                     max_extracted_bytes=1 << 20) as url:
        yield url, allowed


# --- answers equal the pipeline's ------------------------------------------------------------------------

def test_wfdb_upload_answers_as_the_pipeline(server, pipeline) -> None:
    url, _ = server
    hea = RECORDS / "00002_lr.hea"
    questions = [QUESTION, "Does this ECG show atrial fibrillation?"]
    r = _ask(url, _files(hea, RECORDS / "00002_lr.dat"), questions,
             age_years="63", sex="male")
    assert r.status_code == 200, r.text
    lines = r.json()
    assert [line["question"] for line in lines] == questions
    from diagecg.types import PatientInfo

    patient = PatientInfo(age_years=63.0, sex="male")
    for line in lines:
        _same(line, pipeline.answer(hea, line["question"], patient=patient).to_dict())
        assert line["record"] == "00002_lr.hea" and line["record_id"] == "00002_lr"
    assert lines[0]["timings_ms"]["read"] > 0


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_upload_answers_as_the_pipeline(server, pipeline, kind: str) -> None:
    url, _ = server
    buf = io.BytesIO()
    members = [RECORDS / "00003_lr.hea", RECORDS / "00003_lr.dat"]
    if kind == "zip":
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for p in members:
                z.write(p, f"rec/{p.name}")
            z.writestr("__MACOSX/rec/._00003_lr.hea", b"resource fork")
    else:
        with tarfile.open(fileobj=buf, mode="w:gz") as t:
            for p in members:
                t.add(p, f"rec/{p.name}")
    r = _ask(url, [("files", (f"record.{kind}", buf.getvalue()))])
    assert r.status_code == 200, r.text
    [line] = r.json()
    _same(line, pipeline.answer(RECORDS / "00003_lr.hea", QUESTION).to_dict())
    assert line["record"] == "rec/00003_lr.hea"


@pytest.mark.parametrize("path", [FORMATS / "dicom" / "waveform_ecg.dcm",
                                  FORMATS / "muse" / "muse-sinus.xml"],
                         ids=["dicom", "muse"])
def test_hospital_format_upload_answers_as_the_pipeline(server, pipeline, path: Path) -> None:
    if path.suffix == ".dcm":
        pytest.importorskip("pydicom")
    url, _ = server
    r = httpx.post(f"{url}/v1/report", files=_files(path), timeout=30)
    assert r.status_code == 200, r.text
    _same(r.json(), pipeline.report(path).to_dict())


def test_allowed_folder_path_answers_and_others_are_refused(server, pipeline, tmp_path) -> None:
    url, allowed = server
    expected = pipeline.answer(allowed / "00002_lr.hea", QUESTION).to_dict()
    for path in ("00002_lr.hea", str(allowed / "00002_lr.hea")):
        r = _ask(url, path=path)
        assert r.status_code == 200, r.text
        _same(r.json()[0], expected)
    outside = tmp_path / "outside.hea"
    outside.write_bytes((RECORDS / "00008_lr.hea").read_bytes())
    (allowed / "escape.hea").symlink_to(outside)
    for path in (str(outside), "../outside.hea", "escape.hea", "/etc/passwd"):
        assert "outside the folder" in _one_line_error(_ask(url, path=path), 403)["error"]
    _one_line_error(_ask(url, path="missing.hea"), 404)
    _one_line_error(_ask(url, path="."), 400)  # a folder, not a record


def test_path_refused_without_allowed_folder(pipeline) -> None:
    with live_server(pipeline) as url:
        body = _one_line_error(_ask(url, path=str(RECORDS / "00002_lr.hea")), 403)
        assert "--allow-folder" in body["error"]


def test_python_client_answers_as_the_pipeline(server, pipeline) -> None:
    url, allowed = server
    client = DiagEcgClient(url)
    hea = RECORDS / "00008_lr.hea"
    [line] = client.answer(hea, QUESTION)  # the header brings its .dat
    _same(line, pipeline.answer(hea, QUESTION).to_dict())
    [line] = client.answer_path("00002_lr.hea", QUESTION)
    _same(line, pipeline.answer(allowed / "00002_lr.hea", QUESTION).to_dict())
    assert client.bundle()["bundle"] == pipeline.bundle_info and client.ready()
    with pytest.raises(ServerError) as e:
        client.answer(RECORDS / "LICENSE.txt", QUESTION)
    assert e.value.status == 422 and "not an ECG format" in e.value.error


# --- refusals ----------------------------------------------------------------------------------------------

def test_bad_records_are_one_line_errors_and_the_server_keeps_answering(server, pipeline, tmp_path) -> None:
    url, _ = server
    body = _one_line_error(_ask(url, _files(RECORDS / "00002_lr.hea")), 422)  # header without its signal
    assert body["error_type"] == "RecordNotFoundError" and body["record"] == "00002_lr.hea"
    assert str(tmp_path.anchor + "tmp") not in body["error"] and "diagecg-serve-" not in body["error"]
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not an ECG\n")
    body = _one_line_error(_ask(url, _files(garbage)), 422)
    with pytest.raises(Exception) as cli_error:  # the CLI's message for the same file, its path aside
        pipeline.answer(garbage, QUESTION)
    assert body["error"] == " ".join(str(cli_error.value).split()).replace(str(garbage), "notes.txt")
    truncated = tmp_path / "00002_lr.dat"
    truncated.write_bytes((RECORDS / "00002_lr.dat").read_bytes()[:1000])
    _one_line_error(_ask(url, _files(RECORDS / "00002_lr.hea", truncated)), 422)
    _one_line_error(_ask(url, _files(RECORDS / "00002_lr.hea"), question="<ecg_0001> " + QUESTION), 400)
    _one_line_error(_ask(url, _files(RECORDS / "00002_lr.hea"), age_years="300"), 400)
    _one_line_error(_ask(url, _files(RECORDS / "00002_lr.hea"), age_years="old"), 422)
    _one_line_error(httpx.post(f"{url}/v1/answer", files=_files(RECORDS / "00002_lr.hea"), timeout=30), 422)
    _one_line_error(_ask(url), 400)  # neither files nor path
    _one_line_error(_ask(url, [("files", ("../x.hea", b"x")), ("files", ("a b.dat", b"x"))]), 400)
    _one_line_error(_ask(url, _files(RECORDS / "00002_lr.hea", RECORDS / "00003_lr.hea",
                                     RECORDS / "00002_lr.dat", RECORDS / "00003_lr.dat")), 400)  # two records
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert _ask(url, _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat")).status_code == 200
    assert not any(APPS[url].state.service.uploads.iterdir())  # every staged upload was deleted


def _archive(members: dict[str, bytes], *, link: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo("rec/00002_lr.dat")
            info.type, info.linkname = tarfile.SYMTYPE, link
            t.addfile(info)
    return buf.getvalue()


def test_unsafe_archives_and_oversized_uploads_are_refused(server) -> None:
    url, _ = server
    hea = (RECORDS / "00002_lr.hea").read_bytes()
    for members, link in (({"../00002_lr.hea": hea}, None), ({"/etc/00002_lr.hea": hea}, None),
                          ({"rec/00002_lr.hea": hea}, "/etc/passwd")):
        _one_line_error(_ask(url, [("files", ("r.tar", _archive(members, link=link)))]), 400)
    big = os.urandom(600 << 10)  # over the 512 KiB body limit
    assert "limit" in _one_line_error(_ask(url, [("files", ("00002_hr.dat", big))]), 413)["error"]
    # chunked (no Content-Length): refused as the body passes the limit
    boundary = "b0undary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="question"\r\n\r\n{QUESTION}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="x.dat"\r\n'
            f"\r\n").encode()

    def chunks() -> Iterator[bytes]:
        yield body
        for _ in range(12):
            yield b"\0" * (64 << 10)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = httpx.post(f"{url}/v1/answer", content=chunks(), timeout=30,
                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    _one_line_error(r, 413)
    bomb = io.BytesIO()  # 2 MiB of zeros in a few KB: over the 1 MiB extraction limit
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("00002_lr.hea", hea)
        z.writestr("00002_lr.dat", b"\0" * (2 << 20))
    _one_line_error(_ask(url, [("files", ("r.zip", bomb.getvalue()))]), 413)
    assert _ask(url, _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat")).status_code == 200


def test_record_longer_than_the_limit_is_refused(pipeline) -> None:
    with live_server(pipeline, max_record_s=5.0) as url:
        body = _one_line_error(_ask(url, _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat")), 413)
        assert "lasts 10 s" in body["error"]


def test_bearer_token(pipeline) -> None:
    with live_server(pipeline, token=TOKEN) as url:
        files = _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat")
        assert httpx.post(f"{url}/v1/answer", files=files, data={"question": QUESTION}).status_code == 401
        for header in ("Bearer wrong-token-of-24-chars", TOKEN, f"Basic {TOKEN}"):
            r = httpx.post(f"{url}/v1/answer", files=files, data={"question": QUESTION},
                           headers={"Authorization": header})
            assert _one_line_error(r, 401)["error_type"] == "AuthError"
        assert httpx.get(f"{url}/v1/bundle").status_code == 401
        assert httpx.get(f"{url}/healthz").status_code == 200  # probes stay open
        r = httpx.post(f"{url}/v1/answer", files=files, data={"question": QUESTION},
                       headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert r.status_code == 200, r.text
        assert DiagEcgClient(url, token=TOKEN).bundle()["limits"]["auth"] is True
    with pytest.raises(ValueError, match="at least"):
        ServeConfig(token="short")


class BlockingPipeline:
    """The real pipeline, whose answers wait for ``release`` (deterministic slow work)."""

    def __init__(self, pipe: DiagEcgPipeline) -> None:
        self._pipe = pipe
        self.started = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def answer(self, *args: Any, **kwargs: Any) -> Any:
        self.started.set()
        assert self.release.wait(20)
        return self._pipe.answer(*args, **kwargs)


def _ask_in_thread(url: str, results: list[httpx.Response]) -> threading.Thread:
    files = _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat")
    thread = threading.Thread(target=lambda: results.append(_ask(url, files)))
    thread.start()
    return thread


def test_full_queue_answers_503_with_retry_after(pipeline) -> None:
    slow = BlockingPipeline(pipeline)
    with live_server(slow, workers=1, queue_size=1) as url:
        results: list[httpx.Response] = []
        first = _ask_in_thread(url, results)
        assert slow.started.wait(20)
        second = _ask_in_thread(url, results)  # waits in the queue
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/readyz").json()["in_flight"] < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        r = _ask(url, _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat"))
        _one_line_error(r, 503)
        assert int(r.headers["retry-after"]) >= 1
        slow.release.set()
        first.join(30)
        second.join(30)
        assert [x.status_code for x in results] == [200, 200]
        assert _ask(url, _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat")).status_code == 200


def test_timeout_answers_504_and_the_slot_comes_back(pipeline) -> None:
    slow = BlockingPipeline(pipeline)
    with live_server(slow, workers=1, queue_size=0, request_timeout_s=0.3) as url:
        r = _ask(url, _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat"))
        assert "timeout" in _one_line_error(r, 504)["error"]
        files = _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat")
        _one_line_error(_ask(url, files), 503)  # the timed-out work still runs and holds the only slot
        slow.release.set()
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/readyz").json()["in_flight"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert _ask(url, _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat")).status_code == 200


def test_shutdown_finishes_the_request_in_flight(pipeline) -> None:
    slow = BlockingPipeline(pipeline)
    app = create_app(slow, ServeConfig(port=0))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    results: list[httpx.Response] = []
    client = _ask_in_thread(url, results)
    assert slow.started.wait(20)
    server.should_exit = True  # as SIGTERM does
    time.sleep(0.3)
    slow.release.set()
    client.join(30)
    thread.join(30)
    assert not thread.is_alive() and [r.status_code for r in results] == [200]


# --- the rest of the API ---------------------------------------------------------------------------------

def test_bundle_questions_schema_and_probes(server, pipeline) -> None:
    url, _ = server
    info = httpx.get(f"{url}/v1/bundle").json()
    assert info["bundle"] == pipeline.bundle_info and info["device"] == pipeline.device.to_dict()
    assert info["limits"]["max_upload_bytes"] == 512 << 10 and info["limits"]["allow_folder"] is True
    _one_line_error(httpx.get(f"{url}/v1/questions"), 404)  # the tiny bundle has no catalogue
    assert httpx.get(f"{url}/v1/schema").json()["$schema"].startswith("https://json-schema.org/")
    assert httpx.get(f"{url}/readyz").json()["ready"] is True


def test_openapi_document_is_checked_in(server) -> None:
    url, _ = server
    served = httpx.get(f"{url}/openapi.json").json()
    checked_in = json.loads((REPO / "docs" / "openapi.json").read_text())
    assert served == openapi_document() == checked_in, \
        "regenerate it: diagecg serve --openapi > docs/openapi.json"


def test_serve_command_refuses_a_remote_host_without_the_flag() -> None:
    from click.testing import CliRunner

    from diagecg.cli import main

    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--allow-remote" in result.output
    result = CliRunner().invoke(main, ["serve", "--openapi"])
    assert result.exit_code == 0 and json.loads(result.stdout) == openapi_document()
