"""Dispatchers over real sockets: echo on every family and poller, connect, accept, logging."""

from __future__ import annotations

import os
import re
import socket
import tempfile
from typing import Any, List

import pytest

import netloop
import netloop.asyncore
from coresupport import EchoServer, has_ipv6
from support import run_until


class Client(netloop.BufferedDispatcher):
    """Connects, sends ``payload``, collects what comes back."""

    def __init__(self, map: Any, family: int, address: Any, payload: bytes) -> None:
        super().__init__(map=map)
        self.payload = payload
        self.got = bytearray()
        self.events: List[str] = []
        self.create_socket(family)
        self.connect(address)

    def handle_connect(self) -> None:
        self.events.append("connect")
        self.send(self.payload)

    def handle_read(self) -> None:
        self.got.extend(self.recv(65536))

    def handle_close(self) -> None:
        self.events.append("close")
        self.close()

    def handle_error(self) -> None:
        self.events.append("error")
        super().handle_error()


def families():
    out = [pytest.param(socket.AF_INET, id="ipv4")]
    out.append(pytest.param(socket.AF_INET6, id="ipv6", marks=pytest.mark.skipif(
        not has_ipv6(), reason="no ::1")))
    out.append(pytest.param(socket.AF_UNIX, id="unix"))
    return out


@pytest.fixture
def unix_path():
    d = tempfile.mkdtemp(prefix="netloop-")
    path = os.path.join(d, "sock")
    yield path
    if os.path.exists(path):
        os.unlink(path)
    os.rmdir(d)


@pytest.mark.parametrize("family", families())
def test_echo(loop, family, unix_path):
    address = unix_path if family == socket.AF_UNIX else None
    server = EchoServer(loop.map, family, address)
    payload = os.urandom(200_000)
    client = Client(loop.map, family, server.address, payload)
    run_until(loop, lambda: len(client.got) >= len(payload), timeout=10)
    assert client.got == payload
    assert client.events == ["connect"]
    assert client.connected and not client.connecting
    # The client closes: the server side sees recv() == b'' and closes too.
    client.close()
    run_until(loop, lambda: server.channels and server.channels[0].closed_by == "handle_close")
    assert list(loop.map.values()) == [server]


def test_connect_refused(loop):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = s.getsockname()
    # Nobody listens there now.
    try:
        client = Client(loop.map, socket.AF_INET, address, b"x")
    except ConnectionRefusedError:
        pytest.skip("this kernel refused synchronously")  # asyncore raised here too
    errors: List[Any] = []

    def handle_error() -> None:
        import sys
        errors.append(sys.exc_info()[1])
        client.handle_close()

    client.handle_error = handle_error  # type: ignore[assignment]
    run_until(loop, lambda: "close" in client.events)
    assert isinstance(errors[0], ConnectionRefusedError)
    assert "connect" not in client.events
    assert not loop.map
    # The loop survives: a new echo works on it.
    server = EchoServer(loop.map)
    ok = Client(loop.map, socket.AF_INET, server.address, b"after")
    run_until(loop, lambda: ok.got == b"after")


