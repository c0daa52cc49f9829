"""What decides whether a ``diagecg serve`` request runs: the server's configuration (``ServeConfig``),
the bearer token, the admission gate (``JobGate``) and the ASGI middleware in front of the routes
(``AdmissionMiddleware``: auth, then body size and read deadline, then a worker slot).

``diagecg.runtime.serve`` (the command and the server's start and stop) and ``diagecg.runtime.serve_app``
(the routes) both build on this module and neither imports the other at module level: the app never
needs the command. Only the standard library is imported here, so the runtime imports without the
``serve`` extra (``tests/test_import_boundaries.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import ipaddress
import logging
import math
import stat
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diagecg.errors import InputError

ACCESS_LOGGER = "diagecg.access"  # serve --access-log: one line per HTTP request

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# the service's log lines keep one name, whichever of its modules writes them
logger = logging.getLogger("diagecg.runtime.serve")

# the routes that take a worker slot
WORK_PATHS = ("/v1/answer", "/v1/report", "/v1/plot", "/v1/json/answer", "/v1/json/report")
AUTH_PREFIX = "/v1/"  # health, readiness and the OpenAPI document stay open
MIN_TOKEN_CHARS = 16
_DRAIN_BYTES = 16 << 20  # read and drop this much of a refused body, so the client sees the answer


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """How ``diagecg serve`` listens and what it admits (checked when built).

    Args:
        host: address to bind; loopback unless ``allow_remote``.
        port: TCP port (0: any free one).
        workers: threads that run answers (generation itself runs one at a time: llama.cpp is locked).
        queue_size: admitted requests beyond ``workers`` that wait for a thread; more get 503.
        request_timeout_s: the longest a request waits for its answer (then 504).
        max_upload_bytes: the largest request body.
        max_extracted_bytes: the most an upload may write to disk (archives after extraction).
        max_files: files per upload (archive members included).
        max_record_s: the longest record answered, in seconds (then 413).
        read_timeout_s: how long a connection may take to send a request's headers, and then its body
            (then 408 and the connection is closed).
        allow_folder: the one folder whose records may be named by path; None = uploads only.
        token: the bearer token ``/v1/*`` requires; None = no auth.
        allow_remote: let ``host`` be a non-loopback address.
        access_log: one line per HTTP request on the ``diagecg.access`` logger (``ACCESS_LOGGER``).
    """

    host: str = "127.0.0.1"
    port: int = 8765
    workers: int = 2
    queue_size: int = 8
    request_timeout_s: float = 120.0
    max_upload_bytes: int = 64 << 20
    max_extracted_bytes: int = 256 << 20
    max_files: int = 32
    max_record_s: float = 600.0
    read_timeout_s: float = 30.0
    allow_folder: Path | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    allow_remote: bool = False
    access_log: bool = False

    def __post_init__(self) -> None:
        for name in ("workers", "max_files"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServeConfig.{name}={getattr(self, name)} is invalid: must be >= 1")
        for name in ("max_upload_bytes", "max_extracted_bytes"):
            if getattr(self, name) < 1024:
                raise ValueError(f"ServeConfig.{name}={getattr(self, name)} is invalid: must be >= 1024")
        if self.queue_size < 0:
            raise ValueError(f"ServeConfig.queue_size={self.queue_size} is invalid: must be >= 0")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"ServeConfig.port={self.port} is invalid: 0..65535")
        for name in ("request_timeout_s", "max_record_s", "read_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"ServeConfig.{name}={value} is invalid: must be > 0")
        if not self.allow_remote and not is_loopback(self.host):
            raise ValueError(
                f"ServeConfig.host={self.host!r} is not a loopback address: pass "
                f"allow_remote=True (--allow-remote) to listen beyond this machine"
            )
        if self.allow_folder is not None and not Path(self.allow_folder).is_dir():
            raise ValueError(f"ServeConfig.allow_folder={str(self.allow_folder)!r} is not a folder")
        if self.token is not None and len(self.token) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"the bearer token has {len(self.token)} characters; use at least "
                f"{MIN_TOKEN_CHARS} (python -c 'import secrets; print(secrets.token_urlsafe())')"
            )

    @property
    def capacity(self) -> int:
        """Requests admitted at once: running plus waiting."""
        return self.workers + self.queue_size


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback IP address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def read_token_file(path: str | Path) -> str:
    """The bearer token in ``path`` (surrounding blanks dropped); warns when others may read the file.

    Raises:
        InputError: no such file, or an empty one.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"token file {p} not found")
    token = p.read_text(encoding="utf-8").strip()
    if not token:
        raise InputError(f"token file {p} is empty")
    if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("token file %s can be read by other users; chmod 600 it", p)
    return token


def token_matches(header: bytes | None, token: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <token>`` (constant-time comparison)."""
    expected = b"Bearer " + token.encode()
    return header is not None and hmac.compare_digest(header, expected)


class JobGate:
    """At most ``capacity`` admitted requests; a slot is taken without waiting or refused.

    ``retry_after_s`` estimates when a slot frees: the mean duration of recent jobs times the jobs
    ahead per worker, at least one second.
    """

    def __init__(self, capacity: int, workers: int) -> None:
        self.capacity = capacity
        self.workers = workers
        self._lock = threading.Lock()
        self._in_use = 0
        self._mean_s = 1.0
        self.draining = False

    def try_acquire(self) -> Ticket | None:
        with self._lock:
            if self.draining or self._in_use >= self.capacity:
                return None
            self._in_use += 1
        return Ticket(self)

    @property
    def in_use(self) -> int:
        return self._in_use

    def _release(self, duration_s: float | None) -> None:
        with self._lock:
            self._in_use -= 1
            if duration_s is not None:
                self._mean_s = 0.8 * self._mean_s + 0.2 * duration_s

    def retry_after_s(self) -> int:
        return max(1, math.ceil(self._mean_s * self.capacity / self.workers))


class Ticket:
    """One admitted request's slot; ``release`` is idempotent and thread-safe."""

    def __init__(self, gate: JobGate) -> None:
        self._gate = gate
        self._released = False
        self._lock = threading.Lock()
        self.handed_off = False  # the job owns the slot now; the middleware must not release it
        self.started = time.perf_counter()

    def release(self, timed: bool = False) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._gate._release(time.perf_counter() - self.started if timed else None)


class _Refused(Exception):
    pass


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    import json

    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


def error_body(message: str, error_type: str) -> dict[str, Any]:
    """The JSON of a refusal that concerns no record: one line of ``error`` and its ``error_type``."""
    return {"error": " ".join(message.split()), "error_type": error_type}


class AdmissionMiddleware:
    """Pure ASGI middleware in front of the app: auth, body size, then the job gate (in that order, so an
    unauthenticated or oversized request never takes a slot, and a full server never reads a body)."""

    def __init__(self, app: ASGIApp, config: ServeConfig, gate: JobGate) -> None:
        self.app = app
        self.config = config
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = dict(scope["headers"])
        if (
            self.config.token is not None
            and path.startswith(AUTH_PREFIX)
            and not token_matches(headers.get(b"authorization"), self.config.token)
        ):
            await _drain(receive, _DRAIN_BYTES)
            await _send_json(
                send,
                401,
                error_body("missing or wrong bearer token", "AuthError"),
                {"www-authenticate": "Bearer"},
            )
            return
        limit = self.config.max_upload_bytes
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _drain(receive, _DRAIN_BYTES)
            size = length.decode(errors="replace")
            message = f"request body of {size} bytes is over this server's limit of {limit} bytes"
            await _send_json(send, 413, error_body(message, "UploadTooLargeError"))
            return
        work = scope["method"] == "POST" and path in WORK_PATHS
        if work and (self.gate.draining or self.gate.in_use >= self.gate.capacity):
            await self._busy(receive, send)  # a full server never reads the body
            return
        await self._call_limited(scope, receive, send, limit, work)

    async def _busy(self, receive: Receive, send: Send) -> None:
        await _drain(receive, _DRAIN_BYTES)
        why = "shutting down" if self.gate.draining else f"busy: all {self.gate.capacity} slots taken"
        await _send_json(
            send,
            503,
            error_body(f"server {why}; retry later", "ServerBusy"),
            {"retry-after": str(self.gate.retry_after_s())},
        )

    async def _call_limited(self, scope: Scope, receive: Receive, send: Send, limit: int, work: bool) -> None:
        """Run the app with the body bounded in size and time; a work request takes its slot once its
        body is in. Any failure the app lets through is the JSON error, never a bare 500."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.read_timeout_s
        received, body_done = 0, False
        refusal: tuple[int, str, str] | None = None  # status, message, error_type: replaces the app's answer
        started = False
        ticket: Ticket | None = None

        async def limited_receive() -> Message:
            nonlocal received, body_done, refusal, ticket
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                refusal = (
                    408,
                    f"the request body did not arrive within {self.config.read_timeout_s:g} s "
                    f"(the server's read timeout)",
                    "RequestTimeout",
                )
                raise _Refused from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refusal = (
                        413,
                        f"request body over this server's limit of {limit} bytes",
                        "UploadTooLargeError",
                    )
                    raise _Refused
                if not message.get("more_body", False):
                    body_done = True
                    if work:
                        ticket = self.gate.try_acquire()
                        if ticket is None:
                            refusal = (503, "server busy or shutting down; retry later", "ServerBusy")
                            raise _Refused
                        scope.setdefault("state", {})["ticket"] = ticket
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refusal is not None:  # the app's own answer to the aborted body (400 or 500) is replaced below
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception as e:
            if refusal is None:  # a bug: one JSON line to the client, the traceback only in the debug log
                logger.error(
                    "unexpected error on %s %s: %s: %s", scope["method"], scope["path"], type(e).__name__, e
                )
                logger.debug("traceback", exc_info=e)
                if not started:
                    await _send_json(
                        send, 500, error_body(f"internal error: {type(e).__name__}: {e}", type(e).__name__)
                    )
                return
        finally:
            if ticket is not None and not ticket.handed_off:
                ticket.release()
        if refusal is not None and not started:
            status, message, error_type = refusal
            if status != 408 and not body_done:  # once the body is in, receive() waits for a disconnect
                await _drain(receive, _DRAIN_BYTES)
            headers = {"retry-after": str(self.gate.retry_after_s())} if status == 503 else {}
            if status == 408:
                headers["connection"] = "close"
            await _send_json(send, status, error_body(message, error_type), headers)


async def _drain(receive: Receive, cap: int) -> None:
    """Read and drop up to ``cap`` bytes of a refused request's body, so that a client still sending it
    reads the answer instead of a reset connection."""
    dropped = 0
    while dropped <= cap:
        message = await receive()
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
