"""Structured logs: one JSON object per line on stderr, with the request id of the request
being handled (bound through contextvars, so threads started with anyio carry it too).

Library loggers that use the standard `logging` module (uvicorn, asyncio, warnings) are
rendered the same way, so every line a server writes parses as JSON.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
SILENT = 100
_threshold = LEVELS["info"]


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure(level: str = "info", quiet: bool = False) -> None:
    """Log at `level` and above as JSON lines on stderr; `quiet` writes nothing at all."""
    global _threshold
    threshold = _threshold = SILENT if quiet else LEVELS[level]
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(min(threshold, logging.CRITICAL)),
        logger_factory=(
            structlog.ReturnLoggerFactory() if quiet else structlog.PrintLoggerFactory(sys.stderr)
        ),
        cache_logger_on_first_use=False,
    )
    _configure_stdlib(threshold)


def _configure_stdlib(threshold: int) -> None:
    """Route the standard `logging` module through the same JSON renderer."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_shared_processors(), structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Library chatter at info (uvicorn's start-up banner, asyncio) is not ours to repeat.
    root.setLevel(max(threshold, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi"):
        lib = logging.getLogger(name)
        lib.handlers[:] = []
        lib.propagate = True
        lib.setLevel(max(threshold, logging.WARNING))
    logging.captureWarnings(True)


def enabled(level: int) -> bool:
    """Whether a line at `level` would be written (lets hot paths skip building it)."""
    return level >= _threshold


def logger(name: str) -> Any:
    return structlog.get_logger(name)
