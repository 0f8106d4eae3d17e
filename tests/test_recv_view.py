"""``Dispatcher.recv_view()``: reads into the loop's one shared buffer, and the CLI echo on it.

The contract under test: a view is of the loop's buffer (no object per read); what
``BufferedDispatcher.send()`` queues of it is a copy, never a view of that buffer (the next
read on the loop overwrites it); the end of input, a reset and "nothing yet" answer as
``recv()`` does; TLS reads through ``TLSSocket.recv_into()`` (its ``recv()``, copied); sockets
without ``recv_into()`` and channels without a loop read with ``recv()``.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any, List

import pytest

import netloop
from netloop.cli import EchoHandler, EchoServer
from netloop.dispatcher import READ_BUFFER_SIZE
from coresupport import recv_some
from support import run_until


class Reader(netloop.Dispatcher):
    """Keeps what each ``recv_view()`` answered (the views themselves, and copies)."""

    def __init__(self, sock: Any, map: Any, size: Any = None) -> None:
        super().__init__(sock, map=map)
        self.size = size
        self.views: List[memoryview] = []
        self.copies: List[bytes] = []
        self.eof = 0
        self.closed = 0

    def handle_read(self) -> None:
        view = self.recv_view() if self.size is None else self.recv_view(self.size)
        self.views.append(view)
        self.copies.append(bytes(view))

    def writable(self) -> bool:
        return False

    def handle_read_eof(self) -> None:
        self.eof += 1
        self.close()

    def handle_close(self) -> None:
        self.closed += 1
        self.close()


def _pair() -> Any:
    a, b = socket.socketpair()
    b.setblocking(False)
    return a, b


def test_views_are_of_the_loops_one_buffer(loop: netloop.Loop) -> None:
    (a1, b1), (a2, b2) = _pair(), _pair()
    r1, r2 = Reader(a1, loop.map), Reader(a2, loop.map)
    try:
        b1.send(b"first")
        run_until(loop, lambda: r1.copies)
        view = r1.views[0]
        assert bytes(view) == b"first" and not view.readonly
        shared = loop._read_view
        assert view.obj is shared.obj and len(shared) == READ_BUFFER_SIZE
        b2.send(b"SECOND")
        run_until(loop, lambda: r2.copies)
        assert r2.views[0].obj is shared.obj  # every channel of the loop reads into it
        # The documented limit: a view lives until the next read on the loop.
        assert bytes(view) == b"SECON"
        assert r1.copies == [b"first"] and r2.copies == [b"SECOND"]
    finally:
        r1.close()
        r2.close()
        b1.close()
        b2.close()


def test_a_size_bounds_the_read(loop: netloop.Loop) -> None:
    a, b = _pair()
    r = Reader(a, loop.map, size=3)
    try:
        b.send(b"abcdefg")
        run_until(loop, lambda: b"".join(r.copies) == b"abcdefg")
        assert r.copies[0] == b"abc"
        r.size = 10 * READ_BUFFER_SIZE  # more than the buffer: the buffer's size
        big = os.urandom(100000)
        b.sendall(big)
        run_until(loop, lambda: sum(map(len, r.copies)) == 7 + len(big))
        assert b"".join(r.copies)[7:] == big
        with pytest.raises(ValueError):
            r.recv_view(0)
        with pytest.raises(ValueError):
            r.recv_view(-1)
    finally:
        r.close()
        b.close()


def test_nothing_yet_end_of_input_and_reset(loop: netloop.Loop) -> None:
    a, b = _pair()
    r = Reader(a, loop.map)
    try:
        loop.run_once(0)
        view = r.recv_view()  # a spurious wake-up: nothing to read, the channel stays
        assert not view and len(view) == 0 and r.connected and not r.eof
        b.close()
        run_until(loop, lambda: r.eof)
        assert r.views and not r.views[-1] and r.closed == 0
    finally:
        r.close()
    # A reset (RST) closes through handle_close(), as recv() does.
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    listener.close()
    r = Reader(conn, loop.map)
    try:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        run_until(loop, lambda: r.closed or r.eof)
        assert r.closed == 1 and not r.views[-1]
    finally:
        r.close()


def test_idle_timer_sees_reads(loop: netloop.Loop) -> None:
    a, b = _pair()
    r = Reader(a, loop.map)
    try:
        r.set_idle_timeout(3600)
        r._nl_last = -1.0
        b.send(b"x")
        run_until(loop, lambda: r.copies)
        assert r._nl_last >= 0  # a read through the view counts as activity
    finally:
        r.close()
        b.close()


def test_without_a_loop_or_recv_into_it_reads_with_recv() -> None:
    a, b = _pair()
    own: dict = {}  # a map no loop serves yet: the channel has no loop to lend it a buffer
    r = Reader(a, own)
    try:
        b.send(b"no loop")
        view = r.recv_view()
        assert bytes(view) == b"no loop" and isinstance(view.obj, bytes)
    finally:
        r.close()
        b.close()

    class Wrapped:
        """A socket wrapper with recv() and no recv_into()."""

        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def __getattr__(self, name: str) -> Any:
            if name == "recv_into":
                raise AttributeError(name)
            return getattr(self.sock, name)

    lp = netloop.Loop()
    a, b = _pair()
    r = Reader(a, lp.map)
    try:
        r.socket = Wrapped(a)
        b.send(b"wrapped" * 20000)
        run_until(lp, lambda: r.copies)
        assert isinstance(r.views[0].obj, bytes) and len(r.copies[0]) <= 65536
    finally:
        r.close()
        b.close()
        lp.close()


def test_echo_queues_copies_never_views_of_the_shared_buffer(loop: netloop.Loop) -> None:
    """The peer does not read: what the socket does not take is queued, and must survive the
    loop's next read (here: the buffer scribbled over) intact."""
    a, b = _pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    echo = EchoHandler(a, map=loop.map)
    echo.set_write_buffer_limits(None)  # no pause: every read is echoed and queued
    payload = os.urandom(600000)
    sent = 0
    try:
        def feed() -> bool:
            nonlocal sent
            try:
                sent += b.send(payload[sent:sent + 65536])
            except BlockingIOError:
                pass
            return sent == len(payload) and echo.send_backlog > 300000
        run_until(loop, feed, timeout=20)
        shared = loop._read_view
        assert shared is not None
        for chunk in echo._outq:
            assert not (isinstance(chunk, memoryview) and chunk.obj is shared.obj)
        shared[:] = b"\xee" * len(shared)  # what the loop's next read would do
        got = bytearray()

        def drain() -> bool:
            recv_some(b, got)
            return len(got) == len(payload)
        run_until(loop, drain, timeout=20)
        assert got == payload
    finally:
        echo.close()
        b.close()


