"""Unix domain socket servers: the TCP and UDP servers with ``AF_UNIX`` addresses (paths).

As in socketserver, ``server_close()`` does not remove the socket file; the caller does.
"""

from __future__ import annotations

import socket

from .tcp import TCPServer
from .udp import UDPServer

__all__ = []

if hasattr(socket, "AF_UNIX"):
    __all__ += ["UnixDatagramServer", "UnixStreamServer"]

    class UnixStreamServer(TCPServer):
        """A stream server on a Unix domain socket."""

        address_family = socket.AF_UNIX

    class UnixDatagramServer(UDPServer):
        """A datagram server on a Unix domain socket."""

        address_family = socket.AF_UNIX
