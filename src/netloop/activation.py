"""Socket activation: serve listening sockets handed over by systemd (or any launcher).

systemd's protocol (``sd_listen_fds(3)``): the launcher opens the sockets, starts the service
with them as descriptors 3, 4, ... and sets ``LISTEN_FDS`` (how many), ``LISTEN_PID`` (the pid
they are meant for, so that a child process does not take them by mistake) and, optionally,
``LISTEN_FDNAMES`` (colon-separated names, from the socket units' ``FileDescriptorName=``).

- ``listen_fds()`` reads that environment: ``[(fd, name), ...]``, empty when nothing was passed
  to this process. The variables are removed by default (as ``sd_listen_fds(1)`` does), so
  programs this one starts do not take the descriptors too.
- ``activated_sockets()`` wraps them as ``socket.socket`` objects (family and type read from
  the descriptor).
- ``adopt_listener(dispatcher, sock)`` makes a ``Dispatcher`` serve an already listening socket,
  as if it had called ``create_socket()``, ``bind()`` and ``listen()``.
- ``adopt_server_socket(server, sock)`` does the same for a ``netloop.socketserver`` server made
  with ``bind_and_activate=False``.

No systemd library is needed, and nothing here is specific to Linux: any launcher that follows
the protocol works (``systemd-socket-activate`` for trying it by hand).
"""

from __future__ import annotations

import os
import socket
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["LISTEN_FDS_START", "listen_fds", "activated_sockets", "adopt_listener",
           "adopt_server_socket", "is_listening"]

#: The first passed descriptor (``SD_LISTEN_FDS_START``).
LISTEN_FDS_START = 3

_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def listen_fds(unset_environment: bool = True,
               environ: Optional[Dict[str, str]] = None) -> List[Tuple[int, str]]:
    """The descriptors passed to this process: ``[(fd, name), ...]`` in order.

    Empty when ``LISTEN_FDS`` is not set, or ``LISTEN_PID`` is missing or names another
    process. Names come from ``LISTEN_FDNAMES`` (``"unknown"`` when absent or when the count
    differs, as systemd does). Each descriptor is made close-on-exec. ``ValueError`` for a
    malformed variable or a descriptor that is not open. ``environ``: the mapping to read and
    clean (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    try:
        pid_text = env.get("LISTEN_PID")
        count_text = env.get("LISTEN_FDS")
        names_text = env.get("LISTEN_FDNAMES")
        if not count_text or not pid_text:
            return []
        try:
            pid = int(pid_text)
        except ValueError:
            raise ValueError("LISTEN_PID is not a process id: %r" % pid_text) from None
        if pid != os.getpid():
            return []
        try:
            count = int(count_text)
        except ValueError:
            raise ValueError("LISTEN_FDS is not a number: %r" % count_text) from None
        if count < 0:
            raise ValueError("LISTEN_FDS is negative: %r" % count_text)
        names = names_text.split(":") if names_text is not None else []
        if len(names) != count:
            names = ["unknown"] * count
        result = []
        for i in range(count):
            fd = LISTEN_FDS_START + i
            try:
                os.fstat(fd)
            except OSError as err:
                raise ValueError("LISTEN_FDS=%d but descriptor %d is not open: %s"
                                 % (count, fd, err.strerror)) from None
            os.set_inheritable(fd, False)
            result.append((fd, names[i]))
        return result
    finally:
        if unset_environment:
            for name in _VARIABLES:
                env.pop(name, None)


def activated_sockets(unset_environment: bool = True,
                      environ: Optional[Dict[str, str]] = None) -> List[socket.socket]:
    """``listen_fds()`` as socket objects (each socket's ``name`` attribute-free: use
    ``listen_fds()`` for names). ``ValueError`` if a passed descriptor is not a socket."""
    sockets = []
    for fd, name in listen_fds(unset_environment, environ):
        try:
            sockets.append(socket.socket(fileno=fd))
        except OSError as err:
            for sock in sockets:
                sock.close()
            raise ValueError("passed descriptor %d (%s) is not a socket: %s"
                             % (fd, name, err.strerror)) from None
    return sockets


def is_listening(sock: socket.socket) -> bool:
    """True for a stream socket that is listening (``SO_ACCEPTCONN``)."""
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except (OSError, AttributeError):
        return False


def _address(sock: socket.socket) -> Any:
    try:
        return sock.getsockname()
    except OSError:
        return None


def adopt_listener(dispatcher: Any, sock: socket.socket) -> None:
    """Make ``dispatcher`` (a ``netloop.Dispatcher`` with no socket yet) serve the listening
    socket ``sock``: it accepts connections through ``handle_accepted()`` as if it had bound
    and listened itself. ``ValueError`` if ``sock`` is not a listening stream socket."""
    if sock.type != socket.SOCK_STREAM or not is_listening(sock):
        raise ValueError("%r is not a listening stream socket" % (sock,))
    sock.setblocking(False)
    dispatcher.family_and_type = sock.family, sock.type
    dispatcher.set_socket(sock)
    dispatcher.addr = _address(sock)
    dispatcher.accepting = True
    dispatcher._update_interest()


def adopt_server_socket(server: Any, sock: socket.socket) -> None:
    """Serve ``sock`` from a ``netloop.socketserver`` server made with
    ``bind_and_activate=False``: it replaces the server's own (unbound) socket, sets
    ``server_address`` and activates the server. A stream socket that is not listening yet is
    put in listening state by ``server_activate()``; one that is keeps the launcher's backlog.
    """
    own = getattr(server, "socket", None)
    if own is not None and own is not sock:
        own.close()
    server.socket = sock
    server.address_family = sock.family
    prepare = getattr(server, "_nl_prepare_socket", None)
    if prepare is not None:
        prepare()  # the mode the server's class gives its socket (TCP: non-blocking)
    else:
        sock.setblocking(False)
    server.server_address = _address(sock)
    if sock.type == socket.SOCK_STREAM and is_listening(sock):
        server._nl_activate()
    else:
        server.server_activate()
