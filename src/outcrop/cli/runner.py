"""The server under gunicorn: a master process that holds the listening socket and forks
uvicorn workers, so `outcrop restart` (SIGHUP) replaces every worker without refusing a
connection, and `outcrop rotate-logs` (SIGUSR1) makes every process reopen its log file.

On each start and each SIGHUP the master reads the settings again (environment, `.env`,
`outcrop.toml`, then the options `outcrop start` was given) and scans the catalog once, so
the workers it then forks start with both; a restart with a broken `outcrop.toml` keeps
the running settings and logs why.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gunicorn import glogging  # type: ignore[import-untyped,unused-ignore]
from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped,unused-ignore]
from uvicorn_worker import UvicornWorker  # uvicorn's own `uvicorn.workers` is deprecated

from outcrop.cli.protocol import CoalescingHttpToolsProtocol
from outcrop.errors import OutcropError
from outcrop.log import configure, enabled, logger, reopen
from outcrop.settings import Settings, load_settings

log = logger("outcrop.service")
PID_FILE = "outcrop.pid"
RUN_FILE = "outcrop.run.json"
GRACEFUL_S = 30  # how long a worker told to stop may finish its responses
DRAIN_S = 1.0  # how long an idle keep-alive connection of a stopping worker stays open


def pid_path(settings: Settings) -> Path:
    return settings.data_dir / PID_FILE


def run_path(settings: Settings) -> Path:
    """What the master last started with (URL, workers, log file), for `outcrop status`."""
    return settings.data_dir / RUN_FILE


def log_path(settings: Settings) -> Path:
    return settings.log_file or settings.data_dir / "logs" / "outcrop.log"


def metrics_dir(settings: Settings) -> Path:
    return settings.data_dir / "metrics"


def url_of(settings: Settings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}{settings.root_path}"


@dataclass
class Launch:
    """What `outcrop start` was given: `overrides` beat the settings read on each restart."""

    config: Path | None
    overrides: dict[str, Any] = field(default_factory=dict)
    stderr: bool = True  # also log on stderr (not when daemonised: the file is enough)


class OutcropGunicorn(BaseApplication):  # type: ignore[misc]
    """gunicorn's application: settings and catalog are (re)loaded in the master."""

    def __init__(self, launch: Launch) -> None:
        self.launch = launch
        self.settings: Settings | None = None
        super().__init__()

    def load_config(self) -> None:
        try:
            settings = self._read_settings()
        except OutcropError as exc:
            if self.settings is None:
                raise
            log.error("restart_kept_settings", error=exc.message)
            settings = self.settings
        first = self.settings is None
        self.settings = settings
        if first:
            _prepare_metrics(settings)
        for key, value in gunicorn_options(settings).items():
            self.cfg.set(key, value)
        _write_run_file(settings)

    def _read_settings(self) -> Settings:
        from outcrop.api.routes import route_sets, selected

        settings = load_settings(self.launch.config, **self.launch.overrides)
        selected(settings.routes, route_sets())  # a bad OUTCROP_ROUTES fails here, not in workers
        settings = settings.model_copy(update={"log_file": log_path(settings)})
        configure(settings.log_level, settings.quiet, settings.log_file, self.launch.stderr)
        _scan(settings)
        return settings

    def load(self) -> Any:
        """The app, built in each worker after the fork."""
        from outcrop.api import create_app

        assert self.settings is not None
        return create_app(self.settings)


def _scan(settings: Settings) -> None:
    """Scan the served folders once, in the master, before any worker starts."""
    from outcrop.catalog import Catalog

    catalog = Catalog(settings)
    try:
        catalog.refresh()
        log.info("catalog_ready", datasets=len(catalog), data_dir=str(settings.data_dir))
    finally:
        catalog.close()


def _prepare_metrics(settings: Settings) -> None:
    """prometheus-client's multiprocess mode: every worker writes its samples under one
    folder, emptied at start (the workers of a restart keep adding to it)."""
    folder = metrics_dir(settings)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def _write_run_file(settings: Settings) -> None:
    doc = {
        "url": url_of(settings),
        "workers": settings.workers,
        "log_file": str(settings.log_file),
        "log_level": "off" if settings.quiet else settings.log_level,
        "loaded": time.time(),
    }
    path = run_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return {
        "bind": [f"{host}:{settings.port}"],
        "workers": settings.workers,
        "worker_class": "outcrop.cli.runner.OutcropWorker",
        "logger_class": "outcrop.cli.runner.GunicornLog",
        "pidfile": str(pid_path(settings)),
        "graceful_timeout": GRACEFUL_S,
        "keepalive": 5,
        "proc_name": "outcrop",
        "child_exit": child_exit,
        "accesslog": None,  # the app writes its own access line (api/middleware.py)
        "control_socket_disable": True,  # gunicorn 27's socket in $HOME: one per machine
    }


def child_exit(_arbiter: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the shared metrics folder."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


class GunicornLog(glogging.Logger):  # type: ignore[misc]
    """gunicorn's own lines (worker booted, signal handled) go through our JSON logging,
    and its log-file reopening (SIGUSR1) reopens ours."""

    def setup(self, cfg: Any) -> None:
        self.cfg = cfg
        self._access_log_enabled = False
        for lib in (self.error_log, self.access_log):
            lib.handlers[:] = []
            lib.propagate = True
        self.error_log.setLevel(logging.INFO if enabled(logging.INFO) else logging.WARNING)

    def reopen_files(self) -> None:
        reopen()
        log.info("log_reopened", pid=os.getpid())

    def close_on_exec(self) -> None:
        """Nothing to do: our log file is not gunicorn's."""


def _http_protocol() -> Any:
    """`outcrop serve`'s protocol (cli/protocol.py), closing idle connections gently when
    the worker stops."""

    class DrainingHttpToolsProtocol(CoalescingHttpToolsProtocol):
        """On shutdown uvicorn closes idle keep-alive connections at once, which resets a
        request a client is sending at that moment. Instead, answer a request arriving
        within DRAIN_S with `Connection: close`, and close the connection after that."""

        draining = False

        def shutdown(self) -> None:
            if self.cycle is None or self.cycle.response_complete:
                self.draining = True
                self.loop.call_later(DRAIN_S, self._close_if_idle)
            else:
                self.cycle.keep_alive = False

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            if self.draining:
                self.cycle.keep_alive = False

        def _close_if_idle(self) -> None:
            if self.cycle is None or self.cycle.response_complete:
                self.transport.close()

    return DrainingHttpToolsProtocol


class OutcropWorker(UvicornWorker):  # type: ignore[misc]
    """A uvicorn worker with the options `outcrop serve` uses (uvicorn/serve.py)."""

    CONFIG_KWARGS = {
        "loop": "auto",
        "http": _http_protocol(),
        "proxy_headers": False,  # the app applies X-Forwarded-* itself
        "server_header": False,
        "ws": "none",
        "access_log": False,
        "lifespan": "on",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("uvicorn.error", "uvicorn.access"):
            lib = logging.getLogger(name)
            lib.handlers[:] = []
            lib.propagate = True
            lib.setLevel(logging.WARNING)
        settings: Settings = self.app.settings
        self.config.root_path = settings.root_path
        self.config.timeout_graceful_shutdown = GRACEFUL_S


def serve_forever(launch: Launch) -> None:
    """Run the master until SIGTERM (graceful) or SIGINT/SIGQUIT (quick)."""
    OutcropGunicorn(launch).run()
