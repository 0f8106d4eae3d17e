"""PROXY protocol headers as pure code: parse (``parse_header``) and write (``format_v1``,
``format_v2``), no socket involved.

``parse_header`` takes the bytes received so far and answers a complete ``ProxyHeader``, None
(a valid beginning: read more), or raises ``ProxyProtocolError``, as early as the bytes allow.
Its common cases (a complete v2 header for TCP, a v1 ``TCP4``/``TCP6`` line) take a short path
of a few C calls; everything else, and every error, goes through the careful one, which says
what is wrong (the tests fuzz one against the other). Spec: HAProxy's ``doc/proxy-protocol.txt``.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

__all__ = ["ProxyHeader", "ProxyProtocolError", "parse_header", "format_v1", "format_v2",
           "V2_SIGNATURE", "V1_MAX_LENGTH", "DEFAULT_MAX_HEADER"]

#: The twelve bytes every version 2 header starts with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The longest version 1 header, CRLF included (the spec's bound).
V1_MAX_LENGTH = 107
#: Default bound on a whole header (version 2's TLVs included); larger ones are refused.
DEFAULT_MAX_HEADER = 4096

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
_INET = socket.AF_INET
_STREAM = socket.SOCK_STREAM

# The last address seen in each slot, as received -> as given out. A balancer's headers name
# the same destination (its frontend) every time and often the same client: one comparison of
# a few bytes instead of inet_pton()/inet_ntop() (libc formats with sprintf: 2,400 instructions
# an address), and the connections share one string. Keyed by version and family, so a cached
# answer is only reused where the same bytes were validated the same way; each slot holds one
# (received, given) pair, replaced whole, so threads parsing at once never mix two pairs.
_LAST: Dict[Tuple[int, int], List[Tuple[bytes, str]]] = {
    key: [(b"", ""), (b"", "")] for key in ((1, socket.AF_INET), (1, socket.AF_INET6),
                                            (2, socket.AF_INET), (2, socket.AF_INET6))}


def _v1_text(af: int, raw: bytes) -> str:
    """A v1 address field as ``accept()`` would give it; raises for an invalid one."""
    text = raw.decode("ascii")
    packed = _pton(af, text)  # validates
    # An IPv4 address inet_pton() accepts is already canonical (four decimal numbers without
    # leading zeros); an IPv6 one is rewritten in its canonical form.
    return text if af == _INET else _ntop(af, packed)


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


def _remembered(last: List[Any], i: int, af: int, raw: bytes,
                convert: Callable[[int, bytes], str]) -> str:
    """``convert(af, raw)``, unless ``raw`` is what slot ``i`` of ``last`` saw the last time
    (a balancer relays the same few addresses over and over): then the text made then."""
    seen = last[i]
    if raw == seen[0]:
        return seen[1]  # type: ignore[no-any-return]
    text = convert(af, raw)
    last[i] = (raw, text)
    return text


# What ProxyHeader._make() calls, without the Python frame of the class's own __new__ (2,000
# instructions of a parse's 13,000): the fast paths give all eight fields in order.
_new_tuple = tuple.__new__


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
                last = _LAST[2, af]
                source: Any = (_remembered(last, 0, af, src, _ntop), sport)
                destination: Any = (_remembered(last, 1, af, dst, _ntop), dport)
                if af != _INET:
                    source += (0, 0)
                    destination += (0, 0)
                tlvs = (_v2_tlvs(data[_V2_FIXED + addr.size:length])
                        if body_len > addr.size else ())
                return _new_tuple(ProxyHeader, (2, "PROXY", af, _STREAM, source, destination,
                                                tlvs, length))
        return _parse_v2(data, max_size)
    if data[:11] in _V1_TCP:
        end = data.find(b"\r\n", 0, V1_MAX_LENGTH)
        if end > 0:
            fields = data[11:end].split(b" ")
            if len(fields) == 4:
                af = _V1_TCP[data[:11]]
                last = _LAST[1, af]
                try:
                    src = _remembered(last, 0, af, fields[0], _v1_text)
                    dst = _remembered(last, 1, af, fields[1], _v1_text)
                except (UnicodeDecodeError, OSError, ValueError):
                    return _parse_v1(data)  # the careful path says what is wrong
                sport, dport = fields[2], fields[3]
                if (sport.isdigit() and dport.isdigit() and len(sport) <= 5
                        and len(dport) <= 5 and sport[:1] != b"0" and dport[:1] != b"0"
                        and int(sport) <= 65535 and int(dport) <= 65535):
                    if af == _INET:
                        return _new_tuple(ProxyHeader, (1, "PROXY", af, _STREAM,
                                                        (src, int(sport)), (dst, int(dport)),
                                                        (), end + 2))
                    return _new_tuple(ProxyHeader, (1, "PROXY", af, _STREAM,
                                                    (src, int(sport), 0, 0),
                                                    (dst, int(dport), 0, 0), (), end + 2))
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
