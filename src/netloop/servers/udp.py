"""UDPServer: one datagram per request, read in bursts without making the socket non-blocking.

The server's socket stays blocking because handlers reply through it (``DatagramRequestHandler``
calls ``sendto()`` on it, maybe from a thread) and expect socketserver's blocking semantics.
The loop reads with ``MSG_DONTWAIT`` instead, per call, and uses ``recvmsg()`` to see whether a
datagram was cut to ``max_packet_size``: such a datagram is logged and dropped rather than
handed on truncated, as socketserver did silently.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any

from .tcp import TCPServer

__all__ = ["UDPServer"]

logger = logging.getLogger("netloop.servers")

_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_TRUNC = getattr(socket, "MSG_TRUNC", 0)


class UDPServer(TCPServer):
    """socketserver's ``UDPServer`` on a netloop loop.

    A request is ``(data, server_socket)``; ``max_packet_size`` is the largest datagram taken.
    """

    allow_reuse_address = False
    allow_reuse_port = False
    socket_type = socket.SOCK_DGRAM
    max_packet_size = 8192

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
                logger.warning("netloop: %s %r: datagram from %r is larger than max_packet_size "
                               "(%d bytes); dropped", type(self).__name__, self.server_address,
                               client_addr, self.max_packet_size)
                raise OSError(errno.EMSGSIZE, "datagram larger than max_packet_size")
        else:  # pragma: no cover - platforms without recvmsg
            data, client_addr = sock.recvfrom(self.max_packet_size)
        return (data, sock), client_addr

    def server_activate(self) -> None:
        """No listen() for datagrams: start watching the socket."""
        self._nl_activate()

    def shutdown_request(self, request: Any) -> None:
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        pass
