"""An OSError of the disconnect kind raised out of a handler, on the drop-in loops.

impacket's kintercept proxy sends the last bytes to a client that has closed, then calls
``shutdown(SHUT_WR)`` on a socket the client's reset has just torn down (ENOTCONN). asyncore's
select loop (``loop(use_poll=False)``, ``poll()``) gave that to ``handle_error()``, whose default
prints the traceback and closes; only its poll loop (``readwrite()``: ``use_poll=True``,
``poll2()``) closed quietly through ``handle_close()``.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import List

import pytest

import netloop.asyncore as asyncore


class Conn(asyncore.dispatcher):
    def __init__(self, sock: socket.socket, calls: List[str]) -> None:
        asyncore.dispatcher.__init__(self, sock)
        self.calls = calls
        self.eof = False
        self.done = False

    def readable(self) -> bool:
        return not self.eof

    def handle_read(self) -> None:
        if not self.socket.recv(100):
            self.eof = True

    def writable(self) -> bool:
        return self.eof and not self.done

    def handle_write(self) -> None:
        self.done = True
        self.send(b"x")  # the peer has closed: its kernel answers with a reset
        self.socket.shutdown(socket.SHUT_WR)  # ENOTCONN, out of the handler

    def handle_error(self) -> None:
        self.calls.append("handle_error %s" % sys.exc_info()[1].errno)
        self.close()

    def handle_close(self) -> None:
        self.calls.append("handle_close")
        self.close()


@pytest.mark.parametrize("how,expected", [
    ("loop", "handle_error %d" % errno.ENOTCONN),
    ("poll", "handle_error %d" % errno.ENOTCONN),
    ("loop-use_poll", "handle_close"),
    ("poll2", "handle_close"),
])
def test_disconnect_error_out_of_a_handler(how: str, expected: str) -> None:
    calls: List[str] = []
    listener = socket.create_server(("127.0.0.1", 0))
    b = socket.create_connection(listener.getsockname())
    a, _ = listener.accept()
    listener.close()
    conn = Conn(a, calls)
    b.send(b"\n")
    b.close()  # TCP: a send after this is answered with a reset
    try:
        for _ in range(40):
            if how == "loop":
                asyncore.loop(timeout=0.05, count=1)
            elif how == "loop-use_poll":
                asyncore.loop(timeout=0.05, count=1, use_poll=True)
            elif how == "poll":
                asyncore.poll(0.05)
            else:
                asyncore.poll2(0.05)
            if calls:
                break
        assert calls == [expected]
    finally:
        conn.close()
