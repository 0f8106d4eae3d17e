"""The command line: ``python -m netloop demo`` and ``python -m netloop echo``.

``demo`` runs an echo server and a short built-in load on one loop, then prints what it did.
``echo`` runs a reference echo server until Ctrl-C or SIGTERM, printing its address when ready.
Both speak TLS on request (``echo --tls-cert FILE --tls-key FILE``, ``demo --tls``): the
handshakes run on the loop (``Dispatcher.start_tls``, ``netloop.servers.tls.TLSMixIn``).

Errors a user can make (a bad option value, a port in use, a host that does not resolve) end the
command with one line on stderr and exit status 2, never a traceback. To add an option: one
``add_argument()`` in ``_demo_parser()`` or ``_echo_parser()`` with a ``help=`` text (the default
is appended to it), a ``type=`` converter from the ``_check_*`` family when the value has bounds
(it raises ``argparse.ArgumentTypeError``, which argparse reports on one line), and the value
passed on in ``_run_demo()``/``_run_echo()``. Failures found after parsing (opening a file,
binding) raise ``UsageError``, which ``main()`` reports the same way.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time

from .buffered import BufferedDispatcher
from .dispatcher import Dispatcher
from .pollers import available
from .reactor import Loop

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple

# argparse and signal are imported where they are used: ``import netloop.cli`` stays light for
# programs that import EchoServer or demo() (tests/test_imports.py).

__all__ = ["main", "demo", "echo", "EchoHandler", "EchoServer", "UsageError"]

# EchoHandler.handle_read() sends on a plain socket with os.write() on its descriptor.
_write = os.write
_plain_socket = socket.socket

PROG = "python -m netloop"
KINDS = ["dispatcher", "chat", "socketserver"]


class UsageError(Exception):
    """A mistake on the command line found after parsing (a port in use, a host that does not
    resolve): ``main()`` prints it as one line on stderr and exits with status 2."""


class EchoHandler(BufferedDispatcher):
    """Sends back every byte it receives.

    It reads into the loop's shared 128 KiB buffer (``recv_view()``) and sends from it: on a
    bulk stream that is one read and one send per 128 KiB, with no object made for the bytes.
    What the socket does not take at once is copied into the output queue (by ``send()``).

    A connection its peer resets is closed without a read (``handle_close()`` alone): bytes
    that peer sent just before the reset are not read, as no echo can reach it any more.
    A subclass that overrides ``handle_read()``, ``recv_view()`` or ``send()`` reads a reset
    connection as any dispatcher does.
    """

    _nl_close_on_reset = True  # see Dispatcher

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass that overrides recv_view() or send() (and not handle_read()) gets them
        # called: the in-line handle_read() below would go round them.
        if "handle_read" not in cls.__dict__ and (cls.recv_view is not EchoHandler.recv_view
                                                  or cls.send is not EchoHandler.send):
            cls.handle_read = EchoHandler._handle_read_by_methods  # type: ignore[method-assign]
        if cls.handle_read is not EchoHandler.handle_read:
            cls._nl_close_on_reset = False  # it reads its own way: let it find the reset

    def _handle_read_by_methods(self) -> None:
        # None given, not defaulted: CPython 3.13 makes a call with every argument given
        # faster (no default filled in).
        data = self.recv_view(None)
        if data:
            self.send(data)

    def handle_read(self) -> None:
        # recv_view() and send() in line, for the usual case (the loop's read buffer exists,
        # nothing is queued): one Python call per echo instead of three, about 1,400
        # instructions of a ping-pong request's 7,700 (benchmarks/README.md). The rare cases
        # take the methods themselves, and failures the helpers they use, so behaviour is
        # theirs.
        lp = self._nl_loop
        try:
            view = lp._read_view
        except AttributeError:  # not served by a loop (a handler called by hand)
            view = None
        if view is None or self._outq:
            self._handle_read_by_methods()
            return
        sock = self.socket
        try:
            got = sock.recv_into(view)
        except OSError as why:
            self._nl_read_failed(why)
            return
        if not got:
            self._nl_read_eof()
            return
        # The view of what was read: the loop keeps the last one made, and a read of the same
        # length (every request of a ping-pong client) sends it again rather than slicing the
        # buffer anew: ~500 instructions of a 6,000-instruction request (bench_insn.py pp-cli).
        # The slice never leaves this method (what the socket does not take is copied).
        if got == lp._read_cut_len:
            data = lp._read_cut
        else:
            data = lp._read_cut = view[:got]
            lp._read_cut_len = got
        fd = self._fileno  # None once the channel is off its map (handle_read() by hand)
        try:
            if fd is not None and type(sock) is _plain_socket:
                # write(2) on the socket's own descriptor: the kernel's send path, the same
                # errors, without socket.send()'s argument parsing and timeout handling (a
                # channel's socket is non-blocking): ~290 instructions of a ping-pong
                # request's 6,150 (bench_insn.py pp-cli). A TLS socket sends by its method.
                sent = _write(fd, data)
            else:
                sent = sock.send(data)
        except OSError as why:
            if self._nl_send_failed(why):
                return
            sent = 0
        if self._nl_idle is not None:
            self._nl_last = self._nl_idle._queue.clock()
        if sent < got:
            self._nl_queue_rest(data, sent, got)

    def handle_close(self) -> None:
        self.close()


class EchoServer(Dispatcher):
    """Listens and makes an ``EchoHandler`` of each connection."""

    # Instance attributes only, read for every connection (a class default would be read the
    # slow way on 3.11, and shadow the instance's on 3.12+; see Dispatcher's class body).
    #: The channel class made for each connection (``EchoHandler`` unless set).
    handler_class: Any
    #: An ``ssl.SSLContext``: each connection speaks TLS (its handshake runs on the loop).
    tls_context: Any

    def __init__(self, host: str, port: int, map: Any, backlog: int = 1024) -> None:
        Dispatcher.__init__(self, map=map)
        self.handler_class = EchoHandler
        self.tls_context = None
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.create_socket(family)
        self.set_reuse_addr()
        self.bind((host, port))
        self.listen(backlog)
        self.address = self.socket.getsockname()[:2]

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        handler = self.handler_class(sock, self._map)  # positional: no keyword dict per call
        if self.tls_context is not None:
            handler.start_tls(self.tls_context, server_side=True)


class _LoadClient(BufferedDispatcher):
    """One demo connection: sends a message, waits for its echo, repeats until told to stop."""

    def __init__(self, address: Any, map: Any, payload: bytes, stats: "_Stats",
                 tls_context: Any = None) -> None:
        BufferedDispatcher.__init__(self, map=map)
        self.payload = payload
        self.stats = stats
        self.pending = len(payload)
        self.create_socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        self.connect(address)
        if tls_context is not None:
            self.start_tls(tls_context)  # handle_connect()'s send waits for the handshake

    def handle_connect(self) -> None:
        self.send(self.payload)

    def handle_read(self) -> None:
        data = self.recv(65536)
        if not data:
            return
        self.pending -= len(data)
        if self.pending <= 0:
            self.stats.messages += 1
            if self.stats.running:
                self.pending = len(self.payload)
                self.send(self.payload)
            else:
                self.close()

    def handle_close(self) -> None:
        self.close()


class _Stats:
    messages = 0
    running = True


def demo(backend: str = "auto", connections: int = 50, seconds: float = 2.0,
         size: int = 64, out: Any = None, *, tls: bool = False, tls_cert: Optional[str] = None,
         tls_key: Optional[str] = None) -> Dict[str, Any]:
    """Run an echo server and ``connections`` clients on one loop for ``seconds``.

    Each client sends a ``size``-byte message, waits for its echo and sends again until the time
    is up; the result (also printed to ``out``) counts the round trips and the CPU they took.
    ``ValueError`` for a count or size below 1, or a negative or non-finite duration.

    ``tls``: every connection speaks TLS, with ``tls_cert``/``tls_key`` or, without them, a
    throw-away self-signed certificate (made with the ``openssl`` command, or ``cryptography``
    if it is installed); ``UsageError`` when neither is available.
    """
    if connections < 1:
        raise ValueError("connections must be at least 1, not %r" % (connections,))
    if size < 1:
        raise ValueError("size must be at least 1 byte, not %r" % (size,))
    if not (seconds >= 0 and math.isfinite(seconds)):
        raise ValueError("seconds must be a finite number >= 0, not %r" % (seconds,))
    out = out or sys.stdout
    server_ctx = client_ctx = None
    if tls:
        server_ctx, client_ctx = _demo_tls_contexts(tls_cert, tls_key)
    loop = Loop(poller=None if backend == "auto" else backend)
    try:
        server = EchoServer("127.0.0.1", 0, loop.map)
        server.tls_context = server_ctx
        stats = _Stats()
        payload = bytes(range(256))[:size] * (size // 256 + 1)
        payload = payload[:size]
        for _ in range(connections):
            _LoadClient(server.address, loop.map, payload, stats, client_ctx)
        start = time.perf_counter()
        cpu0 = time.process_time()

        def finish() -> None:
            stats.running = False

        loop.call_later(seconds, finish)
        # Serve until the clients have drained and closed: the server alone remains.
        while len(loop.map) > 1 or loop._timers:
            loop.run_once(0.5)
            if time.perf_counter() - start > seconds + 10:
                break
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        server.close()
        result: Dict[str, Any] = {
            "backend": loop.poller.name,
            "connections": connections,
            "messages": stats.messages,
            "message_bytes": size,
            "seconds": round(elapsed, 3),
            "round_trips_per_s": round(stats.messages / elapsed) if elapsed else 0,
            "cpu_us_per_round_trip": (round(cpu / stats.messages * 1e6, 2) if stats.messages
                                      else None),
            "tls": bool(tls),
        }
    finally:
        for obj in list(loop.map.values()):
            obj.close()
        loop.close()
    print("netloop demo: echo server and %d clients on one loop (backend: %s%s)"
          % (connections, result["backend"], ", TLS" if tls else ""), file=out)
    print("  %d round trips of %d bytes in %.2fs: %d round trips/s, %.1f MB/s each way"
          % (result["messages"], size, result["seconds"], result["round_trips_per_s"],
             result["messages"] * size / result["seconds"] / 1e6 if result["seconds"] else 0.0),
          file=out)
    cpu_us = result["cpu_us_per_round_trip"]
    print("  CPU per round trip (server and clients together): %s"
          % ("n/a (no round trip completed)" if cpu_us is None else "%s us" % cpu_us), file=out)
    return result


def _line_echo_class() -> Any:
    """The chat kind's handler: an asynchat channel that echoes each line."""
    from .asynchat import async_chat

    class LineEcho(async_chat):
        # A server facing the network: bound a line (the drop-in's default is asynchat's
        # unbounded buffer) and the replies queued for a client that does not read.
        max_buffer = 1 << 20
        # A reset connection is closed without a read, as EchoHandler's: no line can be
        # echoed to a peer that is gone.
        _nl_close_on_reset = True

        def __init__(self, sock: socket.socket, map: Any) -> None:
            async_chat.__init__(self, sock, map=map)
            self.set_write_buffer_limits()  # 256 KiB / 64 KiB: stop reading a non-reader
            self.set_terminator(b"\n")
            self.lines: List[bytes] = []

        def collect_incoming_data(self, data: bytes) -> None:
            self.lines.append(data)

        def found_terminator(self) -> None:
            line = b"".join(self.lines)
            self.lines = []
            self.push(line + b"\n")

    return LineEcho


