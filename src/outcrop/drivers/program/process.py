"""Running a reader program: no shell, its own process group, stderr kept in a bounded
buffer, a wall-clock deadline, a cap on output bytes, and a limit on concurrent runs."""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from subprocess import DEVNULL, PIPE, Popen
from types import TracebackType
from typing import TYPE_CHECKING

from outcrop.errors import OutcropError, TooLarge, UpstreamFailed

if TYPE_CHECKING:
    from outcrop.drivers.program.description import Reader

STDERR_KEPT = 64 << 10  # bytes of a program's stderr kept while it runs
STDERR_SHOWN = 4 << 10  # of which the last ones become the error message


class Output:
    """A program's stdout as a file pyarrow reads: counted, and never waiting for output
    past the run's deadline (even when something outside the program's process group
    holds the pipe open).

    Past `limit` bytes, or past the deadline, it calls `stop` and reads as ended: raising
    from inside pyarrow's reads is not safe, so the run checks its flags instead.
    """

    closed = False

    def __init__(self, fd: int, limit: int, deadline: float, stop: Callable[[], None]) -> None:
        self.fd, self.limit, self.deadline, self.stop = fd, limit, deadline, stop
        self.count = 0
        self.over = False
        self.ended = False
        self._pending = b""
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def has_output(self) -> bool:
        """Wait for the first bytes or the end of output; whether there are any."""
        self._pending = self._chunk(1 << 16)
        return bool(self._pending)

    def _chunk(self, size: int) -> bytes:
        if self.ended:
            return b""
        if not self._poll.poll(max(0.0, self.deadline - time.monotonic()) * 1000):
            self.ended = True
            self.stop()
            return b""
        try:
            data = os.read(self.fd, size)
        except OSError:  # closed: the run is being stopped
            data = b""
        self.ended = not data
        return data

    def read(self, size: int = -1) -> bytes:
        """`size` bytes (never more: pyarrow copies them into a buffer of that size), fewer
        only at the end of output."""
        want = self.limit + 1 - self.count if size < 0 else size
        parts, got = [self._pending[:want]], min(want, len(self._pending))
        self._pending = self._pending[want:]
        while got < want and (data := self._chunk(min(want - got, 1 << 20))):
            parts.append(data)
            got += len(data)
        self.count += got
        if self.count > self.limit:
            self.over = self.ended = True
            self.stop()
            return b""
        return b"".join(parts)


