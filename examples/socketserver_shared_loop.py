"""Several socketserver servers and a plain dispatcher, all on one netloop loop, one thread.

A TCP server, a UDP server, a Unix stream server and a ``netloop.Dispatcher`` echo service share
one ``netloop.Loop``; ``Loop.run()`` in the main thread serves them all, with a timer besides.
A client thread talks to each, then asks the loop (thread-safely) to close everything, and
``run()`` returns once nothing is left.

    python socketserver_shared_loop.py
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading

import netloop
from netloop import socketserver


class Shout(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


class ShoutDatagram(socketserver.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.read().upper())


class Echo(netloop.BufferedDispatcher):
    def handle_read(self) -> None:
        data = self.recv(65536)
        if data:
            self.send(data)

    def handle_close(self) -> None:
        self.close()


class EchoService(netloop.Dispatcher):
    def __init__(self, loop: netloop.Loop) -> None:
        super().__init__(map=loop.map)
        self.create_socket()
        self.bind(("127.0.0.1", 0))
        self.listen(16)

    def handle_accepted(self, sock, addr) -> None:
        Echo(sock, map=self._map)


def stream(family, address, line: bytes) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(address)
        sock.sendall(line)
        return sock.makefile("rb").readline()


def main() -> None:
    loop = netloop.Loop()
    path = os.path.join(tempfile.mkdtemp(), "shout.sock")
    tcp = socketserver.TCPServer(("127.0.0.1", 0), Shout, loop=loop)
    udp = socketserver.UDPServer(("127.0.0.1", 0), ShoutDatagram, loop=loop)
    unix = socketserver.UnixStreamServer(path, Shout, loop=loop)
    echo = EchoService(loop)
    ticked = threading.Event()
    ticker = loop.call_every(0.01, ticked.set)  # a timer on the same loop, thread-safe signal

    def close_all() -> None:
        for server in (tcp, udp, unix):
            server.server_close()
        echo.close()
        ticker.cancel()

    def clients() -> None:
        try:
            ticked.wait(10)
            print("the loop's timer ticks")
            print("tcp :", stream(socket.AF_INET, tcp.server_address, b"over tcp\n"))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(10)
                sock.sendto(b"over udp", udp.server_address)
                print("udp :", sock.recv(1024))
            print("unix:", stream(socket.AF_UNIX, path, b"over a unix socket\n"))
            print("echo:", stream(socket.AF_INET, echo.socket.getsockname(),
                                  b"through a dispatcher\n"))
        finally:
            loop.call_soon_threadsafe(close_all)

    thread = threading.Thread(target=clients)
    thread.start()
    loop.run()  # until every server and dispatcher has closed
    thread.join()
    loop.close()
    os.unlink(path)
    os.rmdir(os.path.dirname(path))
    print("one thread served 3 servers, a dispatcher and a timer")


if __name__ == "__main__":
    main()
