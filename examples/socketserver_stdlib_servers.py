"""The standard library's servers on netloop: http.server, xmlrpc.server and wsgiref.

Their request handlers work with netloop's servers unchanged. The server classes subclass the
standard library's ``socketserver.TCPServer``, so each recipe rebuilds one on netloop's
``TCPServer`` with the same settings (a handful of lines). Here all three share one loop,
served by one ``serve_forever()``; the standard library's clients call them from a thread.

    python socketserver_stdlib_servers.py
"""

from __future__ import annotations

import http.client
import http.server
import os
import socket
import tempfile
import threading
import xmlrpc.client
import xmlrpc.server
from wsgiref import simple_server

import netloop
from netloop import socketserver


class HTTPServer(socketserver.ThreadingTCPServer):
    """http.server.ThreadingHTTPServer, on netloop."""

    allow_reuse_address = True

    def server_bind(self) -> None:
        super().server_bind()
        host, port = self.server_address[:2]
        self.server_name = socket.getfqdn(host)
        self.server_port = port


class WSGIServer(HTTPServer):
    """wsgiref.simple_server.WSGIServer, on netloop: its environ set-up and app slot."""

    application = None
    setup_environ = simple_server.WSGIServer.setup_environ
    get_app = simple_server.WSGIServer.get_app
    set_app = simple_server.WSGIServer.set_app

    def server_bind(self) -> None:
        super().server_bind()
        self.setup_environ()


class XMLRPCServer(xmlrpc.server.SimpleXMLRPCDispatcher, socketserver.TCPServer):
    """xmlrpc.server.SimpleXMLRPCServer, on netloop (same constructor, plus ``loop=``)."""

    allow_reuse_address = True
    _send_traceback_header = False

    def __init__(self, addr, requestHandler=xmlrpc.server.SimpleXMLRPCRequestHandler,
                 logRequests=True, allow_none=False, encoding=None, bind_and_activate=True,
                 use_builtin_types=False, loop=None):
        self.logRequests = logRequests
        xmlrpc.server.SimpleXMLRPCDispatcher.__init__(self, allow_none, encoding,
                                                      use_builtin_types)
        socketserver.TCPServer.__init__(self, addr, requestHandler, bind_and_activate, loop=loop)


def hello_app(environ, start_response):
    body = "Hello from WSGI, you asked for {}\n".format(environ["PATH_INFO"]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def main() -> None:
    root = tempfile.mkdtemp()
    with open(os.path.join(root, "index.txt"), "w") as f:
        f.write("a file served by http.server on netloop\n")

    class Files(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=root, **kwargs)

        def log_message(self, format, *args):
            pass

    class QuietWSGI(simple_server.WSGIRequestHandler):
        def log_message(self, format, *args):
            pass

    loop = netloop.Loop()
    web = HTTPServer(("127.0.0.1", 0), Files, loop=loop)
    wsgi = WSGIServer(("127.0.0.1", 0), QuietWSGI, loop=loop)
    wsgi.set_app(hello_app)
    rpc = XMLRPCServer(("127.0.0.1", 0), logRequests=False, loop=loop)
    rpc.register_function(pow, "pow")

    def clients() -> None:
        try:
            conn = http.client.HTTPConnection(*web.server_address, timeout=10)
            conn.request("GET", "/index.txt")
            print("http.server:", conn.getresponse().read().decode().strip())
            conn.close()
            conn = http.client.HTTPConnection(*wsgi.server_address, timeout=10)
            conn.request("GET", "/some/page")
            print("wsgiref    :", conn.getresponse().read().decode().strip())
            conn.close()
            with xmlrpc.client.ServerProxy("http://%s:%d/" % rpc.server_address) as proxy:
                print("xmlrpc     : pow(2, 10) =", proxy.pow(2, 10))
        finally:
            web.shutdown()  # from another thread: returns once serve_forever() has returned

    thread = threading.Thread(target=clients)
    thread.start()
    web.serve_forever()  # serves all three: they share the loop
    thread.join()
    for server in (web, wsgi, rpc):
        server.server_close()
    loop.close()
    os.unlink(os.path.join(root, "index.txt"))
    os.rmdir(root)


if __name__ == "__main__":
    main()
