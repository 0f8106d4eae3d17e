"""PROXY protocol v1/v2: the pure parser (byte by byte, fuzzed) and listeners on a real loop."""

from __future__ import annotations

import logging
import socket
import struct
import threading
from typing import Any, List

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netloop
from netloop import proxy
from netloop import socketserver as ss
from netloop.proxy import (V2_SIGNATURE, ProxyHeader, ProxyProtocolError, format_v1, format_v2,
                           parse_header)
from support import run_until

# ---------------------------------------------------------------------------- the parser


def _every_prefix_is_pending(header: bytes) -> None:
    for i in range(len(header)):
        assert parse_header(header[:i]) is None, (i, header[:i])


def test_v1_tcp4():
    raw = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n"
    _every_prefix_is_pending(raw)
    h = parse_header(raw + b"GET / HTTP/1.0\r\n")
    assert h == ProxyHeader(1, "PROXY", socket.AF_INET, socket.SOCK_STREAM,
                            ("192.0.2.7", 56324), ("198.51.100.1", 443), (), len(raw))
    assert h.relayed


def test_v1_tcp6_is_normalised():
    raw = b"PROXY TCP6 2001:db8:0:0::1 ::1 1 65535\r\n"
    h = parse_header(raw)
    assert h is not None and h.family == socket.AF_INET6
    assert h.source == ("2001:db8::1", 1, 0, 0) and h.destination == ("::1", 65535, 0, 0)


