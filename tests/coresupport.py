"""Helpers shared by the core test modules: instrumented pollers and socket plumbing."""

from __future__ import annotations

import collections
import socket
import struct
import time
from typing import Any, Callable, List, Optional, Tuple

import netloop
from netloop import pollers
from support import run_until


class CountingPoller:
    """A real poller, wrapped to count interest calls and record each poll's timeout."""

    def __init__(self, name: str) -> None:
        self.inner = pollers.by_name(name)()
        self.name = self.inner.name
        self.calls: collections.Counter = collections.Counter()
        self.timeouts: List[Optional[float]] = []

    def register(self, fd: int, mask: int) -> None:
        self.calls["register"] += 1
        self.inner.register(fd, mask)

    def modify(self, fd: int, mask: int) -> None:
        self.calls["modify"] += 1
        self.inner.modify(fd, mask)

    def unregister(self, fd: int) -> None:
        self.calls["unregister"] += 1
        self.inner.unregister(fd)

    def poll(self, timeout: Optional[float]) -> pollers.Events:
        self.timeouts.append(timeout)
        return self.inner.poll(timeout)

    def fileno(self) -> int:
        return self.inner.fileno()

    def close(self) -> None:
        self.inner.close()

    def interest_calls(self) -> int:
        return self.calls["register"] + self.calls["modify"] + self.calls["unregister"]


class FakePoller:
    """A poller that never blocks and never reports anything: it records the timeouts asked."""

    name = "fake"

    def __init__(self) -> None:
        self.timeouts: List[Optional[float]] = []
        self.masks: dict = {}

    def register(self, fd: int, mask: int) -> None:
        self.masks[fd] = mask

    def modify(self, fd: int, mask: int) -> None:
        self.masks[fd] = mask

    def unregister(self, fd: int) -> None:
        self.masks.pop(fd, None)

    def poll(self, timeout: Optional[float]) -> pollers.Events:
        self.timeouts.append(timeout)
        return []

    def fileno(self) -> int:
        raise ValueError("no fd")

    def close(self) -> None:
        self.masks.clear()


def tcp_pair(family: int = socket.AF_INET) -> Tuple[socket.socket, socket.socket]:
    """A connected (client, server) pair of blocking TCP sockets over loopback."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname()[:2])
        server, _ = listener.accept()
    return client, server


def has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def recv_some(sock: socket.socket, into: bytearray, size: int = 65536) -> None:
    """Append whatever a non-blocking socket has to ``into``."""
    while True:
        try:
            data = sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            return
        into.extend(data)


def rst_close(sock: socket.socket) -> None:
    """Close with RST instead of FIN (SO_LINGER on, zero timeout)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def echo_roundtrip(lp: netloop.Loop, client: socket.socket, data: bytes) -> None:
    """Send ``data`` on ``client`` (made non-blocking) and run ``lp`` until all of it is back."""
    client.setblocking(False)
    client.send(data)
    got = bytearray()
    run_until(lp, lambda: recv_some(client, got) or len(got) >= len(data))
    assert got == data


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, step: float = 0.005) -> None:
    """Wait (outside any loop) for something another thread or process does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within %.1fs" % timeout)
        time.sleep(step)


class PlainEcho(netloop.BufferedDispatcher):
    """Echo what it reads; close when the peer is gone."""

    def handle_read(self) -> None:
        data = self.recv(65536)
        if data:
            self.send(data)

    def handle_close(self) -> None:
        self.close()


class Echo(PlainEcho):
    """Echo what it reads; remember whether it was closed and how."""

    closed_by: Any = None

    def handle_close(self) -> None:
        self.closed_by = "handle_close"
        self.close()


class EchoServer(netloop.Dispatcher):
    def __init__(self, map: Any, family: int = socket.AF_INET, address: Any = None,
                 handler: type = Echo) -> None:
        super().__init__(map=map)
        self.handler = handler
        self.channels: List[Any] = []
        if address is None:
            address = ("::1", 0) if family == socket.AF_INET6 else ("127.0.0.1", 0)
        self.create_socket(family)
        if family != socket.AF_UNIX:
            self.set_reuse_addr()
        self.bind(address)
        self.listen(64)
        self.address = self.socket.getsockname()

    def handle_accepted(self, sock: Any, addr: Any) -> None:
        self.channels.append(self.handler(sock, map=self._map))
