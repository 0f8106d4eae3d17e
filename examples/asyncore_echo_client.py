"""The classic asyncore echo client, on netloop: send a message, read the echo, close.

Usage: python asyncore_echo_client.py HOST PORT [MESSAGE]
"""

import socket
import sys

from netloop import asyncore


class EchoClient(asyncore.dispatcher_with_send):
    def __init__(self, host, port, message):
        asyncore.dispatcher_with_send.__init__(self)
        self.message = message
        self.received = bytearray()
        self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
        self.connect((host, port))

    def handle_connect(self):
        self.send(self.message)

    def handle_read(self):
        self.received += self.recv(8192)
        if len(self.received) >= len(self.message):
            self.close()

    def handle_close(self):
        self.close()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    host, port = argv[0], int(argv[1])
    message = (argv[2] if len(argv) > 2 else "Hello, netloop!").encode()
    client = EchoClient(host, port, message)
    asyncore.loop(timeout=1.0)
    print("sent %r, received %r" % (message, bytes(client.received)))
    return 0 if bytes(client.received) == message else 1


if __name__ == "__main__":
    sys.exit(main())
