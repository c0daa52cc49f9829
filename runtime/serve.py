"""``diagecg serve``: the runtime as a local HTTP service, for desktop software not written in Python.

One process loads one pipeline (``DiagEcgPipeline``) and answers over HTTP on FastAPI + uvicorn (the
``serve`` extra: ``pip install 'diagecg[serve]'``). The routes and their JSON are in
``diagecg.runtime.serve_app`` and in ``docs/openapi.json``; what decides *whether* a request runs (the
configuration, the bearer token, the admission gate) is in ``diagecg.runtime.serve_admission``. This
module holds the command, whose options are declared once (``SERVE_CONFIG_OPTIONS``: each default is the
``ServeConfig`` field's), and the server's start and stop.

Safe by default:

* it binds to 127.0.0.1; any other host needs ``--allow-remote`` and warns (and warns again without a token);
* ``--token-file`` turns on bearer auth for ``/v1/*`` (the token is never a command-line argument, where
  ``ps`` would show it); tokens are compared with ``hmac.compare_digest``;
* a request body over ``max_upload_bytes`` is refused with 413 (from ``Content-Length`` before anything is
  read, or as soon as a chunked body passes the limit), and so is a record longer than ``max_record_s``;
* every connection has ``read_timeout_s`` to send a request's headers (counted from when it opened, or from
  the end of its previous response; bytes trickling in do not extend it) and then as long for the body:
  past either, it gets 408 and is closed, so idle or trickling clients cannot hold sockets or slots;
* work runs on ``workers`` threads; at most ``workers + queue_size`` requests are admitted at once and the
  next one gets 503 with ``Retry-After`` at once, before its body is read, instead of a growing queue; a
  request takes its slot only once its body has arrived;
* a request waits at most ``request_timeout_s`` for its answer, staging the upload included (then 504;
  work that has not started is dropped, work that has keeps its slot until it ends, so the bound holds);
* on SIGINT/SIGTERM uvicorn stops accepting, finishes the requests in flight (up to the timeout), and
  then the pipeline is closed; SIGTERM then exits with status 0 (a service manager's normal stop).

Only the standard library and click are imported at module level, so the runtime imports without the
``serve`` extra (``tests/test_import_boundaries.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from diagecg.cli_options import EXIT_CODES_HELP, ExitCode, fail, verbosity_options
from diagecg.constants import DEFAULT_BUNDLE_DIR
from diagecg.errors import DiagEcgError
from diagecg.runtime.device import DEVICES, MAX_THREADS
from diagecg.runtime.serve_admission import (
    ACCESS_LOGGER,
    JobGate,
    ServeConfig,
    error_body,
    is_loopback,
    read_token_file,
)

if TYPE_CHECKING:
    from diagecg.runtime.pipeline import DiagEcgPipeline

logger = logging.getLogger(__name__)

SERVE_EXTRA = ("fastapi", "uvicorn", "multipart")  # python-multipart installs the module `multipart`


def missing_serve_extra() -> list[str]:
    """The modules of the ``serve`` extra that are not installed."""
    import importlib.util

    return [m for m in SERVE_EXTRA if importlib.util.find_spec(m) is None]


def deadline_protocol(read_timeout_s: float) -> type:
    """uvicorn's h11 protocol with a header deadline: a connection has ``read_timeout_s`` from when it opens
    (or its previous response ends) to complete a request's headers; bytes trickling in do not extend it
    (uvicorn's keep-alive timer restarts on every byte, and nothing times out a connection's first
    request). Past it the client gets 408 with the JSON error and the connection is closed."""
    import json

    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    body = json.dumps(
        error_body(
            f"the request headers did not arrive within {read_timeout_s:g} s (the server's read timeout)",
            "RequestTimeout",
        )
    ).encode()
    timeout_response = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close"
        b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )

    class DeadlineH11Protocol(H11Protocol):  # type: ignore[misc]
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(read_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and not self.transport.is_closing():
                if self.conn.our_state in (h11.IDLE, h11.DONE):
                    self.transport.write(timeout_response)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle and self.cycle is not None:  # a request's headers are complete
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers get the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return DeadlineH11Protocol


def build_server(app: Any, config: ServeConfig, *, log_level: str = "info") -> Any:
    """The uvicorn server ``diagecg serve`` runs (read deadlines, graceful shutdown, SIGTERM exits 0); its
    ``run()`` blocks until SIGINT/SIGTERM or ``should_exit``."""
    import signal

    import uvicorn

    gate: JobGate | None = getattr(getattr(app, "state", None), "service", None) and app.state.service.gate

    class Server(uvicorn.Server):  # type: ignore[misc]
        def handle_exit(self, sig: int, frame: Any) -> None:
            if gate is not None:
                gate.draining = True  # new work gets 503 "shutting down" while the rest drains
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM and sig in self._captured_signals:
                # drained and stopped as asked: exit 0, not re-raise SIGTERM after shutdown (exit 143)
                self._captured_signals.remove(sig)

    uv = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=log_level,
        access_log=False,
        http=deadline_protocol(config.read_timeout_s),
        timeout_keep_alive=5,
        timeout_graceful_shutdown=math.ceil(config.request_timeout_s) + 5,
        # connections beyond this get uvicorn's bare 503: a bound on sockets, not on work
        limit_concurrency=max(64, 4 * config.capacity),
    )
    return Server(uv)


def run_server(pipeline: DiagEcgPipeline, config: ServeConfig, *, log_level: str = "info") -> None:
    """Serve ``pipeline`` until SIGINT/SIGTERM (blocks); requests in flight are finished first."""
    from diagecg.runtime.serve_app import create_app

    build_server(create_app(pipeline, config), config, log_level=log_level).run()


_MIB = 1 << 20

# The options of ``diagecg serve`` that set a ServeConfig field: flag -> (field, click keywords). Each
# option's default is its field's (declared once, in ServeConfig, for the command and the Python API
# alike), and the command hands the values to ServeConfig by field name. --max-upload-mb is the one
# option in other units than its field: MiB on the command line, bytes in the config.
SERVE_CONFIG_OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "--host": ("host", {"help": "Address to listen on; anything but loopback needs --allow-remote."}),
    "--port": ("port", {"type": click.IntRange(0, 65535)}),
    "--allow-remote": (
        "allow_remote",
        {
            "is_flag": True,
            "help": "Allow a non-loopback --host (the records then travel over the network: use --token-file "
            "and a TLS proxy).",
        },
    ),
    "--workers": (
        "workers",
        {
            "type": click.IntRange(1, 64),
            "help": "Threads that answer (generation runs one at a time; reading and ECG tokens in "
            "parallel).",
        },
    ),
    "--queue-size": (
        "queue_size",
        {
            "type": click.IntRange(0, 4096),
            "help": "Requests that may wait for a worker; beyond them the server answers 503 + Retry-After.",
        },
    ),
    "--timeout": (
        "request_timeout_s",
        {
            "type": click.FloatRange(min=0.1),
            "metavar": "SECONDS",
            "help": "Longest wait for one answer (then 504).",
        },
    ),
    "--max-upload-mb": (
        "max_upload_bytes",
        {
            "type": click.FloatRange(min=0.01),
            "help": "Largest request body (then 413).",
            "default": ServeConfig.max_upload_bytes / _MIB,
            "callback": lambda _ctx, _param, mb: int(mb * _MIB),
        },
    ),
    "--max-record-s": (
        "max_record_s",
        {"type": click.FloatRange(min=1.0), "help": "Longest record answered, in seconds (then 413)."},
    ),
    "--read-timeout": (
        "read_timeout_s",
        {
            "type": click.FloatRange(min=0.1),
            "metavar": "SECONDS",
            "help": "Longest a connection may take to send a request's headers, and then its body "
            "(then 408).",
        },
    ),
    "--allow-folder": (
        "allow_folder",
        {
            "type": click.Path(file_okay=False, exists=True),
            "help": "Also accept records named by a path inside this folder (symlinks resolved; others 403).",
            "callback": lambda _ctx, _param, folder: Path(folder) if folder else None,
        },
    ),
}


def serve_config_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``SERVE_CONFIG_OPTIONS`` to a click command, in that order; it receives each value under its
    ServeConfig field's name."""
    defaults = {field.name: field.default for field in dataclasses.fields(ServeConfig)}
    for flag, (field, keywords) in reversed(SERVE_CONFIG_OPTIONS.items()):
        fn = click.option(flag, field, **{"default": defaults[field], "show_default": True, **keywords})(fn)
    return fn


