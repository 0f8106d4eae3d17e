"""UDPServer: one datagram per request, read in bursts without making the socket non-blocking.

The server's socket stays blocking because handlers reply through it (``DatagramRequestHandler``
calls ``sendto()`` on it, maybe from a thread) and expect socketserver's blocking semantics.
The loop reads with ``MSG_DONTWAIT`` instead, per call, and uses ``recvmsg()`` to see whether a
datagram was cut to ``max_packet_size``: such a datagram is logged and dropped rather than
handed on truncated, as socketserver did silently. A flood of them is logged once per
``_TRUNC_LOG_EVERY`` seconds with a count, not once per datagram (a fault probe saw 13,428
warnings in 1.5 s).
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from typing import Any

from .tcp import TCPServer

__all__ = ["UDPServer"]

logger = logging.getLogger("netloop.servers")

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_TRUNC = getattr(socket, "MSG_TRUNC", 0)
#: Seconds between two warnings about datagrams over ``max_packet_size``.
_TRUNC_LOG_EVERY = 10.0
_clock = time.monotonic


class UDPServer(TCPServer):
    """socketserver's ``UDPServer`` on a netloop loop.

    A request is ``(data, server_socket)``; ``max_packet_size`` is the largest datagram taken.
    """

    allow_reuse_address = False
    allow_reuse_port = False
    socket_type = socket.SOCK_DGRAM
    max_packet_size = 8192
    _nl_trunc_logged = -1e9  # _clock() of the last warning about an oversized datagram
    _nl_trunc_unlogged = 0   # oversized datagrams dropped since that warning

    def _nl_prepare_socket(self) -> None:
        pass

    def _nl_can_burst(self) -> bool:
        if self.socket.gettimeout() == 0.0:
            return True
        return bool(_DONTWAIT) and type(self).get_request is UDPServer.get_request \
            and hasattr(self.socket, "recvmsg")

    def get_request(self) -> Any:
        """Receive one datagram: ``((data, socket), client_address)``."""
        sock = self.socket
        if _DONTWAIT and hasattr(sock, "recvmsg"):
            data, _, flags, client_addr = sock.recvmsg(self.max_packet_size, 0, _DONTWAIT)
            if flags & _TRUNC:
                self._nl_oversized(client_addr)
                raise OSError(errno.EMSGSIZE, "datagram larger than max_packet_size")
        else:  # pragma: no cover - platforms without recvmsg
            data, client_addr = sock.recvfrom(self.max_packet_size)
        return (data, sock), client_addr

    def _nl_oversized(self, client_addr: Any) -> None:
        now = _clock()
        if now - self._nl_trunc_logged < _TRUNC_LOG_EVERY:
            self._nl_trunc_unlogged += 1
            return
        more = self._nl_trunc_unlogged
        logger.warning("netloop: %s %r: datagram from %r is larger than max_packet_size "
                       "(%d bytes); dropped%s", type(self).__name__, self.server_address,
                       client_addr, self.max_packet_size,
                       " (and %d more since the last warning)" % more if more else "")
        self._nl_trunc_logged = now
        self._nl_trunc_unlogged = 0

    def server_activate(self) -> None:
        """No listen() for datagrams: start watching the socket."""
        self._nl_activate()

    def shutdown_request(self, request: Any) -> None:
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        pass
