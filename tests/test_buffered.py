"""The buffered sender: send at once, queue only the rest without copying, write interest only
while something is queued."""

from __future__ import annotations

import os
import socket
from typing import Any, List

import pytest

import netloop
import netloop.asyncore
from netloop import buffered
from netloop.pollers import WRITE
from coresupport import recv_some
from support import run_until

PIECE = 4096
PIECES = 2000


@pytest.mark.parametrize("sender", ["core", "facade"])
def test_send_backlog_is_never_copied(loop, sender):
    a, b = socket.socketpair()
    cls = netloop.BufferedDispatcher if sender == "core" else netloop.asyncore.dispatcher_with_send
    d = cls(a, map=loop.map)
    try:
        fd = d._fileno
        loop.run_once(0)
        assert not loop._masks[fd] & WRITE
        pieces = [os.urandom(PIECE) for _ in range(PIECES)]
        for p in pieces:
            d.send(p)
        total = b"".join(pieces)
        q = list(d._outq)
        assert q, "the peer does not read: something must be queued"
        ids = {id(p) for p in pieces}
        for chunk in q:
            if isinstance(chunk, memoryview):
                assert id(chunk.obj) in ids  # a view into the caller's bytes, not a copy
            else:
                assert id(chunk) in ids  # the caller's object itself
        # Only the first queued chunk may be a view (the part the kernel did not take).
        assert all(not isinstance(c, memoryview) for c in q[1:])
        backlog = d.out_buffer
        assert backlog == total[len(total) - len(backlog):]
        assert d.send_backlog == len(backlog)
        assert loop._masks[fd] & WRITE  # write interest while something is queued
        b.setblocking(False)
        got = bytearray()
        run_until(loop, lambda: recv_some(b, got) or len(got) == len(total), timeout=20)
        assert got == total
        assert not d._outq and d.out_buffer == b"" and d.send_backlog == 0
        assert not loop._masks[fd] & WRITE  # and dropped once drained
    finally:
        d.close()
        b.close()


def test_send_mutable_data_is_copied(loop):
    a, b = socket.socketpair()
    d = netloop.BufferedDispatcher(a, map=loop.map)
    try:
        filler = b"f" * (4 << 20)
        d.send(filler)
        assert d._outq
        data = bytearray(b"abc")
        d.send(data)
        data[:] = b"XYZ"  # the caller reuses its buffer
        mv = memoryview(bytearray(b"def"))
        d.send(mv)
        mv[:] = b"UVW"
        assert d.out_buffer.endswith(b"abcdef")
        b.setblocking(False)
        got = bytearray()
        run_until(loop, lambda: recv_some(b, got) or len(got) == len(filler) + 6, timeout=20)
        assert got.endswith(b"abcdef")
    finally:
        d.close()
        b.close()


def test_out_buffer_setter(loop):
    a, b = socket.socketpair()
    d = netloop.BufferedDispatcher(a, map=loop.map)
    try:
        loop.run_once(0)
        d.out_buffer = b"queued directly"
        assert loop._masks[d._fileno] & WRITE
        b.settimeout(5)
        run_until(loop, lambda: not d._outq)
        assert b.recv(100) == b"queued directly"
        assert not loop._masks[d._fileno] & WRITE
    finally:
        d.close()
        b.close()


def test_send_to_closed_peer_closes(loop):
    a, b = socket.socketpair()
    closed: List[bool] = []

    class D(netloop.BufferedDispatcher):
        def handle_close(self) -> None:
            closed.append(True)
            self.close()

    d = D(a, map=loop.map)
    b.close()
    d.send(b"x" * 100)  # EPIPE is "disconnected": handle_close, no exception
    if not closed:
        run_until(loop, lambda: closed)
    assert d._fileno is None


def test_send_goes_out_at_once_when_nothing_is_queued(loop):
    a, b = socket.socketpair()
    d = netloop.BufferedDispatcher(a, map=loop.map)
    try:
        loop.run_once(0)
        d.send(b"immediate")
        assert not d._outq  # no pass needed: the kernel took it
        b.settimeout(5)
        assert b.recv(100) == b"immediate"
        d.send(b"")
        assert not d._outq
    finally:
        d.close()
        b.close()


def test_order_kept_across_queue_and_sendmsg_batches(loop, monkeypatch):
    """Many small chunks are flushed several per sendmsg(); order and bytes are exact."""
    monkeypatch.setattr(buffered, "SEND_CHUNKS", 7)
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    calls: List[int] = []

    class Sock:
        """Counts sendmsg() calls; everything else goes to the real socket."""

        def __init__(self, sock: socket.socket) -> None:
            self._sock = sock

        def sendmsg(self, buffers: Any) -> int:
            calls.append(len(buffers))
            return self._sock.sendmsg(buffers)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._sock, name)

    d = netloop.BufferedDispatcher(a, map=loop.map)
    d.socket = Sock(a)
    try:
        pieces = [(b"%06d," % i) * 50 for i in range(3000)]
        for p in pieces:
            d.send(p)
        total = b"".join(pieces)
        assert d._outq
        b.setblocking(False)
        got = bytearray()
        run_until(loop, lambda: recv_some(b, got) or len(got) == len(total), timeout=20)
        assert got == total
        assert calls and max(calls) == 7  # batched, never more than SEND_CHUNKS at once
    finally:
        d.close()
        b.close()


