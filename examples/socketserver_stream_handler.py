"""The StreamRequestHandler variant: the handler reads a line with ``rfile.readline()`` and
writes the answer to ``wfile``, file-like, instead of calling recv()/sendall() itself.

    python socketserver_stream_handler.py
"""

from __future__ import annotations

import socket
import threading

from netloop import socketserver


class UpperCaseLineHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline().strip()  # everything up to the newline
        print("{} wrote: {!r}".format(self.client_address[0], line), flush=True)
        self.wfile.write(line.upper() + b"\n")  # wfile sends at once (unbuffered)


def send(address: tuple, text: str) -> str:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(text.encode() + b"\n")
        with sock.makefile("rb") as replies:
            reply = replies.readline().decode().rstrip("\n")
    print("Sent:     {}".format(text))
    print("Received: {}".format(reply), flush=True)
    return reply


def main() -> None:
    with socketserver.TCPServer(("127.0.0.1", 0), UpperCaseLineHandler) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            for text in ("first line", "second line"):
                send(server.server_address, text)
        finally:
            server.shutdown()
            thread.join()


if __name__ == "__main__":
    main()