def test_connect_refused_default_handler_logs(loop, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = s.getsockname()
    try:
        client = Client(loop.map, socket.AF_INET, address, b"x")
    except ConnectionRefusedError:
        pytest.skip("this kernel refused synchronously")
    with caplog.at_level("ERROR", logger="netloop"):
        run_until(loop, lambda: "close" in client.events)
    assert "error" in client.events
    assert "ConnectionRefusedError" in caplog.text


def test_accept_burst(loop):
    accepted: List[Any] = []

    class Server(EchoServer):
        def handle_accepted(self, sock: Any, addr: Any) -> None:
            accepted.append(addr)
            sock.close()

    server = Server(loop.map)
    clients = [socket.create_connection(server.address) for _ in range(10)]
    try:
        loop.run_once(2)
        assert len(accepted) == 10  # the whole backlog in one readiness event
        more = [socket.create_connection(server.address)
                for _ in range(netloop.dispatcher.ACCEPT_BURST + 8)]
        clients.extend(more)
        loop.run_once(2)
        assert len(accepted) == 10 + netloop.dispatcher.ACCEPT_BURST  # but bounded
        run_until(loop, lambda: len(accepted) == 10 + len(more))
    finally:
        for c in clients:
            c.close()


LINUX_TCP_INFO = pytest.mark.skipif(
    netloop.dispatcher._TCP_INFO is None,
    reason="the accept queue is counted on Linux only (TCP_INFO); elsewhere a burst ends at "
           "the first accept() that finds nothing, as tested by test_accept_burst")


def _wait_for_queue(sock: Any, n: int) -> None:
    # The kernel finishes a loopback handshake in the connect() call, so the count is there
    # at once; the bound only guards against a kernel that is slower.
    for _ in range(10000):
        if netloop.dispatcher.accept_queue_length(sock) >= n:
            return
    raise AssertionError("the accept queue never held %d connections" % n)


@LINUX_TCP_INFO
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_accept_queue_length_counts_waiting_connections(loop, family):
    if family == socket.AF_INET6 and not has_ipv6():
        pytest.skip("no IPv6 loopback")
    server = EchoServer(loop.map, family)
    length = netloop.dispatcher.accept_queue_length
    assert length(server.socket) == 0
    clients = [socket.create_connection(server.address[:2]) for _ in range(3)]
    try:
        _wait_for_queue(server.socket, 3)
        assert length(server.socket) == 3
        conn, _ = server.socket.accept()
        conn.close()
        assert length(server.socket) == 2
    finally:
        for c in clients:
            c.close()
        server.close()


def test_accept_queue_length_is_minus_one_where_nothing_can_be_counted(tmp_path):
    length = netloop.dispatcher.accept_queue_length
    with socket.socket(socket.AF_UNIX) as unix:
        unix.bind(str(tmp_path / "s"))
        unix.listen()
        assert length(unix) == -1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        assert length(udp) == -1
    with socket.socket() as tcp:  # TCP, but not listening
        tcp.bind(("127.0.0.1", 0))
        assert length(tcp) == -1
    assert length(tcp) == -1  # closed
    assert length(object()) == -1


@LINUX_TCP_INFO
def test_accept_burst_ends_with_the_last_waiting_connection(loop):
    # A failing accept4() allocates a socket and a file before it finds the queue empty (12 us
    # of CPU here, against 2 us to ask the queue's length): the burst takes what waits, stops.
    calls: List[Any] = []
    accepted: List[Any] = []

    class Server(EchoServer):
        def accept(self) -> Any:
            pair = super().accept()
            calls.append(pair is not None)
            return pair

        def handle_accepted(self, sock: Any, addr: Any) -> None:
            accepted.append(addr)
            sock.close()

    server = Server(loop.map)
    clients = [socket.create_connection(server.address) for _ in range(5)]
    try:
        _wait_for_queue(server.socket, 5)
        loop.run_once(2)
        assert len(accepted) == 5  # the whole queue in one readiness event
        assert calls == [True] * 5  # and no accept() that found nothing
        assert server._nl_count_queue
        more = [socket.create_connection(server.address)
                for _ in range(netloop.dispatcher.ACCEPT_BURST + 8)]
        clients.extend(more)
        _wait_for_queue(server.socket, len(more))
        loop.run_once(2)
        assert len(accepted) == 5 + netloop.dispatcher.ACCEPT_BURST  # still bounded
        run_until(loop, lambda: len(accepted) == 5 + len(more))
        assert calls == [True] * len(accepted)
    finally:
        for c in clients:
            c.close()


def test_unix_listener_burst_takes_the_whole_backlog(loop, tmp_path):
    # No queue length to ask for a Unix socket: the burst ends at the accept() that finds
    # nothing, and the listener stops asking.
    accepted: List[Any] = []

    class Server(EchoServer):
        def handle_accepted(self, sock: Any, addr: Any) -> None:
            accepted.append(sock)
            sock.close()

    path = str(tmp_path / "listener")
    server = Server(loop.map, socket.AF_UNIX, path)
    clients = []
    try:
        for _ in range(10):
            c = socket.socket(socket.AF_UNIX)
            clients.append(c)
            c.connect(path)
        loop.run_once(2)
        assert len(accepted) == 10
        assert not server._nl_count_queue
        clients.append(socket.socket(socket.AF_UNIX))
        clients[-1].connect(path)
        run_until(loop, lambda: len(accepted) == 11)
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6, socket.AF_UNIX])
def test_accepted_socket_and_handler_address(loop, monkeypatch, family):
    if family == socket.AF_INET6 and not has_ipv6():
        pytest.skip("no IPv6 loopback")
    address = None
    if family == socket.AF_UNIX:
        tmp = tempfile.mkdtemp()
        address = os.path.join(tmp, "s")
    peer_lookups: List[Any] = []
    real_getpeername = socket.socket.getpeername

    def counting_getpeername(self: socket.socket) -> Any:
        peer_lookups.append(self)
        return real_getpeername(self)

    server = EchoServer(loop.map, family, address)
    seen: List[Any] = []

    def handle_accepted(sock: Any, addr: Any) -> None:
        seen.append((sock, addr))
        EchoServer.handle_accepted(server, sock, addr)

    server.handle_accepted = handle_accepted  # type: ignore[method-assign]
    monkeypatch.setattr(socket.socket, "getpeername", counting_getpeername)
    client = socket.socket(family)
    try:
        client.connect(server.address)
        run_until(loop, lambda: server.channels)
        sock, addr = seen[0]
        handler = server.channels[0]
        # The accepted socket is what socket.accept() gives, made non-blocking by the handler.
        assert type(sock) is socket.socket
        assert sock.family == family and sock.type == socket.SOCK_STREAM
        assert sock.gettimeout() == 0.0
        assert handler.connected and handler.addr == addr
        if family != socket.AF_UNIX:
            assert addr == client.getsockname()
        assert peer_lookups == []  # the address came from accept(), not getpeername()
        client.sendall(b"ping")
        got = bytearray()
        client.settimeout(0)
        run_until(loop, lambda: (got.extend(_recv_nowait(client)), bytes(got) == b"ping")[1])
    finally:
        client.close()
        if family == socket.AF_UNIX:
            os.unlink(address)
            os.rmdir(tmp)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_accepted_connections_share_the_peer_host_string(loop, family):
    # Each accept() answer holds a new host string; 10,000 idle connections from one host
    # kept 10,000 copies (0.6 MB). Handlers of one host now share one string object.
    if family == socket.AF_INET6 and not has_ipv6():
        pytest.skip("no IPv6 loopback")
    server = EchoServer(loop.map, family, None)
    clients = [socket.socket(family) for _ in range(3)]
    try:
        for c in clients:
            c.connect(server.address)
        run_until(loop, lambda: len(server.channels) == 3)
        addrs = sorted((h.addr for h in server.channels), key=lambda a: a[1])
        assert addrs == sorted((c.getsockname() for c in clients), key=lambda a: a[1])
        assert addrs[0][0] is addrs[1][0] is addrs[2][0]
        assert all(type(a) is tuple and len(a) == (2 if family == socket.AF_INET else 4)
                   for a in addrs)
    finally:
        for c in clients:
            c.close()