@pytest.mark.timeout(60)
def test_cli_echo_streams_both_ways(loop: netloop.Loop) -> None:
    """The CLI echo over TCP: several connections, each pushing 2 MiB while reading back."""
    server = EchoServer("127.0.0.1", 0, loop.map)
    clients = []
    size = 2 << 20
    try:
        for i in range(4):
            c = socket.create_connection(server.address)
            c.setblocking(False)
            clients.append([c, os.urandom(size), 0, bytearray()])

        def step() -> bool:
            done = True
            for entry in clients:
                c, data, off, got = entry
                if off < size:
                    try:
                        entry[2] = off + c.send(data[off:off + 262144])
                    except BlockingIOError:
                        pass
                recv_some(c, got)
                done = done and len(got) == size
            return done
        run_until(loop, step, timeout=50, step=0.01)
        for c, data, _, got in clients:
            assert got == data
    finally:
        for entry in clients:
            entry[0].close()
        server.close()


def test_echo_half_close_sends_everything_then_closes(loop: netloop.Loop) -> None:
    a, b = _pair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    echo = EchoHandler(a, map=loop.map)
    echo.set_write_buffer_limits(None)
    payload = os.urandom(300000)
    try:
        b.setblocking(True)
        b.settimeout(10)
        sent = 0
        while sent < len(payload):
            b.setblocking(False)
            try:
                sent += b.send(payload[sent:sent + 65536])
            except BlockingIOError:
                pass
            loop.run_once(0.01)
        b.shutdown(socket.SHUT_WR)
        run_until(loop, lambda: echo._nl_close_when_sent or not echo.connected, timeout=10)
        got = bytearray()

        def drain() -> bool:
            try:
                data = b.recv(65536)
            except BlockingIOError:
                return False
            if not data:
                return True
            got.extend(data)
            return False
        run_until(loop, drain, timeout=20)
        assert got == payload and not echo.connected
    finally:
        echo.close()
        b.close()


