"""A small SMTP-like server on a chat channel, with STARTTLS: enough for ``smtplib``.

Run: ``python examples/starttls_server.py CERT KEY [PORT]`` and talk to it with
``smtplib.SMTP(host, port).starttls(context=...)``. Mail is accepted and dropped; the server
records each command it executes in ``commands`` (tests read it).
"""

from __future__ import annotations

import signal
import socket
import ssl
import sys
from collections import deque
from typing import Any, Deque, List, Optional

import netloop
from netloop.chat import ChatChannel
from netloop.dispatcher import Dispatcher


class SMTPChannel(ChatChannel):
    """One SMTP session: line commands, a DATA body ended by a lone dot, STARTTLS."""

    def __init__(self, sock: socket.socket, server: "SMTPServer") -> None:
        super().__init__(sock, map=server._map)
        self.server = server
        self.in_data = False
        self.set_terminator(b"\r\n")
        self.push(b"220 netloop ESMTP ready\r\n")

    def found_terminator(self) -> None:
        line = self._get_data()
        if self.in_data:
            self.in_data = False
            self.set_terminator(b"\r\n")
            self.server.messages.append(line)
            self.push(b"250 OK: queued\r\n")
            return
        verb = line.split(b" ", 1)[0].upper().decode("ascii", "replace")
        self.server.commands.append((verb, self.socket.__class__.__name__))
        if verb == "EHLO":
            ext = b"" if self.tls or self.server.context is None else b"250-STARTTLS\r\n"
            self.push(b"250-netloop\r\n" + ext + b"250 8BITMIME\r\n")
        elif verb == "HELO":
            self.push(b"250 netloop\r\n")
        elif verb == "STARTTLS" and self.server.context is not None and not self.tls:
            self.push(b"220 Ready to start TLS\r\n")
            # Everything the client sent after this line, before the handshake, is dropped.
            self.start_tls(self.server.context, server_side=True)
        elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
            self.push(b"250 OK\r\n")
        elif verb == "DATA":
            self.in_data = True
            self.set_terminator(b"\r\n.\r\n")
            self.push(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        elif verb == "QUIT":
            self.push(b"221 Bye\r\n")
            self.close_when_done()
        else:
            self.push(b"502 Command not implemented\r\n")

    @property
    def tls(self) -> bool:
        return not isinstance(self.socket, socket.socket)

    def handle_tls_established(self) -> None:
        self.server.upgraded += 1


class SMTPServer(Dispatcher):
    """The listener: one ``SMTPChannel`` per connection."""

    def __init__(self, address: Any, context: Optional[ssl.SSLContext],
                 map: Optional[dict] = None) -> None:
        super().__init__(map=map)
        self.context = context
        # The latest commands and messages only: a record that grew with every session would
        # be memory a client could fill at will.
        self.commands: Deque[Any] = deque(maxlen=10000)
        self.messages: Deque[bytes] = deque(maxlen=1000)
        self.upgraded = 0
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind(address)
        self.listen(16)
        self.address = self.socket.getsockname()

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        SMTPChannel(sock, self)


def main(argv: List[str]) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(argv[0], argv[1])
    server = SMTPServer(("127.0.0.1", int(argv[2]) if len(argv) > 2 else 8025), ctx)
    loop = netloop.get_loop(server._map)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)  # a clean stop, status 0
    print("SMTP with STARTTLS on %s:%d" % server.address, flush=True)
    try:
        loop.run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