def _recv_nowait(sock: socket.socket) -> bytes:
    try:
        return sock.recv(100)
    except BlockingIOError:
        return b""


def test_handler_for_a_socket_accepted_elsewhere_asks_getpeername(loop):
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    sock, addr = listener.accept()  # a blocking accept, outside any loop
    try:
        handler = netloop.Dispatcher(sock, map=loop.map)
        assert handler.addr == addr == client.getsockname()
        assert sock.gettimeout() == 0.0
        handler.close()
    finally:
        client.close()
        listener.close()


def test_blocking_listener_accepts_through_socket_accept(loop):
    server = EchoServer(loop.map)
    server.socket.settimeout(5)  # legacy code may leave its listener with a timeout
    client = socket.create_connection(server.address)
    try:
        pair = server.accept()
        assert pair is not None
        sock, addr = pair
        assert addr == client.getsockname() and type(sock) is socket.socket
        sock.close()
    finally:
        client.close()


def test_accept_nothing_pending(loop):
    server = EchoServer(loop.map)
    assert server.accept() is None


def test_default_handle_accepted_closes_and_warns(loop, caplog):
    server = netloop.Dispatcher(map=loop.map)
    server.create_socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.ignore_log_types = frozenset()
    c = socket.create_connection(server.socket.getsockname())
    try:
        with caplog.at_level("WARNING", logger="netloop"):
            run_until(loop, lambda: "unhandled accepted event" in caplog.text)
        c.settimeout(5)
        assert c.recv(10) == b""  # the server closed it
    finally:
        c.close()