class Run:
    """One run of a reader program: started in its own session (process group) without a
    shell, stderr drained into a bounded buffer, killed at its deadline or when closed."""

    def __init__(self, reader: Reader, argv: list[str]) -> None:
        desc = reader.desc
        self.reader = reader
        self.timed_out = False
        self.status: int | None = None
        self._reaped = False
        self._lock = threading.Lock()
        self._stderr = bytearray()
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTCROP_")}
        try:
            self.proc = Popen(
                argv,
                shell=False,
                stdin=DEVNULL,
                stdout=PIPE,
                stderr=PIPE,
                cwd=reader.folder,
                env={**env, "TZ": "UTC", **desc.env},
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise UpstreamFailed(f"reader {reader.name} could not start: {exc}") from None
        assert self.proc.stdout is not None and self.proc.stderr is not None
        limit = int(desc.max_output_mb * (1 << 20))
        deadline = time.monotonic() + desc.timeout
        self.stdout = Output(self.proc.stdout.fileno(), limit, deadline, self._cut_off)
        self._closing = False
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        self._timer = threading.Timer(desc.timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLIN)
        while not self._closing:
            if not poll.poll(100):
                continue
            chunk = os.read(fd, 8192)
            if not chunk:
                return
            self._stderr += chunk
            del self._stderr[:-STDERR_KEPT]

    def _expire(self) -> None:
        """At the deadline: kill the program unless it has already exited (a client still
        reading the last of its output is not the program's fault)."""
        with self._lock:
            if self._reaped:
                return
            flags = os.WEXITED | os.WNOWAIT | os.WNOHANG
            running = os.waitid(os.P_PID, self.proc.pid, flags) is None
        if running:
            self.timed_out = True
            self.kill()

    def _cut_off(self) -> None:
        """Stop reading: too much output, or none by the deadline."""
        if not self.stdout.over:
            self.timed_out = True
        self.kill()

    def kill(self) -> None:
        """Kill the whole process group (the program and anything it started)."""
        with self._lock:
            if not self._reaped:
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)

    def has_output(self) -> bool:
        return self.stdout.has_output()

    def _exited(self, block: bool) -> int | None:
        """The exit status once the program exits (a signal as its negative), without
        reaping it, so its pid stays reserved for killing its group."""
        flags = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
        if self.status is None and not self._reaped:
            info = os.waitid(os.P_PID, self.proc.pid, flags)
            if info is not None and info.si_pid:
                exited = info.si_code == os.CLD_EXITED
                self.status = info.si_status if exited else -info.si_status
        return self.status

    def _reap(self) -> None:
        self.kill()  # whatever the program left running in its group
        with self._lock:
            if not self._reaped:
                self.proc.wait()
                self._reaped = True
        self._timer.cancel()

    def finish(self) -> None:
        """Wait for the program to exit; raise if it failed, timed out or wrote too much."""
        self._exited(block=True)
        self._reap()
        problem = self._problem()
        if problem is not None:
            raise problem

    def _problem(self) -> OutcropError | None:
        name, desc = self.reader.name, self.reader.desc
        if self.stdout.over:
            limit = self.stdout.limit
            return TooLarge(
                f"reader {name} wrote more than max_output_mb = {desc.max_output_mb:g} MB; "
                "ask for a shorter time range",
                size=self.stdout.count,
                limit=limit,
            )
        if self.timed_out:
            return UpstreamFailed(
                f"reader {name} did not finish within {desc.timeout:g} s (timeout)"
            )
        if self.status:
            return UpstreamFailed(f"reader {name} failed ({self._how()}): {self.stderr()}")
        return None

    def _how(self) -> str:
        status = self.status or 0
        return f"exit status {status}" if status > 0 else f"killed by signal {-status}"

    def stderr(self) -> str:
        self._drain.join(timeout=2)
        text = bytes(self._stderr[-STDERR_SHOWN:]).decode("utf-8", "replace").strip()
        return text or "(nothing on stderr)"

    def failure(self, exc: BaseException) -> OutcropError:
        """The error to report when reading the output failed with `exc`: the program's own
        failure when it has one (it may have died mid-write), else invalid output."""
        deadline = time.monotonic() + 2
        while not self._reaped and self._exited(block=False) is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        problem = self._problem()
        if problem is not None:
            return problem
        if isinstance(exc, OutcropError):
            return exc
        fmt = self.reader.desc.format
        return UpstreamFailed(f"reader {self.reader.name} wrote invalid {fmt} output: {exc}")

    def check(self) -> None:
        """Raise when the output was cut short (too large, or killed at the deadline)."""
        if self.stdout.over or self.timed_out:
            raise self.failure(RuntimeError("output cut short"))

    def close(self) -> None:
        """Kill the program group if it still runs, reap it, release the pipes."""
        self._reap()
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stdout.ended = True
        self.proc.stdout.close()
        self._drain.join(timeout=2)  # to the end of stderr, if nothing else holds it open
        self._closing = True
        self._drain.join()
        self.proc.stderr.close()


_SLOTS: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


@contextmanager
def slot(reader: Reader) -> Iterator[None]:
    """One of the `max_concurrent` runs a reader may have at once (in this process),
    waiting up to `timeout` seconds for one."""
    desc = reader.desc
    with _SLOTS_LOCK:
        key = (reader.key, desc.max_concurrent)
        sem = _SLOTS.setdefault(key, threading.BoundedSemaphore(desc.max_concurrent))
    if not sem.acquire(timeout=desc.timeout):
        raise UpstreamFailed(
            f"reader {reader.name} is busy ({desc.max_concurrent} runs at a time, none "
            f"finished within {desc.timeout:g} s); try again later"
        )
    try:
        yield
    finally:
        sem.release()
