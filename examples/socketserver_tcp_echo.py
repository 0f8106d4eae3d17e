"""The classic socketserver TCP example on netloop: an upper-casing echo server and its client.

The handler reads one chunk of up to 1 KiB from the connection and sends it back in capitals.

    python socketserver_tcp_echo.py                  # demo: server and client in one process
    python socketserver_tcp_echo.py serve [PORT]     # run the server until Ctrl-C
    python socketserver_tcp_echo.py send PORT WORDS  # run the client against a server
"""

from __future__ import annotations

import signal
import socket
import sys
import threading

from netloop import socketserver


class UpperCaseHandler(socketserver.BaseRequestHandler):
    """One request per connection: receive, shout it back, done."""

    def handle(self) -> None:
        data = self.request.recv(1024).strip()
        print("{} wrote: {!r}".format(self.client_address[0], data), flush=True)
        self.request.sendall(data.upper())


def send(port: int, text: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(text.encode() + b"\n")
        reply = sock.recv(1024).decode()
    print("Sent:     {}".format(text))
    print("Received: {}".format(reply), flush=True)
    return reply


def main(argv: list) -> None:
    if argv[:1] == ["serve"]:
        port = int(argv[1]) if len(argv) > 1 else 9999
        with socketserver.TCPServer(("127.0.0.1", port), UpperCaseHandler) as server:
            signal.signal(signal.SIGTERM, signal.default_int_handler)  # stops it as Ctrl-C does
            try:
                print("serving on port", server.server_address[1], flush=True)
                server.serve_forever()
            except KeyboardInterrupt:
                pass
        return
    if argv[:1] == ["send"]:
        send(int(argv[1]), " ".join(argv[2:]) or "hello world")
        return
    with socketserver.TCPServer(("127.0.0.1", 0), UpperCaseHandler) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            for text in ("hello world", "netloop serves socketserver"):
                send(server.server_address[1], text)
        finally:
            server.shutdown()
            thread.join()


if __name__ == "__main__":
    main(sys.argv[1:])