def test_initiate_send_with_empty_queue_is_harmless(loop):
    a, b = socket.socketpair()
    d = netloop.BufferedDispatcher(a, map=loop.map)
    try:
        d.initiate_send()
        d.handle_write()
        assert not d._outq
    finally:
        d.close()
        b.close()


def test_subclass_setting_out_buffer_before_init(loop):
    """Old dispatcher_with_send subclasses assign out_buffer before calling __init__."""
    a, b = socket.socketpair()

    class Old(netloop.asyncore.dispatcher_with_send):
        def __init__(self, sock: Any, map: Any) -> None:
            self.out_buffer = b""
            netloop.asyncore.dispatcher_with_send.__init__(self, sock, map=map)

    d = Old(a, loop.map)
    try:
        d.send(b"works")
        b.settimeout(5)
        assert b.recv(10) == b"works"
    finally:
        d.close()
        b.close()


def test_debug_logs_sends(loop, capsys):
    a, b = socket.socketpair()
    d = netloop.asyncore.dispatcher_with_send(a, map=loop.map)
    try:
        d.debug = True
        d.send(b"abc")
        assert "sending b'abc'" in capsys.readouterr().out
    finally:
        d.close()
        b.close()


def test_writable_follows_queue(loop):
    a, b = socket.socketpair()
    d = netloop.BufferedDispatcher(a, map=loop.map)
    try:
        assert not d.writable()
        d.send(b"x" * (8 << 20))
        assert d.writable()
        assert type(d)._nl_known  # netloop's own predicates: interest is tracked, not asked
    finally:
        d.close()
        b.close()


def test_unconnected_is_writable_until_connected(loop):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    connected: List[bool] = []

    class C(netloop.BufferedDispatcher):
        def handle_connect(self) -> None:
            connected.append(True)

    c = C(map=loop.map)
    try:
        c.create_socket()
        assert c.writable()
        c.connect(server.getsockname())
        assert loop.poller and loop._masks.get(c._fileno, 0) & WRITE
        run_until(loop, lambda: connected)
        assert not c.writable() and not loop._masks[c._fileno] & WRITE
    finally:
        c.close()
        server.close()


def _wide_buffers() -> List[Any]:
    import array
    items = array.array("i", range(200_000))  # 800,000 bytes in 200,000 items
    return [items, memoryview(items), memoryview(items).cast("B").cast("i", shape=[1000, 200])]


@pytest.mark.parametrize("sender", ["core", "facade"])
@pytest.mark.parametrize("kind", ["array", "memoryview", "2-d memoryview"])
def test_a_buffer_of_wide_items_is_sent_whole_and_in_order(loop, sender, kind):
    """send() counts what it queues in bytes, as the socket counts what it took: a buffer whose
    items are wider than a byte (array('i'), a view of one) arrives whole. (It counted items:
    of 800,000 bytes of an array('i') 775,808 arrived, out of order.)"""
    data = _wide_buffers()[["array", "memoryview", "2-d memoryview"].index(kind)]
    expected = memoryview(data).tobytes()
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    cls = netloop.BufferedDispatcher if sender == "core" else netloop.asyncore.dispatcher_with_send
    d = cls(a, map=loop.map)
    try:
        d.send(data)
        d.send(data)  # and once more behind it, queued
        b.setblocking(False)
        got = bytearray()
        run_until(loop, lambda: recv_some(b, got) or len(got) >= 2 * len(expected), timeout=20)
        assert len(got) == 2 * len(expected) and bytes(got) == expected * 2
    finally:
        d.close()
        b.close()


@pytest.mark.parametrize("sender", ["core", "facade"])
def test_send_takes_buffers_and_refuses_the_rest_as_asyncore(loop, sender):
    """What asyncore's ``out_buffer + data`` took is sent (a PickleBuffer, a 0-dimensional
    view); what it refused raises TypeError, also an empty str and a list while output is
    queued, and nothing goes out for it."""
    import pickle
    import struct
    a, b = socket.socketpair()
    cls = netloop.BufferedDispatcher if sender == "core" else netloop.asyncore.dispatcher_with_send
    d = cls(a, map=loop.map)
    try:
        d.send(pickle.PickleBuffer(b"pickled"))
        d.send(memoryview(struct.pack("i", 5)).cast("i", shape=[]))
        for bad in ("", "text", None, 5, [65, 66]):
            with pytest.raises(TypeError):
                d.send(bad)
        b.setblocking(False)
        got = bytearray()
        expected = b"pickled" + struct.pack("i", 5)
        run_until(loop, lambda: recv_some(b, got) or len(got) >= len(expected))
        assert bytes(got) == expected
        # With output queued: a list is refused too (it was turned into bytes).
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        d.send(b"x" * 200_000)
        assert d.send_backlog
        with pytest.raises(TypeError):
            d.send([65, 66])
    finally:
        d.close()
        b.close()
