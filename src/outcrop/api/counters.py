"""The request metrics: requests, latency and bytes by route, counted by the middleware for
every request (`/metrics` in `outcrop.api.metrics` shows them).

Apart from `outcrop.api.metrics` because that module imports FastAPI: counting a first
Zarr answer, before the FastAPI application is built, must not import it on the event
loop (a quarter of a second during which no other request is answered).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram, disable_created_metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "outcrop_http_requests_total",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
DURATION = Histogram(
    "outcrop_http_request_duration_seconds",
    "Time from a request's arrival to its last byte, by route template.",
    ["route"],
    buckets=BUCKETS,
)
SENT = Counter(
    "outcrop_http_response_bytes_total", "Response body bytes sent, by route template.", ["route"]
)
# (route, method, status) -> its three children: `labels()` validates and locks on every
# call, a dict lookup does not. Bounded: routes are templates, methods a fixed set.
_children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
# Prometheus' text format has no use for the `_created` series: half the scrape, no value.
disable_created_metrics()  # type: ignore[no-untyped-call]


def observe(route: str, method: str, status: int, seconds: float, sent: int) -> None:
    """Count one answered request (called by the middleware for every request)."""
    if method not in METHODS:
        method = "other"
    key = (route, method, status)
    children = _children.get(key)
    if children is None:
        requests, duration = REQUESTS.labels(route, method, str(status)), DURATION.labels(route)
        children = _children[key] = (requests, duration, SENT.labels(route))
    children[0].inc()
    children[1].observe(seconds)
    if sent:
        children[2].inc(sent)
