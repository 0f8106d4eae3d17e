"""What one connection costs: the state the loop and a channel keep for it, and the short paths
that set it up and tear it down (issue #17's connection-rate and idle-memory targets).

The fast paths do in line what overridable methods do; these tests pin that an override is
still called, and that the saved state (slots, per-fd sets) stays as small as intended.
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any, List

import pytest

import netloop
import netloop.asyncore
from coresupport import EchoServer, PlainEcho as Plain
from support import run_until


class OwnRouting(Plain):
    """Overrides handle_read_event: the loop must route every read through it."""

    routed = 0

    def handle_read_event(self) -> None:
        type(self).routed += 1
        super().handle_read_event()


def _echo_once(lp: netloop.Loop, address: Any) -> socket.socket:
    c = socket.create_connection(address[:2])
    c.sendall(b"ping")
    got = bytearray()
    c.setblocking(False)

    def echoed() -> bool:
        try:
            got.extend(c.recv(64))
        except BlockingIOError:
            pass
        return bytes(got) == b"ping"
    run_until(lp, echoed)
    return c


def test_loop_keeps_its_state_in_slots() -> None:
    # Past 29 names CPython gives an instance a real dict, and 3.11 then looks every method
    # call on it up the slow way: the loop's own state lives in slots, its dict stays empty,
    # also after the legacy loop() (which sets its flags) and with signal handlers.
    m: dict = {}
    server = EchoServer(m, handler=Plain)
    try:
        netloop.asyncore.loop(timeout=0, map=m, count=1)
        lp = netloop.get_loop(m)
        lp.add_signal_handler(signal.SIGUSR2, lambda: None)
        try:
            lp.run_once(0)
            assert vars(lp) == {}
        finally:
            lp.remove_signal_handler(signal.SIGUSR2)
    finally:
        server.close()
        netloop.get_loop(m).close()


def test_plain_channels_take_no_routing_entry(loop: netloop.Loop) -> None:
    plain = EchoServer(loop, handler=Plain)
    own = EchoServer(loop, handler=OwnRouting)
    OwnRouting.routed = 0
    clients: List[socket.socket] = []
    try:
        for _ in range(3):
            clients.append(_echo_once(loop, plain.address))
        # Plain channels are routed straight to handle_read(): nothing stored per fd.
        assert len(plain.channels) == 3 and not loop._indirect
        clients.append(_echo_once(loop, own.address))
        fd = own.channels[0]._fileno
        assert loop._indirect == {fd}
        assert OwnRouting.routed >= 1  # its override saw the read
        own.channels[0].close()
        assert not loop._indirect  # dropped with the channel
    finally:
        for c in clients:
            c.close()


class Recording(Plain):
    calls: List[str] = []

    def set_socket(self, sock: Any, map: Any = None) -> None:
        self.calls.append("set_socket")
        super().set_socket(sock, map)

    def add_channel(self, map: Any = None) -> None:
        self.calls.append("add_channel")
        super().add_channel(map)

    def del_channel(self, map: Any = None) -> None:
        self.calls.append("del_channel")
        super().del_channel(map)


def test_overridden_map_methods_are_still_called(loop: netloop.Loop) -> None:
    # __init__ and close() do set_socket/add_channel/del_channel's work in line only for a
    # class that keeps them; an override (legacy code has them) is called as before.
    Recording.calls = []
    a, b = socket.socketpair()
    try:
        ch = Recording(a, map=loop)
        assert Recording.calls == ["set_socket", "add_channel"]
        assert loop.map[a.fileno()] is ch
        b.sendall(b"x")
        run_until(loop, lambda: b"x" == _try_recv(b))
        ch.close()
        assert Recording.calls[-1] == "del_channel"
        assert a.fileno() == -1 and not loop.map
    finally:
        a.close()
        b.close()


def _try_recv(s: socket.socket) -> bytes:
    s.setblocking(False)
    try:
        return s.recv(16)
    except BlockingIOError:
        return b""


def test_close_keeps_socket_semantics(loop: netloop.Loop) -> None:
    # close() calls the C socket's close directly for a plain socket.socket, but a socket
    # with a file made by makefile() stays open until that file closes, as socket.close()
    # does; and the channel gains no attribute it did not have (connecting is a class
    # default: storing it on each channel would cost memory per connection).
    a, b = socket.socketpair()
    f = None
    try:
        ch = Plain(a, map=loop)
        f = a.makefile("rb")
        ch.close()
        assert a.fileno() >= 0  # the file still holds it
        assert not loop.map and ch._fileno is None
        f.close()
        f = None
        assert a.fileno() == -1
        c, d = socket.socketpair()
        ch2 = Plain(c, map=loop)
        ch2.close()
        assert c.fileno() == -1 and "[closed]" in repr(c)
        assert "connecting" not in vars(ch2)
        d.close()
    finally:
        if f is not None:
            f.close()
        a.close()
        b.close()


@pytest.mark.parametrize("kind", ["cli", "legacy"])
def test_reset_before_served_closes_quietly(kind: str, caplog: Any) -> None:
    # A client that connects and resets at once: the channel made for it (addr taken from
    # accept(), registered in line) closes on its first read, and the listener goes on.
    import struct
    if kind == "cli":
        from netloop.cli import EchoServer as CliServer
        lp = netloop.Loop()
        server: Any = CliServer("127.0.0.1", 0, lp.map)
        address = server.address
    else:
        lp = netloop.Loop()
        server = EchoServer(lp, handler=netloop.asyncore.dispatcher_with_send)
        address = server.address
    try:
        for _ in range(5):
            c = socket.create_connection(address[:2])
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        run_until(lp, lambda: len(lp.map) == 1 and not lp._indirect
                  and lp._objs.keys() == lp.map.keys() and len(lp._masks) == 1)
        assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]
        assert server.accepting
    finally:
        server.close()
        lp.close()


def test_loop_poller_keeps_no_registration_record(loop: netloop.Loop) -> None:
    # An epoll poller keeps what is registered only for find_closed(), which a loop never
    # calls: the loop's own does not (a dict entry per connection), and says so if asked.
    from netloop import pollers
    poller = loop.poller
    if type(poller) is not pollers.EpollPoller:
        pytest.skip("epoll only")
    assert poller._masks is None
    with pytest.raises(RuntimeError, match="track_closed"):
        poller.find_closed()
    mine = pollers.create("epoll")
    try:
        assert mine.find_closed() == []  # made directly: tracked, as before
    finally:
        mine.close()


def test_idle_channel_stores_no_queue_count(loop: netloop.Loop) -> None:
    # The send-queue count is stored with the queue, when a send leaves bytes behind: an
    # echo channel whose sends the kernel takes whole keeps no such attribute.
    server = EchoServer(loop, handler=Plain)
    c = None
    try:
        c = _echo_once(loop, server.address)
        (ch,) = server.channels
        assert "_out_pending" not in vars(ch) and ch.send_backlog == 0
        assert ch.get_write_buffer_size() == 0 and ch.out_buffer == b""
        ch.out_buffer = b"abc"  # the legacy way to queue: the count comes with the queue
        assert ch.send_backlog == 3
        run_until(loop, lambda: ch.send_backlog == 0)
    finally:
        if c is not None:
            c.close()
        server.close()


def test_accept_makes_an_ordinary_socket(loop: netloop.Loop) -> None:
    # accept() builds the socket object without socket.socket.__init__'s Python frame: what
    # it gives must be the socket socket.accept() gives (type, enums, timeout, makefile).
    listener = netloop.Dispatcher(map=loop)
    listener.create_socket(socket.AF_INET)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    c = socket.create_connection(listener.socket.getsockname())
    conn = None
    try:
        pair = None
        for _ in range(200):
            pair = listener.accept()
            if pair is not None:
                break
        assert pair is not None
        conn, addr = pair
        assert type(conn) is socket.socket and addr == c.getsockname()
        assert conn.family is socket.AF_INET and conn.type is socket.SOCK_STREAM
        assert conn.gettimeout() == socket.getdefaulttimeout()
        assert conn.getpeername() == c.getsockname()
        c.sendall(b"line\n")
        with conn.makefile("rb") as f:
            assert f.readline() == b"line\n"
        conn.close()
        assert conn.fileno() == -1 and "[closed]" in repr(conn)
    finally:
        if conn is not None:
            conn.close()
        c.close()
        listener.close()


def _reset_peer_of(loop: netloop.Loop, make: Any) -> Any:
    """A channel made by ``make(sock)`` for an accepted TCP connection whose client then
    resets it (SO_LINGER 0): epoll and poll report the channel readable, in error and hung up
    at once, which the loop routes through a short path."""
    import struct
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    c = socket.create_connection(listener.getsockname())
    try:
        s, _ = listener.accept()
    finally:
        listener.close()
    ch = make(s)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    return ch


class Counting(Plain):
    def __init__(self, sock: Any, map: Any, read_first: bool = True) -> None:
        self.reads = self.closes = 0
        self.read_first = read_first
        Plain.__init__(self, sock, map=map)

    def handle_read(self) -> None:
        self.reads += 1
        if self.read_first or self.reads > 1:
            Plain.handle_read(self)

    def handle_close(self) -> None:
        self.closes += 1
        self.close()


def test_reset_closes_a_channel_once(loop: netloop.Loop, caplog: Any) -> None:
    # The read reports the reset and closes the channel: the hang-up that came with it is not
    # reported again to the closed channel.
    ch = _reset_peer_of(loop, lambda s: Counting(s, loop))
    run_until(loop, lambda: ch.closes > 0)
    loop.run_once(0)
    assert ch.closes == 1 and ch.reads == 1 and not loop.map and ch.socket.fileno() == -1
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]


def test_reset_reaches_a_channel_its_read_left_open(loop: netloop.Loop, caplog: Any) -> None:
    # A handle_read() that does not read when the peer resets: the channel is still told of
    # the hang-up (handle_close()) in the same pass where the poller reports one (select
    # reports the socket readable only: there the next read finds the reset).
    ch = _reset_peer_of(loop, lambda s: Counting(s, loop, read_first=False))
    run_until(loop, lambda: ch.closes > 0)
    loop.run_once(0)
    assert ch.closes == 1 and not loop.map
    assert ch.reads == (2 if loop.poller.name == "select" else 1)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]


def _select_style_pass(lp: netloop.Loop) -> None:
    # One pass as asyncore.loop() runs it: select()-style dispatch, where a hang-up is only
    # readable (and writable), never a close by itself.
    netloop.asyncore.loop(timeout=0.01, map=lp.map, count=1)


def test_reset_under_asyncore_loop_is_read_once_and_closes(loop: netloop.Loop,
                                                           caplog: Any) -> None:
    ch = _reset_peer_of(loop, lambda s: Counting(s, loop))
    for _ in range(500):
        _select_style_pass(loop)
        if ch.reads:
            break
    assert (ch.reads, ch.closes) == (1, 1) and not loop.map and ch.socket.fileno() == -1
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]


def test_reset_under_asyncore_loop_left_open_is_read_again(loop: netloop.Loop,
                                                           caplog: Any) -> None:
    # A read that ignores the reset leaves the channel open, and select()-style dispatch does
    # not turn the hang-up into handle_close(): one read in that pass, and the next pass's
    # read finds the reset.
    ch = _reset_peer_of(loop, lambda s: Counting(s, loop, read_first=False))
    for _ in range(500):
        _select_style_pass(loop)
        if ch.reads:
            break
    assert (ch.reads, ch.closes) == (1, 0)
    for _ in range(500):
        _select_style_pass(loop)
        if ch.closes:
            break
    assert (ch.reads, ch.closes) == (2, 1) and not loop.map
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]


def test_registration_fast_path_falls_back_to_the_poller(loop: netloop.Loop) -> None:
    # A new channel is registered, and a closed one forgotten, through the epoll object's own
    # C calls; a regular file (which epoll refuses) and a descriptor registered twice go
    # through the poller's register()/unregister(), which know those cases.
    import tempfile
    loop.run_once(0)  # the loop takes its poller
    poller = loop.poller
    with tempfile.TemporaryFile() as f:
        f.write(b"data")
        f.flush()
        ch = netloop.FileDispatcher(f.fileno(), map=loop)
        fd = ch._fileno
        assert loop._masks.get(fd)
        if type(poller).__name__ == "EpollPoller":
            assert fd in poller._always
        ch.close()
        assert fd not in loop._masks and not getattr(poller, "_always", None)
    a, b = socket.socketpair()
    twin = a.dup()
    try:
        if type(poller).__name__ == "EpollPoller":
            poller.register(twin.fileno(), netloop.pollers.READ)
            twin_fd = twin.fileno()
            twin.close()  # its registration outlives it: the file is still open (as a)
            d = os.dup2(a.fileno(), twin_fd)  # the number names that file again: EEXIST
            twin = socket.socket(fileno=d)
        ch2 = Plain(twin, map=loop)
        b.sendall(b"ping")
        run_until(loop, lambda: _try_recv(b) == b"ping")
        ch2.close()
        assert not loop.map and not loop._masks.get(twin.fileno())
    finally:
        twin.close()
        a.close()
        b.close()


def test_accepted_connection_served_by_another_loop(loop: netloop.Loop) -> None:
    # A listener's loop leaves itself for the channel made for the connection it accepts
    # (sparing a lookup by map); a channel made on another loop's map is served by that loop,
    # with the address accept() gave.
    other = netloop.Loop()

    class Handoff(EchoServer):
        def handle_accepted(self, sock: Any, addr: Any) -> None:
            self.channels.append(Plain(sock, map=other.map))
            self.channels[-1].accepted_addr = addr

    server = Handoff(loop)
    c = None
    try:
        other.run_once(0)  # it holds its kernel objects: channels register at once
        c = socket.create_connection(server.address[:2])
        run_until(loop, lambda: bool(server.channels))
        (ch,) = server.channels
        assert ch._nl_loop is other and ch.addr == ch.accepted_addr == c.getsockname()
        assert ch._fileno in other._masks and ch._fileno not in loop._masks
        c.sendall(b"ping")
        got = bytearray()
        c.setblocking(False)

        def echoed() -> bool:
            got.extend(_try_recv(c))
            return bytes(got) == b"ping"
        run_until(other, echoed)
        ch.close()
    finally:
        if c is not None:
            c.close()
        server.close()
        other.close()


def test_channel_state_is_not_shadowed_by_class_defaults(loop: netloop.Loop) -> None:
    # What a channel stores for itself has no class attribute of the same name: CPython 3.12+
    # never specializes a read of an instance attribute that a class attribute shadows (the
    # generic lookup, ~270 instructions more per read), and these are read per connection or
    # per event. (addr keeps asyncore's class default: it is not read per connection.)
    from netloop.cli import EchoServer as CliServer
    server = CliServer("127.0.0.1", 0, loop.map)
    c = None
    try:
        c = _echo_once(loop, server.address)
        (ch,) = [obj for obj in loop.map.values() if obj is not server]
        for obj in (ch, server):
            shadowed = {name for name in vars(obj)
                        if any(name in vars(k) for k in type(obj).__mro__)} - {"addr"}
            assert not shadowed, (type(obj).__name__, shadowed)
    finally:
        if c is not None:
            c.close()
        server.close()
