"""The PROXY protocol (versions 1 and 2) on listeners: the client's address behind a balancer.

A TCP balancer such as HAProxy (``send-proxy`` / ``send-proxy-v2``) opens one connection to the
server per client and writes, before the client's first byte, a short header naming the client's
address. A listener that expects it reads that header off each accepted connection, then hands
the connection on with the client's address instead of the balancer's: a dispatcher's ``addr``,
a socketserver handler's ``client_address``.

Three parts:

- ``parse_header(data)``: pure code, no socket. It takes the bytes received so far and answers
  a ``ProxyHeader``, None (a valid beginning: read more), or raises ``ProxyProtocolError``
  (not a PROXY header, or a malformed or oversized one). It decides as early as the bytes allow,
  so a client speaking another protocol is refused at its first wrong byte.
- ``read_proxy_header(sock, peer, map, deliver)``: reads the header of one accepted connection
  on a loop, without blocking it and without taking a byte past the header (what the client sent
  after it stays in the socket for the handler). ``deliver(sock, address)`` is called once the
  header is complete. A connection whose header is missing, malformed, oversized, or not complete
  within ``timeout`` seconds is closed, with one warning on the ``netloop.proxy`` logger; the
  handler never sees it.
- ``ProxyProtocolListener`` (for ``Dispatcher`` listeners) and ``ProxyProtocolServerMixIn`` (for
  ``netloop.socketserver`` servers): mix-ins that put every accepted connection through
  ``read_proxy_header``. Opt-in per listener: the ``proxy_protocol`` attribute (True by default
  in the mix-ins) can be turned off on an instance.

A ``LOCAL`` header (version 2: the balancer's own health checks) and a version 1 ``UNKNOWN``
header, or a version 2 header of unspecified family, keep the connection's real address: the
connection is served as if it came directly.

Spec: HAProxy's ``doc/proxy-protocol.txt``. A receiver must not guess: a connection on a listener
that expects the header and does not start with one is refused, never served as plain data.
"""

from __future__ import annotations

import logging
import socket
import struct
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

from .dispatcher import ACCEPT_BURST, Dispatcher, known_interest
from .pollers import READ_MASK
from .reactor import _lookup

__all__ = [
    "ProxyHeader", "ProxyProtocolError", "parse_header", "read_proxy_header",
    "ProxyProtocolListener", "ProxyProtocolServerMixIn", "V2_SIGNATURE", "V1_MAX_LENGTH",
    "DEFAULT_MAX_HEADER", "DEFAULT_TIMEOUT", "format_v1", "format_v2",
]

logger = logging.getLogger("netloop.proxy")

#: The twelve bytes every version 2 header starts with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The longest version 1 header, CRLF included (the spec's bound).
V1_MAX_LENGTH = 107
#: Default bound on a whole header (version 2's TLVs included); larger ones are refused.
DEFAULT_MAX_HEADER = 4096
#: Default seconds a connection has to send its complete header.
DEFAULT_TIMEOUT = 5.0

_V1_PREFIX = b"PROXY "
_V2_FIXED = 16  # signature, version/command, family/transport, length
_V2_ADDRESS_SIZES = {1: 12, 2: 36, 3: 216}   # INET, INET6, UNIX
_V2_FAMILIES = {0: None, 1: socket.AF_INET, 2: socket.AF_INET6,
                3: getattr(socket, "AF_UNIX", None)}
_V2_TRANSPORTS = {0: None, 1: socket.SOCK_STREAM, 2: socket.SOCK_DGRAM}


_V2_FIXED_PART = struct.Struct("!BBH")
_V2_TCP = {0x11: (socket.AF_INET, struct.Struct("!4s4sHH")),
           0x21: (socket.AF_INET6, struct.Struct("!16s16sHH"))}
_V1_TCP = {b"PROXY TCP4 ": socket.AF_INET, b"PROXY TCP6 ": socket.AF_INET6}
_ntop = socket.inet_ntop
_pton = socket.inet_pton


class ProxyProtocolError(ValueError):
    """The bytes received are not a valid PROXY protocol header."""