def _socketserver_classes() -> Any:
    """The socketserver kind's ``(Handler, Server)``."""
    from . import socketserver as ss

    class Handler(ss.StreamRequestHandler):
        def handle(self) -> None:
            try:
                while True:
                    data = self.request.recv(65536)
                    if not data:
                        return
                    self.request.sendall(data)
            except OSError:
                # A client that resets is an ordinary end for an echo server; over TLS the
                # reset can surface as ssl.SSLError (SSLEOFError on 3.11), not ConnectionError.
                return

    class Server(ss.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = 1024  # the stdlib's 5 drops SYNs under a connect storm
        block_on_close = False     # exit on SIGTERM without joining every client thread

    return Handler, Server


def _tls_server_context(cert: Optional[str], key: Optional[str]) -> Any:
    """The ``ssl.SSLContext`` of ``--tls-cert``/``--tls-key`` (``UsageError`` if unusable)."""
    if cert is None:
        if key is not None:
            raise UsageError("--tls-key needs --tls-cert")
        return None
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # A client that half-closes (FIN without close_notify) while its echo is still queued:
    # OpenSSL 3 otherwise answers the EOF with a fatal decode_error alert and every queued
    # byte is lost; with this option the EOF is a plain end of input and the queue drains.
    ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as err:
        raise UsageError("cannot load the TLS certificate %s%s: %s"
                         % (cert, " and key %s" % key if key else "",
                            getattr(err, "strerror", None) or err)) from None
    return ctx


def _demo_tls_contexts(cert: Optional[str], key: Optional[str]) -> Any:
    """``(server, client)`` contexts for ``demo --tls``; the client checks nothing (a demo
    measures the cost of TLS, and the certificate may be a throw-away one)."""
    import os
    import shutil
    import ssl
    import subprocess
    import tempfile

    tmp = None
    try:
        if cert is None:
            tmp = tempfile.mkdtemp(prefix="netloop-demo-")
            cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
            if not _self_signed_with_cryptography(cert, key):
                openssl = shutil.which("openssl")
                if openssl is None:
                    raise UsageError("demo --tls needs --tls-cert/--tls-key, or the openssl "
                                     "command (or the cryptography package) to make a "
                                     "throw-away certificate")
                subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                                "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                               check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        server = _tls_server_context(cert, key)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return server, client


def _self_signed_with_cryptography(cert: str, key: str) -> bool:
    try:
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        return False
    pkey = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    crt = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
           .public_key(pkey.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(now - datetime.timedelta(hours=1))
           .not_valid_after(now + datetime.timedelta(days=1))
           .sign(pkey, hashes.SHA256()))
    with open(key, "wb") as f:
        f.write(pkey.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    with open(cert, "wb") as f:
        f.write(crt.public_bytes(serialization.Encoding.PEM))
    return True


def _make_echo(kind: str, host: str, port: int, loop: Loop, tls_context: Any = None) -> Any:
    if kind == "dispatcher":
        server = EchoServer(host, port, loop.map)
        server.tls_context = tls_context
        return server
    if kind == "chat":
        server = EchoServer(host, port, loop.map)
        server.handler_class = _line_echo_class()
        server.tls_context = tls_context
        return server
    if kind == "socketserver":
        Handler, Server = _socketserver_classes()
        if tls_context is not None:
            from .servers.tls import TLSMixIn

            class TLSServer(TLSMixIn, Server):  # type: ignore[misc,valid-type]
                pass
            return TLSServer((host, port), Handler, map=loop.map, context=tls_context)
        return Server((host, port), Handler, map=loop.map)
    raise ValueError("unknown kind %r" % kind)


def echo(host: str = "127.0.0.1", port: int = 0, backend: str = "auto",
         kind: str = "dispatcher", *, workers: Optional[int] = None,
         proxy_protocol: bool = False, log_peers: bool = False, grace: float = 10.0,
         tls_cert: Optional[str] = None, tls_key: Optional[str] = None) -> int:
    """Serve echo on ``host``:``port`` until SIGTERM or SIGINT; print the address when ready.

    ``workers``: that many worker processes under a supervisor (``netloop.workers``), which
    stop gracefully within ``grace`` seconds. ``proxy_protocol``: every connection starts with
    a PROXY header (v1 or v2, ``netloop.proxy``). ``log_peers``: print each client's address
    (after the PROXY header). When ``LISTEN_FDS`` passes sockets to this process (systemd
    socket activation), those are served instead of ``host``:``port``. ``tls_cert`` (PEM,
    with the key unless ``tls_key`` names it): every connection speaks TLS (after the PROXY
    header, if any).

    ``UsageError`` when the server cannot listen there (port in use or out of range, a host
    that does not resolve, an address of the wrong kind).
    """
    import os

    tls_context = _tls_server_context(tls_cert, tls_key)
    if workers or proxy_protocol or log_peers or os.environ.get("LISTEN_FDS"):
        return _echo_scaled(host, port, backend, kind, workers, proxy_protocol, log_peers,
                            grace, tls_context)

    loop = Loop(poller=None if backend == "auto" else backend)
    try:
        try:
            server = _make_echo(kind, host, port, loop, tls_context)
        except (OSError, OverflowError) as err:
            # gaierror is an OSError; bind() raises OverflowError for a port over 65535.
            raise UsageError("cannot listen on %s port %s: %s"
                             % (host, port, getattr(err, "strerror", None) or err)) from None
    except BaseException:
        for obj in list(loop.map.values()):
            obj.close()
        loop.close()
        raise
    address = getattr(server, "address", None) or server.server_address[:2]
    _stop_on_signals(loop)
    print("netloop echo (%s, backend %s%s) listening on %s:%d"
          % (kind, loop.poller.name, ", TLS" if tls_context is not None else "", address[0],
             address[1]), flush=True)
    try:
        loop.run_forever()
    finally:
        _close_servers(loop, [server])
    print("netloop echo: stopped", flush=True)
    return 0


def _stop_on_signals(loop: Loop) -> None:
    """SIGTERM and SIGINT stop the loop, but one ignored when the server started stays so
    (``nohup``, a background job of a non-interactive shell)."""
    import signal

    from .services import ignored_signals

    ignored = ignored_signals(signal.SIGTERM, signal.SIGINT)
    for signum in (signal.SIGTERM, signal.SIGINT):
        if signum not in ignored:
            loop.add_signal_handler(signum, loop.stop)


def _close_servers(loop: Loop, servers: List[Any]) -> None:
    """Close socketserver servers, every channel left in the loop's map, then the loop."""
    for server in servers:
        if hasattr(server, "server_close"):
            server.server_close()
    for obj in list(loop.map.values()):
        obj.close()
    loop.close()


# ---------------------------------------------------------------- workers, activation, PROXY
# The plain echo above stays as light as it was (the benchmarks measure it); these modules are
# imported only when one of their options is used.

def _address_text(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        return ("[%s]:%d" if ":" in str(addr[0]) else "%s:%d") % (addr[0], addr[1])
    return str(addr) or "(unnamed)"


def _make_echo_on(kind: str, sock: socket.socket, loop: Loop, proxy_protocol: bool,
                  log_peers: bool, who: str = "", tls_context: Any = None) -> Any:
    """An echo server of ``kind`` serving the listening socket ``sock`` on ``loop``."""
    from . import activation, proxy

    def peer(addr: Any) -> None:
        if log_peers:
            print("netloop echo%s: peer %s" % (who, _address_text(addr)), flush=True)

    if kind in ("dispatcher", "chat"):
        handler = EchoHandler if kind == "dispatcher" else _line_echo_class()

        class Adopted(EchoServer):
            def __init__(self) -> None:  # no bind: the socket is given
                Dispatcher.__init__(self, map=loop.map)
                self.handler_class = handler
                activation.adopt_listener(self, sock)
                self.address = sock.getsockname()

            def handle_accepted(self, conn: socket.socket, addr: Any) -> None:
                peer(addr)
                channel = self.handler_class(conn, map=self._map)
                if tls_context is not None:
                    channel.start_tls(tls_context, server_side=True)

        if proxy_protocol:
            class ProxyAdopted(proxy.ProxyProtocolListener, Adopted):
                pass
            return ProxyAdopted()
        return Adopted()
    if kind == "socketserver":
        Handler, Server = _socketserver_classes()
        bases: Tuple[Any, ...] = ((proxy.ProxyProtocolServerMixIn, Server) if proxy_protocol
                                  else (Server,))
        if tls_context is not None:
            from .servers.tls import TLSMixIn
            bases = bases[:-1] + (TLSMixIn, Server)  # TLS after the PROXY header

        def verify_request(self: Any, request: Any, client_address: Any) -> bool:
            peer(client_address)
            return True

        cls = type("Server", bases, {"verify_request": verify_request,
                                     "ssl_context": tls_context})
        server = cls(sock.getsockname(), Handler, bind_and_activate=False, map=loop.map)
        activation.adopt_server_socket(server, sock)
        return server
    raise ValueError("unknown kind %r" % kind)


def _listen_on(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except (OSError, OverflowError) as err:
        sock.close()
        raise UsageError("cannot listen on %s port %s: %s"
                         % (host, port, getattr(err, "strerror", None) or err)) from None
    return sock


def _passed_listeners() -> List[socket.socket]:
    """Listening stream sockets passed by socket activation (LISTEN_FDS), if any."""
    import logging

    from . import activation
    try:
        passed = activation.activated_sockets()
    except ValueError as err:
        raise UsageError("socket activation: %s" % err) from None
    listeners = []
    for sock in passed:
        if sock.type == socket.SOCK_STREAM and activation.is_listening(sock):
            listeners.append(sock)
        else:
            logging.getLogger("netloop").warning(
                "netloop echo: passed descriptor %d is not a listening stream socket; "
                "ignored", sock.fileno())
            sock.close()
    if passed and not listeners:
        raise UsageError("socket activation passed no listening stream socket")
    return listeners


def _echo_scaled(host: str, port: int, backend: str, kind: str, workers: Optional[int],
                 proxy_protocol: bool, log_peers: bool, grace: float,
                 tls_context: Any = None) -> int:
    import logging

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s netloop[%(process)d] %(message)s")
    poller = None if backend == "auto" else backend
    listeners = _passed_listeners()
    source = "passed socket" if listeners else "listening"
    if workers:
        from .workers import Supervisor

        def setup(worker: Any) -> None:
            for sock in worker.sockets:
                server = _make_echo_on(kind, sock, worker.loop, proxy_protocol, log_peers,
                                       " worker %d" % worker.index, tls_context)
                if kind == "socketserver":
                    # A worker's graceful stop waits for its connections: a request thread is
                    # one only if it is not a daemon (the worker leaves with os._exit(), so
                    # one still running after the grace period does not hold it).
                    server.daemon_threads = False

        supervisor = Supervisor(workers, setup, address=None if listeners else (host, port),
                                sockets=listeners, grace=grace, poller=poller)
        try:
            addresses = supervisor.listen()
        except (OSError, OverflowError) as err:
            raise UsageError("cannot listen on %s port %s: %s"
                             % (host, port, getattr(err, "strerror", None) or err)) from None
        for addr in addresses:
            print("netloop echo (%s, %d workers, %s) %s on %s"
                  % (kind, workers, ("PROXY protocol" if proxy_protocol else "plain")
                     + (", TLS" if tls_context is not None else ""), source,
                     _address_text(addr)), flush=True)
        status = supervisor.run()
        print("netloop echo: stopped", flush=True)
        return status
    loop = Loop(poller=poller)
    servers: List[Any] = []
    try:
        socks = listeners or [_listen_on(host, port)]
        for sock in socks:
            servers.append(_make_echo_on(kind, sock, loop, proxy_protocol, log_peers,
                                         tls_context=tls_context))
        _stop_on_signals(loop)
        for sock in socks:
            print("netloop echo (%s, backend %s, %s) %s on %s"
                  % (kind, loop.poller.name, ("PROXY protocol" if proxy_protocol else "plain")
                     + (", TLS" if tls_context is not None else ""), source,
                     _address_text(sock.getsockname())), flush=True)
        loop.run_forever()
    finally:
        _close_servers(loop, servers)
    print("netloop echo: stopped", flush=True)
    return 0


# ---------------------------------------------------------------- the parser
# Values are checked where argparse converts them (type=), so a bad one is reported like any
# other usage error: one line, status 2.

def _check_port(text: str) -> int:
    port = _int(text)
    if not 0 <= port <= 65535:
        raise _type_error("%s is not a port number (0 to 65535; 0 picks a free port)" % text)
    return port


def _check_count(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise _type_error("must be at least 1, not %s" % text)
    return value


def _check_workers(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise _type_error("must be 0 (no worker processes) or more, not %s" % text)
    return value


def _check_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _type_error("%r is not a number of seconds" % text) from None
    if not (value >= 0 and math.isfinite(value)):
        raise _type_error("must be a number of seconds >= 0, not %s" % text)
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _type_error("%r is not a whole number" % text) from None


def _type_error(message: str) -> Exception:
    import argparse
    return argparse.ArgumentTypeError(message)


def _formatter(prog: str) -> argparse.HelpFormatter:
    """Help that shows each option's default after its text."""
    import argparse
    return argparse.ArgumentDefaultsHelpFormatter(prog, max_help_position=30)


def _demo_parser(sub: Any, backends: List[str]) -> None:
    p = sub.add_parser("demo", help="run an echo server and a short built-in load, then report",
                       formatter_class=_formatter,
                       description="Run an echo server and a built-in load of clients on one "
                                   "loop for a while, then print round trips per second and "
                                   "CPU time per round trip.")
    p.add_argument("--backend", default="auto", choices=backends,
                   help="poller to use (auto: the best this platform has)")
    p.add_argument("--connections", type=_check_count, default=50, metavar="N",
                   help="client connections, each with one message in flight")
    p.add_argument("--seconds", type=_check_seconds, default=2.0, metavar="S",
                   help="how long the clients keep sending")
    p.add_argument("--size", type=_check_count, default=64, metavar="BYTES",
                   help="size of each message")
    p.add_argument("--tls", action="store_true",
                   help="every connection speaks TLS (a throw-away certificate unless "
                        "--tls-cert is given)")
    p.add_argument("--tls-cert", metavar="FILE", default=None,
                   help="with --tls: the server's certificate chain (PEM)")
    p.add_argument("--tls-key", metavar="FILE", default=None,
                   help="with --tls: the private key (PEM), if not in --tls-cert")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    if (args.tls_cert or args.tls_key) and not args.tls:
        raise UsageError("--tls-cert/--tls-key need --tls")
    demo(args.backend, args.connections, args.seconds, args.size, tls=args.tls,
         tls_cert=args.tls_cert, tls_key=args.tls_key)
    return 0


def _echo_parser(sub: Any, backends: List[str]) -> None:
    p = sub.add_parser("echo", help="run an echo server until Ctrl-C or SIGTERM",
                       formatter_class=_formatter,
                       description="Run an echo server until Ctrl-C or SIGTERM. It prints "
                                   "'listening on HOST:PORT' once it accepts connections. "
                                   "Started by systemd socket activation (LISTEN_FDS), it "
                                   "serves the sockets passed instead of --host/--port.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address or host name to listen on (an IPv6 address listens on IPv6)")
    p.add_argument("--port", type=_check_port, default=0,
                   help="TCP port to listen on; 0 picks a free one")
    p.add_argument("--backend", default="auto", choices=backends,
                   help="poller to use (auto: the best this platform has)")
    p.add_argument("--kind", default="dispatcher", choices=KINDS,
                   help="server to run: a Dispatcher, a line-echoing asynchat channel, or a "
                        "socketserver ThreadingTCPServer on the loop")
    p.add_argument("--workers", type=_check_workers, default=0, metavar="N",
                   help="run N worker processes, each with its own loop, on one port "
                        "(SO_REUSEPORT where the kernel balances it), restarted if they die; "
                        "SIGTERM stops them gracefully, SIGHUP restarts them; 0: one "
                        "process, no supervisor")
    p.add_argument("--grace", type=_check_seconds, default=10.0, metavar="S",
                   help="with --workers: seconds open connections get to finish on SIGTERM "
                        "or SIGHUP")
    p.add_argument("--proxy-protocol", action="store_true",
                   help="expect a PROXY protocol header (v1 or v2, as HAProxy's send-proxy "
                        "writes) on every connection; refuse connections without one")
    p.add_argument("--log-peers", action="store_true",
                   help="print each client's address (with --proxy-protocol: the one the "
                        "header gives)")
    p.add_argument("--tls-cert", metavar="FILE", default=None,
                   help="serve TLS with this certificate chain (PEM; handshakes run on the loop)")
    p.add_argument("--tls-key", metavar="FILE", default=None,
                   help="the private key (PEM) of --tls-cert, if not in that file")
    p.set_defaults(run=_run_echo)


def _run_echo(args: argparse.Namespace) -> int:
    return echo(args.host, args.port, args.backend, args.kind, workers=args.workers,
                proxy_protocol=args.proxy_protocol, log_peers=args.log_peers,
                grace=args.grace, tls_cert=args.tls_cert, tls_key=args.tls_key)


def _parser() -> argparse.ArgumentParser:
    import argparse

    from . import __version__

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            # One line, not usage plus error: the command is short enough to find in --help.
            self.exit(2, "%s: error: %s (see --help)\n" % (self.prog, message))

    backends = ["auto"] + available()
    parser = Parser(prog=PROG, formatter_class=_formatter,
                    description="netloop %s: a fast single-threaded event loop for Python "
                                "networking. Try the demo, or run an echo server."
                                % __version__)
    parser.add_argument("--version", action="version", version="netloop %s" % __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add in (_demo_parser, _echo_parser):
        add(sub, backends)
    return parser


def _plain_echo(argv: List[str]) -> Optional[Tuple[str, int, str, str]]:
    """``(host, port, backend, kind)`` when ``argv`` is ``echo`` followed only by ``--host``,
    ``--port``, ``--backend`` and ``--kind`` as separate option/value pairs, all valid; None
    for anything else, which argparse then handles (help, errors and all).

    The echo server is what the benchmarks start, and argparse (with the shutil, bz2, lzma
    and gettext it imports) would add about 1.5 MiB to its memory for nothing after start-up:
    the issue #17 target is 20 MB with 10,000 idle connections."""
    if not argv or argv[0] != "echo" or len(argv) % 2 == 0:
        return None
    values = {"--host": "127.0.0.1", "--port": "0", "--backend": "auto", "--kind": "dispatcher"}
    for i in range(1, len(argv), 2):
        if argv[i] not in values:
            return None
        values[argv[i]] = argv[i + 1]
    port = values["--port"]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        return None
    if values["--backend"] not in ["auto"] + available() or values["--kind"] not in KINDS:
        return None
    return values["--host"], int(port), values["--backend"], values["--kind"]


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); its exit status."""
    plain = _plain_echo(sys.argv[1:] if argv is None else argv)
    if plain is not None:
        try:
            return echo(*plain)
        except UsageError as err:
            print("%s echo: error: %s" % (PROG, err), file=sys.stderr)
            return 2
    parser = _parser()
    args = parser.parse_args(argv)
    run: Optional[Callable[[argparse.Namespace], int]] = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return run(args)
    except UsageError as err:
        print("%s %s: error: %s" % (PROG, args.command, err), file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
