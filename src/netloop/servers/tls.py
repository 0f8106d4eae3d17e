"""TLS for socketserver servers: the handshake runs on the loop, the handler gets an SSLSocket.

``TLSMixIn`` goes first in the bases (``class S(TLSMixIn, ThreadingMixIn, TCPServer)``) and takes
``context=`` (an ``ssl.SSLContext`` with the server's certificate) or the class attribute
``ssl_context``. Each accepted connection is wrapped and its handshake driven by the server's loop
(``Dispatcher.start_tls``): a slow or silent client costs no thread and no blocked loop, and a
failed handshake is logged in one line and closed. Once the handshake is done, the request goes
down socketserver's usual path (``verify_request``, ``process_request``: in a thread with
``ThreadingMixIn``) as an ``ssl.SSLSocket`` in the mode socketserver gives requests (blocking, or
the default timeout), so ``StreamRequestHandler``, ``http.server`` and ``xmlrpc.server`` handlers
run over it unchanged. ``shutdown_request()`` sends close_notify before closing, without waiting.

``handle_request()`` returns once the request taken has been handled (or its handshake failed),
the handshake included, within ``timeout``.
"""

from __future__ import annotations

import ssl
from typing import Any, Optional, Set

from ..dispatcher import TLS_HANDSHAKE_TIMEOUT, Dispatcher

__all__ = ["TLSMixIn"]


class _Handshake(Dispatcher):
    """One accepted connection while its handshake runs on the server's loop."""

    def __init__(self, server: "TLSMixIn", request: Any, client_address: Any,
                 ticket: Any) -> None:
        self._server = server
        self._timeout = request.gettimeout()
        self._done = False
        # Under connection limits the handshake counts; the ticket follows the TLS socket.
        self._ticket = ticket
        Dispatcher.__init__(self, request, server._nl_map)  # type: ignore[attr-defined]
        self.addr = client_address
        server._nl_tls_pending().add(self)
        self.start_tls(server.ssl_context, server_side=True,  # type: ignore[arg-type]
                       handshake_timeout=server.tls_handshake_timeout)

    def handle_tls_established(self) -> None:
        server = self._server
        server._nl_tls_pending().discard(self)
        self._done = True
        server._nl_tls_settled()
        sslsock = self.socket.ssl_socket
        self.socket.detach_from_channel()
        self.del_channel()
        self.socket = None
        self.connected = False
        sslsock.settimeout(self._timeout)
        ticket, self._ticket = self._ticket, None
        server._nl_pass_on(sslsock, ticket)  # type: ignore[attr-defined]
        # socketserver's path for the request, now speaking TLS.
        super(TLSMixIn, server)._nl_process(sslsock, self.addr)  # type: ignore[misc]

    def handle_read(self) -> None:
        pass

    def handle_write(self) -> None:
        pass

    def handle_close(self) -> None:
        self.close()

    def close(self) -> None:
        self._server._nl_tls_pending().discard(self)
        if not self._done:
            self._done = True
            self._server._nl_tls_settled()
            try:
                Dispatcher.close(self)
            finally:
                ticket, self._ticket = self._ticket, None
                self._server._nl_release(ticket)  # type: ignore[attr-defined]


class TLSMixIn:
    """Serve socketserver requests over TLS (see the module documentation)."""

    #: The server's ``ssl.SSLContext`` (``context=`` sets it per instance).
    ssl_context: Optional[ssl.SSLContext] = None
    #: Seconds a client has to complete its handshake (None: no limit).
    tls_handshake_timeout: Optional[float] = TLS_HANDSHAKE_TIMEOUT

    _nl_handshakes: Optional[Set[_Handshake]] = None
    _nl_events: int  # BaseServer's count of requests taken by handle_request()

    def __init__(self, *args: Any, context: Optional[ssl.SSLContext] = None,
                 **kwargs: Any) -> None:
        if context is not None:
            self.ssl_context = context
        if self.ssl_context is None:
            raise ValueError("a TLS server needs context= (an ssl.SSLContext)")
        super().__init__(*args, **kwargs)

    def _nl_tls_pending(self) -> Set[_Handshake]:
        pending = self._nl_handshakes
        if pending is None:
            pending = self._nl_handshakes = set()
        return pending

    def _nl_process(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            raise ValueError("a TLS server needs an ssl_context")
        if getattr(self, "_nl_budget", None) is not None:
            # handle_request(): the request counts once its handshake has settled.
            self._nl_events -= 1
        ticket = self._nl_claim(request)  # type: ignore[attr-defined]
        try:
            _Handshake(self, request, client_address, ticket)
        except BaseException:
            self._nl_release(ticket)  # type: ignore[attr-defined]
            raise

    def _nl_tls_settled(self) -> None:
        if getattr(self, "_nl_budget", None) is not None:
            self._nl_events += 1

    def shutdown_request(self, request: Any) -> None:
        """Send close_notify (not waiting for the client's), then socketserver's shutdown."""
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(0.0)
                obj = getattr(request, "_sslobj", None)
                if obj is not None:
                    obj.shutdown()
            except (ssl.SSLError, OSError, ValueError):
                pass
        super().shutdown_request(request)  # type: ignore[misc]

    def server_close(self) -> None:
        """Close the connections still in their handshake, then the server."""
        for hs in list(self._nl_tls_pending()):
            hs.close()
        super().server_close()  # type: ignore[misc]
