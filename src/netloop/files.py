"""Pipes and other raw descriptors as channels: a file object that looks enough like a socket.

``FileWrapper`` duplicates the descriptor it is given (the caller keeps and closes its own),
reads and writes with ``os.read``/``os.write``, and answers ``SO_ERROR`` with 0. Regular files
are always "ready" (as select and poll say; the epoll poller emulates that).
"""

from __future__ import annotations

import os
import socket
import warnings

from .dispatcher import Dispatcher

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional

    from .reactor import ChannelMap

__all__ = ["FileWrapper", "FileDispatcher"]


class FileWrapper:
    """A duplicated file descriptor with the few socket methods a dispatcher calls."""

    #: It owns a real descriptor, which user code may close behind its channel's back (the
    #: loop's check for a number reused while a stale channel holds it; see interest.py).
    _nl_owns_fd = True

    def __init__(self, fd: int) -> None:
        self.fd = os.dup(fd)

    def __del__(self) -> None:
        if self.fd >= 0:
            warnings.warn("unclosed file %r" % self, ResourceWarning, source=self)
        self.close()

    def recv(self, *args: Any) -> bytes:
        """Read from the descriptor (``os.read``), for the dispatcher's ``recv()``."""
        return os.read(self.fd, *args)

    def send(self, *args: Any) -> int:
        """Write to the descriptor (``os.write``), for the dispatcher's ``send()``; returns the
        count written.
        """
        return os.write(self.fd, *args)

    def getsockopt(self, level: int, optname: int, buflen: Optional[int] = None) -> int:
        """Answer the one socket option a dispatcher asks a file, ``SO_ERROR``, with 0 (a file has
        no pending socket error); any other option raises ``NotImplementedError``.
        """
        if level == socket.SOL_SOCKET and optname == socket.SO_ERROR and not buflen:
            return 0
        raise NotImplementedError("a file wrapper answers only SO_ERROR (always 0)")

    read = recv
    write = send

    def close(self) -> None:
        """Close the duplicated descriptor (the original stays open). Safe to call more than
        once."""
        if self.fd < 0:
            return
        fd = self.fd
        self.fd = -1
        os.close(fd)

    def fileno(self) -> int:
        """The duplicated descriptor, or -1 once closed."""
        return self.fd

    def detach(self) -> int:
        """Forget the descriptor without closing it (as ``socket.detach()``); returns it."""
        fd, self.fd = self.fd, -1
        return fd


class FileDispatcher(Dispatcher):
    """A dispatcher over a pipe or other descriptor (anything with ``fileno()``, or an int)."""

    wrapper_class = FileWrapper

    def __init__(self, fd: Any, map: Optional[ChannelMap] = None) -> None:
        Dispatcher.__init__(self, None, map)
        self.connected = True
        try:
            fd = fd.fileno()
        except AttributeError:
            pass
        self.set_file(fd)
        # The duplicate shares the file description, so this makes both non-blocking.
        os.set_blocking(fd, False)

    def set_file(self, fd: int) -> None:
        """Serve descriptor ``fd`` on this channel: wrap a duplicate of it in ``wrapper_class`` and
        add the channel to its map.
        """
        self.socket = self.wrapper_class(fd)
        self._fileno = self.socket.fileno()
        self.add_channel()