@pytest.mark.timeout(60)
def test_cli_echo_over_tls(loop: netloop.Loop) -> None:
    import ssl

    import netloop.tls
    import tlssupport
    server = EchoServer("127.0.0.1", 0, loop.map)
    server.tls_context = tlssupport.server_context()
    raw = socket.create_connection(server.address)
    raw.setblocking(False)
    client = tlssupport.client_context().wrap_socket(raw, server_hostname="localhost",
                                                     do_handshake_on_connect=False)
    try:
        def handshake() -> bool:
            try:
                client.do_handshake()
                return True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False
        run_until(loop, handshake, timeout=20, step=0.01)
        channel = [ch for ch in loop.map.values() if isinstance(ch, EchoHandler)][0]
        assert isinstance(channel.socket, netloop.tls.TLSSocket)
        payload = os.urandom(1 << 20)
        sent = 0
        got = bytearray()

        def step() -> bool:
            nonlocal sent
            if sent < len(payload):
                try:
                    sent += client.send(payload[sent:sent + 65536])
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
            while True:
                try:
                    data = client.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    break
                if not data:
                    break
                got.extend(data)
            return len(got) == len(payload)
        run_until(loop, step, timeout=50, step=0.005)
        assert got == payload
    finally:
        client.close()
        server.close()


class CountingEcho(EchoHandler):
    """The CLI echo, counting its closes and errors (its handle_read() is EchoHandler's own:
    recv_view() and send() in line)."""

    def __init__(self, sock: Any, map: Any) -> None:
        super().__init__(sock, map)
        self.closes = 0
        self.errors = 0

    def handle_close(self) -> None:
        self.closes += 1
        super().handle_close()

    def handle_error(self) -> None:
        self.errors += 1
        super().handle_error()


def _echo_round(loop: netloop.Loop, sock: socket.socket, data: bytes) -> None:
    """Send ``data`` to the echo behind ``sock`` and run the loop until it all came back."""
    sock.send(data)
    got = bytearray()
    run_until(loop, lambda: recv_some(sock, got) or got == data)


def test_echo_reads_in_line_only_for_classes_that_keep_recv_view_and_send(
        loop: netloop.Loop) -> None:
    """The in-line read must not go round a subclass's own send() or recv_view()."""
    assert CountingEcho.handle_read is EchoHandler.handle_read
    sends: List[bytes] = []

    class Logged(EchoHandler):
        def send(self, data: Any) -> None:
            sends.append(bytes(data))
            super().send(data)

    class Deeper(Logged):
        pass

    class OwnRead(Logged):
        def handle_read(self) -> None:
            EchoHandler.handle_read(self)

    assert Logged.handle_read is not EchoHandler.handle_read
    assert Deeper.handle_read is Logged.handle_read
    assert OwnRead.handle_read is not Logged.handle_read
    for cls in (Logged, Deeper):
        a, b = _pair()
        echo = cls(a, loop.map)
        try:
            for i in range(3):  # the first read on a loop makes its buffer; then in line
                _echo_round(loop, b, b"ping %d" % i)
        finally:
            echo.close()
            b.close()
    assert sends == [b"ping 0", b"ping 1", b"ping 2"] * 2


def test_echo_in_line_read_closes_quietly_on_a_reset(loop: netloop.Loop) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    conn, _ = listener.accept()
    listener.close()
    warm_a, warm_b = _pair()
    warm = CountingEcho(warm_a, loop.map)  # makes the loop's read buffer: the next read is in line
    echo = CountingEcho(conn, loop.map)
    try:
        warm_b.send(b"x")
        run_until(loop, lambda: loop._read_view is not None)
        client.send(b"data the server never reads")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        run_until(loop, lambda: echo.closes)
        assert echo.closes == 1 and echo.errors == 0 and not echo.connected
        assert echo not in loop.map.values() and warm.connected
    finally:
        echo.close()
        warm.close()
        warm_b.close()


def test_echo_in_line_send_to_a_vanished_peer_closes_quietly(loop: netloop.Loop) -> None:
    """Data read, then the send fails (EPIPE: the peer closed after sending)."""
    a, b = _pair()
    echo = CountingEcho(a, loop.map)
    try:
        _echo_round(loop, b, b"first")
        assert loop._read_view is not None
        b.send(b"last words")
        b.close()
        run_until(loop, lambda: echo.closes)
        assert echo.closes == 1 and echo.errors == 0 and echo not in loop.map.values()
    finally:
        echo.close()