def test_repr(loop):
    server = EchoServer(loop.map)
    r = repr(server)
    # addr is what bind() was given (port 0 here), as in asyncore.
    assert re.match(r"<coresupport\.EchoServer listening 127\.0\.0\.1:0 at 0x[0-9a-f]+>$", r), r
    m: dict = {}
    d = netloop.asyncore.dispatcher(map=m)
    assert re.match(r"<asyncore\.dispatcher at 0x[0-9a-f]+>$", repr(d)), repr(d)
    d.addr = "/some/path"
    assert "'/some/path'" in repr(d)
    a, b = socket.socketpair()
    try:
        c = netloop.Dispatcher(a, map=m)
        assert re.match(r"<netloop\.dispatcher\.Dispatcher connected '' at 0x", repr(c)), repr(c)
        c.close()
    finally:
        b.close()


def test_log_info_core_uses_logging(caplog, capsys):
    d = netloop.Dispatcher(map={})
    with caplog.at_level("DEBUG", logger="netloop"):
        d.log_info("hello there")
        d.log_info("quiet warning", "warning")  # ignored by default, as in asyncore
        d.log_info("bad thing", "error")
        d.log("debug line")
    assert capsys.readouterr() == ("", "")
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert ("INFO", "info: hello there") in records
    assert ("ERROR", "error: bad thing") in records
    assert not any("quiet warning" in m for _, m in records)
    assert any("debug line" in m for _, m in records)


def test_log_info_facade_prints(caplog, capsys):
    d = netloop.asyncore.dispatcher(map={})
    with caplog.at_level("DEBUG", logger="netloop"):
        d.log_info("hello there")
        d.log_info("quiet warning", "warning")
        d.log_info("bad thing", "error")
        d.log("debug line")
    out, err = capsys.readouterr()
    assert out == "info: hello there\nerror: bad thing\n"
    assert err == "log: debug line\n"
    assert not caplog.records


def test_close_twice_and_recv_when_nothing_waits(loop):
    a, b = socket.socketpair()
    try:
        d = netloop.Dispatcher(a, map=loop.map)
        loop.run_once(0)
        assert d.recv(10) == b""  # spurious wake-up: nothing to read, not closed
        assert d.connected and a.fileno() in loop.map
        d.close()
        d.close()
        assert not loop.map
    finally:
        b.close()


def test_unconnected_socket_handed_over(loop):
    s = socket.socket()
    d = netloop.Dispatcher(s, map=loop.map)
    try:
        assert not d.connected
        assert d.addr is None
    finally:
        d.close()