@click.command(epilog=EXIT_CODES_HELP)
@verbosity_options()
@click.option(
    "--bundle",
    type=click.Path(file_okay=False),
    help=f"Bundle folder (default: the shipped <diagecg>/{DEFAULT_BUNDLE_DIR}).",
)
@click.option("--quant", help="Which of the bundle's GGUF files (default: the bundle's own).")
@serve_config_options
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, exists=True),
    help="File holding a bearer token that /v1/* then requires (never on the command line).",
)
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), help="CPU threads of the engines.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--allow-degraded", is_flag=True, help="Answer records with some flat leads, with a warning.")
@click.option(
    "--audit-log",
    metavar="FILE",
    help="Append one JSON line per answer and failure to FILE (client address, record SHA-256, "
    "question, answer, probabilities, warning codes, bundle hash, latency; no signal data).",
)
@click.option(
    "--access-log",
    is_flag=True,
    help="Print one line per HTTP request on stderr (time, client, method, path, status, "
    "latency; refusals included; no record data), even with --quiet.",
)
@click.option(
    "--openapi",
    "print_openapi",
    is_flag=False,
    flag_value="3.1",
    type=click.Choice(["3.1", "3.0"]),
    help="Print the OpenAPI document (3.1: docs/openapi.json; --openapi 3.0: "
    "docs/openapi-3.0.json) and exit; loads no bundle.",
)
def serve(
    bundle: str | None,
    quant: str | None,
    token_file: str | None,
    threads: int | None,
    device: str,
    allow_degraded: bool,
    audit_log: str | None,
    access_log: bool,
    print_openapi: str | None,
    quiet: bool,
    **config_fields: Any,
) -> None:
    """Answer questions and write reports over HTTP on this machine (pip install 'diagecg[serve]').

    Routes: POST /v1/answer, /v1/report, /v1/plot, /v1/json/answer, /v1/json/report; GET /v1/questions,
    /v1/bundle, /v1/schema, /healthz, /readyz, /metrics, /openapi.json (/openapi-3.0.json). Stop it with
    Ctrl-C or SIGTERM: requests in flight are finished first."""
    missing = missing_serve_extra()
    if missing:
        fail(
            ImportError(f"diagecg serve needs {', '.join(missing)}: pip install 'diagecg[serve]'"),
            ExitCode.USAGE,
        )
        return
    if print_openapi is not None:
        import json

        from diagecg.runtime.serve_app import openapi_document

        click.echo(json.dumps(openapi_document(print_openapi), indent=2, sort_keys=True))
        return
    from diagecg.runtime.commands import resolve_bundle
    from diagecg.runtime.pipeline import DiagEcgPipeline

    try:
        config = ServeConfig(
            **config_fields, token=read_token_file(token_file) if token_file else None, access_log=access_log
        )
        if not is_loopback(config.host):
            click.echo(
                f"warning: listening on {config.host}: other machines can send records to this server"
                + ("" if config.token else " and no --token-file is set"),
                err=True,
            )
        pipe = DiagEcgPipeline.from_bundle(
            resolve_bundle(bundle),
            quant=quant,
            device=device,
            threads=threads,
            allow_degraded=allow_degraded,
            audit_log=audit_log,
        )
    except (DiagEcgError, ValueError, OSError) as e:
        fail(e, ExitCode.USAGE)
        return
    try:
        if not quiet:
            click.echo(
                f"diagecg serve: http://{config.host}:{config.port} ({pipe.bundle.root.name}, "
                f"{pipe.quant}, {config.workers} workers, queue {config.queue_size}"
                f"{', token required' if config.token else ''})",
                err=True,
            )
        if access_log:  # the command, not the library, decides where log lines go
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            access = logging.getLogger(ACCESS_LOGGER)
            access.addHandler(handler)
            access.setLevel(logging.INFO)
            access.propagate = False
        run_server(pipe, config, log_level="error" if quiet else "info")
    finally:
        pipe.close()