def _count_writes(monkeypatch: Any) -> List[int]:
    """The descriptors the CLI echo's in-line send hands os.write() from now on."""
    fds: List[int] = []

    def counted(fd: int, data: Any) -> int:
        fds.append(fd)
        return os.write(fd, data)
    monkeypatch.setattr(netloop.cli, "_write", counted)
    return fds


def test_echo_in_line_writes_a_plain_socket_by_its_descriptor(
        loop: netloop.Loop, monkeypatch: Any) -> None:
    fds = _count_writes(monkeypatch)
    a, b = _pair()
    echo = CountingEcho(a, loop.map)
    try:
        for i in range(3):  # the first read makes the loop's buffer: the rest are in line
            _echo_round(loop, b, b"ping %d" % i)
        assert fds == [a.fileno()] * 2
        assert echo.errors == 0
    finally:
        echo.close()
        b.close()


def test_echo_in_line_sends_by_method_on_other_sockets(
        loop: netloop.Loop, monkeypatch: Any) -> None:
    """A socket of another class (a subclass here; TLS in test_cli_echo_over_tls) sends through
    its own send(): its class may do more than write(2)."""
    fds = _count_writes(monkeypatch)
    sends: List[bytes] = []

    class Traced(socket.socket):
        def send(self, data: Any, flags: int = 0) -> int:
            sends.append(bytes(data))
            return super().send(data, flags)

    a, b = _pair()
    traced = Traced(a.family, a.type, fileno=a.detach())
    traced.setblocking(False)
    echo = CountingEcho(traced, loop.map)
    try:
        for i in range(3):
            _echo_round(loop, b, b"ping %d" % i)
        assert fds == [] and sends == [b"ping 0", b"ping 1", b"ping 2"]
    finally:
        echo.close()
        b.close()


def test_echo_handle_read_off_the_map_sends_by_method(
        loop: netloop.Loop, monkeypatch: Any) -> None:
    """A channel taken off its map keeps its socket but no descriptor number: handle_read()
    called by hand still echoes, through socket.send()."""
    fds = _count_writes(monkeypatch)
    a, b = _pair()
    echo = CountingEcho(a, loop.map)
    try:
        _echo_round(loop, b, b"warm")  # makes the loop's buffer
        echo.del_channel()
        b.send(b"by hand")
        got = bytearray()

        def by_hand() -> bool:
            echo.handle_read()
            recv_some(b, got)
            return got == b"by hand"
        run_until(loop, by_hand)
        assert fds == [] and echo.errors == 0
    finally:
        echo.close()
        b.close()


def test_echo_in_line_read_counts_as_activity(loop: netloop.Loop) -> None:
    a, b = _pair()
    echo = CountingEcho(a, loop.map)
    try:
        _echo_round(loop, b, b"warm")
        echo.set_idle_timeout(3600)
        echo._nl_last = -1.0
        _echo_round(loop, b, b"x")
        assert echo._nl_last >= 0
    finally:
        echo.close()
        b.close()


def test_echo_reuses_its_slice_for_reads_of_one_length(
        loop: netloop.Loop, monkeypatch: Any) -> None:
    """Two echoes on one loop: a read of the length read last sends the slice of the shared
    buffer made then (no new view per request), and every echo is still what its own read
    got, whichever channel read before and whatever length came between."""
    writes: List[Any] = []

    def recorded(fd: int, data: Any) -> int:
        writes.append((data, bytes(data)))
        return os.write(fd, data)
    monkeypatch.setattr(netloop.cli, "_write", recorded)
    a1, b1 = _pair()
    a2, b2 = _pair()
    e1, e2 = CountingEcho(a1, loop.map), CountingEcho(a2, loop.map)
    try:
        _echo_round(loop, b1, b"warm")  # makes the loop's buffer (by the methods)
        writes.clear()
        rounds = [(b1, os.urandom(10)), (b2, os.urandom(10)), (b1, os.urandom(7)),
                  (b2, os.urandom(7)), (b1, os.urandom(10))]
        for peer, payload in rounds:
            _echo_round(loop, peer, payload)
        assert [copy for _, copy in writes] == [payload for _, payload in rounds]
        views = [view for view, _ in writes]
        assert views[1] is views[0] and views[3] is views[2]
        assert views[2] is not views[0] and views[4] is not views[2]
        assert e1.errors == e2.errors == 0
    finally:
        e1.close()
        e2.close()
        b1.close()
        b2.close()
