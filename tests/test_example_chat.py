"""The chat server example with several real clients: in-process, and run as a program."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Iterator, List

import pytest

import netloop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "chat_server.py")
sys.path.insert(0, os.path.dirname(EXAMPLE))
try:
    import chat_server
finally:
    sys.path.remove(os.path.dirname(EXAMPLE))


class Client:
    """A blocking line client with a timeout on every read."""

    def __init__(self, address: tuple) -> None:
        self.sock = socket.create_connection(address, timeout=10)
        self.buf = b""
        self.lines: List[bytes] = []

    def readline(self) -> bytes:
        while b"\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise EOFError("connection closed; unread: %r" % self.buf)
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        self.lines.append(line)
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def at_eof(self) -> bool:
        if self.buf:
            return False
        try:
            return self.sock.recv(4096) == b""
        except ConnectionResetError:  # closed with bytes of ours unread: as good as EOF
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server() -> Iterator[chat_server.ChatServer]:
    loop = netloop.Loop()
    srv = chat_server.ChatServer("127.0.0.1", 0, loop.map)
    thread = threading.Thread(target=loop.run, name="chat-server")
    thread.start()
    try:
        yield srv
    finally:
        loop.stop()
        thread.join(10)
        srv.shutdown()
        loop.close()


def test_lines_go_to_every_other_client(server: chat_server.ChatServer) -> None:
    clients: List[Client] = []
    try:
        for n in range(1, 5):
            c = Client(server.address)
            assert c.readline() == b"* welcome, you are client%d" % n
            for other in clients:
                assert other.readline() == b"* client%d joined" % n
            clients.append(c)
        a, b, c, d = clients

        a.send(b"hello everyone\n")
        for other in (b, c, d):
            assert other.readline() == b"client1: hello everyone"
        # Pieces of a line and several lines in one send both arrive as whole lines.
        b.send(b"spl")
        b.send(b"it\r\nsecond\n\nthird\n")
        for other in (a, c, d):
            assert [other.readline() for _ in range(3)] == [
                b"client2: split", b"client2: second", b"client2: third"]

        d.close()
        for other in (a, b, c):
            assert other.readline() == b"* client4 left"

        # A line over the limit: that client is told and let go; the others see it leave.
        c.send(b"x" * (chat_server.MAX_LINE + 100))
        assert c.readline().startswith(b"* line too long")
        assert c.at_eof()
        for other in (a, b):
            assert other.readline() == b"* client3 left"

        a.send(b"still here\n")
        assert b.readline() == b"client1: still here"
        # Nobody ever heard their own lines.
        assert not any(line.startswith(b"client1:") for line in a.lines)
        assert not any(line.startswith(b"client2:") for line in b.lines)
    finally:
        for cl in clients:
            cl.close()


def test_many_clients_at_once(server: chat_server.ChatServer) -> None:
    clients = [Client(server.address) for _ in range(20)]
    try:
        for n, c in enumerate(clients, 1):
            assert c.readline() == b"* welcome, you are client%d" % n
        # Drain the join notices each client got for those who came after it.
        for n, c in enumerate(clients, 1):
            for later in range(n + 1, len(clients) + 1):
                assert c.readline() == b"* client%d joined" % later
        for n, c in enumerate(clients, 1):
            c.send(b"message %d\n" % n)
            for other in clients:
                if other is not c:
                    assert other.readline() == b"client%d: message %d" % (n, n)
    finally:
        for c in clients:
            c.close()


@pytest.mark.timeout(60)
def test_one_line_lets_hundreds_of_slow_readers_go_without_recursion(
        server: chat_server.ChatServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # Every reader too slow for a line is let go, and each departure is announced to the rest.
    # Those announcements nested (broadcast, send_line, handle_close, leave, broadcast...):
    # past ~250 slow readers a RecursionError reached the sender's handle_read, whose
    # handle_error() closed the sender, a client that had done nothing wrong.
    count = 400
    stalled: set = set()
    monkeypatch.setattr(chat_server.ChatSession, "backlog", lambda self: (
        chat_server.MAX_BACKLOG + 1 if self.name in stalled else 0))
    slow = [Client(server.address) for _ in range(count)]
    observer = Client(server.address)
    talker = Client(server.address)
    try:
        assert observer.readline() == b"* welcome, you are client%d" % (count + 1)
        # The talker's join was announced to every other member, the observer last: no
        # broadcast is under way when the slow readers become slow.
        assert observer.readline() == b"* client%d joined" % (count + 2)
        stalled.update(b"client%d" % n for n in range(1, count + 1))
        talker.send(b"hello\n")
        left = {observer.readline() for _ in range(count)}
        assert left == {b"* client%d left" % n for n in range(1, count + 1)}
        assert observer.readline() == b"client%d: hello" % (count + 2)
        talker.send(b"still here\n")
        assert observer.readline() == b"client%d: still here" % (count + 2)
        assert "uncaptured" not in caplog.text and "RecursionError" not in caplog.text
    finally:
        for c in [talker, observer] + slow:
            c.close()


@pytest.mark.timeout(60)
def test_runs_as_a_program_and_stops_on_sigterm() -> None:
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    proc = subprocess.Popen([sys.executable, EXAMPLE, "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clients: List[Client] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1 "), line
        port = int(line.split()[-1])
        for n in (1, 2, 3):
            c = Client(("127.0.0.1", port))
            assert c.readline() == b"* welcome, you are client%d" % n
            for other in clients:
                assert other.readline() == b"* client%d joined" % n
            clients.append(c)
        clients[0].send(b"over the wire\n")
        assert clients[1].readline() == clients[2].readline() == b"client1: over the wire"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "stopped" in out
        for c in clients:
            assert c.at_eof()
    finally:
        for c in clients:
            c.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
