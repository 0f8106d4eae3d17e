"""Drop-in replacement for Python 3.11's ``smtpd``, on netloop's chat channel.

Every public name of the 3.11 module with its behaviour: ``SMTPChannel`` is
``netloop.mail.SMTPChannel`` joined to the ``netloop.asynchat`` facade, ``SMTPServer`` and its
subclasses ``DebuggingServer`` and ``PureProxy`` are the ``netloop.mail`` servers on the
``netloop.asyncore`` dispatcher (the module-global ``socket_map``, printed ``log_info``). As in
smtpd, sockets, host names and addresses are looked up through this module's global ``socket``
and debug lines go to its global ``DEBUGSTREAM`` (both may be replaced, as tests do).

What differs from 3.11 is listed in ``netloop.mail.protocol`` and ``netloop.mail.server``: in
short, bounded input answered early, per-channel command limits, a 552 that ends the message
instead of leaving the session in the data state, no crash on input that is not UTF-8, a
``PureProxy`` that works without ``decode_data``, a listening backlog of 128.

Run it as smtpd was run (``python -m netloop.smtpd -n -c DebuggingServer localhost:8025``; see
``netloop.mail.cli``). Importing it warns of nothing; on Python 3.12+
``netloop.compat.install()`` makes ``import smtpd`` find it.
"""

from __future__ import annotations

import collections
import errno
import getopt
import os
import socket
import sys
import time
from email._header_value_parser import get_addr_spec, get_angle_addr
from warnings import warn

from . import asynchat, asyncore
from .mail import cli as _cli
from .mail import protocol as _protocol
from .mail import server as _server
from .mail.cli import main

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time
    from typing import Any, List, NoReturn
# Not names of smtpd's (its test checks __all__ against the names a module defines).
del TYPE_CHECKING, annotations

__all__ = ["SMTPChannel", "SMTPServer", "DebuggingServer", "PureProxy"]

# Names smtpd had at module level (it imported them), kept for code that reaches for them.
_ = (errno, getopt, os, time, get_addr_spec, get_angle_addr, main)

program = sys.argv[0]
__version__ = "Python SMTP proxy version 0.3"


class Devnull:
    """A file that swallows everything: ``DEBUGSTREAM``'s default."""

    def write(self, msg: Any) -> None:
        pass

    def flush(self) -> None:
        pass


#: Where debug lines go (``-d`` sets it to stderr).
DEBUGSTREAM: Any = Devnull()
NEWLINE = "\n"
COMMASPACE = ", "
DATA_SIZE_DEFAULT = _protocol.DATA_SIZE_DEFAULT


def usage(code: int, msg: Any = "") -> NoReturn:
    """Print the command-line help (and ``msg``) on stderr and exit with ``code``."""
    print(_cli.usage_text(program, __version__), file=sys.stderr)
    if msg:
        print(msg, file=sys.stderr)
    sys.exit(code)


def _debug(*parts: Any) -> None:
    stream = DEBUGSTREAM
    if stream.__class__ is Devnull:
        return  # the usual case: do not even format the line
    print(*parts, file=stream)


def _renamed(old: str, new: str) -> property:
    # smtpd 3.4 renamed its private attributes (self.__server...) and kept the old names
    # working with a DeprecationWarning; so do these.
    def get(self: Any) -> Any:
        warn("Access to %s attribute on SMTPChannel is deprecated, use '%s' instead"
             % (old, new), DeprecationWarning, 2)
        return getattr(self, new)

    def set(self: Any, value: Any) -> None:
        warn("Setting %s attribute on SMTPChannel is deprecated, set '%s' instead"
             % (old, new), DeprecationWarning, 2)
        setattr(self, new, value)

    return property(get, set)


class SMTPChannel(_server.SMTPChannel, asynchat.async_chat):
    """smtpd.SMTPChannel: one client connection of an ``SMTPServer``."""

    command_size_limits = collections.defaultdict(
        lambda: _protocol.COMMAND_SIZE_LIMIT)

    @property
    def greeting_version(self) -> str:  # type: ignore[override]
        return __version__

    def push(self, msg: Any) -> None:
        """Send the reply line ``msg`` (a str, without CRLF), as smtpd did: through
        ``asynchat.async_chat.push(self, data)``, looked up when called, so that a test that
        patches that method with a mock sees the channel and the bytes (salmon-mail's do).
        A character the session cannot encode goes out as ``?`` (smtpd raised
        UnicodeEncodeError and the channel was closed)."""
        asynchat.async_chat.push(self, _protocol.reply_bytes(msg, self.require_SMTPUTF8))

    def _nl_getfqdn(self) -> str:
        return socket.getfqdn()  # this module's global: a test may have replaced it

    def _nl_debug(self, *parts: Any) -> None:
        _debug(*parts)

    __server = _renamed("__server", "smtp_server")
    __line = _renamed("__line", "received_lines")
    __state = _renamed("__state", "smtp_state")
    __greeting = _renamed("__greeting", "seen_greeting")
    __mailfrom = _renamed("__mailfrom", "mailfrom")
    __rcpttos = _renamed("__rcpttos", "rcpttos")
    __data = _renamed("__data", "received_data")
    __fqdn = _renamed("__fqdn", "fqdn")
    __peer = _renamed("__peer", "peer")
    __conn = _renamed("__conn", "conn")
    __addr = _renamed("__addr", "addr")


class SMTPServer(_server.SMTPServer, asyncore.dispatcher):
    """smtpd.SMTPServer: subclass it and define ``process_message()``."""

    channel_class = SMTPChannel

    def _nl_getaddrinfo(self, localaddr: Any) -> List[Any]:
        return socket.getaddrinfo(localaddr[0], localaddr[1], type=socket.SOCK_STREAM)

    def _nl_debug(self, *parts: Any) -> None:
        _debug(*parts)


class DebuggingServer(_server.DebuggingServer, SMTPServer):
    """smtpd.DebuggingServer: prints each message on stdout."""


class PureProxy(_server.PureProxy, SMTPServer):
    """smtpd.PureProxy: relays each message to ``remoteaddr``."""


class Options:
    """The parsed command line (see ``parseargs()``)."""

    setuid = True
    classname = "PureProxy"
    size_limit = None
    enable_SMTPUTF8 = False


def parseargs() -> Any:
    """Parse ``sys.argv[1:]`` as smtpd did; exits on ``-h``, ``-V`` or a bad argument."""
    global DEBUGSTREAM
    try:
        options = _cli.parse(sys.argv[1:], Options())
    except _cli.UsageError as exc:
        if exc.version:
            print(__version__)
            sys.exit(0)
        usage(exc.code, exc.msg)
    if options.debug:
        DEBUGSTREAM = sys.stderr
    return options


if __name__ == "__main__":
    # Run as ``python -m netloop.smtpd``: this file is __main__, a second copy of the module;
    # serve with the real one (so -c finds its classes and -d reaches its DEBUGSTREAM).
    from netloop.mail.cli import main as _main
    sys.exit(_main())