class ProxyHeader(NamedTuple):
    """One parsed header.

    ``version``: 1 or 2. ``command``: ``"PROXY"`` (addresses relayed) or ``"LOCAL"`` (the
    balancer speaking for itself, e.g. a health check). ``family``: ``socket.AF_INET``,
    ``AF_INET6``, ``AF_UNIX``, or None when the sender did not say (v1 ``UNKNOWN``, v2
    ``UNSPEC``). ``transport``: ``socket.SOCK_STREAM``, ``SOCK_DGRAM`` or None.
    ``source``/``destination``: the client's and the address it connected to, as ``accept()``
    would give them (``(host, port)`` for IPv4, ``(host, port, 0, 0)`` for IPv6, a path for
    Unix sockets), or None. ``tlvs``: version 2's extensions, ``(type, value)`` pairs in order.
    ``length``: the header's size in bytes.
    """

    version: int
    command: str
    family: Optional[int]
    transport: Optional[int]
    source: Any
    destination: Any
    tlvs: Tuple[Tuple[int, bytes], ...]
    length: int

    @property
    def relayed(self) -> bool:
        """True when ``source`` is a client address to use (False: keep the real peer)."""
        return self.command == "PROXY" and self.source is not None


def parse_header(data: bytes, max_size: int = DEFAULT_MAX_HEADER) -> Optional[ProxyHeader]:
    """Parse the PROXY header at the start of ``data``.

    Returns the header (its ``length`` says where the client's own bytes begin), or None when
    ``data`` is a valid but incomplete beginning of one. Raises ``ProxyProtocolError`` as soon
    as ``data`` cannot begin a valid header, or when the header would be longer than
    ``max_size`` bytes (version 1 headers are bounded by the spec at 107 bytes).
    """
    if type(data) is not bytes:
        data = bytes(data)
    if data[:12] == V2_SIGNATURE and len(data) >= _V2_FIXED:
        # The common case first, in a few C calls: a complete PROXY over TCP/IPv4 or IPv6.
        ver_cmd, fam, body_len = _V2_FIXED_PART.unpack_from(data, 12)
        if ver_cmd == 0x21 and fam in _V2_TCP and body_len <= max_size - _V2_FIXED:
            af, addr = _V2_TCP[fam]
            length = _V2_FIXED + body_len
            if body_len >= addr.size and len(data) >= length:
                src, dst, sport, dport = addr.unpack_from(data, _V2_FIXED)
                source: Any = (_ntop(af, src), sport)
                destination: Any = (_ntop(af, dst), dport)
                if af != socket.AF_INET:
                    source += (0, 0)
                    destination += (0, 0)
                tlvs = (_v2_tlvs(data[_V2_FIXED + addr.size:length])
                        if body_len > addr.size else ())
                return ProxyHeader(2, "PROXY", af, socket.SOCK_STREAM, source, destination,
                                   tlvs, length)
        return _parse_v2(data, max_size)
    if data[:11] in _V1_TCP:
        end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
        if end > 0:
            fields = data[11:end].split(b" ")
            if len(fields) == 4:
                af = _V1_TCP[data[:11]]
                try:
                    src, dst = fields[0].decode("ascii"), fields[1].decode("ascii")
                    _pton(af, src)  # validates
                    _pton(af, dst)
                except (UnicodeDecodeError, OSError, ValueError):
                    return _parse_v1(data)  # the careful path says what is wrong
                sport, dport = fields[2], fields[3]
                if (sport.isdigit() and dport.isdigit() and len(sport) <= 5
                        and len(dport) <= 5 and sport[:1] != b"0" and dport[:1] != b"0"
                        and int(sport) <= 65535 and int(dport) <= 65535):
                    if af == socket.AF_INET:
                        return ProxyHeader(1, "PROXY", af, socket.SOCK_STREAM,
                                           (_ntop(af, _pton(af, src)), int(sport)),
                                           (_ntop(af, _pton(af, dst)), int(dport)), (), end + 2)
                    return ProxyHeader(1, "PROXY", af, socket.SOCK_STREAM,
                                       (_ntop(af, _pton(af, src)), int(sport), 0, 0),
                                       (_ntop(af, _pton(af, dst)), int(dport), 0, 0), (),
                                       end + 2)
        return _parse_v1(data)
    if not data:
        return None
    if data[:1] == b"P":
        return _parse_v1(data)
    if data[:1] == b"\r":
        return _parse_v2(data, max_size)
    raise ProxyProtocolError("not a PROXY protocol header (starts with %r)" % data[:8])


