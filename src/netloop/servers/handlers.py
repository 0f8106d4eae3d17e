"""Request handlers: one object per request, built by the server, running blocking code.

These are socketserver's handler classes with the same attributes and lifecycle: the
constructor stores ``request``, ``client_address`` and ``server``, then calls ``setup()``,
``handle()`` and, whatever happens, ``finish()``. Handlers never see the loop: a synchronous
server runs them on the loop's thread (the loop waits, as socketserver's did), ThreadingMixIn and
ForkingMixIn run them elsewhere.
"""

from __future__ import annotations

import socket
from io import BufferedIOBase, BytesIO
from typing import Any, Optional

__all__ = ["BaseRequestHandler", "DatagramRequestHandler", "StreamRequestHandler"]


class BaseRequestHandler:
    """Handles one request: override ``handle()`` (and ``setup()``/``finish()`` if needed).

    ``self.request`` is what the server's ``get_request()`` returned (a connected socket for
    stream servers, ``(data, server_socket)`` for datagram servers), ``self.client_address``
    the peer's address and ``self.server`` the server object.
    """

    def __init__(self, request: Any, client_address: Any, server: Any) -> None:
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self) -> None:
        """Prepare for ``handle()``; the default does nothing."""

    def handle(self) -> None:
        """Serve the request; the default does nothing."""

    def finish(self) -> None:
        """Clean up after ``handle()``, which may have raised; the default does nothing."""


class _SocketWriter(BufferedIOBase):
    """A write-only binary file over a socket that sends every write at once (no buffer)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        # sendall() resumes after signals (PEP 475), so a write is never cut short.
        self._sock.sendall(b)
        with memoryview(b) as view:
            return view.nbytes

    def fileno(self) -> int:
        return self._sock.fileno()


class StreamRequestHandler(BaseRequestHandler):
    """A handler for stream sockets with file objects: ``rfile`` to read, ``wfile`` to write.

    ``rbufsize`` / ``wbufsize`` are the buffer sizes passed to ``makefile()`` (-1: default
    buffering; ``wbufsize = 0``, the default, makes ``wfile`` send each write immediately).
    ``timeout``, if not None, is set on the connection. ``disable_nagle_algorithm`` sets
    TCP_NODELAY (useful only with a buffered ``wfile``).
    """

    rbufsize = -1
    wbufsize = 0
    timeout: Optional[float] = None
    disable_nagle_algorithm = False

    connection: socket.socket
    rfile: Any
    wfile: Any

    def setup(self) -> None:
        self.connection = self.request
        if self.timeout is not None:
            self.connection.settimeout(self.timeout)
        if self.disable_nagle_algorithm:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.rfile = self.connection.makefile("rb", self.rbufsize)
        if self.wbufsize == 0:
            self.wfile = _SocketWriter(self.connection)
        else:
            self.wfile = self.connection.makefile("wb", self.wbufsize)

    def finish(self) -> None:
        if not self.wfile.closed:
            try:
                self.wfile.flush()
            except OSError:
                # The peer may be gone already (reset, aborted): nothing more can reach it.
                pass
        self.wfile.close()
        self.rfile.close()


class DatagramRequestHandler(BaseRequestHandler):
    """A handler for datagram servers with file objects over the packet.

    ``rfile`` reads the datagram received (``self.packet``); what is written to ``wfile`` is
    sent back to the client in one datagram when the handler finishes.
    """

    packet: bytes
    socket: socket.socket
    rfile: BytesIO
    wfile: BytesIO

    def setup(self) -> None:
        self.packet, self.socket = self.request
        self.rfile = BytesIO(self.packet)
        self.wfile = BytesIO()

    def finish(self) -> None:
        self.socket.sendto(self.wfile.getvalue(), self.client_address)
