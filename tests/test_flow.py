"""Flow control and half-close (issue 12, items 4 and 5).

- Half-close: a client sends 16 MiB, then ``shutdown(SHUT_WR)``; the echo server must send
  every byte back before it closes (both APIs: ``BufferedDispatcher``/``dispatcher_with_send``
  and ``ChatChannel``/``async_chat``), and channels learn of it through ``handle_read_eof()``.
- Watermarks: over ``write_high_water`` a channel stops reading (``pause_writing()``), at
  ``write_low_water`` it reads again (``resume_writing()``); the drop-ins have no limit.
- ``Loop.pause_reading()`` pauses reading only: queued output still drains.
- A slow reader does not make an echo server's memory grow with what it is sent (a server in
  a subprocess, its RSS read from /proc).
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from typing import Any, List

import pytest

import netloop
from netloop import asynchat as nl_asynchat
from netloop import asyncore as nl_asyncore
from netloop.pollers import READ_MASK, WRITE
from coresupport import recv_some, tcp_pair
from support import run_until

PAUSED_AT_EOF = 4  # netloop.reactor.PAUSED_AT_EOF (spelled out: the test also runs before it)
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


# ---------------------------------------------------------------- echo channels of both APIs
class BufferedEcho(netloop.BufferedDispatcher):
    def handle_read(self) -> None:
        data = self.recv(65536)
        if data:
            self.send(data)

    def handle_close(self) -> None:
        self.close()


class LegacyEcho(nl_asyncore.dispatcher_with_send):
    def handle_read(self) -> None:
        data = self.recv(65536)
        if data:
            self.send(data)

    def handle_close(self) -> None:
        self.close()


class ChatEcho(netloop.chat.ChatChannel):
    def __init__(self, sock: Any, map: Any) -> None:
        super().__init__(sock, map=map)
        self.set_terminator(None)

    def collect_incoming_data(self, data: bytes) -> None:
        self.push(data)


class LegacyChatEcho(nl_asynchat.async_chat):
    def __init__(self, sock: Any, map: Any) -> None:
        super().__init__(sock, map=map)
        self.set_terminator(None)

    def collect_incoming_data(self, data: bytes) -> None:
        self.push(data)

    def found_terminator(self) -> None:  # pragma: no cover - no terminator is set
        pass


ECHOES = [BufferedEcho, LegacyEcho, ChatEcho, LegacyChatEcho]


def mask_of(lp: netloop.Loop, ch: Any) -> int:
    return lp._masks.get(ch._fileno, 0)


def server_waits(ch: Any) -> bool:
    """The server channel is closed, or waits for its peer to read: its queue is over the high
    watermark (it stopped reading), or it saw end of input and is flushing its queue."""
    return (ch._fileno is None or getattr(ch, "writing_paused", False)
            or bool((getattr(ch, "_nl_paused", 0) or 0) & PAUSED_AT_EOF))


def send_all_then_half_close(lp: netloop.Loop, ch: Any, client: socket.socket, data: bytes,
                             timeout: float = 60.0) -> bytes:
    """Drive the loop while ``client`` sends ``data``, shuts its side, and reads to EOF.

    The client reads only while the server channel waits for it (see ``server_waits``): as a
    client that sends a request whole before reading the answer, but without deadlocking
    against the server's flow control.
    """
    client.setblocking(False)
    view = memoryview(data)
    sent = 0
    got = bytearray()
    eof = False

    def step() -> bool:
        nonlocal sent, eof
        if sent < len(view):
            try:
                sent += client.send(view[sent:sent + (1 << 20)])
            except BlockingIOError:
                pass
            if sent == len(view):
                client.shutdown(socket.SHUT_WR)
        if not server_waits(ch):
            return False
        while True:
            try:
                chunk = client.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                eof = True
                break
            got.extend(chunk)
        return eof

    deadline = time.monotonic() + timeout
    while not step():
        assert time.monotonic() < deadline, "no EOF after %d of %d bytes echoed" % (
            len(got), len(data))
        lp.run_once(0.05)
    return bytes(got)


@pytest.mark.parametrize("cls", ECHOES, ids=lambda c: c.__name__)
def test_half_close_flushes_everything_queued(loop: netloop.Loop, cls: type) -> None:
    """16 MiB then SHUT_WR: every byte comes back, then the server closes its side."""
    client, server_sock = tcp_pair()
    try:
        ch = cls(server_sock, map=loop.map)
        data = os.urandom(1 << 20) * 16
        got = send_all_then_half_close(loop, ch, client, data)
        assert len(got) == len(data)
        assert got == data
        run_until(loop, lambda: ch._fileno is None)
        assert not loop.map
    finally:
        client.close()


class EofWatcher(netloop.BufferedDispatcher):
    """Answers the byte count when the peer half-closes, then closes itself."""

    def __init__(self, sock: Any, map: Any) -> None:
        super().__init__(sock, map=map)
        self.count = 0
        self.eofs = 0

    def handle_read(self) -> None:
        self.count += len(self.recv(65536))

    def handle_read_eof(self) -> None:
        self.eofs += 1
        self.send(b"%d bytes\n" % self.count)
        # Still open: the loop stops reading (EOF stays readable for ever) but writes on.

    def handle_write(self) -> None:
        self.initiate_send()
        if not self.send_backlog and self.eofs:
            self.close()


def test_handle_read_eof_lets_a_channel_answer_after_half_close(loop: netloop.Loop) -> None:
    client, server_sock = tcp_pair()
    try:
        ch = EofWatcher(server_sock, map=loop.map)
        client.sendall(b"x" * 1000)
        client.shutdown(socket.SHUT_WR)
        client.setblocking(False)
        got = bytearray()
        run_until(loop, lambda: recv_some(client, got) or ch.eofs)
        assert mask_of(loop, ch) & READ_MASK == 0  # no reading after EOF: no spinning
        for _ in range(5):
            loop.run_once(0)
        assert ch.eofs == 1
        if ch._fileno is not None:
            ch.close()
        run_until(loop, lambda: recv_some(client, got) or got.endswith(b"\n"))
        assert bytes(got) == b"1000 bytes\n"
    finally:
        client.close()


# ---------------------------------------------------------------- watermarks
class Hooked(netloop.BufferedDispatcher):
    def __init__(self, sock: Any, map: Any) -> None:
        super().__init__(sock, map=map)
        self.events: List[str] = []

    def handle_read(self) -> None:
        self.recv(65536)

    def pause_writing(self) -> None:
        self.events.append("pause")
        super().pause_writing()

    def resume_writing(self) -> None:
        self.events.append("resume")
        super().resume_writing()


class HookedChat(netloop.chat.ChatChannel):
    def __init__(self, sock: Any, map: Any) -> None:
        super().__init__(sock, map=map)
        self.events: List[str] = []
        self.set_terminator(None)

    def collect_incoming_data(self, data: bytes) -> None:
        pass

    def pause_writing(self) -> None:
        self.events.append("pause")
        super().pause_writing()

    def resume_writing(self) -> None:
        self.events.append("resume")
        super().resume_writing()


def queue_over(ch: Any, size: int) -> None:
    if isinstance(ch, netloop.chat.ChatChannel):
        ch.push(b"q" * size)
    else:
        ch.send(b"q" * size)


@pytest.mark.parametrize("cls", [Hooked, HookedChat], ids=lambda c: c.__name__)
def test_watermarks_pause_and_resume_reading(loop: netloop.Loop, cls: type) -> None:
    client, server_sock = tcp_pair()
    # A fixed receive buffer: autotuning (tcp_rmem's maximum is 32 MiB here) could otherwise
    # grow the window until the kernel absorbs a whole 16 MiB push, and the queue never fills.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    try:
        ch = cls(server_sock, map=loop.map)
        assert ch.get_write_buffer_limits() == (64 * 1024, 256 * 1024)
        ch.set_write_buffer_limits(high=128 * 1024, low=32 * 1024)
        loop.run_once(0)
        assert mask_of(loop, ch) == READ_MASK
        queue_over(ch, 16 << 20)  # far more than the socket buffers take
        assert ch.get_write_buffer_size() > 128 * 1024
        assert ch.events == ["pause"] and ch.writing_paused
        assert mask_of(loop, ch) == WRITE  # writing, not reading
        client.setblocking(False)
        got = bytearray()
        run_until(loop, lambda: recv_some(client, got, 1 << 20) or ch.events == ["pause", "resume"],
                  timeout=30)
        assert ch.get_write_buffer_size() <= 32 * 1024
        assert mask_of(loop, ch) & READ_MASK
        run_until(loop, lambda: recv_some(client, got, 1 << 20) or len(got) == 16 << 20,
                  timeout=30)
        assert mask_of(loop, ch) == READ_MASK
        # A user pause and a queue pause are separate reasons.
        loop.pause_reading(ch)
        queue_over(ch, 16 << 20)
        assert ch.events[-1] == "pause"
        run_until(loop, lambda: recv_some(client, got, 1 << 20) or ch.events[-1] == "resume",
                  timeout=30)
        assert mask_of(loop, ch) & READ_MASK == 0  # still paused by the user
        loop.resume_reading(ch)
        assert mask_of(loop, ch) & READ_MASK
    finally:
        client.close()


@pytest.mark.parametrize("cls", [LegacyEcho, LegacyChatEcho], ids=lambda c: c.__name__)
def test_drop_ins_keep_an_unbounded_queue(loop: netloop.Loop, cls: type) -> None:
    client, server_sock = tcp_pair()
    try:
        ch = cls(server_sock, map=loop.map)
        loop.run_once(0)
        assert ch.write_high_water is None
        queue_over(ch, 8 << 20)
        assert not ch.writing_paused
        assert mask_of(loop, ch) == READ_MASK | WRITE
        # Opt-in: the same watermarks as the core.
        ch.set_write_buffer_limits(256 * 1024)
        assert ch.writing_paused and mask_of(loop, ch) == WRITE
    finally:
        client.close()


def test_set_write_buffer_limits_checks_its_arguments(loop: netloop.Loop) -> None:
    a, b = socket.socketpair()
    try:
        ch = Hooked(a, map=loop.map)
        with pytest.raises(ValueError):
            ch.set_write_buffer_limits(high=10, low=20)
        ch.set_write_buffer_limits(high=4000)
        assert ch.get_write_buffer_limits() == (1000, 4000)
    finally:
        b.close()


@pytest.mark.parametrize("cls", [BufferedEcho, ChatEcho], ids=lambda c: c.__name__)
def test_pause_reading_with_a_full_queue_drains(loop: netloop.Loop, cls: type) -> None:
    """pause_reading() takes read interest away only: the queue still goes out."""
    client, server_sock = tcp_pair()
    try:
        ch = cls(server_sock, map=loop.map)
        loop.run_once(0)
        ch.set_write_buffer_limits(None)  # the user's pause alone
        queue_over(ch, 8 << 20)
        assert ch.get_write_buffer_size()
        loop.pause_reading(ch)
        assert mask_of(loop, ch) == WRITE
        client.setblocking(False)
        got = bytearray()
        run_until(loop, lambda: recv_some(client, got, 1 << 20) or len(got) == 8 << 20,
                  timeout=30)
        assert not ch.get_write_buffer_size()
        assert mask_of(loop, ch) == 0  # nothing to write, reading paused
        client.send(b"more")
        for _ in range(3):
            loop.run_once(0.01)
        assert len(got) == 8 << 20  # nothing was read, so nothing echoed
        loop.resume_reading(ch)
        run_until(loop, lambda: recv_some(client, got) or got.endswith(b"more"))
    finally:
        client.close()


# ---------------------------------------------------------------- memory under a slow reader
SLOW_READER_SERVER = r"""
import socket, sys
sys.path.insert(0, SRC)
import netloop, netloop.chat

