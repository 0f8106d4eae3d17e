"""STARTTLS on chat channels: smtplib against the example server, pipelining, injection."""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import sys
import threading
from typing import Any, List

import netloop

import tlssupport
from support import run_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))
from starttls_server import SMTPServer  # noqa: E402


def _serve(lp: netloop.Loop, target: Any, timeout: float = 10.0) -> None:
    th = threading.Thread(target=target, daemon=True)
    th.start()
    run_until(lp, lambda: not th.is_alive(), timeout=timeout)
    th.join()


def _drain_channels(lp: netloop.Loop, server: SMTPServer) -> None:
    run_until(lp, lambda: len(lp.map) == 1)  # only the listener is left
    server.close()


def test_smtplib_starttls(loop: netloop.Loop) -> None:
    server = SMTPServer(("127.0.0.1", 0), tlssupport.server_context(), map=loop.map)
    result: List[Any] = []

    def client() -> None:
        with smtplib.SMTP("127.0.0.1", server.address[1], timeout=10) as smtp:
            smtp.ehlo()
            assert smtp.has_extn("starttls")
            result.append(smtp.starttls(context=tlssupport.client_context())[0])
            smtp.ehlo()
            result.append(smtp.has_extn("starttls"))  # not offered twice
            smtp.sendmail("a@example.org", ["b@example.org"], b"Subject: hi\r\n\r\nbody\r\n")
            result.append(smtp.sock.version())

    _serve(loop, client)
    assert result[0] == 220 and result[1] is False and result[2] in ("TLSv1.2", "TLSv1.3")
    assert server.upgraded == 1
    assert server.messages and b"body" in server.messages[0]
    # Commands after STARTTLS ran over TLS.
    assert ("MAIL", "TLSSocket") in server.commands
    _drain_channels(loop, server)


def _read_reply(sock: Any) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        more = sock.recv(1)
        if not more:
            break
        data += more
    return data


def test_command_pipelined_behind_starttls_is_dropped(loop: netloop.Loop) -> None:
    # CVE-2011-0411: "STARTTLS\r\nRSET\r\n" in one segment. The RSET was sent in the clear
    # before the handshake; executing it after the upgrade would let a man in the middle
    # inject commands into the protected session.
    server = SMTPServer(("127.0.0.1", 0), tlssupport.server_context(), map=loop.map)
    replies: List[bytes] = []

    def client() -> None:
        raw = socket.create_connection(("127.0.0.1", server.address[1]), timeout=10)
        try:
            replies.append(_read_reply(raw))
            raw.sendall(b"NOOP\r\nEHLO x\r\nSTARTTLS\r\nRSET\r\nMAIL FROM:<evil>\r\n")
            # Replies to what preceded STARTTLS come in the clear, in order, and end with 220.
            while not replies[-1].startswith(b"220 Ready"):
                replies.append(_read_reply(raw))
            tls = tlssupport.client_context().wrap_socket(raw, server_hostname="localhost")
            tls.sendall(b"QUIT\r\n")
            replies.append(_read_reply(tls))
            tls.close()
        finally:
            raw.close()

    _serve(loop, client)
    assert replies[1] == b"250 OK\r\n"
    assert replies[-2] == b"220 Ready to start TLS\r\n"
    assert replies[-1] == b"221 Bye\r\n"
    verbs = [verb for verb, _ in server.commands]
    assert verbs == ["NOOP", "EHLO", "STARTTLS", "QUIT"], verbs
    _drain_channels(loop, server)


def test_plaintext_injected_after_starttls_fails_the_handshake(loop: netloop.Loop) -> None:
    # The injected command arrives in a later segment, after the server switched to TLS: it is
    # handshake garbage, the channel is closed, nothing is executed.
    server = SMTPServer(("127.0.0.1", 0), tlssupport.server_context(), map=loop.map)
    closed: List[bytes] = []

    def client() -> None:
        with socket.create_connection(("127.0.0.1", server.address[1]), timeout=10) as raw:
            _read_reply(raw)
            raw.sendall(b"STARTTLS\r\n")
            assert _read_reply(raw).startswith(b"220")
            raw.sendall(b"RSET\r\nQUIT\r\n")
            try:
                closed.append(raw.recv(100))
            except ConnectionResetError:
                closed.append(b"")

    _serve(loop, client)
    assert [verb for verb, _ in server.commands] == ["STARTTLS"]
    assert not closed[0].startswith(b"250")  # an alert or nothing, never a reply
    _drain_channels(loop, server)


def test_many_pipelined_commands_after_upgrade_batched_in_order(loop: netloop.Loop) -> None:
    server = SMTPServer(("127.0.0.1", 0), tlssupport.server_context(), map=loop.map)
    replies: List[bytes] = []

    def client() -> None:
        with socket.create_connection(("127.0.0.1", server.address[1]), timeout=10) as raw:
            _read_reply(raw)
            raw.sendall(b"STARTTLS\r\n")
            _read_reply(raw)
            tls = tlssupport.client_context().wrap_socket(raw, server_hostname="localhost")
            tls.sendall(b"NOOP\r\n" * 50 + b"HELP\r\nQUIT\r\n")
            data = b""
            while data.count(b"\r\n") < 52:
                more = tls.recv(65536)
                if not more:
                    break
                data += more
            replies.extend(data.split(b"\r\n")[:-1])
            tls.close()

    _serve(loop, client)
    assert replies == [b"250 OK"] * 50 + [b"502 Command not implemented", b"221 Bye"]
    _drain_channels(loop, server)


def test_tls_push_of_large_output_and_producers(loop: netloop.Loop) -> None:
    # Chat output over TLS: a push bigger than the socket takes, queued and flushed through
    # TLS writes; bytes arrive intact.
    from netloop.chat import ChatChannel

    payload = os.urandom(3 << 20)

    class Big(ChatChannel):
        def __init__(self, sock: Any, map: Any) -> None:
            super().__init__(sock, map)
            self.set_terminator(b"\n")

        def found_terminator(self) -> None:
            self._get_data()
            for i in range(0, len(payload), 100000):
                self.push(payload[i:i + 100000])
            self.close_when_done()

    a, b = socket.socketpair()
    ch = Big(a, loop.map)
    ch.start_tls(tlssupport.server_context(), server_side=True)
    got = bytearray()

    def client() -> None:
        s = tlssupport.client_context().wrap_socket(b, server_hostname="localhost")
        s.sendall(b"go\n")
        while True:
            data = s.recv(65536)
            if not data:
                break
            got.extend(data)
        s.close()

    _serve(loop, client)
    assert bytes(got) == payload
    assert not loop.map
    _ = ssl
