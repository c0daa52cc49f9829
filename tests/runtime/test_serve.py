"""``diagecg serve`` over real HTTP: a uvicorn server on a free loopback port (in a thread) with the tiny
bundle, exercised with httpx and with the package's own urllib client. Answers must equal the pipeline's
(``pipeline.answer``) for every way a record can arrive; refusals are one-line errors with the right status
and the server keeps answering after them."""

from __future__ import annotations

import importlib.util
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
from diagecg.runtime.serve import build_server  # noqa: E402
from diagecg.runtime.serve_admission import ServeConfig  # noqa: E402
from diagecg.runtime.serve_app import create_app, openapi_document  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RECORDS = REPO / "tests" / "fixtures" / "records"
FORMATS = REPO / "tests" / "fixtures" / "formats"
QUESTION = "Is the rhythm regular?"
# how, not what, was answered
VOLATILE = ("record", "timings_ms", "ecg_cached", "n_reused_tokens", "request_id", "created_utc")
TOKEN = "s3cret-token-of-24-chars"
APPS: dict[str, Any] = {}  # base URL -> the app it serves


@contextmanager
def live_server(pipe: Any, **config: Any) -> Iterator[str]:
    """A real uvicorn server for ``create_app(pipe, ServeConfig(**config))``; yields its base URL."""
    cfg = ServeConfig(port=0, **config)
    app = create_app(pipe, cfg)
    server = build_server(app, cfg, log_level="warning")  # as `diagecg serve` runs it (read deadlines...)
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


def _public(bundle: dict[str, Any]) -> dict[str, Any]:
    """A bundle's info as the service shows it: its folder's name, never the server's path."""
    return {**bundle, "path": Path(bundle["path"]).name}


def _same(line: dict[str, Any], expected: dict[str, Any]) -> None:
    strip = lambda d: {k: v for k, v in d.items() if k not in VOLATILE}  # noqa: E731
    assert strip(line) == {**strip(expected), "bundle": _public(expected["bundle"])}


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
    with live_server(
        pipeline, allow_folder=allowed, max_upload_bytes=512 << 10, max_extracted_bytes=1 << 20
    ) as url:
        yield url, allowed


# --- answers equal the pipeline's ------------------------------------------------------------------------


def test_wfdb_upload_answers_as_the_pipeline(server, pipeline) -> None:
    url, _ = server
    hea = RECORDS / "00002_lr.hea"
    questions = [QUESTION, "Does this ECG show atrial fibrillation?"]
    r = _ask(url, _files(hea, RECORDS / "00002_lr.dat"), questions, age_years="63", sex="male")
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


