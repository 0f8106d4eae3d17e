"""Drop-in replacement for the standard library's ``socketserver`` (Python 3.13's names).

Every public name of the standard module, with its behaviour and signatures, served by netloop's
loop: ``import netloop.socketserver as socketserver``. The classes live in ``netloop.servers``;
this module only names them. What netloop adds (shared loops, immediate ``shutdown()``, bursts of
accepts, EMFILE back-off) is described in ``netloop.servers.base``.
"""

from __future__ import annotations

import os
import socket

from .servers import (
    BaseRequestHandler,
    BaseServer,
    DatagramRequestHandler,
    StreamRequestHandler,
    TCPServer,
    ThreadingMixIn,
    ThreadingTCPServer,
    ThreadingUDPServer,
    UDPServer,
)
from .servers.handlers import _SocketWriter  # noqa: F401  (a private name some code imports)

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

if hasattr(os, "fork"):
    from .servers import ForkingMixIn, ForkingTCPServer, ForkingUDPServer

    __all__ += ["ForkingMixIn", "ForkingTCPServer", "ForkingUDPServer"]

if hasattr(socket, "AF_UNIX"):
    from .servers import (
        ThreadingUnixDatagramServer,
        ThreadingUnixStreamServer,
        UnixDatagramServer,
        UnixStreamServer,
    )

    __all__ += [
        "ThreadingUnixDatagramServer",
        "ThreadingUnixStreamServer",
        "UnixDatagramServer",
        "UnixStreamServer",
    ]

    if hasattr(os, "fork"):
        from .servers import ForkingUnixDatagramServer, ForkingUnixStreamServer

        __all__ += ["ForkingUnixDatagramServer", "ForkingUnixStreamServer"]
