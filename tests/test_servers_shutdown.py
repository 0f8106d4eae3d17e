"""shutdown(): immediate from another thread, safe on the loop's thread, no accept after it."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from test_servers_support import no_leaks, serving, stream_roundtrip, wait_until

from netloop import socketserver as ss

pytestmark = pytest.mark.usefixtures("no_leaks")
_ = no_leaks


class Recorder(ss.BaseRequestHandler):
    def handle(self) -> None:
        self.server.handled.append(self.client_address)
        self.request.sendall(b"!")


def make(cls=ss.TCPServer, handler=Recorder):
    server = cls(("127.0.0.1", 0), handler)
    server.handled = []
    return server


def test_shutdown_does_not_wait_for_poll_interval():
    server = make()
    thread = threading.Thread(target=server.serve_forever, args=(60.0,))
    thread.start()
    try:
        # Make sure serve_forever is inside its (long) poll before shutting down.
        assert stream_roundtrip(socket.AF_INET, server.server_address, b"") == b"!"
        start = time.monotonic()
        server.shutdown()
        elapsed = time.monotonic() - start
        thread.join(5)
        assert not thread.is_alive()
        assert elapsed < 1.0, elapsed  # socketserver would take up to 60 s here
    finally:
        server.server_close()


def test_shutdown_from_a_handler_on_the_loop_thread_stops_the_server():
    class Stopper(ss.BaseRequestHandler):
        def handle(self):
            self.server.handled.append(1)
            self.server.shutdown()  # the loop's own thread: must not deadlock
            self.request.sendall(b"bye")

    server = make(handler=Stopper)
    with server:
        client = threading.Thread(target=stream_roundtrip,
                                  args=(socket.AF_INET, server.server_address, b""))
        client.start()
        server.serve_forever(60.0)  # returns once the handler has asked
        client.join()
    assert server.handled == [1]


def test_no_request_taken_after_shutdown_began():
    class Stopper(ss.BaseRequestHandler):
        def handle(self):
            self.server.handled.append(1)
            self.server.shutdown()

    server = make(handler=Stopper)
    server.socket.listen(16)
    with server:
        clients = [socket.create_connection(server.server_address) for _ in range(5)]
        try:
            server.serve_forever(60.0)
            assert server.handled == [1]  # the burst stopped at the shutdown
            # The others wait in the backlog for a later handle_request().
            server.RequestHandlerClass = Recorder
            server.handle_request()
            assert len(server.handled) == 2
        finally:
            for c in clients:
                c.close()


def test_shutdown_right_after_start_and_many_servers():
    pairs = []
    for _ in range(20):
        server = make()
        pairs.append((threading.Thread(target=server.serve_forever, args=(0.01,)), server))
    for thread, server in pairs:
        thread.start()
        server.shutdown()
    for thread, server in pairs:
        thread.join(5)
        assert not thread.is_alive()
        server.server_close()


def test_serve_again_after_shutdown():
    server = make()
    with server:
        for _ in range(2):
            thread = threading.Thread(target=server.serve_forever, args=(60.0,))
            thread.start()
            assert stream_roundtrip(socket.AF_INET, server.server_address, b"") == b"!"
            server.shutdown()
            thread.join(5)
    assert len(server.handled) == 2


@pytest.mark.timeout(30)
def test_serve_forever_with_a_new_socket_after_server_close():
    # werkzeug's reloader child: TCPServer(bind_and_activate=False), server_close(), then a
    # listening socket from socket.fromfd() put in ``socket``, then serve_forever(). In
    # socketserver server_close() only closes the socket; the server serves the new one.
    listening = socket.create_server(("127.0.0.1", 0))
    server = ss.TCPServer(("127.0.0.1", 0), Recorder, bind_and_activate=False)
    server.handled = []
    server.server_close()
    server.socket = socket.fromfd(listening.fileno(), socket.AF_INET, socket.SOCK_STREAM)
    listening.close()
    with serving(server, 60.0):
        assert stream_roundtrip(socket.AF_INET, server.socket.getsockname(), b"") == b"!"
    assert len(server.handled) == 1


@pytest.mark.timeout(30)
def test_handle_request_with_a_new_socket_after_server_close():
    server = ss.UDPServer(("127.0.0.1", 0), ss.DatagramRequestHandler)
    server.server_close()
    server.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.server_bind()
    server.timeout = 10.0
    with server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.sendto(b"x", server.server_address)
        timed_out = []
        server.handle_timeout = lambda: timed_out.append(True)
        server.handle_request()
        assert not timed_out  # the datagram was taken, not the 10 s timeout


@pytest.mark.timeout(30)
def test_serve_forever_serves_a_socket_replaced_after_construction():
    # socketserver watches ``server.socket`` as it is when serve_forever() starts; a listener
    # swapped in after the constructor (another descriptor number) is the one served.
    server = make()
    replacement = socket.create_server(("127.0.0.1", 0))
    old, server.socket = server.socket, replacement
    old.close()
    with serving(server, 60.0):
        assert stream_roundtrip(socket.AF_INET, replacement.getsockname(), b"") == b"!"
    assert len(server.handled) == 1


def test_shutdown_when_not_serving_returns_at_once():
    server = make()
    with server:
        server.shutdown()  # socketserver would block here until some serve_forever() ended
        # As in socketserver, the request is remembered: the next serve_forever() returns.
        server.serve_forever(60.0)
        # handle_request() ignores shutdown, as in socketserver.
        with socket.create_connection(server.server_address):
            server.handle_request()
        assert len(server.handled) == 1


def test_second_serve_forever_is_refused():
    server = make()
    with serving(server, 0.05):
        wait_until(lambda: server.get_loop().running, 5, "serve_forever to run")
        with pytest.raises(RuntimeError):
            server.serve_forever()


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals need the main thread")
def test_shutdown_from_a_loop_signal_handler():
    server = make()
    lp = server.get_loop()
    with server:
        lp.add_signal_handler(signal.SIGUSR1, server.shutdown)
        try:
            killer = threading.Thread(target=lambda: (
                wait_until(lambda: lp.running, 5, "the loop to run"),
                os.kill(os.getpid(), signal.SIGUSR1)))
            killer.start()
            start = time.monotonic()
            server.serve_forever(60.0)
            assert time.monotonic() - start < 5
            killer.join()
        finally:
            lp.remove_signal_handler(signal.SIGUSR1)


def test_shutdown_from_another_thread_while_a_threading_handler_runs():
    release = threading.Event()

    class Slow(ss.BaseRequestHandler):
        def handle(self):
            release.wait(10)
            self.request.sendall(b"late")

    server = make(ss.ThreadingTCPServer, Slow)
    thread = threading.Thread(target=server.serve_forever, args=(60.0,))
    thread.start()
    with socket.create_connection(server.server_address) as c:
        wait_until(lambda: len(server._threads) == 1, 5, "the handler thread")
        server.shutdown()  # does not wait for request threads, only for serve_forever
        thread.join(5)
        assert not thread.is_alive()
        release.set()
        c.settimeout(5)
        assert c.recv(10) == b"late"
    server.server_close()  # joins the request thread
