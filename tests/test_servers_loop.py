"""Servers on shared loops: several servers and dispatchers in one thread, and the defaults."""

from __future__ import annotations

import os
import socket
import threading

import pytest
from test_servers_support import (dgram_roundtrip, needs_unix, no_leaks, serving,
                                  stream_roundtrip, unix_path, wait_until)

import netloop
from netloop import socketserver as ss

pytestmark = pytest.mark.usefixtures("no_leaks")
_ = no_leaks


class UpperLine(ss.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


class UpperDatagram(ss.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.read().upper())


class EchoChannel(netloop.BufferedDispatcher):
    def handle_read(self):
        data = self.recv(65536)
        if data:
            self.send(data)

    def handle_close(self):
        self.close()


class EchoListener(netloop.Dispatcher):
    """A plain dispatcher-based echo server, to share the loop with socketserver servers."""

    def __init__(self, loop):
        super().__init__(map=loop.map)
        self.create_socket()
        self.bind(("127.0.0.1", 0))
        self.listen(8)
        self.address = self.socket.getsockname()

    def handle_accepted(self, sock, addr):
        EchoChannel(sock, map=self._map)


def dispatcher_roundtrip(addr, data):
    with socket.create_connection(addr) as c:
        c.settimeout(10)
        c.sendall(data)
        got = b""
        while len(got) < len(data):
            got += c.recv(65536)
    return got


@needs_unix
def test_several_servers_and_a_dispatcher_in_one_loop_run():
    lp = netloop.Loop()
    path = unix_path()
    tcp = ss.TCPServer(("127.0.0.1", 0), UpperLine, loop=lp)
    udp = ss.UDPServer(("127.0.0.1", 0), UpperDatagram, loop=lp)
    unix = ss.UnixStreamServer(path, UpperLine, loop=lp)
    threaded = ss.ThreadingTCPServer(("127.0.0.1", 0), UpperLine, loop=lp)
    echo = EchoListener(lp)
    ticks = []
    ticker = lp.call_every(0.01, lambda: ticks.append(1))
    results = {}
    main = threading.get_ident()

    def clients():
        try:
            for i in range(3):
                results.setdefault("tcp", []).append(
                    stream_roundtrip(socket.AF_INET, tcp.server_address, b"t%d\n" % i))
                results.setdefault("udp", []).append(
                    dgram_roundtrip(socket.AF_INET, udp.server_address, b"u%d" % i))
                results.setdefault("unix", []).append(
                    stream_roundtrip(socket.AF_UNIX, path, b"x%d\n" % i))
                results.setdefault("thr", []).append(
                    stream_roundtrip(socket.AF_INET, threaded.server_address, b"h%d\n" % i))
                results.setdefault("echo", []).append(
                    dispatcher_roundtrip(echo.address, b"e%d" % i))
        finally:
            lp.call_soon_threadsafe(close_all)

    def close_all():
        assert threading.get_ident() == main  # everything ran on the loop's thread
        for server in (tcp, udp, unix, threaded):
            server.server_close()
        echo.close()
        ticker.cancel()  # run() now ends when the last echo connection has closed

    t = threading.Thread(target=clients)
    t.start()
    try:
        lp.run()
    finally:
        t.join()
        lp.close()
        os.unlink(path)
    assert results == {
        "tcp": [b"T0\n", b"T1\n", b"T2\n"], "udp": [b"U0", b"U1", b"U2"],
        "unix": [b"X0\n", b"X1\n", b"X2\n"], "thr": [b"H0\n", b"H1\n", b"H2\n"],
        "echo": [b"e0", b"e1", b"e2"]}
    assert not lp.map


def test_global_socket_map_served_by_netloop_loop():
    tcp = ss.TCPServer(("127.0.0.1", 0), UpperLine, map=netloop.socket_map)
    udp = ss.UDPServer(("127.0.0.1", 0), UpperDatagram, map=netloop.socket_map)
    assert len(netloop.socket_map) == 2
    out = []

    def clients():
        try:
            out.append(stream_roundtrip(socket.AF_INET, tcp.server_address, b"abc\n"))
            out.append(dgram_roundtrip(socket.AF_INET, udp.server_address, b"def"))
        finally:
            netloop.get_loop().call_soon_threadsafe(lambda: (tcp.server_close(),
                                                             udp.server_close()))

    t = threading.Thread(target=clients)
    t.start()
    netloop.loop(timeout=1.0)  # returns when the map is empty
    t.join()
    assert out == [b"ABC\n", b"DEF"]
    assert not netloop.socket_map


def test_serve_forever_of_one_server_serves_the_others_on_its_loop():
    lp = netloop.Loop()
    try:
        first = ss.TCPServer(("127.0.0.1", 0), UpperLine, loop=lp)
        second = ss.TCPServer(("127.0.0.1", 0), UpperLine, loop=lp)
        echo = EchoListener(lp)
        with serving(first, 60.0):
            assert stream_roundtrip(socket.AF_INET, second.server_address, b"2\n") == b"2\n"
            assert dispatcher_roundtrip(echo.address, b"ping") == b"ping"
            assert stream_roundtrip(socket.AF_INET, first.server_address, b"a\n") == b"A\n"
        # shutdown() stops `first` only: the loop still holds the others.
        assert first.socket.fileno() == -1
        second.server_close()
        echo.close()
        assert not lp.map
    finally:
        lp.close()


def test_default_is_a_private_loop_and_not_the_global_map():
    a = ss.TCPServer(("127.0.0.1", 0), UpperLine)
    b = ss.TCPServer(("127.0.0.1", 0), UpperLine)
    try:
        assert not netloop.socket_map
        assert a.get_loop() is not b.get_loop()
        assert a.get_loop().map is not netloop.socket_map
    finally:
        a.server_close()
        b.server_close()


def test_private_loop_holds_no_kernel_objects_between_serves():
    server = ss.TCPServer(("127.0.0.1", 0), UpperLine)
    try:
        before = len(os.listdir("/proc/self/fd"))
        with socket.create_connection(server.server_address) as c:
            c.sendall(b"q\n")
            server.handle_request()
        with serving(server, 60.0) as s:
            pass
        assert len(os.listdir("/proc/self/fd")) == before - 1  # serving() closed the server
        assert s is server
    finally:
        server.server_close()


def test_service_actions_on_a_shared_loop_come_from_a_timer():
    lp = netloop.Loop()

    class Reaper(ss.TCPServer):
        service_interval = 0.01
        calls = 0

        def service_actions(self):
            self.calls += 1

    server = Reaper(("127.0.0.1", 0), UpperLine, loop=lp)
    plain = ss.TCPServer(("127.0.0.1", 0), UpperLine, loop=lp)
    try:
        done = []
        lp.call_every(0.005, lambda: server.calls >= 3 and (done.append(1), lp.stop()))
        lp.run_forever(timeout=1.0)
        assert done
    finally:
        server.server_close()
        plain.server_close()
        # Closed servers leave no timer behind: run() ends at once.
        lp.run(timeout=0)
        lp.close()


def test_set_loop_moves_a_server():
    lp = netloop.Loop()
    try:
        server = ss.TCPServer(("127.0.0.1", 0), UpperLine)
        fd = server.fileno()
        server.set_loop(lp)
        assert lp.map[fd] is not None and server.get_loop() is lp
        other = ss.TCPServer(("127.0.0.1", 0), UpperLine, loop=lp)
        with serving(other, 60.0):
            assert stream_roundtrip(socket.AF_INET, server.server_address, b"m\n") == b"M\n"
        server.set_loop()  # back to a private loop
        assert fd not in lp.map
        with socket.create_connection(server.server_address) as c:
            c.sendall(b"p\n")
            server.handle_request()
            c.settimeout(5)
            assert c.recv(10) == b"P\n"
        server.server_close()
    finally:
        lp.close()


def test_shutdown_of_a_server_on_a_loop_run_by_another_thread():
    lp = netloop.Loop()
    stopper = ss.TCPServer(("127.0.0.1", 0), UpperLine, loop=lp)
    victim = ss.TCPServer(("127.0.0.1", 0), UpperLine, loop=lp)
    runner = threading.Thread(target=lp.run)
    runner.start()
    try:
        assert stream_roundtrip(socket.AF_INET, victim.server_address, b"v\n") == b"V\n"
        victim.shutdown()  # not in serve_forever: stops accepting, handed to the loop thread
        assert victim.fileno() not in lp.map
        with socket.create_connection(victim.server_address) as c:
            assert stream_roundtrip(socket.AF_INET, stopper.server_address, b"s\n") == b"S\n"
            c.settimeout(0.05)
            with pytest.raises(socket.timeout):
                c.recv(1)  # queued in the kernel, never accepted
    finally:
        victim.server_close()
        stopper.server_close()
        runner.join(5)  # run() ends: its map is empty
        assert not runner.is_alive()
        lp.close()


def test_server_close_from_another_thread_while_the_loop_runs():
    lp = netloop.Loop()
    server = ss.TCPServer(("127.0.0.1", 0), UpperLine, loop=lp)
    runner = threading.Thread(target=lp.run)
    runner.start()
    try:
        wait_until(lambda: lp.running, 5, "the loop to run")
        server.server_close()
        runner.join(5)
        assert not runner.is_alive()
    finally:
        lp.close()
