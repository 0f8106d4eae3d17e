"""The classic asyncore HTTP client, on netloop: fetch a URL with a dispatcher and print it.

Usage: python asyncore_http_client.py http://127.0.0.1:8000/path
Only change from the Python 2 original's idea: bytes on the wire, and ``netloop.asyncore``.
"""

import sys
from urllib.parse import urlsplit

from netloop import asyncore


class HTTPClient(asyncore.dispatcher):
    def __init__(self, host, port, path):
        asyncore.dispatcher.__init__(self)
        self.create_socket()
        self.connect((host, port))
        self.buffer = ("GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, host)).encode("ascii")
        self.response = bytearray()

    def handle_connect(self):
        pass

    def handle_close(self):
        self.close()

    def handle_read(self):
        self.response += self.recv(8192)

    def writable(self):
        return len(self.buffer) > 0

    def handle_write(self):
        sent = self.send(self.buffer)
        self.buffer = self.buffer[sent:]


def fetch(url):
    parts = urlsplit(url)
    client = HTTPClient(parts.hostname, parts.port or 80, parts.path or "/")
    asyncore.loop(timeout=1.0)
    return bytes(client.response)


USAGE = "usage: python asyncore_http_client.py http://HOST[:PORT]/PATH"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or urlsplit(argv[0]).scheme != "http" or not urlsplit(argv[0]).hostname:
        print(USAGE, file=sys.stderr)
        return 2
    response = fetch(argv[0])
    head, _, body = response.partition(b"\r\n\r\n")
    print(head.decode("latin-1"))
    print()
    sys.stdout.buffer.write(body)
    sys.stdout.flush()
    return 0 if head.startswith(b"HTTP/") else 1


if __name__ == "__main__":
    sys.exit(main())
