"""HTTPS and XML-RPC over TLS from netloop's socketserver servers (TLSMixIn), real clients."""

from __future__ import annotations

import http.client
import http.server
import logging
import socket
import ssl
import xmlrpc.client
import xmlrpc.server
from typing import Any

import pytest
from test_servers_support import no_leaks, serving

from netloop import socketserver as ss

import tlssupport

pytestmark = pytest.mark.usefixtures("no_leaks")
_ = no_leaks


class HTTPSServer(ss.TLSMixIn, ss.ThreadingTCPServer):  # type: ignore[name-defined,misc]
    daemon_threads = True


class SingleThreadHTTPSServer(ss.TLSMixIn, ss.TCPServer):  # type: ignore[name-defined,misc]
    pass


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = ("hello %s over %s" % (self.path, self.request.version())).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _get(port: int, path: str, context: ssl.SSLContext) -> bytes:
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200
        return resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("cls", [HTTPSServer, SingleThreadHTTPSServer])
def test_http_client_over_https(cls: Any) -> None:
    server = cls(("127.0.0.1", 0), Hello, context=tlssupport.server_context())
    with serving(server, 60.0):
        port = server.server_address[1]
        body = _get(port, "/a", tlssupport.client_context())
        assert body.startswith(b"hello /a over TLSv1.")
        # keep-alive: two requests on one connection
        conn = http.client.HTTPSConnection("localhost", port,
                                           context=tlssupport.client_context(), timeout=10)
        try:
            for path in ("/b", "/c"):
                conn.request("GET", path)
                assert conn.getresponse().read().startswith(b"hello " + path.encode())
        finally:
            conn.close()


def test_silent_client_does_not_hold_a_single_threaded_server(
        caplog: pytest.LogCaptureFixture) -> None:
    # The handshake runs on the loop: a client that connects and says nothing takes no
    # request slot, so the next client is served at once (socketserver's blocking handshake
    # in the handler would have hung here).
    server = SingleThreadHTTPSServer(("127.0.0.1", 0), Hello,
                                     context=tlssupport.server_context())
    server.tls_handshake_timeout = 0.3
    with caplog.at_level(logging.ERROR, logger="netloop"):
        with serving(server, 60.0):
            port = server.server_address[1]
            with socket.create_connection(("127.0.0.1", port)) as silent:
                assert _get(port, "/x", tlssupport.client_context()).startswith(b"hello /x")
                silent.settimeout(10)
                assert silent.recv(10) == b""  # closed by the handshake timeout
    assert any("timed out" in r.getMessage() for r in caplog.records), caplog.text


def test_client_failing_verification_is_logged_and_server_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    server = HTTPSServer(("127.0.0.1", 0), Hello, context=tlssupport.server_context())
    with caplog.at_level(logging.ERROR, logger="netloop"):
        with serving(server, 60.0):
            port = server.server_address[1]
            with pytest.raises(ssl.SSLCertVerificationError):
                _get(port, "/x", tlssupport.client_context("other_ca"))
            assert _get(port, "/y", tlssupport.client_context()).startswith(b"hello /y")


class XMLRPCServer(ss.TLSMixIn, xmlrpc.server.SimpleXMLRPCDispatcher,  # type: ignore[misc]
                   ss.TCPServer):
    """SimpleXMLRPCServer's set-up, with the context as a class-level option's instance value."""

    def __init__(self, addr: Any, context: ssl.SSLContext) -> None:
        self.logRequests = False
        self.ssl_context = context
        xmlrpc.server.SimpleXMLRPCDispatcher.__init__(self, False, None, False)
        ss.TCPServer.__init__(self, addr, xmlrpc.server.SimpleXMLRPCRequestHandler)


def test_xmlrpc_over_https() -> None:
    server = XMLRPCServer(("127.0.0.1", 0), tlssupport.server_context())
    server.register_function(lambda a, b: a + b, "add")
    with serving(server, 60.0):
        url = "https://localhost:%d/" % server.server_address[1]
        with xmlrpc.client.ServerProxy(url, context=tlssupport.client_context()) as proxy:
            assert proxy.add(2, 3) == 5


def test_handle_request_returns_after_the_tls_request() -> None:
    # handle_request() takes one request: with TLS it returns once that request (handshake
    # included) has been handled, not when the connection was accepted.
    import threading

    server = SingleThreadHTTPSServer(("127.0.0.1", 0), Hello,
                                     context=tlssupport.server_context())
    server.timeout = 20
    got = []
    try:
        th = threading.Thread(target=lambda: got.append(
            _get(server.server_address[1], "/once", tlssupport.client_context())))
        th.start()
        server.handle_request()
        th.join(20)
    finally:
        server.server_close()
    assert got and got[0].startswith(b"hello /once")