def _shadowed(obj: Any) -> List[str]:
    """Instance attributes of obj that a class attribute of the same name shadows."""
    return sorted(name for name in vars(obj)
                  if any(name in vars(k) for k in type(obj).__mro__))


def test_per_event_attributes_are_not_shadowed_by_class_attributes(loop):
    # CPython 3.12+ never specializes a read or a store of an instance attribute that a class
    # attribute of the same name shadows (each one takes the generic lookup, ~300
    # instructions): what a channel stores on itself for every connection or reads for every
    # event has no class default, in the core classes and in the asyncore/asynchat facades
    # alike (connected, accepting, addr and terminator cost the legacy echo server about
    # 2,900 instructions per connection on 3.13). Checked on live channels after an echo
    # and a close, so a class default added anywhere in their MROs fails here.
    import netloop.asynchat
    from netloop.buffered import BufferedDispatcher
    from netloop.cli import EchoHandler as CliEcho

    class Legacy(netloop.asyncore.dispatcher_with_send):
        def handle_read(self) -> None:
            data = self.recv(8192)
            if data:
                self.send(data)

    class Lines(netloop.asynchat.async_chat):
        def __init__(self, sock: Any, map: Any) -> None:
            netloop.asynchat.async_chat.__init__(self, sock, map)
            self.set_terminator(b"\n")
            self.parts: List[bytes] = []

        def collect_incoming_data(self, data: bytes) -> None:
            self.parts.append(data)

        def found_terminator(self) -> None:
            self.push(b"".join(self.parts) + b"\n")
            self.parts = []

    # connecting (stored by connect() only), ignore_log_types and the listener's own flags
    # may be stored on an instance; nothing a connection stores for every request.
    allowed = {"connecting"}
    for make in (lambda s, m: Legacy(s, map=m), lambda s, m: CliEcho(s, map=m),
                 lambda s, m: Lines(s, m)):
        chan_map = loop.map
        a, b = socket.socketpair()
        try:
            chan = make(a, chan_map)
            b.sendall(b"hello\n")
            got = bytearray()

            def echoed() -> bool:
                try:
                    got.extend(b.recv(100, socket.MSG_DONTWAIT))
                except BlockingIOError:
                    pass
                return bytes(got) == b"hello\n"

            run_until(loop, echoed)
            assert set(_shadowed(chan)) <= allowed, type(chan)
            b.close()
            run_until(loop, lambda: not chan_map)
            assert set(_shadowed(chan)) <= allowed, type(chan)
        finally:
            a.close()
            b.close()
    for name in ("connected", "accepting", "addr", "socket", "_nl_idle"):
        assert not any(name in vars(k) for k in netloop.asyncore.dispatcher_with_send.__mro__)
    assert not any("_outq" in vars(k) for k in BufferedDispatcher.__mro__)
    for name in ("terminator", "_nl_writing"):
        assert not any(name in vars(k) for k in netloop.asynchat.async_chat.__mro__), name


def test_asyncore_defaults_are_set_on_the_instance():
    # asyncore kept connected/accepting/addr as class defaults that __init__ left alone when
    # no socket was given; the drop-in sets them on the instance, keeping what a subclass set
    # before calling __init__, so every instance reads what asyncore's would have.
    import netloop.asynchat

    class Preset(netloop.asyncore.dispatcher):
        def __init__(self) -> None:
            self.addr = ("192.0.2.1", 25)
            self.connected = True
            self.accepting = True
            netloop.asyncore.dispatcher.__init__(self, map={})

    d = netloop.asyncore.dispatcher(map={})
    assert (d.connected, d.accepting, d.addr) == (False, False, None)
    p = Preset()
    assert (p.connected, p.accepting, p.addr) == (True, True, ("192.0.2.1", 25))
    assert netloop.asynchat.async_chat(map={}).terminator is None

    class Early(netloop.asynchat.async_chat):
        def __init__(self) -> None:
            self.set_terminator(b"\r\n")
            netloop.asynchat.async_chat.__init__(self, map={})

    assert Early().get_terminator() == b"\r\n"
    a, b = socket.socketpair()
    try:
        # a socket that getpeername() refuses (not connected): addr stays None, as asyncore's
        # class default showed through
        u = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        m: dict = {}
        c = netloop.asyncore.dispatcher(u, map=m)
        assert (c.connected, c.addr) == (False, None)
        c.close()
    finally:
        a.close()
        b.close()