def _parse_v1(data: bytes) -> Optional[ProxyHeader]:
    head = data[:len(_V1_PREFIX)]
    if head != _V1_PREFIX[:len(head)]:
        raise ProxyProtocolError("not a PROXY protocol header (starts with %r)" % data[:8])
    end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
    if end < 0:
        limit = min(len(data), V1_MAX_LENGTH)
        if b"\n" in data[:limit] or b"\r" in data[:limit - 1]:
            raise ProxyProtocolError("version 1 header: a line break that is not CRLF")
        if len(data) >= V1_MAX_LENGTH:
            raise ProxyProtocolError("version 1 header: no CRLF within %d bytes" % V1_MAX_LENGTH)
        _check_v1_prefix(data[len(_V1_PREFIX):])
        return None
    line = data[:end]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("version 1 header: bytes that are not ASCII") from None
    length = end + 2
    parts = text.split(" ")
    proto = parts[1] if len(parts) > 1 else ""
    if proto == "UNKNOWN":
        # The sender could not tell: whatever follows up to CRLF is ignored (spec).
        return ProxyHeader(1, "PROXY", None, None, None, None, (), length)
    if proto not in ("TCP4", "TCP6"):
        raise ProxyProtocolError("version 1 header: unknown protocol %r" % proto[:16])
    if len(parts) != 6:
        raise ProxyProtocolError("version 1 header: expected 6 fields separated by single "
                                 "spaces, got %d" % len(parts))
    family = socket.AF_INET if proto == "TCP4" else socket.AF_INET6
    src = _v1_address(family, parts[2], "source")
    dst = _v1_address(family, parts[3], "destination")
    sport = _v1_port(parts[4], "source")
    dport = _v1_port(parts[5], "destination")
    if family == socket.AF_INET:
        source: Any = (src, sport)
        destination: Any = (dst, dport)
    else:
        source = (src, sport, 0, 0)
        destination = (dst, dport, 0, 0)
    return ProxyHeader(1, "PROXY", family, socket.SOCK_STREAM, source, destination, (), length)


def _check_v1_prefix(rest: bytes) -> None:
    """Refuse an incomplete version 1 line early when its protocol word is already wrong."""
    word, space, _ = rest.partition(b" ")
    if space:
        if word not in (b"TCP4", b"TCP6", b"UNKNOWN"):
            raise ProxyProtocolError("version 1 header: unknown protocol %r" % word[:16])
    elif not any(p.startswith(word) for p in (b"TCP4", b"TCP6", b"UNKNOWN")):
        raise ProxyProtocolError("version 1 header: unknown protocol %r" % word[:16])


def _v1_address(family: int, text: str, what: str) -> str:
    try:
        packed = socket.inet_pton(family, text)
    except (OSError, ValueError):
        raise ProxyProtocolError("version 1 header: bad %s address %r" % (what, text[:46])) \
            from None
    return socket.inet_ntop(family, packed)


def _v1_port(text: str, what: str) -> int:
    if not (1 <= len(text) <= 5 and text.isdigit() and text.isascii()) \
            or (len(text) > 1 and text[0] == "0"):
        raise ProxyProtocolError("version 1 header: bad %s port %r" % (what, text[:8]))
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError("version 1 header: %s port %d out of range" % (what, port))
    return port


