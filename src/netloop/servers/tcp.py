"""TCPServer: a stream server whose listening socket is a non-blocking channel of a loop.

The listening socket is made non-blocking at creation, so each readiness event can take a burst
of connections (``accept()`` raises instead of blocking once the backlog is empty). Accepted
sockets are handed to handlers in the mode socketserver gave them (blocking, or the default
timeout set with ``socket.setdefaulttimeout()``), whatever the platform's accept() inherits.
"""

from __future__ import annotations

import socket
import sys
import weakref
from typing import Any, Callable, Optional

from ..reactor import ChannelMap, Loop
from .base import BaseServer

__all__ = ["TCPServer"]

# Linux's accept() never passes O_NONBLOCK on, so Python's socket object is already in the
# default mode there; BSD and macOS copy the listener's flag to the accepted socket.
_ACCEPT_INHERITS_NONBLOCK = not sys.platform.startswith("linux")


class TCPServer(BaseServer):
    """socketserver's ``TCPServer`` on a netloop loop (IPv4 by default; set
    ``address_family`` for IPv6).

    ``server_address`` is updated to the bound address (port 0 becomes the port chosen).
    Class attributes: ``address_family``, ``socket_type``, ``request_queue_size`` (the
    ``listen()`` backlog), ``allow_reuse_address`` (SO_REUSEADDR), ``allow_reuse_port``
    (SO_REUSEPORT). With ``bind_and_activate=False`` the caller calls ``server_bind()`` and
    ``server_activate()`` itself (after setting socket options, say).
    """

    address_family = socket.AF_INET
    socket_type = socket.SOCK_STREAM
    request_queue_size = 5
    allow_reuse_address = False
    allow_reuse_port = False

    socket: socket.socket

    def __init__(self, server_address: Any, RequestHandlerClass: Callable[..., Any],
                 bind_and_activate: bool = True, *, loop: Optional[Loop] = None,
                 map: Optional[ChannelMap] = None) -> None:
        BaseServer.__init__(self, server_address, RequestHandlerClass, loop=loop, map=map)
        self.socket = socket.socket(self.address_family, self.socket_type)
        self._nl_prepare_socket()
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                # A failed bind (port in use, bad address) must not leak the socket.
                self.server_close()
                raise

    def _nl_prepare_socket(self) -> None:
        sock = self.socket
        timeout = sock.gettimeout()
        if timeout:
            # socketserver's listening socket keeps the default timeout
            # (socket.setdefaulttimeout()), which bounds handle_request(): remember it for
            # this socket before making it non-blocking.
            self._nl_listen_timeout = (weakref.ref(sock), timeout)
        sock.setblocking(False)

    def _nl_can_burst(self) -> bool:
        return self.socket.gettimeout() == 0.0

    def server_bind(self) -> None:
        """Set the reuse options asked for, bind, and record the address bound."""
        if self.allow_reuse_address and hasattr(socket, "SO_REUSEADDR"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.allow_reuse_port and hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Listen, and start watching the socket on the server's loop."""
        self.socket.listen(self.request_queue_size)
        self._nl_activate()

    def server_close(self) -> None:
        """Leave the loop and close the listening socket."""
        super().server_close()
        self.socket.close()

    def fileno(self) -> int:
        """The listening socket's descriptor."""
        return self.socket.fileno()

    def get_request(self) -> Any:
        """Accept one connection: ``(socket, client_address)``."""
        conn, addr = self.socket.accept()
        if _ACCEPT_INHERITS_NONBLOCK:
            # socketserver's blocking listener gave sockets in the default mode.
            conn.settimeout(socket.getdefaulttimeout())
        return conn, addr

    def shutdown_request(self, request: Any) -> None:
        """Send FIN at once (other references to the socket may keep it open), then close."""
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # ENOTCONN on some platforms when the peer is gone already
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        request.close()
