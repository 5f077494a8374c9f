"""`outcrop start|stop|status|restart|rotate-logs`: the server as a service (gunicorn,
cli/runner.py), with its pid file, run file and logs in the data folder; and
`outcrop env|check|db upgrade`, what an operator runs before starting it.

`status` exit codes (for scripts and monitoring): 0 running and healthy, 1 not running
(no pid file, or a stale one), 3 running but `/healthz` does not answer 200.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from outcrop.cli import ConfigOpt, DataDirOpt, PathsArg, app, check_exists, fail
from outcrop.errors import ConfigError, OutcropError
from outcrop.settings import LogLevel, Settings, load_settings

RUNNING, NOT_RUNNING, UNHEALTHY = 0, 1, 3
READY_S = 120  # longest wait for a started or restarted server to answer /healthz

WorkersOpt = Annotated[int | None, typer.Option(help="Worker processes [1].", min=1)]
BindOpt = Annotated[
    str | None, typer.Option(help="HOST:PORT to listen on [127.0.0.1:8765].", show_default=False)
]
LogLevelOpt = Annotated[LogLevel | None, typer.Option(help="Lowest level logged [info].")]


# -- outcrop start ---------------------------------------------------------------------
@app.command()
def start(
    paths: PathsArg = None,
    workers: WorkersOpt = None,
    bind: BindOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    log_level: LogLevelOpt = None,
    no_daemon: Annotated[
        bool, typer.Option("--no-daemon", help="Stay in the foreground (systemd, supervisor).")
    ] = False,
    daemonised: Annotated[bool, typer.Option("--daemonised", hidden=True)] = False,
) -> None:
    """Start the server in the background: gunicorn with uvicorn workers, the pid in
    DATA_DIR/outcrop.pid, JSON log lines in DATA_DIR/logs/outcrop.log. Returns once it
    answers /healthz."""
    from outcrop.cli.runner import Launch, pid_path, serve_forever
    from outcrop.cli.serve import check_port_free

    try:
        check_exists(paths or [], config)
        overrides = _overrides(paths, workers, bind, data_dir, log_level)
        settings = load_settings(config, **overrides)
        overrides["data_dir"] = settings.data_dir.resolve()  # where the pid file stays
        _refuse_if_running(pid_path(settings))
        check_port_free(settings.host, settings.port)
    except OutcropError as exc:
        fail(exc.message)
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    config = config.resolve() if config else None
    if no_daemon:
        serve_forever(Launch(config, overrides, stderr=not daemonised))
        return
    _daemonise(settings, config, overrides)


def _overrides(
    paths: list[Path] | None,
    workers: int | None,
    bind: str | None,
    data_dir: Path | None,
    log_level: str | None,
) -> dict[str, Any]:
    host, port = parse_bind(bind) if bind else (None, None)
    given = dict(
        paths=[p.resolve() for p in paths] if paths else None,
        workers=workers,
        host=host,
        port=port,
        data_dir=data_dir.resolve() if data_dir else None,
        log_level=log_level,
    )
    return {k: v for k, v in given.items() if v is not None}


def parse_bind(bind: str) -> tuple[str, int]:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all addresses of 127.0.0.1's default host)."""
    host, sep, port = bind.rpartition(":")
    host = host.removeprefix("[").removesuffix("]") or "127.0.0.1"
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--bind {bind!r} must be HOST:PORT with a port from 1 to 65535, "
            "e.g. 127.0.0.1:8765 or [::1]:8765",
            parameter="bind",
        )
    return host, int(port)


def _refuse_if_running(pid_file: Path) -> None:
    pid = read_pid(pid_file)
    if pid is not None and alive(pid):
        raise OutcropError(
            f"already running (pid {pid}, {pid_file}); use `outcrop restart` to reload it "
            "or `outcrop stop` first"
        )
    if pid_file.exists():
        typer.echo(f"removing stale pid file {pid_file} (pid {pid} is not running)")
        pid_file.unlink(missing_ok=True)


