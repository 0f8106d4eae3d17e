"""The command line: ``python -m netloop demo`` and ``python -m netloop echo``.

``demo`` runs an echo server and a short built-in load on one loop, then prints what it did.
``echo`` runs a reference echo server until Ctrl-C or SIGTERM, printing its address when ready.
"""

from __future__ import annotations

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
    from typing import Any, Dict, List, Optional, Tuple

# argparse and signal are imported where they are used: ``import netloop.cli`` and the echo
# server should not carry what they do not need (see _plain_echo_args).

__all__ = ["main", "EchoHandler", "EchoServer"]


class EchoHandler(BufferedDispatcher):
    """Sends back every byte it receives."""

    def handle_read(self) -> None:
        data = self.recv(65536)
        if data:
            self.send(data)

    def handle_close(self) -> None:
        self.close()


class EchoServer(Dispatcher):
    """Listens and makes an ``EchoHandler`` of each connection."""

    handler_class: Any = EchoHandler

    def __init__(self, host: str, port: int, map: Any, backlog: int = 1024) -> None:
        Dispatcher.__init__(self, map=map)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.create_socket(family)
        self.set_reuse_addr()
        self.bind((host, port))
        self.listen(backlog)
        self.address = self.socket.getsockname()[:2]

    def handle_accepted(self, sock: socket.socket, addr: Any) -> None:
        self.handler_class(sock, map=self._map)


class _LoadClient(BufferedDispatcher):
    """One demo connection: sends a message, waits for its echo, repeats until told to stop."""

    def __init__(self, address: Any, map: Any, payload: bytes, stats: "_Stats") -> None:
        BufferedDispatcher.__init__(self, map=map)
        self.payload = payload
        self.stats = stats
        self.pending = len(payload)
        self.create_socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        self.connect(address)

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
         size: int = 64, out: Any = None) -> Dict[str, Any]:
    """Echo server plus load on one loop; returns (and prints) what happened."""
    out = out or sys.stdout
    loop = Loop(poller=None if backend == "auto" else backend)
    try:
        server = EchoServer("127.0.0.1", 0, loop.map)
        stats = _Stats()
        payload = bytes(range(256))[:size] * (size // 256 + 1)
        payload = payload[:size]
        for _ in range(connections):
            _LoadClient(server.address, loop.map, payload, stats)
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
            "cpu_us_per_round_trip": round(cpu / stats.messages * 1e6, 2) if stats.messages else None,
        }
    finally:
        for obj in list(loop.map.values()):
            obj.close()
        loop.close()
    print("netloop demo: echo server and %d clients on one loop (backend: %s)"
          % (connections, result["backend"]), file=out)
    print("  %d round trips of %d bytes in %.2fs: %d round trips/s, %.1f MB/s each way"
          % (result["messages"], size, result["seconds"], result["round_trips_per_s"],
             result["messages"] * size / result["seconds"] / 1e6), file=out)
    print("  CPU per round trip (server and clients together): %s us"
          % result["cpu_us_per_round_trip"], file=out)
    return result


def _make_echo(kind: str, host: str, port: int, loop: Loop) -> Any:
    if kind == "dispatcher":
        return EchoServer(host, port, loop.map)
    if kind == "chat":
        from .asynchat import async_chat

        class LineEcho(async_chat):
            def __init__(self, sock: socket.socket, map: Any) -> None:
                async_chat.__init__(self, sock, map=map)
                self.set_terminator(b"\n")
                self.lines: List[bytes] = []

            def collect_incoming_data(self, data: bytes) -> None:
                self.lines.append(data)

            def found_terminator(self) -> None:
                line = b"".join(self.lines)
                self.lines = []
                self.push(line + b"\n")

        server = EchoServer(host, port, loop.map)
        server.handler_class = LineEcho
        return server
    if kind == "socketserver":
        from . import socketserver as ss

        class Handler(ss.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    while True:
                        data = self.request.recv(65536)
                        if not data:
                            return
                        self.request.sendall(data)
                except ConnectionError:
                    return  # a client that resets is an ordinary end for an echo server

        class Server(ss.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            request_queue_size = 1024  # the stdlib's 5 drops SYNs under a connect storm
            block_on_close = False     # exit on SIGTERM without joining every client thread

        return Server((host, port), Handler, map=loop.map)
    raise ValueError("unknown kind %r" % kind)


def echo(host: str, port: int, backend: str, kind: str) -> int:
    import signal

    loop = Loop(poller=None if backend == "auto" else backend)
    server = _make_echo(kind, host, port, loop)
    address = getattr(server, "address", None) or server.server_address[:2]
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    print("netloop echo (%s, backend %s) listening on %s:%d"
          % (kind, loop.poller.name, address[0], address[1]), flush=True)
    try:
        loop.run_forever()
    finally:
        if hasattr(server, "server_close"):
            server.server_close()
        for obj in list(loop.map.values()):
            obj.close()
        loop.close()
    print("netloop echo: stopped", flush=True)
    return 0


_KINDS = ["dispatcher", "chat", "socketserver"]
_ECHO_OPTIONS = ("--host", "--port", "--backend", "--kind")


def _plain_echo_args(argv: List[str], backends: List[str]) -> Optional[Tuple[str, int, str, str]]:
    """``(host, port, backend, kind)`` when ``argv`` is ``echo`` followed only by complete
    ``--option value`` / ``--option=value`` pairs with valid values, exactly what argparse
    would make of it; None for anything else (help, abbreviations, errors), left to argparse.

    The echo server is what the benchmarks start, and argparse would cost it about 1.5 MiB
    (argparse, re, gettext, locale, shutil and the compression modules shutil imports).
    """
    if not argv or argv[0] != "echo":
        return None
    values = {"--host": "127.0.0.1", "--port": "0", "--backend": "auto", "--kind": "dispatcher"}
    rest = argv[1:]
    i = 0
    while i < len(rest):
        name, sep, value = rest[i].partition("=")
        if not sep:
            if i + 1 == len(rest):
                return None
            i += 1
            value = rest[i]
        i += 1
        if name not in _ECHO_OPTIONS or not value or value.startswith("-"):
            return None
        values[name] = value
    try:
        port = int(values["--port"])
    except ValueError:
        return None
    if values["--backend"] not in backends or values["--kind"] not in _KINDS:
        return None
    return values["--host"], port, values["--backend"], values["--kind"]


def _parser(backends: List[str]) -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m netloop", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    p_demo = sub.add_parser("demo", help="echo server plus a short built-in load")
    p_demo.add_argument("--backend", default="auto", choices=backends)
    p_demo.add_argument("--connections", type=int, default=50)
    p_demo.add_argument("--seconds", type=float, default=2.0)
    p_demo.add_argument("--size", type=int, default=64)
    p_echo = sub.add_parser("echo", help="run an echo server until Ctrl-C or SIGTERM")
    p_echo.add_argument("--host", default="127.0.0.1")
    p_echo.add_argument("--port", type=int, default=0)
    p_echo.add_argument("--backend", default="auto", choices=backends)
    p_echo.add_argument("--kind", default="dispatcher", choices=_KINDS)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    backends = ["auto"] + available()
    plain = _plain_echo_args(sys.argv[1:] if argv is None else argv, backends)
    if plain is not None:
        return echo(*plain)
    parser = _parser(backends)
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.backend, args.connections, args.seconds, args.size)
        return 0
    if args.command == "echo":
        return echo(args.host, args.port, args.backend, args.kind)
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