def _parse_v2(data: bytes, max_size: int) -> Optional[ProxyHeader]:
    head = data[:len(V2_SIGNATURE)]
    if head != V2_SIGNATURE[:len(head)]:
        raise ProxyProtocolError("not a PROXY protocol header (starts with %r)" % data[:8])
    if len(data) > 12:
        ver_cmd = data[12]
        if ver_cmd >> 4 != 2:
            raise ProxyProtocolError("version 2 header: unsupported version %d" % (ver_cmd >> 4))
        if ver_cmd & 0xF not in (0, 1):
            raise ProxyProtocolError("version 2 header: unknown command %d" % (ver_cmd & 0xF))
    if len(data) > 13:
        fam = data[13]
        if fam >> 4 not in _V2_FAMILIES or fam & 0xF not in _V2_TRANSPORTS \
                or _V2_FAMILIES[fam >> 4] is None and fam >> 4 != 0:
            raise ProxyProtocolError("version 2 header: unknown address family/transport "
                                     "0x%02x" % fam)
    if len(data) < _V2_FIXED:
        return None
    command = "LOCAL" if data[12] & 0xF == 0 else "PROXY"
    fam_code, trans_code = data[13] >> 4, data[13] & 0xF
    (body_len,) = struct.unpack_from("!H", data, 14)
    length = _V2_FIXED + body_len
    if length > max_size:
        raise ProxyProtocolError("version 2 header: %d bytes, more than the %d allowed"
                                 % (length, max_size))
    addr_size = _V2_ADDRESS_SIZES.get(fam_code, 0)
    if command == "PROXY" and body_len < addr_size:
        raise ProxyProtocolError("version 2 header: %d bytes of addresses, family needs %d"
                                 % (body_len, addr_size))
    if len(data) < length:
        return None
    body = data[_V2_FIXED:length]
    family = _V2_FAMILIES[fam_code]
    transport = _V2_TRANSPORTS[trans_code]
    source: Any = None
    destination: Any = None
    if command == "PROXY" and addr_size:
        source, destination = _v2_addresses(fam_code, body)
    elif command == "LOCAL":
        # The balancer speaking for itself: its addresses, if any, are not a client's.
        family = transport = None
    tlvs = _v2_tlvs(body[addr_size:]) if addr_size <= len(body) else ()
    return ProxyHeader(2, command, family, transport, source, destination, tlvs, length)


def _v2_addresses(fam_code: int, body: bytes) -> Tuple[Any, Any]:
    if fam_code == 1:
        src, dst, sport, dport = struct.unpack_from("!4s4sHH", body)
        return ((socket.inet_ntop(socket.AF_INET, src), sport),
                (socket.inet_ntop(socket.AF_INET, dst), dport))
    if fam_code == 2:
        src, dst, sport, dport = struct.unpack_from("!16s16sHH", body)
        return ((socket.inet_ntop(socket.AF_INET6, src), sport, 0, 0),
                (socket.inet_ntop(socket.AF_INET6, dst), dport, 0, 0))
    src, dst = struct.unpack_from("108s108s", body)
    return _unix_path(src), _unix_path(dst)


def _unix_path(raw: bytes) -> str:
    if raw[:1] == b"\x00":  # Linux's abstract namespace: the name is not NUL-terminated
        return raw.rstrip(b"\x00").decode("utf-8", "surrogateescape") or "\x00"
    return raw.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def _v2_tlvs(raw: bytes) -> Tuple[Tuple[int, bytes], ...]:
    out: List[Tuple[int, bytes]] = []
    i = 0
    while i < len(raw):
        if len(raw) - i < 3:
            raise ProxyProtocolError("version 2 header: truncated TLV at byte %d" % i)
        kind = raw[i]
        (size,) = struct.unpack_from("!H", raw, i + 1)
        if i + 3 + size > len(raw):
            raise ProxyProtocolError("version 2 header: TLV 0x%02x of %d bytes overruns the "
                                     "header" % (kind, size))
        out.append((kind, raw[i + 3:i + 3 + size]))
        i += 3 + size
    return tuple(out)


# ---------------------------------------------------------------- writing (tests, clients)

