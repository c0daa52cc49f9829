"""``GET /metrics`` of ``diagecg serve``: Prometheus text format (version 0.0.4), stdlib only.

Counted by :class:`MetricsMiddleware`, the outermost layer, so it sees every answer the service gives,
the refusals of the admission layer included (401, 408, 413, 503):

* ``diagecg_requests_total{route, method, status}``: requests answered (route: one of the service's
  paths, or ``other``, so a scanner cannot grow the label set);
* ``diagecg_request_duration_seconds{route}``: a latency histogram (``_bucket``, ``_sum``, ``_count``);
* ``diagecg_rejections_total{reason}``: refusals by reason (``auth``, ``read_timeout``, ``too_large``,
  ``busy``, ``timeout``, ``bad_request``, ``bad_record``, ``not_found``);
* ``diagecg_slots_in_use``, ``diagecg_queue_depth`` (admitted beyond the workers), ``diagecg_slots_capacity``,
  ``diagecg_workers``: the job gate now.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from diagecg.runtime.serve_admission import ACCESS_LOGGER

__all__ = ["ACCESS_LOGGER", "BUCKETS_S", "Metrics", "MetricsMiddleware"]

BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
ROUTES = (
    "/v1/answer",
    "/v1/report",
    "/v1/plot",
    "/v1/json/answer",
    "/v1/json/report",
    "/v1/questions",
    "/v1/bundle",
    "/v1/schema",
    "/healthz",
    "/readyz",
    "/openapi.json",
    "/openapi-3.0.json",
    "/metrics",
)
REASONS = {
    400: "bad_request",
    401: "auth",
    404: "not_found",
    405: "not_found",
    408: "read_timeout",
    413: "too_large",
    422: "bad_record",
    503: "busy",
    504: "timeout",
}


class Metrics:
    """Thread-safe counters of the service (module docstring)."""

    def __init__(self, gauges: Callable[[], dict[str, float]]) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._rejections: Counter[str] = Counter()
        self._buckets: dict[str, list[int]] = {}
        self._sum: dict[str, float] = {}
        self._count: Counter[str] = Counter()
        self._gauges = gauges

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        route = route if route in ROUTES else "other"
        with self._lock:
            self._requests[(route, method, status)] += 1
            if status in REASONS:
                self._rejections[REASONS[status]] += 1
            buckets = self._buckets.setdefault(route, [0] * len(BUCKETS_S))
            for k, edge in enumerate(BUCKETS_S):
                if seconds <= edge:
                    buckets[k] += 1
            self._sum[route] = self._sum.get(route, 0.0) + seconds
            self._count[route] += 1

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        out = [
            "# HELP diagecg_requests_total Requests answered, by route, method and status.",
            "# TYPE diagecg_requests_total counter",
        ]
        with self._lock:
            for (route, method, status), n in sorted(self._requests.items()):
                labels = f'route="{route}",method="{method}",status="{status}"'
                out.append(f"diagecg_requests_total{{{labels}}} {n}")
            out += [
                "# HELP diagecg_rejections_total Requests refused, by reason.",
                "# TYPE diagecg_rejections_total counter",
            ]
            out += [
                f'diagecg_rejections_total{{reason="{r}"}} {n}' for r, n in sorted(self._rejections.items())
            ]
            out += [
                "# HELP diagecg_request_duration_seconds Time from request to the end of the answer.",
                "# TYPE diagecg_request_duration_seconds histogram",
            ]
            for route in sorted(self._buckets):
                for edge, n in zip(BUCKETS_S, self._buckets[route], strict=True):
                    le = f'route="{route}",le="{edge:g}"'
                    out.append(f"diagecg_request_duration_seconds_bucket{{{le}}} {n}")
                out.append(
                    f'diagecg_request_duration_seconds_bucket{{route="{route}",le="+Inf"}} '
                    f"{self._count[route]}"
                )
                out.append(f'diagecg_request_duration_seconds_sum{{route="{route}"}} {self._sum[route]:.6f}')
                out.append(f'diagecg_request_duration_seconds_count{{route="{route}"}} {self._count[route]}')
        for name, value in self._gauges().items():
            out += [f"# TYPE {name} gauge", f"{name} {value:g}"]
        return "\n".join(out) + "\n"


class MetricsMiddleware:
    """Pure ASGI middleware that times every HTTP request and records its status in ``metrics``; with
    ``access_log``, also one line per request on the ``ACCESS_LOGGER`` logger (client, method, path,
    status, latency: never a query string, a header or a body)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.access = logging.getLogger(ACCESS_LOGGER) if access_log else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.observe(scope["path"], scope["method"], status, elapsed)
            if self.access is not None:
                client = scope.get("client") or ("-", 0)
                self.access.info(
                    '%s "%s %s" %d %.1f ms', client[0], scope["method"], scope["path"], status, elapsed * 1e3
                )
