"""Socket activation: systemd's LISTEN_FDS protocol, with a minimal launcher written here and
with the real ``systemd-socket-activate``; the adopt helpers for dispatchers and socketserver."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
from typing import Any, List

import pytest

import netloop
from netloop import activation
from netloop import socketserver as ss
from scale_support import Proc, alive, echo_once, need_tool, netloop_argv, wait
from support import run_until

# A minimal launcher: puts the sockets given as descriptor numbers on 3, 4, ... and execs the
# command with LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES set for itself (exec keeps the pid).
LAUNCHER = textwrap.dedent("""
    import fcntl, os, sys
    fds = [int(x) for x in sys.argv[1].split(",")]
    names = sys.argv[2]
    # Move them out of the way first: a passed descriptor may already sit on 3 or 4.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
    for fd in fds:
        os.close(fd)
    for i, fd in enumerate(high):
        os.dup2(fd, 3 + i)          # dup2's copy is inheritable
        os.close(fd)
    env = dict(os.environ, LISTEN_FDS=str(len(fds)), LISTEN_PID=str(os.getpid()))
    if names:
        env["LISTEN_FDNAMES"] = names
    os.execvpe(sys.argv[3], sys.argv[3:], env)
""")


def _listener(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))
    sock.listen(64)
    return sock


def _launch(tmp_path: Any, socks: List[socket.socket], names: str, *argv: str) -> Proc:
    script = tmp_path / "launcher.py"
    script.write_text(LAUNCHER)
    fds = [s.fileno() for s in socks]
    return Proc([sys.executable, str(script), ",".join(map(str, fds)), names, *argv],
                pass_fds=fds)


def test_listen_fds_reads_and_cleans_the_environment():
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0", "LISTEN_FDNAMES": ""}
    assert activation.listen_fds(environ=env) == []
    assert env == {}
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert activation.listen_fds(unset_environment=False, environ=env) == []
    assert "LISTEN_FDS" in env  # not for us, and asked to keep it
    assert activation.listen_fds(environ={"LISTEN_FDS": "1"}) == []  # no LISTEN_PID: not ours
    with pytest.raises(ValueError, match="LISTEN_FDS is not a number"):
        activation.listen_fds(environ={"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "x"})
    with pytest.raises(ValueError, match="LISTEN_PID is not a process id"):
        activation.listen_fds(environ={"LISTEN_PID": "me", "LISTEN_FDS": "1"})
    high = os.open(os.devnull, os.O_RDONLY)
    try:
        count = high - activation.LISTEN_FDS_START + 50  # reaches a descriptor that is closed
        with pytest.raises(ValueError, match="is not open"):
            activation.listen_fds(environ={"LISTEN_PID": str(os.getpid()),
                                           "LISTEN_FDS": str(count)})
    finally:
        os.close(high)


def test_adopt_listener_and_server_socket(loop):
    class Echo(netloop.BufferedDispatcher):
        def handle_read(self) -> None:
            data = self.recv(100)
            if data:
                self.send(data)

    class Server(netloop.Dispatcher):
        def handle_accepted(self, sock: Any, addr: Any) -> None:
            Echo(sock, map=self._map)

    seen: List[Any] = []

    class Handler(ss.StreamRequestHandler):
        def handle(self) -> None:
            seen.append(self.client_address)
            self.wfile.write(self.rfile.readline().upper())

    a, b = _listener(), _listener()
    server = Server(map=loop.map)
    activation.adopt_listener(server, a)
    assert server.accepting and server.addr == a.getsockname()
    tcp = ss.TCPServer(("ignored", 0), Handler, bind_and_activate=False, loop=loop)
    activation.adopt_server_socket(tcp, b)
    assert tcp.server_address == b.getsockname() and tcp.socket is b
    try:
        for sock, payload, want in ((a, b"abc\n", b"abc\n"), (b, b"abc\n", b"ABC\n")):
            with socket.create_connection(sock.getsockname(), timeout=5) as c:
                c.sendall(payload)
                c.setblocking(False)
                got = bytearray()

                def done() -> bool:
                    try:
                        got.extend(c.recv(100))
                    except BlockingIOError:
                        pass
                    return bytes(got) == want
                run_until(loop, done)
        assert len(seen) == 1
        with pytest.raises(ValueError, match="not a listening stream socket"):
            with socket.socket() as unbound:
                activation.adopt_listener(Server(map={}), unbound)
    finally:
        tcp.server_close()
        server.close()


def test_echo_serves_sockets_passed_by_a_minimal_launcher(tmp_path):
    socks = [_listener(), _listener()]
    try:
        # --port is ignored: the passed sockets are served instead.
        with _launch(tmp_path, socks, "web:admin",
                     *netloop_argv("echo", "--port", "1", "--log-peers")) as proc:
            for sock in socks:
                address = sock.getsockname()
                proc.wait_line(r"passed socket on %s:%d$" % address)
                got, me = echo_once(address, b"activated")
                assert got == b"activated"
                proc.wait_line(r"peer %s:%d$" % me)
            assert not proc.find(r"listening on")
    finally:
        for sock in socks:
            sock.close()


def test_workers_share_passed_sockets_socketserver_kind(tmp_path):
    sock = _listener()
    try:
        with _launch(tmp_path, [sock], "",
                     *netloop_argv("echo", "--workers", "2", "--kind", "socketserver",
                                   "--log-peers")) as proc:
            address = sock.getsockname()
            proc.wait_line(r"2 workers, plain\) passed socket on %s:%d$" % address)
            wait(lambda: len([p for p in proc.children() if alive(p)]) == 2, 10, "2 workers")
            for i in range(10):
                assert echo_once(address, b"n%d" % i)[0] == b"n%d" % i
            assert proc.stop() == 0
    finally:
        sock.close()


def test_real_systemd_socket_activate(tmp_path):
    tool = need_tool("systemd-socket-activate", "/usr/bin/systemd-socket-activate",
                     "/lib/systemd/systemd-socket-activate")
    sock = _listener()
    try:
        # It refuses port 0 in -l, so it is given a socket bound to a free port the same way
        # it passes sockets on: LISTEN_FDS (from the launcher above). It hands them to the
        # program it starts, at the first connection, with LISTEN_PID set to the program's.
        # It passes on no environment but what -E names.
        with _launch(tmp_path, [sock], "", tool, "--fdname=echo", "-E", "PYTHONPATH",
                     "-E", "PYTHONUNBUFFERED",
                     *netloop_argv("echo", "--log-peers")) as proc:
            proc.wait_line(r"Listening on 127\.0\.0\.1:%d as 3" % sock.getsockname()[1])
            got, me = echo_once(sock.getsockname(), b"via systemd")
            assert got == b"via systemd"
            proc.wait_line(r"passed socket on 127\.0\.0\.1:%d$" % sock.getsockname()[1])
            proc.wait_line(r"peer %s:%d$" % me)
            assert echo_once(sock.getsockname(), b"again")[0] == b"again"
    finally:
        sock.close()
