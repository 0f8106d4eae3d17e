"""The classic asyncore echo server, on netloop: ``dispatcher_with_send`` echoes each read.

Usage: python asyncore_echo_server.py [--port N] [--max-connections N]
Prints "listening on HOST:PORT" when ready. With --max-connections it stops after serving that
many connections (so tests and demos end by themselves); otherwise it runs until Ctrl-C.
"""

import argparse
import signal
import socket
import sys

from netloop import asyncore


class EchoHandler(asyncore.dispatcher_with_send):
    def handle_read(self):
        data = self.recv(8192)
        if data:
            self.send(data)


class EchoServer(asyncore.dispatcher):
    def __init__(self, host, port, max_connections=None):
        asyncore.dispatcher.__init__(self)
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.set_reuse_addr()
        self.bind((host, port))
        self.listen(5)
        self.remaining = max_connections

    def handle_accepted(self, sock, addr):
        print("Incoming connection from %s" % repr(addr), flush=True)
        EchoHandler(sock)
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.close()  # stop listening; the loop ends when the handlers are done


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-connections", type=int)
    args = parser.parse_args(argv)
    server = EchoServer(args.host, args.port, args.max_connections)
    host, port = server.socket.getsockname()[:2]
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it as Ctrl-C does
    try:
        print("listening on %s:%d" % (host, port), flush=True)
        asyncore.loop()
    except KeyboardInterrupt:
        asyncore.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
