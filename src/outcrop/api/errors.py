"""The one table from domain errors to HTTP status codes, and the JSON problem body
(RFC 9457) REST clients get."""

from __future__ import annotations

from typing import Any

import orjson

from outcrop.errors import (
    BadQuery,
    DatasetNotFound,
    Forbidden,
    OutcropError,
    SourceError,
    TooLarge,
    UpstreamFailed,
)

STATUS: dict[type[OutcropError], int] = {
    BadQuery: 400,
    Forbidden: 403,
    DatasetNotFound: 404,
    TooLarge: 413,
    SourceError: 500,
    UpstreamFailed: 502,
}
TITLES = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    413: "Content Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


def status_of(exc: OutcropError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def problem(exc: OutcropError) -> tuple[int, bytes]:
    """Status and `application/problem+json` body for an error."""
    status = status_of(exc)
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": exc.message,
    }
    if exc.parameter:
        body["parameter"] = exc.parameter
    if isinstance(exc, TooLarge):
        body["size"], body["limit"] = exc.size, exc.limit
    return status, orjson.dumps(body)
