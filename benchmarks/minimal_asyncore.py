"""The thinnest asyncore API that runs the benchmarks' legacy echo: a floor reference.

``servers.py --kind minimal-asyncore`` runs the legacy echo's classes unchanged
(``servers.make_dispatcher_classes()``, the code ``netloop-asyncore`` runs) on this module.
That code's ``handle_read()`` calls ``self.recv()`` and then ``self.send()``: with the
handler itself, three Python calls per echo that any implementation of asyncore's API makes
for it. The hand-written loop (``minimal-epoll``) makes none of them, so its figures cannot
say what part of the legacy server's cost is netloop's and what part is the legacy code's own.
This module can: it does what asyncore's contract asks of every implementation for this code,
and nothing more.

- ``recv()`` turns a reset or an end of input into ``handle_close()`` and returns ``b''``;
- ``handle_close()`` calls ``log_info()`` (asyncore's default logs "unhandled close event")
  and ``close()``;
- ``dispatcher_with_send.send()`` reads ``debug``, sends, and queues what the socket did not
  take (reading stops until the queue is sent, as in ``minimal-epoll``);
- a handler's exception goes to ``handle_error()`` (here: close the channel);
- ``addr`` is set for an accepted socket (from ``accept()``, as netloop does).

Left out on purpose: timers, backends other than epoll, maps other than one, flow control,
idle timeouts, fault handling beyond the above. ``bench_insn_servers.py`` counts its
instructions beside ``netloop-asyncore``'s and ``minimal-epoll``'s; ``verdict17.py`` splits the
legacy server's misses at this floor.
"""

from __future__ import annotations

import select
import socket
from errno import EBADF, ECONNABORTED, ECONNRESET, ENOTCONN, EPIPE, ESHUTDOWN
from types import SimpleNamespace

DISCONNECTED = frozenset({ECONNRESET, ENOTCONN, ESHUTDOWN, ECONNABORTED, EPIPE, EBADF})


def new():
    """A fresh API (its own epoll object and channel map): ``dispatcher``,
    ``dispatcher_with_send`` and ``loop()``, as a module-like namespace."""
    ep = select.epoll()
    EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
    disconnected = DISCONNECTED
    channels = {}
    accepted = [None, None]  # the socket accept() gave last, and its address

    class dispatcher:
        debug = False
        connected = False
        accepting = False
        addr = None
        ignore_log_types = frozenset({"warning"})

        def __init__(self, sock=None, map=None):
            if sock is not None:
                sock.setblocking(False)
                self.socket = sock
                self.connected = True
                self.addr = accepted[1] if accepted[0] is sock else sock.getpeername()
                self._fd = fd = sock.fileno()
                channels[fd] = self
                ep.register(fd, EPOLLIN)
            else:
                self.socket = None

        def create_socket(self, family=socket.AF_INET, type=socket.SOCK_STREAM):
            sock = socket.socket(family, type)
            sock.setblocking(False)
            self.socket = sock
            self._fd = fd = sock.fileno()
            channels[fd] = self
            ep.register(fd, EPOLLIN)

        def set_reuse_addr(self):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

        def bind(self, addr):
            self.addr = addr
            return self.socket.bind(addr)

        def listen(self, num):
            self.accepting = True
            return self.socket.listen(num)

        def handle_accept(self):
            # Every connection waiting, as netloop's handle_accept() and minimal-epoll do.
            while True:
                try:
                    pair = self.socket.accept()
                except OSError:  # none left (or EMFILE: try again at the next event)
                    return
                accepted[0], accepted[1] = pair
                self.handle_accepted(*pair)
                accepted[0] = accepted[1] = None

        def handle_accepted(self, sock, addr):
            sock.close()

        def recv(self, buffer_size):
            try:
                data = self.socket.recv(buffer_size)
            except OSError as why:
                if why.errno in disconnected:
                    self.handle_close()
                    return b""
                if isinstance(why, BlockingIOError):
                    return b""
                raise
            if not data:
                self.handle_close()
                return b""
            return data

        def log_info(self, message, type="info"):
            if type not in self.ignore_log_types:
                print("%s: %s" % (type, message))

        def handle_close(self):
            self.log_info("unhandled close event", "warning")
            self.close()

        def handle_error(self):
            self.close()

        def close(self):
            self.connected = self.accepting = False
            if channels.pop(self._fd, None) is not None:
                ep.unregister(self._fd)
            self.socket.close()

    class dispatcher_with_send(dispatcher):
        out = None  # what the socket did not take yet (a bytearray)

        def send(self, data):
            if self.debug:
                self.log_info("sending %s" % repr(data))
            if self.out is not None:
                self.out += data
                return
            try:
                sent = self.socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as why:
                if why.errno in disconnected:
                    self.handle_close()
                    return
                raise
            if sent < len(data):
                self.out = bytearray(data[sent:])
                ep.modify(self._fd, EPOLLOUT)

        def handle_write(self):
            try:
                sent = self.socket.send(self.out)
            except BlockingIOError:
                return
            except OSError as why:
                if why.errno in disconnected:
                    self.handle_close()
                    return
                raise
            del self.out[:sent]
            if not self.out:
                self.out = None
                ep.modify(self._fd, EPOLLIN)

    def loop():
        get = channels.get
        try:
            while True:
                for fd, events in ep.poll():
                    obj = get(fd)
                    if obj is None:
                        continue
                    try:
                        if obj.accepting:
                            obj.handle_accept()
                        elif events & EPOLLOUT:
                            obj.handle_write()
                        else:
                            obj.handle_read()
                    except Exception:  # (the servers' Stop, a SystemExit, ends the loop)
                        obj.handle_error()
        finally:
            for obj in list(channels.values()):
                obj.close()
            ep.close()

    return SimpleNamespace(dispatcher=dispatcher, dispatcher_with_send=dispatcher_with_send,
                           loop=loop)
