"""A first end-to-end check: an echo over loopback on every poller."""

import socket

import netloop
from support import run_until


class Echo(netloop.BufferedDispatcher):
    def handle_read(self):
        data = self.recv(8192)
        if data:
            self.send(data)


class Server(netloop.Dispatcher):
    def __init__(self, map):
        super().__init__(map=map)
        self.create_socket(socket.AF_INET)
        self.bind(("127.0.0.1", 0))
        self.listen(16)
        self.port = self.socket.getsockname()[1]

    def handle_accepted(self, sock, addr):
        Echo(sock, map=self._map)


def test_echo_every_poller(loop):
    server = Server(loop.map)
    client = socket.create_connection(("127.0.0.1", server.port))
    client.setblocking(False)
    try:
        client.sendall(b"hello netloop")
        got = bytearray()

        def done():
            try:
                got.extend(client.recv(100))
            except BlockingIOError:
                pass
            return got == b"hello netloop"

        run_until(loop, done)
    finally:
        client.close()