def _daemonise(settings: Settings, config: Path | None, overrides: dict[str, Any]) -> None:
    """Start `outcrop start --no-daemon` detached (new session, no terminal), then wait for
    its pid file and a 200 from /healthz; on failure print the end of its logs."""
    from outcrop.cli.runner import log_path, pid_path, url_of

    console = settings.data_dir / "logs" / "console.log"
    console.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "outcrop", "start", "--no-daemon", "--daemonised"]
    argv += _argv_of(config, overrides)
    with console.open("ab") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    url = url_of(settings)
    if not wait_ready(url, pid_path(settings), lambda: process.poll() is None):
        process.poll()
        if process.returncode is None:
            stop_pid(process.pid, 10)
        tail = "\n".join(_tail(p) for p in (console, log_path(settings)))
        fail(f"the server did not start; the end of its logs:\n{tail}")
    pid = read_pid(pid_path(settings))
    typer.echo(f"started: pid {pid}, {url}/, {settings.workers} workers, log {log_path(settings)}")


def _argv_of(config: Path | None, overrides: dict[str, Any]) -> list[str]:
    argv = [str(p) for p in overrides.get("paths", [])]
    if config is not None:
        argv += ["--config", str(config)]
    if "workers" in overrides:
        argv += ["--workers", str(overrides["workers"])]
    if "host" in overrides:
        argv += ["--bind", f"[{overrides['host']}]:{overrides['port']}"]
    if "log_level" in overrides:
        argv += ["--log-level", overrides["log_level"]]
    return [*argv, "--data-dir", str(overrides["data_dir"])]


def wait_ready(url: str, pid_file: Path, running: Any, timeout: float = READY_S) -> bool:
    """Whether the server wrote its pid file and answered /healthz before `running()` said
    it exited or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running():
        if pid_file.exists() and health(url)[0] == 200:
            return True
        time.sleep(0.2)
    return False


def _tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return f"({path}: empty)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"{path}:\n" + "\n".join(text)


# -- outcrop status, stop, restart, rotate-logs ----------------------------------------
@app.command()
def status(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Pid, uptime, workers, URL, version and /healthz. Exit status: 0 running and healthy,
    1 not running (also with a stale pid file), 3 running but unhealthy."""
    settings = _settings(config, data_dir)
    pid = _running_pid(settings)
    if pid is None:
        raise typer.Exit(NOT_RUNNING)
    run = read_run(settings)
    code, body = health(run.get("url", ""))
    workers = children(pid)
    typer.echo(f"pid:      {pid}")
    typer.echo(f"uptime:   {_duration(uptime(pid))}")
    typer.echo(f"workers:  {len(workers)} ({', '.join(map(str, workers)) or 'none'})")
    typer.echo(f"url:      {run.get('url', '?')}/")
    typer.echo(f"version:  {_version()}")
    typer.echo(f"log:      {run.get('log_file', '?')}")
    typer.echo(f"health:   {code or 'no answer'} {body}")
    raise typer.Exit(RUNNING if code == 200 else UNHEALTHY)


@app.command()
def stop(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds for in-flight responses before SIGKILL.", min=0)
    ] = 30,
) -> None:
    """Stop gracefully: SIGTERM, responses in flight finish; SIGKILL after --timeout."""
    from outcrop.cli.runner import pid_path

    settings = _settings(config, data_dir)
    pid = _running_pid(settings)
    if pid is None:
        return
    killed = stop_pid(pid, timeout)
    pid_path(settings).unlink(missing_ok=True)
    typer.echo(f"stopped pid {pid}" + (f" (killed after {timeout:g} s)" if killed else ""))


def stop_pid(pid: int, timeout: float) -> bool:
    """SIGTERM `pid`, then SIGKILL it and its workers after `timeout`; whether it was killed."""
    workers = children(pid)
    _signal(pid, signal.SIGTERM)
    if _wait_gone([pid], timeout):
        return False
    for each in [pid, *workers]:
        _signal(each, signal.SIGKILL)
    _wait_gone([pid, *workers], 10)
    return True


