"""Unix domain socket servers, stream and datagram, in every kind."""

from __future__ import annotations

import os
import socket

import pytest
from test_servers_support import (FORK_WARNING, dgram_roundtrip, needs_fork, needs_unix,
                                  no_leaks, serving, stream_roundtrip, unix_path)

from netloop import socketserver as ss

pytestmark = [pytest.mark.usefixtures("no_leaks"), needs_unix,
              pytest.mark.filterwarnings(FORK_WARNING)]
_ = no_leaks


class EchoLine(ss.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


class EchoDatagram(ss.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.read())


def _kinds(prefix):
    names = [prefix, "Threading" + prefix]
    marks = [(), ()]
    names.append("Forking" + prefix)
    marks.append((needs_fork,))
    return [pytest.param(n, marks=m, id=n) for n, m in zip(names, marks)]


@pytest.mark.parametrize("name", _kinds("UnixStreamServer"))
def test_unix_stream(name):
    path = unix_path()
    server = getattr(ss, name)(path, EchoLine)
    try:
        assert server.server_address == server.socket.getsockname() == path
        with serving(server, 0.5):
            for i in range(3):
                line = b"unix %d\n" % i
                assert stream_roundtrip(socket.AF_UNIX, path, line) == line
    finally:
        os.unlink(path)


@pytest.mark.parametrize("name", _kinds("UnixDatagramServer"))
def test_unix_datagram(name):
    path = unix_path()
    server = getattr(ss, name)(path, EchoDatagram)
    try:
        with serving(server, 0.5):
            for i in range(3):
                assert dgram_roundtrip(socket.AF_UNIX, path, b"ud %d" % i) == b"ud %d" % i
    finally:
        os.unlink(path)


def test_unix_server_close_keeps_the_path():
    path = unix_path()
    with ss.UnixStreamServer(path, EchoLine):
        pass
    try:
        assert os.path.exists(path)  # the caller removes it, as with socketserver
    finally:
        os.unlink(path)
