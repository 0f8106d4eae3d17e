"""The PROXY protocol (versions 1 and 2) on listeners: the client's address behind a balancer.

A TCP balancer such as HAProxy (``send-proxy`` / ``send-proxy-v2``) opens one connection to the
server per client and writes, before the client's first byte, a short header naming the client's
address. A listener that expects it reads that header off each accepted connection, then hands
the connection on with the client's address instead of the balancer's: a dispatcher's ``addr``,
a socketserver handler's ``client_address``.

Three parts:

- ``parse_header(data)`` (``netloop.proxy.header``): pure code, no socket. It takes the bytes
  received so far and answers a ``ProxyHeader``, None (a valid beginning: read more), or
  raises ``ProxyProtocolError`` (not a PROXY header, or a malformed or oversized one). It
  decides as early as the bytes allow, so a client speaking another protocol is refused at its
  first wrong byte.
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
import weakref
from typing import Any, Callable

from ..dispatcher import Dispatcher, known_interest
from ..pollers import READ_MASK
from ..reactor import _lookup
from .header import (DEFAULT_MAX_HEADER, V1_MAX_LENGTH, V2_SIGNATURE, ProxyHeader,
                     ProxyProtocolError, format_v1, format_v2, parse_header)

__all__ = [
    "ProxyHeader", "ProxyProtocolError", "parse_header", "read_proxy_header",
    "ProxyProtocolListener", "ProxyProtocolServerMixIn", "V2_SIGNATURE", "V1_MAX_LENGTH",
    "DEFAULT_MAX_HEADER", "DEFAULT_TIMEOUT", "format_v1", "format_v2", "defer_accept",
]

logger = logging.getLogger("netloop.proxy")

#: Default seconds a connection has to send its complete header.
DEFAULT_TIMEOUT = 5.0


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
        # A listener with connection limits counted the connection from accept() with this
        # reader as its channel: the count goes on with the socket (see _hand_over).
        owner, self._nl_owner = self._nl_owner, None
        self.del_channel()
        self.socket = None
        self.connected = False
        _hand_over(sock, header.source if header.relayed else self.peer, self._map,
                   self._deliver, owner, self._nl_owner_key)

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
               deliver: Callable[[socket.socket, Any], Any], owner: Any = None,
               key: int = 0) -> None:
    # owner: the listener counting this connection (connection limits) when its header came
    # after accept(); the count passes to the dispatcher deliver() makes for sock, or, if it
    # makes none, stays with the socket until it is closed, as at accept time.
    lp = _lookup(map)
    if lp is not None:
        # A dispatcher made for sock now takes this as its addr (see Dispatcher.__init__).
        lp._accepted = (sock, address)
    if owner is not None:
        owner._nl_pending = (key, weakref.ref(sock))
        if lp is not None:
            lp._accepted_by = owner
    try:
        deliver(sock, address)
    finally:
        if lp is not None and lp._accepted is not None and lp._accepted[0] is sock:
            lp._accepted = None
        if owner is not None:
            owner._nl_settle()


def defer_accept(sock: Any, seconds: float) -> bool:
    """Have the kernel hand the listener ``sock`` a connection only once its first bytes are
    there (Linux ``TCP_DEFER_ACCEPT``; up to about ``seconds``, after which it is handed over
    anyway); ``seconds`` 0 turns it off. True if set.

    The PROXY mix-ins set it while ``proxy_protocol`` holds (a balancer writes its header as
    soon as it is connected), so the header is almost always read at accept time: a connection
    accepted before its header had to be watched by a channel of its own until it came (with a
    timer for ``proxy_header_timeout``), which cost more than the rest of the connection's
    set-up. They clear it when ``proxy_protocol`` is turned off: with it, a client that waits
    for the server to speak first would wait for the timeout. Elsewhere it does nothing.
    """
    option = getattr(socket, "TCP_DEFER_ACCEPT", None)
    if option is None or sock is None:
        return False
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        sock.setsockopt(socket.IPPROTO_TCP, option, max(0, int(seconds + 0.999)))
    except (OSError, ValueError):
        return False  # not a TCP socket, or closed
    return True


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
    _nl_limited: bool
    _nl_deferring: Any = None   # TCP_DEFER_ACCEPT as last set on the socket (None: not yet)

    def handle_accept(self) -> None:
        """Accept a bounded burst of connections, each through ``proxy_accepted()``.

        Connection limits (``set_connection_limits()``) hold as in ``Dispatcher``: a
        connection counts from ``accept()``, its header reading included.
        """
        if self._nl_deferring is not self.proxy_protocol:
            self._nl_deferring = self.proxy_protocol
            defer_accept(getattr(self, "socket", None),
                         self.proxy_header_timeout if self.proxy_protocol else 0)
        accept = self.accept  # type: ignore[attr-defined]
        limited = self._nl_limited
        # As Dispatcher.handle_accept(): on Linux no more accept() calls than connections wait.
        for _ in range(self._nl_accept_burst()):  # type: ignore[attr-defined]
            pair = accept()
            if pair is None:
                break
            if limited and not self._nl_admit(*pair):  # type: ignore[attr-defined]
                continue
            self.proxy_accepted(*pair)
            if limited:
                self._nl_settle()  # type: ignore[attr-defined]
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
    _nl_deferring: Any = None   # TCP_DEFER_ACCEPT as last set on the socket (None: not yet)

    def server_activate(self) -> None:
        """socketserver's activation, then ``TCP_DEFER_ACCEPT`` (see ``defer_accept``)."""
        super().server_activate()  # type: ignore[misc]
        self._nl_sync_defer()

    def _nl_sync_defer(self) -> None:
        if self._nl_deferring is not self.proxy_protocol:
            self._nl_deferring = self.proxy_protocol
            sock = getattr(self, "socket", None)
            if sock is not None:
                defer_accept(sock, self.proxy_header_timeout if self.proxy_protocol else 0)

    def _nl_process(self, request: Any, client_address: Any) -> None:
        if self._nl_deferring is not self.proxy_protocol:
            self._nl_sync_defer()
        process = super()._nl_process  # type: ignore[misc]
        if not self.proxy_protocol:
            process(request, client_address)
            return

        def deliver(sock: socket.socket, address: Any) -> None:
            sock.settimeout(socket.getdefaulttimeout())
            process(sock, address)

        read_proxy_header(request, client_address, self._nl_map, deliver,
                          timeout=self.proxy_header_timeout, max_size=self.proxy_max_header)