def test_instance_attributes_without_a_socket():
    class Preset(netloop.Dispatcher):
        def __init__(self) -> None:
            self.connected = True  # set before the base __init__: kept, as before
            netloop.Dispatcher.__init__(self, map={})

    d = netloop.Dispatcher(map={})
    assert d.connected is False and d.accepting is False and d.socket is None
    assert Preset().connected is True
    # a channel whose __init__ never ran still has a repr (log lines use it)
    bare = netloop.Dispatcher.__new__(netloop.Dispatcher)
    assert "Dispatcher" in repr(bare)
    q = netloop.BufferedDispatcher.__new__(netloop.BufferedDispatcher)
    assert q.out_buffer == b""


class _Reader(netloop.asyncore.dispatcher_with_send):
    # (with_send: writable only while output is queued, so read events come alone)
    def __init__(self, sock: Any, map: Any) -> None:
        netloop.asyncore.dispatcher_with_send.__init__(self, sock, map)
        self.events: List[str] = []

    def handle_read(self) -> None:
        self.events.append("read")
        self.recv(100)

    def handle_accept(self) -> None:
        self.events.append("accept")
        if self.connected:  # a connected socket made a listener by hand (a test's doing)
            self.recv(100)
            return
        pair = self.accept()
        if pair is not None:
            pair[0].close()

    def handle_connect(self) -> None:
        self.events.append("connect")


def test_hand_set_accepting_on_an_adopted_listener_gets_handle_accept(loop):
    # asyncore-era code adopts a listening socket and sets accepting by hand.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    d = _Reader(listener, loop.map)
    d.accepting = True
    loop.run_once(0)  # a pass with nothing to do first: the state is read per event
    client = socket.create_connection(listener.getsockname())
    try:
        run_until(loop, lambda: d.events)
        assert d.events == ["accept"]
    finally:
        client.close()
        d.close()


def test_read_routing_follows_the_channel_the_map_holds(loop):
    # A channel got read events (the loop now routes its reads straight to handle_read());
    # code replaces it in the map behind the loop's back with another channel of the same
    # descriptor, one still connecting: its first read event must complete the connect.
    a, b = socket.socketpair()
    try:
        first = _Reader(a, loop.map)
        b.send(b"x")
        run_until(loop, lambda: first.events)
        second = _Reader(a, {})  # made for a map of its own, then put in the loop's
        second.connected, second.connecting = False, True
        loop.map[a.fileno()] = second
        b.send(b"y")
        run_until(loop, lambda: second.events)
        assert second.events == ["connect", "read"] and first.events == ["read"]
        assert second.connected
    finally:
        loop.map.pop(a.fileno(), None)
        a.close()
        b.close()


def test_read_routing_rereads_state_after_an_interest_change(loop):
    # A channel that got read events and then changes state by hand and tells the loop
    # (_update_interest(), as netloop's own connect()/listen()/TLS do) has its next read
    # routed by its new state: here asyncore's rule that a listener's read is an accept.
    a, b = socket.socketpair()
    try:
        d = _Reader(a, loop.map)
        b.send(b"x")
        run_until(loop, lambda: d.events)
        d.accepting = True
        d._update_interest()
        b.send(b"y")
        run_until(loop, lambda: len(d.events) > 1)
        assert d.events == ["read", "accept"]
    finally:
        d.close()
        b.close()