def format_v1(source: Any = None, destination: Any = None) -> bytes:
    """A version 1 header for a TCP connection from ``source`` to ``destination``
    (``(host, port)`` pairs of one family), or ``PROXY UNKNOWN`` when either is None."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP6" if ":" in source[0] else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (proto, source[0], destination[0], source[1],
                                           destination[1])).encode("ascii")


def format_v2(source: Any = None, destination: Any = None, *, local: bool = False,
              tlvs: Tuple[Tuple[int, bytes], ...] = ()) -> bytes:
    """A version 2 header: PROXY over TCP from ``source`` to ``destination`` (IPv4 or IPv6
    ``(host, port)`` pairs), or LOCAL when ``local`` is true or an address is missing."""
    extra = b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in tlvs)
    if local or source is None or destination is None:
        return V2_SIGNATURE + struct.pack("!BBH", 0x20, 0x00, len(extra)) + extra
    if ":" in source[0]:
        fam, af = 0x21, socket.AF_INET6
    else:
        fam, af = 0x11, socket.AF_INET
    body = (socket.inet_pton(af, source[0]) + socket.inet_pton(af, destination[0])
            + struct.pack("!HH", source[1], destination[1]) + extra)
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, fam, len(body)) + body


# ---------------------------------------------------------------- on a loop

def _describe(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return ("[%s]:%s" if ":" in str(host) else "%s:%s") % (host, addr[1])
    return repr(addr)


class _HeaderReader(Dispatcher):
    """Reads one connection's PROXY header, then hands the socket on (see read_proxy_header)."""

    def __init__(self, sock: socket.socket, peer: Any, map: Any,
                 deliver: Callable[[socket.socket, Any], Any], timeout: float,
                 max_size: int) -> None:
        Dispatcher.__init__(self, sock, map)
        self.peer = peer
        self._deliver = deliver
        self._max = max_size
        self._seen = b""
        self._done = False
        if timeout is not None and timeout > 0:
            self.call_later(timeout, self._too_slow, timeout)

    @known_interest
    def readable(self) -> bool:
        return True

    @known_interest
    def writable(self) -> bool:
        return False

    def _nl_mask(self) -> int:
        return 0 if self._nl_paused else READ_MASK

    def handle_read(self) -> None:
        # Peek, so that a byte after the header stays in the socket for the handler. What was
        # seen of an incomplete header is all header: take it out, or level-triggered polling
        # would report the same bytes again and again.
        want = min(self._max - len(self._seen), 4096)
        try:
            chunk = self.socket.recv(max(want, 1), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._refuse("reading the header failed: %s" % err)
            return
        if not chunk:
            self._refuse("closed before a complete PROXY header (%d bytes received)"
                         % len(self._seen))
            return
        data = self._seen + chunk
        try:
            header = parse_header(data, self._max)
        except ProxyProtocolError as err:
            self._refuse(str(err))
            return
        if header is None:
            if len(data) >= self._max:
                self._refuse("no complete PROXY header within %d bytes" % self._max)
                return
            self._take(len(chunk))
            self._seen = data
            return
        self._take(header.length - len(self._seen))
        self._finish(header)

    def _take(self, count: int) -> None:
        sock = self.socket
        while count > 0:
            got = sock.recv(count)  # peeked already: present, so this does not wait
            if not got:
                break
            count -= len(got)

    def _finish(self, header: ProxyHeader) -> None:
        self._done = True
        sock = self.socket
        if self._nl_timers:
            self._cancel_timers()
        self.del_channel()
        self.socket = None
        self.connected = False
        _hand_over(sock, header.source if header.relayed else self.peer, self._map,
                   self._deliver)

    def _too_slow(self, timeout: float) -> None:
        if not self._done:
            self._refuse("no complete PROXY header within %gs (%d bytes received)"
                         % (timeout, len(self._seen)))

    def _refuse(self, reason: str) -> None:
        self._done = True
        _log_refusal(self.peer, reason)
        self.close()

    def handle_close(self) -> None:
        if self._done:
            self.close()
            return
        self._refuse("closed before a complete PROXY header (%d bytes received)"
                     % len(self._seen))

    def handle_error(self) -> None:
        logger.error("netloop: PROXY protocol: error while reading the header from %s",
                     _describe(self.peer), exc_info=True)
        self.close()

    def __repr__(self) -> str:
        return "<netloop PROXY header reader for %s at %#x>" % (_describe(self.peer), id(self))


def _log_refusal(peer: Any, reason: str) -> None:
    logger.warning("netloop: PROXY protocol: refused the connection from %s: %s",
                   _describe(peer), reason)


def _hand_over(sock: socket.socket, address: Any, map: Any,
               deliver: Callable[[socket.socket, Any], Any]) -> None:
    lp = _lookup(map)
    if lp is not None:
        # A dispatcher made for sock now takes this as its addr (see Dispatcher.__init__).
        lp._accepted = (sock, address)
    try:
        deliver(sock, address)
    finally:
        if lp is not None and lp._accepted is not None and lp._accepted[0] is sock:
            lp._accepted = None


def read_proxy_header(sock: socket.socket, peer: Any, map: Any,
                      deliver: Callable[[socket.socket, Any], Any], *,
                      timeout: float = DEFAULT_TIMEOUT,
                      max_size: int = DEFAULT_MAX_HEADER) -> None:
    """Read the PROXY header of the accepted connection ``sock`` (from ``peer``, the balancer)
    on the loop serving ``map``, then call ``deliver(sock, client_address)``.

    ``client_address`` is the header's source, or ``peer`` for LOCAL/UNKNOWN headers. A
    dispatcher that ``deliver`` makes for ``sock`` at once gets ``client_address`` as its
    ``addr``. The socket is left non-blocking. A bad, oversized (``max_size``) or slow
    (``timeout`` seconds) header closes the connection with one warning logged.

    A balancer writes the header as soon as it is connected, so it is usually there when the
    connection is accepted: it is then read at once (``deliver`` runs before this returns).
    Otherwise a channel on the loop waits for the rest.
    """
    sock.setblocking(False)
    try:
        seen = sock.recv(min(max_size, 1024), socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        seen = None
    except OSError as err:
        _log_refusal(peer, "reading the header failed: %s" % err)
        sock.close()
        return
    if seen is not None:
        try:
            header = parse_header(seen, max_size) if seen else None
        except ProxyProtocolError as err:
            _log_refusal(peer, str(err))
            sock.close()
            return
        if header is not None:
            got = sock.recv(header.length)  # peeked: all there
            if len(got) == header.length:
                _hand_over(sock, header.source if header.relayed else peer, map, deliver)
                return
            # A short read (not seen on stream sockets): the reader continues from here.
            reader = _HeaderReader(sock, peer, map, deliver, timeout, max_size)
            reader._seen = got
            return
    _HeaderReader(sock, peer, map, deliver, timeout, max_size)


class ProxyProtocolListener:
    """Mix-in for a ``Dispatcher`` listener: accepted connections must start with a PROXY
    header (v1 or v2); ``handle_accepted(sock, addr)`` runs once it is read, with the
    client's address.

    ``class Server(ProxyProtocolListener, netloop.Dispatcher)``, with ``handle_accepted()``
    defined as usual. The mix-in provides ``handle_accept()`` (netloop's bounded burst of
    ``accept()`` calls); a class that replaces ``handle_accept()`` itself should pass each
    accepted connection to ``proxy_accepted(sock, addr)``. Set ``proxy_protocol = False`` on an
    instance to accept plain connections again; ``proxy_header_timeout`` and
    ``proxy_max_header`` bound what a connection may take.
    """

    proxy_protocol = True
    proxy_header_timeout: float = DEFAULT_TIMEOUT
    proxy_max_header: int = DEFAULT_MAX_HEADER
    _map: Any
    accepting: bool

    def handle_accept(self) -> None:
        """Accept a bounded burst of connections, each through ``proxy_accepted()``."""
        accept = self.accept  # type: ignore[attr-defined]
        for _ in range(ACCEPT_BURST):
            pair = accept()
            if pair is None:
                break
            self.proxy_accepted(*pair)
            if not self.accepting:
                break

    def proxy_accepted(self, sock: Any, addr: Any) -> None:
        """Read the PROXY header of ``sock`` (from the balancer at ``addr``), then call
        ``handle_accepted(sock, client_address)``."""
        deliver = self.handle_accepted  # type: ignore[attr-defined]
        if not self.proxy_protocol:
            deliver(sock, addr)
            return
        read_proxy_header(sock, addr, self._map, deliver, timeout=self.proxy_header_timeout,
                          max_size=self.proxy_max_header)


class ProxyProtocolServerMixIn:
    """Mix-in for a ``netloop.socketserver`` stream server: each request's PROXY header is read
    on the server's loop before ``verify_request()``; the handler's ``client_address`` is the
    client's.

    ``class Server(ProxyProtocolServerMixIn, socketserver.ThreadingTCPServer)``. The request
    socket is handed to the pipeline in socketserver's mode (blocking, or the default timeout).
    Headers are read while the loop runs (``serve_forever()`` or a shared loop); a request
    whose header is incomplete when ``handle_request()`` returns is served by a later call.
    """

    proxy_protocol = True
    proxy_header_timeout: float = DEFAULT_TIMEOUT
    proxy_max_header: int = DEFAULT_MAX_HEADER
    _nl_map: Any

    def _nl_process(self, request: Any, client_address: Any) -> None:
        process = super()._nl_process  # type: ignore[misc]
        if not self.proxy_protocol:
            process(request, client_address)
            return

        def deliver(sock: socket.socket, address: Any) -> None:
            sock.settimeout(socket.getdefaulttimeout())
            process(sock, address)

        read_proxy_header(request, client_address, self._nl_map, deliver,
                          timeout=self.proxy_header_timeout, max_size=self.proxy_max_header)