def test_v1_unknown_keeps_real_address():
    for raw in (b"PROXY UNKNOWN\r\n",
                b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"):
        h = parse_header(raw + b"x")
        assert h is not None and h.length == len(raw) and not h.relayed and h.source is None


def test_v1_longest_header_is_accepted_and_one_more_byte_is_not():
    worst = (b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
             b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
    assert len(worst) == proxy.V1_MAX_LENGTH
    assert parse_header(worst) is not None
    assert parse_header(worst.replace(b"UNKNOWN", b"TCP6")) is not None
    with pytest.raises(ProxyProtocolError, match="no CRLF within 107"):
        parse_header(b"PROXY UNKNOWN " + b"x" * 200)


@pytest.mark.parametrize("raw, message", [
    (b"GET / HTTP/1.1\r\n", "not a PROXY protocol header"),
    (b"PROXY", None),                                   # incomplete, fine
    (b"PROXYX", "not a PROXY protocol header"),
    (b"PROXY TCP5 ", "unknown protocol"),
    (b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n", "unknown protocol"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", "not CRLF"),
    (b"PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n", "6 fields"),
    (b"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", "bad source address"),
    (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "bad destination address"),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "bad source address"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n", "out of range"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n", "bad source port"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 -2\r\n", "bad destination port"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n", "6 fields"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 \xff\r\n", "not ASCII"),
])
def test_v1_malformed(raw, message):
    if message is None:
        assert parse_header(raw) is None
        return
    with pytest.raises(ProxyProtocolError, match=message):
        parse_header(raw)


def test_v2_tcp4_with_tlvs_byte_by_byte():
    raw = format_v2(("203.0.113.9", 40000), ("10.0.0.1", 8080), tlvs=((0x04, b""), (0xE0, b"ab")))
    _every_prefix_is_pending(raw)
    h = parse_header(raw + b"\r\nQUIT")
    assert h is not None and h.version == 2 and h.command == "PROXY" and h.length == len(raw)
    assert h.source == ("203.0.113.9", 40000) and h.destination == ("10.0.0.1", 8080)
    assert h.tlvs == ((0x04, b""), (0xE0, b"ab"))


def test_v2_tcp6_and_unix():
    h = parse_header(format_v2(("2001:db8::5", 1), ("::1", 2)))
    assert h is not None and h.family == socket.AF_INET6 and h.source == ("2001:db8::5", 1, 0, 0)
    paths = b"/run/a.sock".ljust(108, b"\x00") + b"/run/b.sock".ljust(108, b"\x00")
    raw = V2_SIGNATURE + bytes([0x21, 0x31]) + struct.pack("!H", len(paths)) + paths
    h = parse_header(raw)
    assert h is not None and h.family == socket.AF_UNIX
    assert (h.source, h.destination) == ("/run/a.sock", "/run/b.sock")


def test_v2_local_and_unspec_keep_real_address():
    h = parse_header(format_v2(local=True))
    assert h is not None and h.command == "LOCAL" and not h.relayed and h.length == 16
    # LOCAL with addresses (a sender may fill them): still not relayed.
    raw = bytearray(format_v2(("1.2.3.4", 1), ("5.6.7.8", 2)))
    raw[12] = 0x20
    h = parse_header(bytes(raw))
    assert h is not None and h.command == "LOCAL" and not h.relayed and h.source is None
    h = parse_header(V2_SIGNATURE + b"\x21\x00\x00\x00")
    assert h is not None and h.command == "PROXY" and not h.relayed


@pytest.mark.parametrize("raw, message", [
    (V2_SIGNATURE[:5] + b"X", "not a PROXY protocol header"),
    (V2_SIGNATURE + b"\x11", "unsupported version 1"),
    (V2_SIGNATURE + b"\x22", "unknown command 2"),
    (V2_SIGNATURE + b"\x21\x41", "unknown address family"),
    (V2_SIGNATURE + b"\x21\x13", "unknown address family"),
    (V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\x00" * 4, "family needs 12"),
    (V2_SIGNATURE + b"\x21\x11\xff\xff", "more than the 4096 allowed"),
    (V2_SIGNATURE + b"\x21\x11\x00\x0e" + b"\x00" * 12 + b"\x01\x00", "truncated TLV"),
    (V2_SIGNATURE + b"\x21\x11\x00\x0f" + b"\x00" * 12 + b"\x01\x00\x09", "overruns"),
])
def test_v2_malformed(raw, message):
    with pytest.raises(ProxyProtocolError, match=message):
        parse_header(raw)


def test_v2_bound_is_configurable():
    raw = format_v2(("1.2.3.4", 1), ("5.6.7.8", 2), tlvs=((0xE0, b"x" * 5000),))
    with pytest.raises(ProxyProtocolError, match="more than"):
        parse_header(raw)
    assert parse_header(raw, max_size=len(raw)) is not None


_addresses = st.one_of(
    st.tuples(st.ip_addresses(v=4).map(str), st.integers(0, 65535)),
    st.tuples(st.ip_addresses(v=6).map(str), st.integers(0, 65535)),
)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_only_raise_protocol_errors(data):
    for cut in sorted({0, len(data) // 2, len(data)}):
        try:
            h = parse_header(data[:cut])
        except ProxyProtocolError:
            continue
        if h is not None:
            assert 0 < h.length <= cut


@settings(max_examples=100, deadline=None)
@given(pair=st.tuples(_addresses, _addresses).filter(
    lambda p: (":" in p[0][0]) == (":" in p[1][0])),
    version=st.sampled_from([1, 2]), tail=st.binary(max_size=40), data=st.data())
def test_fuzz_round_trip_and_prefixes(pair, version, tail, data):
    src, dst = pair
    raw = format_v1(src, dst) if version == 1 else format_v2(src, dst)
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert parse_header(raw[:cut]) is None
    h = parse_header(raw + tail)
    assert h is not None and h.length == len(raw) and h.version == version
    assert h.source[:2] == (socket.inet_ntop(_fam(src[0]), socket.inet_pton(_fam(src[0]), src[0])),
                            src[1])


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(min_size=1, max_size=120), pos=st.integers(0, 119), byte=st.integers(0, 255))
def test_fuzz_mutated_headers(raw, pos, byte):
    base = bytearray(format_v2(("192.0.2.1", 5), ("192.0.2.2", 6)) if raw[0] & 1
                     else format_v1(("192.0.2.1", 5), ("192.0.2.2", 6)))
    base[pos % len(base)] = byte
    try:
        h = parse_header(bytes(base))
    except ProxyProtocolError:
        return
    assert h is None or h.length <= len(base)


@settings(max_examples=100, deadline=None)
@given(pair=st.tuples(_addresses, _addresses).filter(
    lambda p: (":" in p[0][0]) == (":" in p[1][0])),
    version=st.sampled_from([1, 2]), tail=st.binary(max_size=20),
    tlvs=st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=8)), max_size=2),
    mutate=st.one_of(st.none(), st.tuples(st.integers(0, 200), st.integers(0, 255))))
def test_fuzz_fast_path_agrees_with_the_careful_one(pair, version, tail, tlvs, mutate):
    src, dst = pair
    raw = bytearray(format_v1(src, dst) if version == 1 else format_v2(src, dst,
                                                                        tlvs=tuple(tlvs)))
    if mutate is not None:
        raw[mutate[0] % len(raw)] = mutate[1]
    data = bytes(raw) + tail
    careful = proxy.header._parse_v1 if data[:1] == b"P" else (
        lambda d: proxy.header._parse_v2(d, proxy.DEFAULT_MAX_HEADER))

    def outcome(fn: Any) -> Any:
        try:
            return fn(data)
        except ProxyProtocolError:
            return "error"
    if data[:1] not in (b"P", b"\r"):
        return
    assert outcome(parse_header) == outcome(careful)


def _fam(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# ---------------------------------------------------------------------------- on a loop

class _Echo(netloop.BufferedDispatcher):
    def handle_read(self) -> None:
        data = self.recv(65536)
        if data:
            self.send(data)

    def handle_close(self) -> None:
        self.close()


class _Server(proxy.ProxyProtocolListener, netloop.Dispatcher):
    proxy_header_timeout = 2.0

    def __init__(self, lp: netloop.Loop) -> None:
        netloop.Dispatcher.__init__(self, map=lp.map)
        self.create_socket(socket.AF_INET)
        self.bind(("127.0.0.1", 0))
        self.listen(16)
        self.address = self.socket.getsockname()
        self.peers: List[Any] = []

    def handle_accepted(self, sock: Any, addr: Any) -> None:
        handler = _Echo(sock, map=self._map)
        self.peers.append((addr, handler.addr))


def _client(address: Any) -> socket.socket:
    c = socket.create_connection(address, timeout=5)
    return c


def _read_until(lp: netloop.Loop, c: socket.socket, size: int) -> bytes:
    got = bytearray()
    c.setblocking(False)

    def have() -> bool:
        try:
            chunk = c.recv(65536)
        except BlockingIOError:
            return False
        if not chunk:
            return True
        got.extend(chunk)
        return len(got) >= size

    run_until(lp, have)
    return bytes(got)


def _closed(lp: netloop.Loop, c: socket.socket) -> bool:
    c.setblocking(False)
    result: List[bool] = []

    def check() -> bool:
        try:
            data = c.recv(100)
        except BlockingIOError:
            return False
        except ConnectionResetError:
            result.append(True)
            return True
        result.append(data == b"")
        return True

    run_until(lp, check)
    return result[0]


@pytest.mark.parametrize("fmt", ["v1", "v2"])
def test_listener_gives_handler_the_client_address(loop, fmt):
    server = _Server(loop)
    src, dst = ("203.0.113.50", 61000), ("198.51.100.2", 443)
    header = format_v1(src, dst) if fmt == "v1" else format_v2(src, dst)
    with _client(server.address) as c:
        c.sendall(header + b"hello")   # header and data in one segment: nothing is lost
        assert _read_until(loop, c, 5) == b"hello"
    assert server.peers == [(src, src)]


def test_listener_header_split_byte_by_byte(loop):
    server = _Server(loop)
    header = format_v2(("2001:db8::7", 1234), ("2001:db8::1", 80))
    with _client(server.address) as c:
        for i in range(len(header)):
            c.sendall(header[i:i + 1])
            loop.run_once(0.01)
        c.sendall(b"after")
        assert _read_until(loop, c, 5) == b"after"
    assert server.peers == [(("2001:db8::7", 1234, 0, 0),) * 2]


def test_listener_local_header_keeps_real_address(loop):
    server = _Server(loop)
    with _client(server.address) as c:
        c.sendall(format_v2(local=True) + b"ping")
        assert _read_until(loop, c, 4) == b"ping"
        assert server.peers[0][0] == c.getsockname()


@pytest.mark.parametrize("payload, reason", [
    (b"GET / HTTP/1.0\r\n\r\n", "not a PROXY protocol header"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 99999\r\nxx", "out of range"),
    (V2_SIGNATURE + b"\x21\x11\x7f\xff", "more than the 4096 allowed"),
    (b"PROXY TCP4 1.2.3.4", "closed before a complete PROXY header"),
])
def test_listener_refuses_bad_headers(loop, caplog, payload, reason):
    server = _Server(loop)
    with caplog.at_level(logging.WARNING, logger="netloop.proxy"):
        with _client(server.address) as c:
            c.sendall(payload)
            if reason.startswith("closed"):
                c.shutdown(socket.SHUT_WR)
            assert _closed(loop, c)
        run_until(loop, lambda: len(loop.map) == 1)
    assert server.peers == []
    assert any("refused the connection from 127.0.0.1:" in r.getMessage()
               and reason in r.getMessage() for r in caplog.records), caplog.text


def test_listener_refuses_slow_header(loop, caplog):
    server = _Server(loop)
    server.proxy_header_timeout = 0.2
    with caplog.at_level(logging.WARNING, logger="netloop.proxy"):
        with _client(server.address) as c:
            c.sendall(b"PROXY TCP4 ")
            assert _closed(loop, c)
    assert server.peers == []
    assert "no complete PROXY header within 0.2s (11 bytes received)" in caplog.text


def test_listener_opt_out_per_instance(loop):
    server = _Server(loop)
    server.proxy_protocol = False
    with _client(server.address) as c:
        c.sendall(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n")
        data = _read_until(loop, c, 32)
    assert data.startswith(b"PROXY TCP4")  # passed through as data: the listener did not ask


def test_socketserver_client_address(loop):
    seen: List[Any] = []

    class Handler(ss.StreamRequestHandler):
        def handle(self) -> None:
            seen.append(self.client_address)
            self.wfile.write(self.rfile.readline())

    class Server(proxy.ProxyProtocolServerMixIn, ss.ThreadingTCPServer):
        daemon_threads = True
        block_on_close = True

    server = Server(("127.0.0.1", 0), Handler, loop=loop)
    try:
        with _client(server.server_address) as c:
            c.sendall(format_v1(("192.0.2.44", 5555), ("192.0.2.1", 80)) + b"line\n")
            assert _read_until(loop, c, 5) == b"line\n"
    finally:
        server.server_close()
    assert seen == [("192.0.2.44", 5555)]
    assert threading.active_count() >= 1


def test_header_present_at_accept_is_read_at_once(loop):
    """The usual case behind a balancer: the header is already there when the connection is
    accepted, so it is read without a channel or a loop pass."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    delivered: List[Any] = []
    try:
        with _client(listener.getsockname()) as c:
            c.sendall(format_v2(("192.0.2.9", 7), ("192.0.2.1", 80)) + b"rest")
            sock, peer = listener.accept()
            sock.settimeout(5)
            assert sock.recv(1, socket.MSG_PEEK)  # loopback: the whole write is there now
            proxy.read_proxy_header(sock, peer, loop.map,
                                    lambda s, addr: delivered.append((s, addr)))
            assert [addr for _, addr in delivered] == [("192.0.2.9", 7)]
            assert not loop.map  # no reader channel was needed
            assert delivered[0][0].recv(64) == b"rest"
            delivered[0][0].close()
    finally:
        listener.close()


# ------------------------------------------------------- accept deferred, per-connection cost
needs_defer = pytest.mark.skipif(not hasattr(socket, "TCP_DEFER_ACCEPT"),
                                 reason="TCP_DEFER_ACCEPT is Linux's")


def _deferring(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT)


@needs_defer
def test_listener_takes_connections_once_their_header_is_there(loop):
    # Accepted before its header, a connection needed a channel and a timer of its own until
    # the header came; with TCP_DEFER_ACCEPT the kernel hands it over with the header.
    server = _Server(loop)
    with _client(server.address) as c:
        c.sendall(format_v1(("192.0.2.5", 1000), ("192.0.2.1", 80)) + b"one")
        assert _read_until(loop, c, 3) == b"one"
    assert _deferring(server.socket) > 0
    with _client(server.address) as silent:
        for _ in range(5):
            loop.run_once(0.01)
        assert server.peers[1:] == [] and len(loop.map) == 1  # connected, not handed over yet
        silent.sendall(format_v2(("192.0.2.6", 2000), ("192.0.2.1", 80)) + b"two")
        assert _read_until(loop, silent, 3) == b"two"
    assert [p[0] for p in server.peers] == [("192.0.2.5", 1000), ("192.0.2.6", 2000)]
    # Turned off, the listener stops deferring: a client may wait for the server to speak.
    server.proxy_protocol = False
    with _client(server.address) as c:
        c.sendall(b"plain")
        assert _read_until(loop, c, 5) == b"plain"
    assert _deferring(server.socket) == 0


@pytest.mark.skipif(netloop.dispatcher._TCP_INFO is None,
                    reason="the accept queue is counted on Linux only (TCP_INFO)")
def test_listener_burst_makes_no_accept_that_finds_nothing(loop):
    calls: List[bool] = []

    class Counting(_Server):
        def accept(self) -> Any:
            pair = super().accept()
            calls.append(pair is not None)
            return pair

    server = Counting(loop)
    clients = [_client(server.address) for _ in range(3)]
    try:
        for i, c in enumerate(clients):
            c.sendall(format_v1(("192.0.2.%d" % (i + 1), 1000), ("192.0.2.100", 80)) + b"x")
        run_until(loop, lambda: len(server.peers) == 3)
        assert calls == [True] * 3
    finally:
        for c in clients:
            c.close()


@needs_defer
def test_socketserver_mixin_defers_accept(loop):
    class Server(proxy.ProxyProtocolServerMixIn, ss.TCPServer):
        pass

    server = Server(("127.0.0.1", 0), ss.StreamRequestHandler, loop=loop)
    try:
        assert _deferring(server.socket) > 0
    finally:
        server.server_close()


def test_listener_connection_limits_count_from_accept(loop, caplog):
    server = _Server(loop)
    server.set_connection_limits(max_connections=1)
    with _client(server.address) as first:
        first.sendall(format_v1(("192.0.2.5", 1000), ("192.0.2.1", 80)) + b"one")
        assert _read_until(loop, first, 3) == b"one"
        with caplog.at_level(logging.WARNING, logger="netloop"):
            with _client(server.address) as second:
                second.sendall(format_v1(("192.0.2.6", 1000), ("192.0.2.1", 80)) + b"two")
                assert _closed(loop, second)
        assert "connection limit reached" in caplog.text
        assert server.connection_count == 1
    run_until(loop, lambda: server.connection_count == 0)
    with _client(server.address) as third:
        third.sendall(format_v2(("192.0.2.7", 1000), ("192.0.2.1", 80)) + b"three")
        assert _read_until(loop, third, 5) == b"three"


def test_listener_connection_limits_release_a_connection_whose_header_came_late(loop):
    # Accepted before its header was complete (here: split in two), the connection is counted
    # by the channel reading the header, then by the handler made for it, which releases the
    # count when it closes: a late header must not leave the listener a connection short for
    # ever (with max_connections=1 the next client would be refused).
    server = _Server(loop)
    server.set_connection_limits(max_connections=1)
    header = format_v1(("192.0.2.5", 1000), ("192.0.2.1", 80))
    for i in range(3):
        with _client(server.address) as c:
            c.sendall(header[:7])
            run_until(loop, lambda: server.connection_count == 1)
            c.sendall(header[7:] + b"late")
            assert _read_until(loop, c, 4) == b"late"
            assert server.connection_count == 1
        run_until(loop, lambda: server.connection_count == 0)
    assert [peer for peer, _ in server.peers] == [("192.0.2.5", 1000)] * 3


def test_remembered_addresses_never_cross_families():
    # The fast path remembers the last addresses it read per version and family: the same
    # bytes under another family are still checked (and refused), and IPv6 is still rewritten
    # in canonical form.
    v4 = parse_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 10 20\r\n")
    assert v4.source == ("1.2.3.4", 10) and v4.destination == ("5.6.7.8", 20)
    with pytest.raises(ProxyProtocolError):
        parse_header(b"PROXY TCP6 1.2.3.4 5.6.7.8 10 20\r\n")
    for _ in range(2):
        v6 = parse_header(b"PROXY TCP6 2001:DB8:0:0::7 ::1 10 20\r\n")
        assert v6.source == ("2001:db8::7", 10, 0, 0) and v6.destination == ("::1", 20, 0, 0)
    for src in (("192.0.2.1", 1), ("192.0.2.2", 2), ("192.0.2.1", 3)):
        assert parse_header(format_v2(src, ("192.0.2.9", 80))).source == src
