"""The server's HTTP protocol: one response's small writes leave in one system call, in
order, and nothing held is lost or sent after a close.

A real asyncio socket transport wraps one end of a socket pair; what the other end can
read, and when, shows what was sent.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from outcrop.cli.protocol import HOLD_BYTES, CoalescingHttpToolsProtocol, CoalescingTransport
from outcrop.cli.serve import uvicorn_options
from outcrop.settings import Settings

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    return "asyncio", {"use_uvloop": True}  # the server's event loop


class Pair:
    def __init__(self, transport: CoalescingTransport, peer: socket.socket) -> None:
        self.transport = transport
        self.peer = peer
        self.loop_errors: list[dict[str, object]] = []  # what the event loop reported

    def waiting(self) -> bytes:
        """What the peer can read now, without waiting."""
        try:
            return self.peer.recv(1 << 22)
        except BlockingIOError:
            return b""

    def read_all(self, size: int) -> bytes:
        """Exactly `size` bytes (blocking, at most 10 s)."""
        self.peer.settimeout(10)
        got = b""
        while len(got) < size:
            part = self.peer.recv(size - len(got))
            if not part:
                break
            got += part
        self.peer.setblocking(False)
        return got


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    pair = Pair(CoalescingTransport(transport, loop), peer)  # type: ignore[arg-type]
    loop.set_exception_handler(lambda _, context: pair.loop_errors.append(context))
    yield pair
    loop.set_exception_handler(None)
    transport.abort()
    peer.close()


@pytest.mark.anyio
async def test_small_writes_of_one_step_leave_together(pair: Pair) -> None:
    pair.transport.write(HEAD)
    pair.transport.write(b"hello")
    assert pair.transport.get_write_buffer_size() == len(HEAD) + 5
    assert pair.waiting() == b""  # held until the step ends
    await asyncio.sleep(0)
    assert pair.waiting() == HEAD + b"hello"
    assert pair.transport.get_write_buffer_size() == 0


@pytest.mark.anyio
async def test_a_large_write_leaves_at_once_after_what_is_held(pair: Pair) -> None:
    body = bytes(range(256)) * (HOLD_BYTES // 256 + 10)
    pair.transport.write(HEAD)
    pair.transport.write(body)
    # Sent now, head first: nothing past HOLD_BYTES waits for the end of the step.
    assert pair.read_all(len(HEAD) + len(body)) == HEAD + body
    await asyncio.sleep(0)
    assert pair.waiting() == b""


@pytest.mark.anyio
async def test_close_sends_what_is_held_first(pair: Pair) -> None:
    pair.transport.write(HEAD)
    pair.transport.writelines([b"hel", bytearray(b"lo")])
    pair.transport.close()
    await asyncio.sleep(0.05)
    assert pair.read_all(len(HEAD) + 6) == HEAD + b"hello"  # then the end of the stream


@pytest.mark.anyio
async def test_abort_drops_what_is_held(pair: Pair) -> None:
    pair.transport.write(HEAD)
    pair.transport.abort()
    await asyncio.sleep(0.05)
    assert pair.read_all(1) == b""
    assert pair.transport.is_closing()
    assert pair.loop_errors == []


@pytest.mark.anyio
async def test_a_write_after_the_connection_closed_is_dropped(pair: Pair) -> None:
    """uvloop raises for a write to a closed handle: from the deferred send, that would be
    an error in the event loop instead of a dropped answer to a client that left."""
    pair.transport._transport.close()
    await asyncio.sleep(0.05)  # the connection is gone
    pair.transport.write(HEAD)
    await asyncio.sleep(0.05)
    assert pair.read_all(1) == b""
    assert pair.loop_errors == []


def test_the_servers_run_the_coalescing_protocol() -> None:
    """`outcrop serve` (whose `--workers N` pickles it), and `outcrop start`'s workers."""
    import pickle

    from outcrop.cli.runner import OutcropWorker

    protocol = uvicorn_options(Settings())["http"]
    assert protocol is CoalescingHttpToolsProtocol
    assert pickle.loads(pickle.dumps(protocol)) is protocol
    assert issubclass(OutcropWorker.CONFIG_KWARGS["http"], protocol)
