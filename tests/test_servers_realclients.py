"""The standard library's servers built on socketserver, rebuilt on netloop's classes and
exercised by the standard library's own clients, with every byte checked.

Each recipe is a few lines: http.server's handler works with any netloop TCP server; the
XML-RPC and WSGI servers subclass the stdlib's ``socketserver.TCPServer``, so their other base
(the dispatcher, or the environ set-up) is combined with netloop's server instead.
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import os
import socket
import xmlrpc.client
import xmlrpc.server
from wsgiref import simple_server, validate

import pytest
from test_servers_support import no_leaks, serving

import netloop
from netloop import socketserver as ss

pytestmark = pytest.mark.usefixtures("no_leaks")
_ = no_leaks


class NetloopHTTPServer(ss.ThreadingTCPServer):
    """http.server.ThreadingHTTPServer's settings on netloop."""

    allow_reuse_address = True

    def server_bind(self):
        super().server_bind()
        host, port = self.server_address[:2]
        self.server_name = socket.getfqdn(host)
        self.server_port = port


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class NetloopXMLRPCServer(xmlrpc.server.SimpleXMLRPCDispatcher, ss.TCPServer):
    """xmlrpc.server.SimpleXMLRPCServer with netloop's TCPServer as its server half."""

    allow_reuse_address = True
    _send_traceback_header = False

    def __init__(self, addr, requestHandler=xmlrpc.server.SimpleXMLRPCRequestHandler,
                 logRequests=True, allow_none=False, encoding=None, bind_and_activate=True,
                 use_builtin_types=False, **netloop_options):
        self.logRequests = logRequests
        xmlrpc.server.SimpleXMLRPCDispatcher.__init__(self, allow_none, encoding,
                                                      use_builtin_types)
        ss.TCPServer.__init__(self, addr, requestHandler, bind_and_activate, **netloop_options)


class NetloopWSGIServer(NetloopHTTPServer):
    """wsgiref.simple_server.WSGIServer's environ set-up and app slot, on netloop."""

    application = None
    setup_environ = simple_server.WSGIServer.setup_environ
    get_app = simple_server.WSGIServer.get_app
    set_app = simple_server.WSGIServer.set_app

    def server_bind(self):
        super().server_bind()
        self.setup_environ()


class QuietWSGIHandler(simple_server.WSGIRequestHandler):
    def log_message(self, format, *args):
        pass


def test_http_server_serves_files_to_http_client(tmp_path):
    payload = os.urandom(300_000)
    (tmp_path / "blob.bin").write_bytes(payload)
    (tmp_path / "hello.txt").write_text("hello, netloop\n")

    def handler(*args, **kwargs):
        return QuietFiles(*args, directory=str(tmp_path), **kwargs)

    server = NetloopHTTPServer(("127.0.0.1", 0), handler)
    with serving(server, 60.0):
        host, port = server.server_address
        for _ in range(3):
            conn = http.client.HTTPConnection(host, port, timeout=10)
            try:
                conn.request("GET", "/blob.bin")
                resp = conn.getresponse()
                body = resp.read()
                assert resp.status == 200
                assert int(resp.getheader("Content-Length")) == len(payload)
                assert hashlib.sha256(body).digest() == hashlib.sha256(payload).digest()
                conn.request("GET", "/hello.txt")
                resp = conn.getresponse()
                assert resp.read() == b"hello, netloop\n"
                assert resp.getheader("Content-Type").startswith("text/plain")
                conn.request("GET", "/missing")
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 404
            finally:
                conn.close()


def test_http_server_on_a_shared_loop_with_keep_alive(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"A" * 1000)

    class KeepAlive(QuietFiles):
        protocol_version = "HTTP/1.1"

        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

    lp = netloop.Loop()
    try:
        server = NetloopHTTPServer(("127.0.0.1", 0), KeepAlive, loop=lp)
        with serving(server, 60.0):
            conn = http.client.HTTPConnection(*server.server_address, timeout=10)
            try:
                for _ in range(5):  # one connection, five requests
                    conn.request("GET", "/a.txt")
                    assert conn.getresponse().read() == b"A" * 1000
            finally:
                conn.close()
    finally:
        lp.close()


def test_xmlrpc_server_called_through_xmlrpc_client():
    server = NetloopXMLRPCServer(("127.0.0.1", 0), logRequests=False, allow_none=True)
    server.register_function(lambda a, b: a + b, "add")
    server.register_function(lambda data: hashlib.sha256(data.data).hexdigest(), "digest")
    server.register_function(lambda: None, "nothing")
    server.register_introspection_functions()
    blob = os.urandom(50_000)
    with serving(server, 60.0):
        url = "http://%s:%d/" % server.server_address
        with xmlrpc.client.ServerProxy(url, allow_none=True) as proxy:
            assert proxy.add(2, 3) == 5
            assert proxy.add("net", "loop") == "netloop"
            assert proxy.digest(xmlrpc.client.Binary(blob)) == hashlib.sha256(blob).hexdigest()
            assert proxy.nothing() is None
            assert "add" in proxy.system.listMethods()
            with pytest.raises(xmlrpc.client.Fault):
                proxy.no_such_method()


def test_wsgiref_app_served_to_http_client():
    def app(environ, start_response):
        body = json.dumps({
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"],
            "body": environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            .decode(),
            "server": environ["SERVER_PORT"],
        }).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    server = NetloopWSGIServer(("127.0.0.1", 0), QuietWSGIHandler)
    server.set_app(validate.validator(app))
    with serving(server, 60.0):
        host, port = server.server_address
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("POST", "/items/7?x=1", body=b"payload",
                         headers={"Content-Type": "text/plain"})
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("Content-Type") == "application/json"
            assert json.loads(resp.read()) == {"method": "POST", "path": "/items/7",
                                               "query": "x=1", "body": "payload",
                                               "server": str(port)}
        finally:
            conn.close()
