"""socketserver's servers, mixins and request handlers, served by netloop's loop.

``netloop.socketserver`` gives them under the standard library's names; this package is where
they live: ``base`` (the request pipeline on the loop), ``tcp``, ``udp``, ``unix``, ``mixins``,
``handlers``, and here the ready-made combinations of a mixin and a server.
"""

from __future__ import annotations

import os
import socket

from .base import BaseServer
from .handlers import BaseRequestHandler, DatagramRequestHandler, StreamRequestHandler
from .mixins import ThreadingMixIn
from .tcp import TCPServer
from .udp import UDPServer

__all__ = [
    "BaseRequestHandler",
    "BaseServer",
    "DatagramRequestHandler",
    "StreamRequestHandler",
    "TCPServer",
    "ThreadingMixIn",
    "ThreadingTCPServer",
    "ThreadingUDPServer",
    "UDPServer",
]


class ThreadingTCPServer(ThreadingMixIn, TCPServer):
    """A TCP server that handles each request in a thread."""


class ThreadingUDPServer(ThreadingMixIn, UDPServer):
    """A UDP server that handles each request in a thread."""


if hasattr(os, "fork"):
    from .mixins import ForkingMixIn

    __all__ += ["ForkingMixIn", "ForkingTCPServer", "ForkingUDPServer"]

    class ForkingTCPServer(ForkingMixIn, TCPServer):
        """A TCP server that handles each request in a child process."""

    class ForkingUDPServer(ForkingMixIn, UDPServer):
        """A UDP server that handles each request in a child process."""

if hasattr(socket, "AF_UNIX"):
    from .unix import UnixDatagramServer, UnixStreamServer

    __all__ += [
        "ThreadingUnixDatagramServer",
        "ThreadingUnixStreamServer",
        "UnixDatagramServer",
        "UnixStreamServer",
    ]

    class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer):
        """A Unix stream server that handles each request in a thread."""

    class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer):
        """A Unix datagram server that handles each request in a thread."""

    if hasattr(os, "fork"):
        __all__ += ["ForkingUnixDatagramServer", "ForkingUnixStreamServer"]

        class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer):
            """A Unix stream server that handles each request in a child process."""

        class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer):
            """A Unix datagram server that handles each request in a child process."""


def __getattr__(name: str) -> object:
    """``TLSMixIn`` (``netloop.servers.tls``): imported on first use, with ``ssl``."""
    if name == "TLSMixIn":
        from .tls import TLSMixIn
        globals()[name] = TLSMixIn
        return TLSMixIn
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
