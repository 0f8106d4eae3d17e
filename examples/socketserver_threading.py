"""ThreadingMixIn on netloop: each request runs in its own thread while the loop goes on.

The handler tells which thread served it; three clients get three different threads. The loop
itself (``serve_forever``) runs in one more thread, and ``shutdown()`` stops it at once.

    python socketserver_threading.py
"""

from __future__ import annotations

import socket
import threading

from netloop import socketserver


class ThreadReportingHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request.recv(1024)
        name = threading.current_thread().name
        self.request.sendall("{}: {}".format(name, data.decode()).encode())


class ThreadedServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """The mixin comes first: its process_request() starts a thread per request."""


def client(address: tuple, message: str) -> str:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(message.encode())
        reply = sock.recv(1024).decode()
    print("Received: {}".format(reply), flush=True)
    return reply


def main() -> None:
    server = ThreadedServer(("127.0.0.1", 0), ThreadReportingHandler)
    with server:
        loop_thread = threading.Thread(target=server.serve_forever, name="netloop-loop")
        loop_thread.start()
        print("Server loop running in thread:", loop_thread.name, flush=True)
        try:
            for n in (1, 2, 3):
                client(server.server_address, "Hello World {}".format(n))
        finally:
            server.shutdown()
            loop_thread.join()


if __name__ == "__main__":
    main()
