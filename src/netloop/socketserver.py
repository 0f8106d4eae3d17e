"""Drop-in replacement for the standard library's ``socketserver`` (Python 3.13's names).

Every public name of the standard module, with its behaviour and signatures, served by netloop's
loop: ``import netloop.socketserver as socketserver``. The classes do their work in
``netloop.servers``; here each is a thin subclass declared under the module name
``socketserver`` (as the stdlib's classes are, which code and CPython's own tests check), built
on this module's own bases so that ``issubclass`` relations are the stdlib's: a
``ThreadingTCPServer`` here is a ``TCPServer`` here. What netloop adds (shared loops, immediate
``shutdown()``, bursts of accepts, EMFILE back-off) is described in ``netloop.servers.base``.
"""

from __future__ import annotations

import os
import socket

from . import servers as _core
from .servers.handlers import _SocketWriter  # noqa: F401  (a private name some code imports)


# Each class body sets __module__: the stdlib's classes are socketserver.X, and code (CPython's
# test_socketserver among it) checks that.

class BaseServer(_core.BaseServer):
    __module__ = "socketserver"


class TCPServer(_core.TCPServer, BaseServer):
    __module__ = "socketserver"


class UDPServer(_core.UDPServer, TCPServer):
    __module__ = "socketserver"


class ThreadingMixIn(_core.ThreadingMixIn):
    __module__ = "socketserver"


class ThreadingTCPServer(ThreadingMixIn, TCPServer):
    __module__ = "socketserver"


class ThreadingUDPServer(ThreadingMixIn, UDPServer):
    __module__ = "socketserver"


class BaseRequestHandler(_core.BaseRequestHandler):
    __module__ = "socketserver"


class StreamRequestHandler(_core.StreamRequestHandler, BaseRequestHandler):
    __module__ = "socketserver"


class DatagramRequestHandler(_core.DatagramRequestHandler, BaseRequestHandler):
    __module__ = "socketserver"


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
    class ForkingMixIn(_core.ForkingMixIn):
        __module__ = "socketserver"

    class ForkingTCPServer(ForkingMixIn, TCPServer):
        __module__ = "socketserver"

    class ForkingUDPServer(ForkingMixIn, UDPServer):
        __module__ = "socketserver"

    __all__ += ["ForkingMixIn", "ForkingTCPServer", "ForkingUDPServer"]

if hasattr(socket, "AF_UNIX"):
    class UnixStreamServer(_core.UnixStreamServer, TCPServer):
        __module__ = "socketserver"

    class UnixDatagramServer(_core.UnixDatagramServer, UDPServer):
        __module__ = "socketserver"

    class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer):
        __module__ = "socketserver"

    class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer):
        __module__ = "socketserver"

    __all__ += [
        "ThreadingUnixDatagramServer",
        "ThreadingUnixStreamServer",
        "UnixDatagramServer",
        "UnixStreamServer",
    ]
    if hasattr(os, "fork"):
        class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer):
            __module__ = "socketserver"

        class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer):
            __module__ = "socketserver"

        __all__ += ["ForkingUnixDatagramServer", "ForkingUnixStreamServer"]



def __getattr__(name: str) -> object:
    """``TLSMixIn`` (``netloop.servers.tls``): imported on first use, with ``ssl``."""
    if name == "TLSMixIn":
        from .servers.tls import TLSMixIn
        globals()[name] = TLSMixIn
        return TLSMixIn
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
