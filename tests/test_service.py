"""`outcrop start|status|stop|restart|rotate-logs|env|check|db upgrade`, run as a user
would (the `outcrop` command in a subprocess), against real gunicorn servers on free
127.0.0.1 ports, each in a data folder of its own."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from dotenv import dotenv_values
from pydantic_settings import BaseSettings

from outcrop.db import HEAD
from outcrop.settings import Settings
from tests.conftest import free_port

DOCS = Path(__file__).resolve().parent.parent / "docs" / "deploy.md"


def outcrop(
    *args: str, cwd: Path | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTCROP_")}
    return subprocess.run(
        [sys.executable, "-m", "outcrop", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


@dataclass
class Service:
    """A server started with `outcrop start` in its own data folder."""

    state: Path
    url: str
    cwd: Path
    pids: set[int] = field(default_factory=set)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return outcrop(*args, "--data-dir", str(self.state), cwd=self.cwd)

    def pid(self) -> int:
        return int((self.state / "outcrop.pid").read_text())

    def workers(self) -> set[int]:
        out = self.run("status").stdout
        match = re.search(r"workers:\s+\d+ \(([\d, ]+)\)", out)
        assert match, out
        return {int(p) for p in match.group(1).split(", ")}

    def log(self) -> Path:
        return self.state / "logs" / "outcrop.log"


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture
def service(archive: Path, tmp_path: Path) -> Iterator[Service]:
    """`outcrop start` (two workers unless .env says otherwise), stopped afterwards."""
    port = free_port()
    svc = Service(tmp_path / "state", f"http://127.0.0.1:{port}", tmp_path)
    yield svc
    killed = _stop(svc)
    assert not killed, "the server had to be killed"


def _stop(svc: Service) -> list[int]:
    """`outcrop stop`, then kill whatever it left (by pid); returns the pids killed."""
    pids = set(svc.pids)
    if (svc.state / "outcrop.pid").exists():
        pids.add(svc.pid())
    svc.run("stop", "--timeout", "20")
    left = [p for p in pids if alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def start(svc: Service, *args: str) -> subprocess.CompletedProcess[str]:
    port = svc.url.rsplit(":", 1)[1]
    done = svc.run("start", *args, "--bind", f"127.0.0.1:{port}")
    if (svc.state / "outcrop.pid").exists():
        svc.pids.add(svc.pid())
        svc.pids |= svc.workers()
    return done


def test_start_status_stop(service: Service, archive: Path) -> None:
    started = start(service, str(archive), "--workers", "2")
    assert started.returncode == 0, started.stderr + started.stdout
    pid = service.pid()
    assert alive(pid)
    status = service.run("status")
    assert status.returncode == 0, status.stdout
    assert f"pid:      {pid}" in status.stdout
    assert f"url:      {service.url}/" in status.stdout
    assert len(service.workers()) == 2
    assert '"status":"ok"' in status.stdout
    assert httpx.get(f"{service.url}/api/datasets/cmip6/ta_Amon_1950").status_code == 200
    lines = [json.loads(line) for line in service.log().read_text().splitlines()]
    assert any(line["event"] == "catalog_ready" for line in lines)

    stopped = service.run("stop")
    assert stopped.returncode == 0
    assert f"stopped pid {pid}" in stopped.stdout
    assert not alive(pid)
    assert not (service.state / "outcrop.pid").exists()
    assert service.run("status").returncode == 1
    again = service.run("stop")
    assert again.returncode == 0
    assert "not running" in again.stdout
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{service.url}/healthz")


def test_start_refuses_while_running_and_replaces_a_stale_pid_file(
    service: Service, archive: Path
) -> None:
    service.state.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (service.state / "outcrop.pid").write_text(f"{dead.pid}\n")
    assert service.run("status").returncode == 1
    started = start(service, str(archive), "--workers", "1")
    assert started.returncode == 0, started.stderr
    assert "stale pid file" in started.stdout
    assert service.pid() != dead.pid

    refused = start(service, str(archive))
    assert refused.returncode != 0
    assert f"already running (pid {service.pid()}" in refused.stderr


def test_start_fails_with_the_end_of_the_log_when_the_server_cannot_start(
    service: Service, archive: Path
) -> None:
    (service.state / "catalog.sqlite").mkdir(parents=True)  # the master cannot open it
    done = start(service, str(archive))
    assert done.returncode == 2
    assert "the server did not start; the end of its logs" in done.stderr
    assert "catalog.sqlite" in done.stderr or "sqlite" in done.stderr.lower()
    assert not (service.state / "outcrop.pid").exists()


def test_status_exit_code_3_when_the_workers_do_not_answer(service: Service, archive: Path) -> None:
    assert start(service, str(archive), "--workers", "1").returncode == 0
    workers = service.workers()
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        status = service.run("status")
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    assert status.returncode == 3, status.stdout
    assert "health:   no answer" in status.stdout


@dataclass
class Load:
    """Requests in a loop from a few threads, counting everything that is not a 200."""

    url: str
    threads: int = 4
    done: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                for path in ("/api/datasets", "/zarr/cmip6/ta_Amon_1950/.zmetadata"):
                    try:
                        status = client.get(self.url + path).status_code
                    except httpx.HTTPError as exc:
                        self.failures.append(f"{path}: {type(exc).__name__}: {exc}")
                        continue
                    self.done += 1
                    if status != 200:
                        self.failures.append(f"{path}: {status}")

    def __enter__(self) -> Load:
        self.pool = [threading.Thread(target=self.run) for _ in range(self.threads)]
        for thread in self.pool:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.pool:
            thread.join(60)


def test_restart_under_load_refuses_nothing_and_applies_changed_settings(
    service: Service, archive: Path
) -> None:
    (service.cwd / ".env").write_text("OUTCROP_WORKERS=1\n")
    assert start(service, str(archive)).returncode == 0
    before = service.workers()
    assert len(before) == 1
    (service.cwd / ".env").write_text("OUTCROP_WORKERS=2\n")  # read again by the restart
    with Load(service.url) as load:
        time.sleep(1)
        at_restart = load.done
        restarted = service.run("restart")
        time.sleep(1)
    assert restarted.returncode == 0, restarted.stderr + restarted.stdout
    after = service.workers()
    service.pids |= after
    assert not before & after
    assert len(after) == 2
    assert load.failures == []
    assert at_restart > 0
    assert load.done > at_restart


def test_restart_starts_a_server_that_is_not_running(service: Service, archive: Path) -> None:
    (service.cwd / ".env").write_text(
        f"OUTCROP_PATHS='[\"{archive}\"]'\nOUTCROP_PORT={service.url.rsplit(':', 1)[1]}\n"
    )
    done = service.run("restart")
    if (service.state / "outcrop.pid").exists():
        service.pids.add(service.pid())
    assert done.returncode == 0, done.stderr
    assert "not running; starting" in done.stdout
    assert httpx.get(f"{service.url}/healthz").status_code == 200


def test_rotate_logs_reopens_the_log_file(service: Service, archive: Path) -> None:
    assert start(service, str(archive), "--workers", "2").returncode == 0
    moved = service.log().with_suffix(".log.1")
    service.log().rename(moved)
    rotated = service.run("rotate-logs")
    assert rotated.returncode == 0, rotated.stderr
    assert "reopened" in rotated.stdout
    for n in range(4):  # whichever worker answers
        httpx.get(f"{service.url}/api/datasets", headers={"X-Request-ID": f"after-rotate-{n}"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and service.log().read_text().count("after-rotate") < 4:
        time.sleep(0.1)
    assert service.log().read_text().count("after-rotate") == 4
    assert "after-rotate" not in moved.read_text()


# -- env, check, db upgrade --------------------------------------------------------------
def test_env_prints_every_setting_and_reads_back_to_the_defaults(tmp_path: Path) -> None:
    printed = outcrop("env", "--print", cwd=tmp_path)
    assert printed.returncode == 0
    text = printed.stdout
    for name, info in Settings.model_fields.items():
        assert f"# OUTCROP_{name.upper()}=" in text
        assert (info.description or "")[:30] in text.replace("\n# ", " ")
    # Uncomment every line that sets a value, then let pydantic-settings read the file.
    active = re.sub(r"^# (OUTCROP_\w+=.+)$", r"\1", text, flags=re.M)
    env_file = tmp_path / "active.env"
    env_file.write_text(active)
    with_value = {
        f"OUTCROP_{name.upper()}"
        for name, info in Settings.model_fields.items()
        if info.default not in (None, "") or info.default_factory is not None
    }
    assert with_value <= set(dotenv_values(env_file))  # every setting that has a default

    class FromFile(Settings):
        model_config = {**Settings.model_config, "env_file": str(env_file)}  # type: ignore[typeddict-item]

    clean = {k: v for k, v in os.environ.items() if k.startswith("OUTCROP_")}
    for key in clean:
        del os.environ[key]
    try:
        read = FromFile()
        default = Settings(_env_file=None)  # type: ignore[call-arg]
    finally:
        os.environ.update(clean)
    assert isinstance(read, BaseSettings)
    assert read.model_dump() == default.model_dump()


def test_env_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    target.write_text("OUTCROP_PORT=9999\n")
    refused = outcrop("env", cwd=tmp_path)
    assert refused.returncode != 0
    assert "--force" in refused.stderr
    assert target.read_text() == "OUTCROP_PORT=9999\n"
    assert outcrop("env", "--force", cwd=tmp_path).returncode == 0
    assert "# OUTCROP_PORT=8765" in target.read_text()
    other = tmp_path / "deploy.env"
    assert outcrop("env", str(other), cwd=tmp_path).returncode == 0
    assert other.read_text() == target.read_text()


def test_check_reports_each_problem_with_its_fix_then_passes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    missing = outcrop("check", "--data-dir", str(state), cwd=tmp_path)
    assert missing.returncode == 1
    assert f"problem: the data folder {state} does not exist" in missing.stdout
    assert "fix: create it" in missing.stdout
    assert "outcrop db upgrade" in missing.stdout

    upgraded = outcrop("db", "upgrade", "--data-dir", str(state), cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"revision {HEAD}" in upgraded.stdout
    with sqlite3.connect(state / "catalog.sqlite") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD,)
    again = outcrop("db", "upgrade", "--data-dir", str(state), cwd=tmp_path)
    assert f"already at revision {HEAD}" in again.stdout

    ok = outcrop("check", "--data-dir", str(state), cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout
    assert ok.stdout.startswith("ok:")

    closed = free_port()
    (tmp_path / ".env").write_text(
        f"OUTCROP_QUEUE_URL=redis://127.0.0.1:{closed}/0\n"
        f"OUTCROP_DASK_SCHEDULER=tcp://127.0.0.1:{closed}\n"
    )
    down = outcrop("check", "--data-dir", str(state), cwd=tmp_path)
    assert down.returncode == 1
    assert f"cannot reach Redis (OUTCROP_QUEUE_URL) at 127.0.0.1:{closed}" in down.stdout
    assert f"cannot reach the Dask scheduler (OUTCROP_DASK_SCHEDULER) at 127.0.0.1:{closed}" in (
        down.stdout
    )


def test_check_reports_an_old_schema(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert outcrop("db", "upgrade", "--data-dir", str(state)).returncode == 0
    with sqlite3.connect(state / "catalog.sqlite") as db:
        db.execute("UPDATE alembic_version SET version_num = '0001'")
    old = outcrop("check", "--data-dir", str(state))
    assert old.returncode == 1
    assert f"is at schema revision 0001, this version needs {HEAD}" in old.stdout


def test_check_reports_invalid_settings(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OUTCROP_PORT=not-a-port\n")
    bad = outcrop("check", cwd=tmp_path)
    assert bad.returncode == 1
    assert "problem: invalid settings" in bad.stdout
    assert "port" in bad.stdout


# -- docs/deploy.md: the commands it tells people to run ------------------------------------
def _unit_command(key: str) -> list[str]:
    """The first `key=…` line of the docs' code blocks (systemd ExecStart, supervisor
    command), split into argv."""
    import shlex

    match = re.search(rf"^{key}\s*=\s*(.+)$", DOCS.read_text(), flags=re.M)
    assert match, f"no {key}= line in {DOCS}"
    return shlex.split(match.group(1))


@pytest.mark.parametrize("key", ["ExecStart", "command"])
def test_the_documented_service_command_starts_and_serves(
    key: str, archive: Path, tmp_path: Path
) -> None:
    argv = _unit_command(key)
    assert argv[0].endswith("/outcrop")
    assert argv[1:3] == ["start", "--no-daemon"]
    port = free_port()
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTCROP_")}
    # The .env of the unit's working directory (/etc/outcrop in docs/deploy.md), step 2.
    (tmp_path / ".env").write_text(
        f"OUTCROP_PATHS='{json.dumps([str(archive)])}'\n"
        f"OUTCROP_DATA_DIR={state}\nOUTCROP_WORKERS=2\nOUTCROP_PORT={port}\n"
    )
    argv = [sys.executable, "-m", "outcrop", *argv[1:]]
    process = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        assert (state / "outcrop.pid").read_text().strip() == str(process.pid)
        url = f"http://127.0.0.1:{port}/api/datasets/cmip6/ta_Amon_1950"
        assert httpx.get(url).status_code == 200
        process.send_signal(signal.SIGTERM)  # what systemd and supervisor send
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