@app.command()
def restart(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Replace every worker without refusing a request (SIGHUP to the master): new workers
    start with the settings read again from .env and outcrop.toml (options given to
    `outcrop start` still win), then the old ones finish their responses and exit.
    Starts the server when it is not running."""
    settings = _settings(config, data_dir)
    pid = _running_pid(settings, quiet=True)
    if pid is None:
        typer.echo("not running; starting")
        start(config=config, data_dir=data_dir)
        return
    old = set(children(pid))
    _signal(pid, signal.SIGHUP)
    if not _wait_replaced(pid, old, settings):
        fail(f"the workers were not replaced within {READY_S} s; see {_log_of(settings)}")
    typer.echo(f"restarted pid {pid}: workers {_pids(old)} → {_pids(set(children(pid)))}")


def _wait_replaced(pid: int, old: set[int], settings: Settings) -> bool:
    """Whether every old worker exited and the new ones answer /healthz."""
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline and alive(pid):
        now = set(children(pid))
        run = read_run(settings)
        replaced = now and not now & old and len(now) >= run.get("workers", 1)
        if replaced and health(run.get("url", ""))[0] == 200:
            return True
        time.sleep(0.2)
    return False


@app.command("rotate-logs")
def rotate_logs(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Make the server reopen its log file (after logrotate moved it): SIGUSR1 to the
    master, which passes it on to its workers."""
    settings = _settings(config, data_dir)
    pid = _running_pid(settings)
    if pid is None:
        raise typer.Exit(NOT_RUNNING)
    procs = {pid, *children(pid)}
    _signal(pid, signal.SIGUSR1)
    path = _log_of(settings)
    if read_run(settings).get("log_level") in ("debug", "info"):
        _wait_reopened(path, procs)
    typer.echo(f"pid {pid} and its {len(procs) - 1} workers reopened {path}")


def _wait_reopened(path: Path, procs: set[int], timeout: float = 10) -> None:
    """Wait until each process wrote its `log_reopened` line in the new file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = set()
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if '"log_reopened"' in line:
                    seen.add(json.loads(line).get("pid"))
        if procs <= seen:
            return
        time.sleep(0.1)


# -- processes, pid and run files -------------------------------------------------------
def _settings(config: Path | None, data_dir: Path | None) -> Settings:
    try:
        check_exists([], config)
        return load_settings(config, data_dir=data_dir)
    except OutcropError as exc:
        fail(exc.message)
        raise  # not reached: fail exits


def _running_pid(settings: Settings, quiet: bool = False) -> int | None:
    """The master's pid, or None (saying why) when it is not running."""
    from outcrop.cli.runner import pid_path

    path = pid_path(settings)
    pid = read_pid(path)
    if pid is not None and alive(pid):
        return pid
    if not quiet:
        stale = f" (stale pid file {path}: pid {pid} is gone)" if path.exists() else ""
        typer.echo(f"not running{stale}")
    return None


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_run(settings: Settings) -> dict[str, Any]:
    from outcrop.cli.runner import run_path

    try:
        doc: dict[str, Any] = json.loads(run_path(settings).read_text())
        return doc
    except (OSError, ValueError):
        return {}


def _log_of(settings: Settings) -> Path:
    from outcrop.cli.runner import log_path

    return Path(read_run(settings).get("log_file") or log_path(settings))


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (gunicorn's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[1] == str(pid) and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def uptime(pid: int) -> float:
    """Seconds since `pid` started (field 22 of /proc/PID/stat, in clock ticks after boot)."""
    ticks = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
    booted = float(Path("/proc/uptime").read_text().split()[0])
    return booted - ticks / os.sysconf("SC_CLK_TCK")


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def health(url: str) -> tuple[int, str]:
    """Status and body of GET /healthz, or (0, why) when nothing answered."""
    import httpx

    from outcrop.http import client

    try:
        with client(timeout=5) as http:
            response = http.get(f"{url}/healthz")
    except httpx.HTTPError as exc:
        return 0, f"({type(exc).__name__})"
    return response.status_code, response.text.strip()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"


def _pids(pids: set[int]) -> str:
    return ",".join(map(str, sorted(pids))) or "none"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("outcrop")
    except PackageNotFoundError:
        return "0+unknown"


# The operator's commands live next door (same family: before and around the server).
from outcrop.cli import operate  # noqa: E402, F401
