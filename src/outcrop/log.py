"""Structured logs: one JSON object per line on stderr (and, when asked, in a file), with
the request id of the request being handled (bound through contextvars, so threads
started with anyio carry it too).

Library loggers that use the standard `logging` module (uvicorn, gunicorn, asyncio,
warnings) are rendered the same way, so every line a server writes parses as JSON.
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import IO, Any, TextIO, cast

# structlog imports rich, when it is installed, to colour console tracebacks: ~0.1 s of a
# first start. These logs are JSON lines, so structlog is loaded without seeing it.
_hide_rich = "rich" not in sys.modules
if _hide_rich:
    sys.modules["rich"] = None  # type: ignore[assignment]
try:
    import structlog
finally:
    if _hide_rich:
        del sys.modules["rich"]

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
SILENT = 100
_threshold = LEVELS["info"]


class LogStream:
    """Where lines go: stderr, a file, or both; one lock so lines never interleave.

    The file is opened in append mode, so several worker processes can share it (each
    line is one `write`), and `reopen` lets log rotation move it away: the next line
    goes to a new file at the same path.
    """

    def __init__(self, stderr: IO[str] | None, path: Path | None) -> None:
        self.stderr = stderr
        self.path = path
        self.file: IO[str] | None = None
        self.lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.file = self._open(path)

    @staticmethod
    def _open(path: Path) -> IO[str]:
        return path.open("a", encoding="utf-8", buffering=1)

    def write(self, text: str) -> int:
        with self.lock:
            if self.stderr is not None:
                self.stderr.write(text)
            if self.file is not None:
                self.file.write(text)
        return len(text)

    def flush(self) -> None:
        with self.lock:
            if self.stderr is not None:
                self.stderr.flush()
            if self.file is not None:
                self.file.flush()

    def reopen(self) -> None:
        """Close the file and open its path again (after `logrotate` moved it)."""
        if self.path is None:
            return
        with self.lock:
            if self.file is not None:
                self.file.close()
            self.file = self._open(self.path)


_stream = LogStream(None, None)


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure(
    level: str = "info", quiet: bool = False, file: Path | None = None, stderr: bool = True
) -> None:
    """Log at `level` and above as JSON lines on stderr (unless `stderr` is false) and, if
    `file` is given, appended to it; `quiet` writes nothing at all."""
    global _threshold, _stream
    threshold = _threshold = SILENT if quiet else LEVELS[level]
    if _stream.file is not None:
        _stream.file.close()
    _stream = LogStream(sys.stderr if stderr else None, None if quiet else file)
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(min(threshold, logging.CRITICAL)),
        logger_factory=(
            structlog.ReturnLoggerFactory()
            if quiet
            else structlog.WriteLoggerFactory(cast(TextIO, _stream))
        ),
        cache_logger_on_first_use=False,
    )
    _configure_stdlib(threshold, _stream)


def reopen() -> None:
    """Reopen the log file (`outcrop rotate-logs`, gunicorn's SIGUSR1)."""
    _stream.reopen()


def _configure_stdlib(threshold: int, stream: LogStream) -> None:
    """Route the standard `logging` module through the same JSON renderer."""
    handler = logging.StreamHandler(stream)
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
