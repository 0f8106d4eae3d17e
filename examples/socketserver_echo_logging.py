"""A logging echo server: every server and handler method says when it is called, so the
output shows the order socketserver's machinery calls them in, running on netloop's loop.

    python socketserver_echo_logging.py
"""

from __future__ import annotations

import logging
import socket
import threading

from netloop import socketserver

logging.basicConfig(level=logging.DEBUG, format="%(name)-8s %(message)s")


class EchoRequestHandler(socketserver.BaseRequestHandler):
    def __init__(self, request, client_address, server):
        self.logger = logging.getLogger("handler")
        self.logger.debug("__init__")
        super().__init__(request, client_address, server)

    def setup(self):
        self.logger.debug("setup")
        return super().setup()

    def handle(self):
        self.logger.debug("handle")
        data = self.request.recv(1024)
        self.logger.debug("recv()->%r", data)
        self.request.sendall(data)

    def finish(self):
        self.logger.debug("finish")
        return super().finish()


class EchoServer(socketserver.TCPServer):
    def __init__(self, server_address, handler_class=EchoRequestHandler):
        self.logger = logging.getLogger("server")
        self.logger.debug("__init__")
        super().__init__(server_address, handler_class)

    def server_activate(self):
        self.logger.debug("server_activate")
        super().server_activate()

    def serve_forever(self, poll_interval=0.5):
        self.logger.debug("serve_forever (until shutdown)")
        super().serve_forever(poll_interval)
        self.logger.debug("serve_forever returned")

    def get_request(self):
        request, address = super().get_request()
        self.logger.debug("get_request -> %s", address[0])
        return request, address

    def verify_request(self, request, client_address):
        self.logger.debug("verify_request")
        return super().verify_request(request, client_address)

    def process_request(self, request, client_address):
        self.logger.debug("process_request")
        return super().process_request(request, client_address)

    def finish_request(self, request, client_address):
        self.logger.debug("finish_request")
        return super().finish_request(request, client_address)

    def shutdown_request(self, request):
        self.logger.debug("shutdown_request")
        return super().shutdown_request(request)

    def close_request(self, request):
        self.logger.debug("close_request")
        return super().close_request(request)

    def shutdown(self):
        self.logger.debug("shutdown")
        super().shutdown()

    def server_close(self):
        self.logger.debug("server_close")
        return super().server_close()


def main() -> None:
    server = EchoServer(("127.0.0.1", 0))
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    log = logging.getLogger("client")
    log.debug("connecting")
    with socket.create_connection(server.server_address, timeout=10) as sock:
        message = b"Hello, world"
        log.debug("sending %r", message)
        sock.sendall(message)
        reply = sock.recv(1024)
        log.debug("received %r", reply)
    server.shutdown()
    thread.join()
    server.server_close()


if __name__ == "__main__":
    main()