class Echo(netloop.BufferedDispatcher):
    def handle_read(self):
        data = self.recv(65536)
        if data:
            self.send(data)

class ChatEcho(netloop.chat.ChatChannel):
    def __init__(self, sock, map):
        super().__init__(sock, map=map)
        self.set_terminator(None)
    def collect_incoming_data(self, data):
        self.push(data)

class Server(netloop.Dispatcher):
    def handle_accepted(self, sock, addr):
        KIND(sock, map=self._map)

lp = netloop.Loop(poller=POLLER)
server = Server(map=lp.map)
server.create_socket()
server.bind(("127.0.0.1", 0))
server.listen(8)
print(server.socket.getsockname()[1], flush=True)
lp.run_forever()
"""


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for %d" % (field, pid))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["Echo", "ChatEcho"])
def test_slow_reader_keeps_server_memory_bounded(kind: str) -> None:
    """200 MiB sent to an echo server by a client that reads nothing until it cannot send."""
    code = (SLOW_READER_SERVER.replace("SRC", repr(SRC)).replace("KIND", kind)
            .replace("POLLER", repr(os.environ.get("NETLOOP_POLLER") or None)))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        base = rss_kib(proc.pid)
        total = 200 << 20
        block = memoryview(os.urandom(1 << 20))
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.setblocking(False)
            sent = received = 0
            reading = False
            while received < total:
                wants = [client] if sent < total else []
                readable, writable, _ = select.select([client] if reading else [], wants, [],
                                                      0.5 if not reading else 10)
                if writable:
                    try:
                        sent += client.send(block[:min(len(block), total - sent)])
                    except BlockingIOError:
                        pass
                if readable:
                    while True:
                        try:
                            chunk = client.recv(1 << 20)
                        except BlockingIOError:
                            break
                        assert chunk, "the server closed early"
                        received += len(chunk)
                if not readable and not writable:
                    assert not reading, "stalled at %d sent, %d received" % (sent, received)
                    # It read nothing, and could send nothing for half a second: the server
                    # stopped reading too (flow control). From now on it reads as well.
                    reading = True
                    print("\nthe client stalled after sending %.1f MiB" % (sent / 2 ** 20))
        peak = rss_kib(proc.pid, "VmHWM")
        print("\n%s: server RSS %d KiB at start, peak %d KiB (+%.1f MiB) for 200 MiB echoed"
              % (kind, base, peak, (peak - base) / 1024))
        assert peak - base < 64 * 1024
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