@pytest.mark.parametrize(
    "path",
    [FORMATS / "dicom" / "waveform_ecg.dcm", FORMATS / "muse" / "muse-sinus.xml"],
    ids=["dicom", "muse"],
)
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
    assert client.bundle()["bundle"] == _public(pipeline.bundle_info) and client.ready()
    with pytest.raises(ServerError) as e:
        client.answer(RECORDS / "LICENSE.txt", QUESTION)
    assert e.value.status == 422 and "not an ECG format" in e.value.error
    if importlib.util.find_spec("matplotlib") is not None:
        assert client.plot(hea, QUESTION, image_format="pdf").startswith(b"%PDF")


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
    _one_line_error(
        _ask(
            url,
            _files(
                RECORDS / "00002_lr.hea",
                RECORDS / "00003_lr.hea",
                RECORDS / "00002_lr.dat",
                RECORDS / "00003_lr.dat",
            ),
        ),
        400,
    )  # two records
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
    for members, link in (
        ({"../00002_lr.hea": hea}, None),
        ({"/etc/00002_lr.hea": hea}, None),
        ({"rec/00002_lr.hea": hea}, "/etc/passwd"),
    ):
        _one_line_error(_ask(url, [("files", ("r.tar", _archive(members, link=link)))]), 400)
    big = os.urandom(600 << 10)  # over the 512 KiB body limit
    assert "limit" in _one_line_error(_ask(url, [("files", ("00002_hr.dat", big))]), 413)["error"]
    # chunked (no Content-Length): refused as the body passes the limit
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="question"\r\n\r\n{QUESTION}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="x.dat"\r\n'
        f"\r\n"
    ).encode()

    def chunks() -> Iterator[bytes]:
        yield body
        for _ in range(12):
            yield b"\0" * (64 << 10)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = httpx.post(
        f"{url}/v1/answer",
        content=chunks(),
        timeout=30,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
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
            r = httpx.post(
                f"{url}/v1/answer",
                files=files,
                data={"question": QUESTION},
                headers={"Authorization": header},
            )
            assert _one_line_error(r, 401)["error_type"] == "AuthError"
        assert httpx.get(f"{url}/v1/bundle").status_code == 401
        assert httpx.get(f"{url}/healthz").status_code == 200  # probes stay open
        r = httpx.post(
            f"{url}/v1/answer",
            files=files,
            data={"question": QUESTION},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
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
    assert info["bundle"] == _public(pipeline.bundle_info) and info["device"] == pipeline.device.to_dict()
    assert info["limits"]["max_upload_bytes"] == 512 << 10 and info["limits"]["allow_folder"] is True
    _one_line_error(httpx.get(f"{url}/v1/questions"), 404)  # the tiny bundle has no catalogue
    assert httpx.get(f"{url}/v1/schema").json()["$schema"].startswith("https://json-schema.org/")
    assert httpx.get(f"{url}/readyz").json()["ready"] is True


def test_openapi_document_is_checked_in(server) -> None:
    url, _ = server
    served = httpx.get(f"{url}/openapi.json").json()
    checked_in = json.loads((REPO / "docs" / "openapi.json").read_text())
    assert served == openapi_document() == checked_in, (
        "regenerate it: diagecg serve --openapi > docs/openapi.json"
    )


def test_serve_options_default_to_the_serve_config_fields(tmp_path: Path) -> None:
    """The command's options take their defaults from ServeConfig (declared once) and reach it by field."""
    import dataclasses

    from diagecg.runtime.serve import serve

    fields = {f.name for f in dataclasses.fields(ServeConfig)}
    parsed = serve.make_context("serve", []).params
    assert ServeConfig(**{k: v for k, v in parsed.items() if k in fields}) == ServeConfig()
    parsed = serve.make_context(
        "serve",
        ["--max-upload-mb", "0.5", "--allow-folder", str(tmp_path), "--timeout", "3", "--read-timeout", "4"],
    ).params
    config = ServeConfig(**{k: v for k, v in parsed.items() if k in fields})
    assert (config.max_upload_bytes, config.allow_folder) == (512 << 10, tmp_path)
    assert (config.request_timeout_s, config.read_timeout_s) == (3.0, 4.0)


def test_serve_command_refuses_a_remote_host_without_the_flag() -> None:
    from click.testing import CliRunner

    from diagecg.cli import main

    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--allow-remote" in result.output
    result = CliRunner().invoke(main, ["serve", "--openapi"])
    assert result.exit_code == 0 and json.loads(result.stdout) == openapi_document()


# --- cheap attacks on the service (issue 23) -------------------------------------------------------------


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _raw(url: str, data: bytes) -> Any:
    import socket

    sock = socket.create_connection(("127.0.0.1", _port(url)), timeout=30)
    sock.sendall(data)
    return sock


def _read_all(sock: Any) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


HEADERS_ONLY = (
    b"POST /v1/answer HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    b"Content-Length: 100000\r\n\r\n"
)


def test_idle_clients_get_408_and_never_hold_the_slots(pipeline) -> None:
    """Ten connections that send headers and nothing more (and ten that trickle their headers a byte at a
    time) held every worker slot past --timeout; now a slot is taken only once a body is in, and each
    connection has the read timeout for its headers and then for its body."""
    with live_server(pipeline, workers=1, queue_size=0, read_timeout_s=1.0) as url:
        idle = [_raw(url, HEADERS_ONLY) for _ in range(10)]
        trickling = [_raw(url, b"POST /v1/answer HTTP/1.1\r\n") for _ in range(10)]
        t = time.monotonic()
        ok = _ask(url, _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat"))
        assert ok.status_code == 200, ok.text  # the only slot was free all along
        for _ in range(4):  # a header byte every 0.4 s: never completes, never extends the deadline
            time.sleep(0.4)
            for sock in trickling:
                try:
                    sock.sendall(b"X")
                except OSError:
                    pass
        for sock in idle + trickling:
            reply = _read_all(sock)  # the server closes each one
            assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
            assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error_type"] == "RequestTimeout"
            sock.close()
        assert time.monotonic() - t < 10
        assert httpx.get(f"{url}/readyz").json()["in_flight"] == 0


def _bz2_tar_with_a_skipped_bomb(n_zeros: int) -> bytes:
    """A .tar.bz2 whose first member is a dot file of zeros (skipped by staging) and then a record."""

    class Zeros(io.RawIOBase):
        def __init__(self, n: int) -> None:
            self.left = n

        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            k = min(len(b), self.left)
            b[:k] = bytes(k)
            self.left -= k
            return k

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:bz2") as t:
        info = tarfile.TarInfo(".zeros")
        info.size = n_zeros
        t.addfile(info, io.BufferedReader(Zeros(n_zeros)))
        for p in (RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat"):
            t.add(p, arcname=p.name)
    return buf.getvalue()


def test_every_decompressed_byte_counts_skipped_members_too(server) -> None:
    url, _ = server  # max_extracted_bytes: 1 MiB
    bomb = _bz2_tar_with_a_skipped_bomb(8 << 20)
    assert len(bomb) < 20_000
    t = time.monotonic()
    body = _one_line_error(_ask(url, [("files", ("r.tar.bz2", bomb))]), 413)
    assert "skipped members included" in body["error"] and time.monotonic() - t < 10
    small = _bz2_tar_with_a_skipped_bomb(1000)  # a small skipped member is fine
    assert _ask(url, [("files", ("r.tar.bz2", small))]).status_code == 200


def test_staging_runs_under_the_request_timeout(pipeline, tmp_path) -> None:
    from diagecg.runtime.uploads import UploadTimeoutError, stage_upload

    with pytest.raises(UploadTimeoutError, match="timeout"):  # the deadline is checked at every chunk
        stage_upload(
            [("r.tar.bz2", io.BytesIO(_bz2_tar_with_a_skipped_bomb(4 << 20)))],
            tmp_path / "s",
            max_bytes=64 << 20,
            max_files=8,
            deadline=time.monotonic() - 1,
        )
    assert not (tmp_path / "s").exists()
    bomb = _bz2_tar_with_a_skipped_bomb(300 << 20)  # a few hundred bytes; over a second to inflate
    with live_server(pipeline, request_timeout_s=0.2, max_extracted_bytes=1 << 30) as url:
        t0 = time.monotonic()
        body = _one_line_error(_ask(url, [("files", ("r.tar.bz2", bomb))]), 504)
        assert "timeout" in body["error"] and time.monotonic() - t0 < 10
        deadline = time.monotonic() + 10  # the staging thread stops at the same deadline: its slot returns
        while httpx.get(f"{url}/readyz").json()["in_flight"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_damaged_archives_and_long_paths_are_json_errors(server) -> None:
    url, _ = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("00002_lr.hea", (RECORDS / "00002_lr.hea").read_bytes())
        z.writestr("00002_lr.dat", (RECORDS / "00002_lr.dat").read_bytes())
    data = bytearray(buf.getvalue())
    start = data.index(b"00002_lr.dat") + len("00002_lr.dat")  # inside the second member's deflate stream
    data[start + 10 : start + 40] = b"\xff" * 30
    body = _one_line_error(_ask(url, [("files", ("r.zip", bytes(data)))]), 400)
    assert "cannot be extracted" in body["error"]
    body = _one_line_error(_ask(url, path="x" * 300 + ".hea"), 400)
    assert "not a usable path" in body["error"]
    assert _ask(url, _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat")).status_code == 200


def test_an_unexpected_failure_is_the_json_error_not_a_bare_500(pipeline, monkeypatch) -> None:
    from diagecg.runtime import serve_service

    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError("a bug")

    with live_server(pipeline) as url:
        monkeypatch.setattr(serve_service, "PatientInfo", broken)  # fails before staging, inside the route
        body = _one_line_error(_ask(url, _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat")), 500)
        assert body["error_type"] == "KeyError"
        monkeypatch.setattr(serve_service.Service, "describe", broken)  # a GET route's own failure
        r = httpx.get(f"{url}/v1/bundle")
        assert r.status_code == 500 and r.json()["error_type"] == "KeyError"
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}


def test_a_nan_model_is_a_500_json_error(bundle_copy: Path, record_paths: list[Path]) -> None:
    from test_model_faults import _poison_tensor, _rehash

    _poison_tensor(bundle_copy / "llm-q8_0.gguf", "output_norm.weight")
    _rehash(bundle_copy, "llm-q8_0.gguf")
    with DiagEcgPipeline.from_bundle(bundle_copy, device="cpu", threads=1) as pipe, live_server(pipe) as url:
        r = _ask(url, _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat"))
        assert r.status_code == 500 and r.headers["content-type"] == "application/json"
        body = json.loads(r.text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
        assert body["error_type"] == "InferenceError" and "non-finite" in body["error"]


def test_sigterm_drains_then_exits_0(tiny_bundle: Path, tmp_path: Path) -> None:
    import signal
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "diagecg.cli",
            "serve",
            "--bundle",
            str(tiny_bundle),
            "--port",
            str(port),
            "--device",
            "cpu",
            "--threads",
            "1",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        # a request that takes a while to stage (skipped members of zeros), with the record at the end
        gz = io.BytesIO()
        with tarfile.open(fileobj=gz, mode="w:gz", compresslevel=1) as t:
            for k in range(4):
                info = tarfile.TarInfo(f".zeros{k}")
                info.size = 40 << 20
                t.addfile(info, io.BytesIO(bytes(info.size)))
            for p in (RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat"):
                t.add(p, arcname=p.name)
        results: list[httpx.Response] = []
        client = threading.Thread(
            target=lambda: results.append(_ask(url, [("files", ("r.tar.gz", gz.getvalue()))]))
        )
        client.start()
        while not results and httpx.get(f"{url}/readyz").json()["in_flight"] == 0:
            time.sleep(0.01)  # its body is in: it holds a slot
        proc.send_signal(signal.SIGTERM)
        client.join(60)
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
        assert [r.status_code for r in results] == [200]  # finished before the server stopped
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_body_that_completes_when_the_slots_are_full_gets_503_at_once(pipeline) -> None:
    """The slot is taken when the body is in; if none is free then, the 503 goes out at once (it waited
    for the client to hang up: the bench's queue-full run stalled on it)."""
    slow = BlockingPipeline(pipeline)
    hea, dat = (RECORDS / "00002_lr.hea").read_bytes(), (RECORDS / "00002_lr.dat").read_bytes()
    part = 'Content-Disposition: form-data; name="files"; filename="{}"\r\n\r\n'
    body = (
        b'--b\r\nContent-Disposition: form-data; name="question"\r\n\r\n'
        + QUESTION.encode()
        + b"\r\n"
        + b"--b\r\n"
        + part.format("00002_lr.hea").encode()
        + hea
        + b"\r\n--b\r\n"
        + part.format("00002_lr.dat").encode()
        + dat
        + b"\r\n--b--\r\n"
    )
    head = (
        b"POST /v1/answer HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    with live_server(slow, workers=1, queue_size=0) as url:
        sock = _raw(url, head + body[:100])  # admitted: the only slot is free
        results: list[httpx.Response] = []
        holder = _ask_in_thread(url, results)  # takes the slot and holds it
        assert slow.started.wait(20)
        t = time.monotonic()
        sock.sendall(body[100:])
        sock.settimeout(10)
        reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 503") and time.monotonic() - t < 5, reply[:200]
        assert b"retry-after" in reply.lower()
        sock.close()
        slow.release.set()
        holder.join(30)
        assert [r.status_code for r in results] == [200]


def test_audit_log_has_one_whole_line_per_answer_under_16_clients(tiny_bundle: Path, tmp_path: Path) -> None:
    from diagecg.runtime.outputs import AuditLog, record_sha256

    audit = tmp_path / "audit.jsonl"
    with (
        DiagEcgPipeline.from_bundle(tiny_bundle, device="cpu", threads=1, audit_log=audit) as pipe,
        live_server(pipe, workers=4, queue_size=32) as url,
    ):
        results: list[httpx.Response] = []
        threads = [_ask_in_thread(url, results) for _ in range(16)]
        for t in threads:
            t.join(timeout=120)
        assert len(results) == 16 and all(r.status_code == 200 for r in results), [r.text for r in results]
    assert isinstance(pipe.audit, AuditLog)
    lines = [json.loads(x) for x in audit.read_text().splitlines()]  # every line parses whole
    assert len(lines) == 16
    assert {x["request_id"] for x in lines} == {r.json()[0]["request_id"] for r in results}
    assert {x["client"] for x in lines} == {"127.0.0.1"}
    digest = record_sha256(RECORDS / "00002_lr.hea")
    assert {x["record_sha256"] for x in lines} == {digest}  # the uploaded files' hash, as on disk


def test_unknown_routes_share_the_error_envelope_and_no_server_path_leaks(server, pipeline) -> None:
    url, _ = server
    for r, status in (
        (httpx.get(f"{url}/v2/nothing", timeout=10), 404),
        (httpx.get(f"{url}/v1/answer", timeout=10), 405),
    ):
        assert r.status_code == status
        assert set(r.json()) == {"error", "error_type"}
        assert r.json()["error_type"] in ("NotFound", "MethodNotAllowed")
    ok = _ask(url, _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat"))
    assert ok.status_code == 200
    root = str(pipeline.bundle.root)
    assert root not in ok.text and root not in httpx.get(f"{url}/v1/bundle", timeout=10).text
    assert ok.json()[0]["bundle"]["path"] == pipeline.bundle.root.name


def test_metrics_count_answers_refusals_and_latency(pipeline) -> None:
    with live_server(pipeline, token=TOKEN) as url:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        files = _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat")
        form = {"question": [QUESTION]}
        ok = httpx.post(f"{url}/v1/answer", files=files, data=form, headers=auth, timeout=60)
        assert ok.status_code == 200
        assert httpx.post(f"{url}/v1/answer", files=files, data=form, timeout=60).status_code == 401
        assert httpx.get(f"{url}/nowhere", timeout=10).status_code == 404
        text = httpx.get(f"{url}/metrics", timeout=10).text
    lines = set(text.splitlines())
    assert 'diagecg_requests_total{route="/v1/answer",method="POST",status="200"} 1' in lines
    assert 'diagecg_requests_total{route="/v1/answer",method="POST",status="401"} 1' in lines
    assert 'diagecg_requests_total{route="other",method="GET",status="404"} 1' in lines
    assert 'diagecg_rejections_total{reason="auth"} 1' in lines
    assert 'diagecg_request_duration_seconds_count{route="/v1/answer"} 2' in lines
    assert 'diagecg_request_duration_seconds_bucket{route="/v1/answer",le="+Inf"} 2' in lines
    assert "diagecg_slots_in_use 0" in lines and any(x.startswith("diagecg_slots_capacity ") for x in lines)
    assert "diagecg_queue_depth 0" in lines


def test_access_log_has_one_line_per_request_refusals_included(pipeline, caplog) -> None:
    import logging

    from diagecg.runtime.serve_admission import ACCESS_LOGGER

    files = _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat")
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        with live_server(pipeline, token=TOKEN, access_log=True) as url:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            ok = httpx.post(
                f"{url}/v1/answer", files=files, data={"question": [QUESTION]}, headers=auth, timeout=60
            )
            assert ok.status_code == 200
            assert httpx.get(f"{url}/v1/bundle", timeout=10).status_code == 401
            assert httpx.get(f"{url}/healthz?secret=x", timeout=10).status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(lines) == 3, lines
    assert lines[0].startswith('127.0.0.1 "POST /v1/answer" 200 ') and lines[0].endswith(" ms")
    assert lines[1].startswith('127.0.0.1 "GET /v1/bundle" 401 ')
    assert lines[2].startswith('127.0.0.1 "GET /healthz" 200 ')  # no query string
    assert not any(TOKEN in line or "00002" in line for line in lines)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        with live_server(pipeline) as url:  # off unless asked
            httpx.get(f"{url}/healthz", timeout=10)
    assert not [r for r in caplog.records if r.name == ACCESS_LOGGER]


def test_openapi_document_is_valid_and_types_the_answers() -> None:
    from openapi_spec_validator import validate

    from diagecg.runtime.serve_app import openapi_document

    doc = openapi_document()
    validate(doc)  # a valid OpenAPI 3.1 document, as client generators read it
    answer = doc["paths"]["/v1/answer"]["post"]
    assert answer["responses"]["200"]["content"]["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/Answer"
    }
    assert doc["components"]["schemas"]["Answer"]["properties"]["request_id"]["type"] == "string"
    bearer = doc["components"]["securitySchemes"]["bearer"]
    assert bearer["type"] == "http" and bearer["scheme"] == "bearer"
    assert {"bearer": []} in answer["security"]


def test_openapi_30_rendering_is_valid_and_keeps_every_route(server) -> None:
    from openapi_spec_validator import OpenAPIV30SpecValidator

    url, _ = server
    doc = openapi_document("3.0")
    OpenAPIV30SpecValidator(doc).validate()  # what 3.0-only generators (NSwag, swagger-codegen 2) read
    assert doc["openapi"] == "3.0.3" and doc["paths"].keys() == openapi_document()["paths"].keys()
    text = json.dumps(doc)
    for only_31 in ('"const"', '"null"', '"contentMediaType"', '"examples"'):
        assert only_31 not in text, only_31
    answer = doc["components"]["schemas"]["Answer"]
    assert answer["properties"]["confidence"].get("nullable") is True  # was type: [number, null]
    upload = doc["components"]["schemas"]["Body_answer_v1_answer_post"]["properties"]["files"]
    assert upload["items"] == {"type": "string", "format": "binary"} and upload["nullable"] is True
    assert httpx.get(f"{url}/openapi-3.0.json").json() == doc
    assert doc == json.loads((REPO / "docs" / "openapi-3.0.json").read_text()), (
        "regenerate it: diagecg serve --openapi 3.0 > docs/openapi-3.0.json"
    )


def test_openapi_30_refuses_what_it_cannot_say() -> None:
    from diagecg.runtime.openapi import openapi_30

    tuple_schema = {"type": "array", "prefixItems": [{"type": "number"}]}
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {},
        "components": {"schemas": {"Pair": tuple_schema}},
    }
    with pytest.raises(ValueError, match=r"components.schemas.Pair: 'prefixItems'"):
        openapi_30(doc)
    ranged = openapi_30({**doc, "components": {"schemas": {"P": {"type": "number", "exclusiveMinimum": 0}}}})
    assert ranged["components"]["schemas"]["P"] == {"type": "number", "minimum": 0, "exclusiveMinimum": True}


# --- JSON bodies and pictures (issue 25) -----------------------------------------------------------------


def _b64(*paths: Path) -> list[dict[str, str]]:
    import base64

    return [{"name": p.name, "content_base64": base64.b64encode(p.read_bytes()).decode()} for p in paths]


def test_json_body_answers_as_the_multipart_upload(server) -> None:
    url, _ = server
    record = (RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat")
    questions = [QUESTION, "Does this ECG show atrial fibrillation?"]
    body = {"files": _b64(*record), "questions": questions, "age_years": 63, "sex": "male", "format": "wfdb"}
    r = httpx.post(f"{url}/v1/json/answer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    multipart = _ask(url, _files(*record), questions, age_years="63", sex="male").json()
    for line, expected in zip(r.json(), multipart, strict=True):
        _same(line, {**expected, "bundle": _b64_bundle(expected)})
    report = httpx.post(f"{url}/v1/json/report", json={"files": _b64(*record)}, timeout=30)
    assert report.status_code == 200 and report.json()["task"] == "report", report.text


def _b64_bundle(line: dict[str, Any]) -> dict[str, Any]:
    return {**line["bundle"], "path": "/x/" + line["bundle"]["path"]}  # _same compares by folder name


@pytest.mark.parametrize(
    "change, status, says",
    [
        ({"files": [{"name": "00002_lr.hea", "content_base64": "not base64!"}]}, 400, "not base64"),
        ({"format": "dicom"}, 400, "'format' says dicom, but the content is wfdb"),
        ({"format": "jpeg"}, 400, "format 'jpeg' is not one of"),
        ({"files": [{"name": "my record.hea", "content_base64": ""}]}, 400, "is not accepted"),
        ({"questions": []}, 400, "at least one question"),
        ({"record": "x"}, 422, "record: Extra inputs are not permitted"),
        ({"files": []}, 422, "files: List should have at least 1 item"),
    ],
)
def test_json_body_errors_are_one_line(server, change: dict[str, Any], status: int, says: str) -> None:
    url, _ = server
    body = {
        "files": _b64(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat"),
        "questions": [QUESTION],
        **change,
    }
    r = httpx.post(f"{url}/v1/json/answer", json=body, timeout=30)
    assert says in _one_line_error(r, status)["error"]
    assert _ask(url, _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat")).status_code == 200


def test_plot_route_draws_the_record_with_its_answers(server, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    url, _ = server
    files = _files(RECORDS / "00002_lr.hea", RECORDS / "00002_lr.dat")
    r = httpx.post(f"{url}/v1/plot", files=files, data={"question": [QUESTION]}, timeout=60)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    assert r.content.startswith(b"\x89PNG\r\n\x1a\n") and len(r.content) > 50_000
    svg = httpx.post(f"{url}/v1/plot", files=files, data={"image_format": "svg"}, timeout=60)
    assert svg.headers["content-type"] == "image/svg+xml" and b"<svg" in svg.content[:400]
    assert QUESTION.encode() not in svg.content  # no question asked: no answer text on the picture
    asked = httpx.post(
        f"{url}/v1/plot", files=files, data={"question": [QUESTION], "image_format": "svg"}, timeout=60
    )
    assert asked.status_code == 200 and len(asked.content) > len(svg.content)
    bad = httpx.post(f"{url}/v1/plot", files=files, data={"image_format": "gif"}, timeout=60)
    assert "image_format 'gif' is not one of png, svg, pdf" in _one_line_error(bad, 400)["error"]


def test_java_client_example_answers_through_the_json_route(server, pipeline, tmp_path: Path) -> None:
    """The README's Java example (examples/clients/DiagEcg.java), run as a single-file program."""
    import shutil
    import subprocess

    java = shutil.which("java")
    if java is None:
        pytest.skip("no Java runtime on this machine")
    url, _ = server
    hea = RECORDS / "00002_lr.hea"
    run = subprocess.run(
        [
            java,
            str(REPO / "examples" / "clients" / "DiagEcg.java"),
            url,
            QUESTION,
            str(hea),
            str(RECORDS / "00002_lr.dat"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DIAGECG_TOKEN": ""},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (line,) = json.loads(run.stdout)
    _same(line, pipeline.answer(hea, QUESTION).to_dict())
    refused = subprocess.run(
        [java, str(REPO / "examples" / "clients" / "DiagEcg.java"), url, "", str(hea)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1 and json.loads(refused.stdout)["error_type"]
