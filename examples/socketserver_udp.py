"""The classic UDP pair on netloop: the server answers each datagram, in capitals, with a
datagram sent through its own socket (``self.request`` is ``(data, socket)``).

    python socketserver_udp.py
"""

from __future__ import annotations

import socket
import threading

from netloop import socketserver


class UpperCaseDatagramHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        data = data.strip()
        print("{} wrote: {!r}".format(self.client_address[0], data), flush=True)
        sock.sendto(data.upper(), self.client_address)


def send(address: tuple, text: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(text.encode() + b"\n", address)
        reply = sock.recv(1024).decode()
    print("Sent:     {}".format(text))
    print("Received: {}".format(reply), flush=True)
    return reply


def main() -> None:
    with socketserver.UDPServer(("127.0.0.1", 0), UpperCaseDatagramHandler) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            for text in ("ping over udp", "and another"):
                send(server.server_address, text)
        finally:
            server.shutdown()
            thread.join()


if __name__ == "__main__":
    main()
