#!/usr/bin/env python3
"""Echo servers under test for the netloop benchmarks.

Each server runs in its own process::

    python benchmarks/serve.py --kind KIND [--poller NAME] [--host H] [--port P]

(``serve.py`` imports this module and calls ``main()``, so that this code loads from its
bytecode cache; ``python benchmarks/servers.py ...`` works too, but compiles it at start.)

It prints its listening port (a bare integer line) on stdout once it accepts
connections and exits cleanly on SIGTERM/SIGINT.  ``--probe`` prints a JSON
object describing which kinds this interpreter can run.

Byte-echo kinds (used by the pingpong/stream/connrate/idle scenarios):

  netloop-dispatcher  netloop.asyncore dispatcher_with_send, legacy style;
                      --poller auto|select|poll|epoll
  netloop-socketserver netloop.socketserver.ThreadingTCPServer
  netloop-aio         the netloop-dispatcher code, its map served by asyncio's default loop
                      (netloop.aio.run() in place of asyncore.loop())
  netloop-aio-uvloop  the same on a uvloop loop
  asyncore            stdlib asyncore (<= 3.11) or the pyasyncore package;
                      --poller select|poll
  asyncio             asyncio Protocol echo (default selector event loop)
  uvloop              the same Protocol on a uvloop event loop
  socketserver        stdlib socketserver.ThreadingTCPServer
  minimal-epoll       a hand-written select.epoll loop: the floor reference
  minimal-asyncore    the netloop-dispatcher code on the thinnest asyncore API (a
                      select.epoll loop): the floor of any asyncore implementation

Line-echo kinds (terminator b"\\n", used by the line scenario):

  netloop-chat        netloop.asynchat.async_chat
  netloop-chat-aio    the same async_chat code served by asyncio (netloop.aio.run())
  netloop-chat-aio-uvloop  the same on a uvloop loop
  asynchat            stdlib asynchat (<= 3.11) or the pyasynchat package
  asyncio-streams     asyncio start_server + StreamReader.readline()
  uvloop-streams      the same on a uvloop loop

No server reads more than 64 KiB per recv() call.  The dispatcher-style
servers read 8 KiB, exactly like typical asyncore code does.
"""
from __future__ import annotations

import importlib
import os
import signal
import socket
import sys
import warnings

# stdlib asyncore/asynchat warn on import on 3.10/3.11; keep stderr clean
warnings.filterwarnings("ignore", category=DeprecationWarning)

MAX_RECV = 65536
LEGACY_RECV = 8192
BACKLOG = 1024

BYTE_KINDS = (
    "netloop-dispatcher",
    "netloop-socketserver",
    "netloop-aio",
    "netloop-aio-uvloop",
    "asyncore",
    "asyncio",
    "uvloop",
    "socketserver",
    "minimal-epoll",
    "minimal-asyncore",
)
LINE_KINDS = ("netloop-chat", "asynchat", "asyncio-streams", "netloop-chat-aio",
              "netloop-chat-aio-uvloop", "uvloop-streams")
ALL_KINDS = BYTE_KINDS + LINE_KINDS


class Stop(SystemExit):
    """Raised from the SIGTERM handler to leave a blocking loop.

    A SystemExit subclass on purpose: asyncore-style loops catch ordinary
    exceptions raised inside handlers (handle_error) but re-raise SystemExit."""

    def __init__(self):
        SystemExit.__init__(self, 0)


def _raise_stop(signum, frame):  # pragma: no cover - signal path
    raise Stop()


def install_stop_handlers():
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)


def announce(port):
    sys.stdout.write("%d\n" % port)
    sys.stdout.flush()


def family_for(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listening_socket(host, port, backlog=BACKLOG):
    sock = socket.socket(family_for(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


# --------------------------------------------------------------------------
# asyncore-family servers (netloop.asyncore, stdlib asyncore, pyasyncore)
# --------------------------------------------------------------------------
def make_dispatcher_classes(asyncore_mod, recv_size):
    """Echo written the way legacy asyncore code writes it."""

    class EchoHandler(asyncore_mod.dispatcher_with_send):
        def handle_read(self):
            data = self.recv(recv_size)
            if data:
                self.send(data)

    class EchoServer(asyncore_mod.dispatcher):
        def __init__(self, host, port, handler=EchoHandler):
            asyncore_mod.dispatcher.__init__(self)
            self.handler = handler
            self.create_socket(family_for(host), socket.SOCK_STREAM)
            self.set_reuse_addr()
            self.bind((host, port))
            self.listen(BACKLOG)

        def handle_accepted(self, sock, addr):
            self.handler(sock)

    return EchoHandler, EchoServer


def make_chat_handler(asynchat_mod):
    class LineEcho(asynchat_mod.async_chat):
        def __init__(self, sock):
            asynchat_mod.async_chat.__init__(self, sock)
            self.set_terminator(b"\n")
            self.parts = []

        def collect_incoming_data(self, data):
            self.parts.append(data)

        def found_terminator(self):
            line = b"".join(self.parts)
            self.parts = []
            self.push(line + b"\n")

    return LineEcho


def loop_accepts_poller(loop_func):
    import inspect  # only here: inspect (and json, below) would add ~2 MiB to every server

    try:
        return "poller" in inspect.signature(loop_func).parameters
    except (TypeError, ValueError):
        return False


def run_asyncore_family(args, asyncore_mod, handler=None, netloop=False):
    _, EchoServer = make_dispatcher_classes(asyncore_mod, args.recv_size or LEGACY_RECV)
    server = EchoServer(args.host, args.port, handler) if handler else EchoServer(
        args.host, args.port
    )
    announce(server.socket.getsockname()[1])
    kwargs = {"timeout": 30.0}
    if netloop:
        if args.poller != "auto":
            if loop_accepts_poller(asyncore_mod.loop):
                kwargs["poller"] = args.poller
            else:
                # older core: NETLOOP_POLLER (set by the runner) selects it
                os.environ.setdefault("NETLOOP_POLLER", args.poller)
    else:
        if args.poller not in ("select", "poll"):
            raise SystemExit("asyncore supports --poller select|poll only")
        kwargs["use_poll"] = args.poller == "poll"
    try:
        asyncore_mod.loop(**kwargs)
    except Stop:
        pass
    finally:
        asyncore_mod.close_all(ignore_all=True)


def serve_netloop_dispatcher(args):
    mod = importlib.import_module("netloop.asyncore")
    run_asyncore_family(args, mod, netloop=True)


def serve_netloop_chat(args):
    amod = importlib.import_module("netloop.asyncore")
    cmod = importlib.import_module("netloop.asynchat")
    run_asyncore_family(args, amod, handler=make_chat_handler(cmod), netloop=True)


def run_netloop_aio(args, chat=False, uv=False):
    """Legacy code unchanged; its last line asyncore.loop() becomes netloop.aio.run()."""
    amod = importlib.import_module("netloop.asyncore")
    aio = importlib.import_module("netloop.aio")
    handler = make_chat_handler(importlib.import_module("netloop.asynchat")) if chat else None
    _, EchoServer = make_dispatcher_classes(amod, args.recv_size or LEGACY_RECV)
    server = EchoServer(args.host, args.port, handler) if handler else EchoServer(
        args.host, args.port
    )
    announce(server.socket.getsockname()[1])
    factory = None
    if uv:
        import uvloop

        factory = uvloop.new_event_loop
    try:
        aio.run(loop_factory=factory)  # SIGTERM: a clean return
    except Stop:
        pass
    finally:
        amod.close_all(ignore_all=True)


def serve_asyncore(args):
    mod = importlib.import_module("asyncore")
    run_asyncore_family(args, mod)


def serve_asynchat(args):
    amod = importlib.import_module("asyncore")
    cmod = importlib.import_module("asynchat")
    run_asyncore_family(args, amod, handler=make_chat_handler(cmod))


# --------------------------------------------------------------------------
# socketserver family
# --------------------------------------------------------------------------
def run_socketserver(args, ss_mod):
    recv_size = args.recv_size or MAX_RECV

    class EchoRequestHandler(ss_mod.StreamRequestHandler):
        def handle(self):
            while True:
                try:
                    data = self.rfile.read1(recv_size)
                except OSError:
                    return
                if not data:
                    return
                try:
                    self.wfile.write(data)
                except OSError:
                    return

    class Server(ss_mod.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = BACKLOG
        address_family = family_for(args.host)

    server = Server((args.host, args.port), EchoRequestHandler)
    announce(server.server_address[1])
    try:
        server.serve_forever(poll_interval=0.5)
    except Stop:
        pass
    finally:
        server.server_close()


def serve_socketserver(args):
    import socketserver

    run_socketserver(args, socketserver)


def serve_netloop_socketserver(args):
    run_socketserver(args, importlib.import_module("netloop.socketserver"))


# --------------------------------------------------------------------------
# asyncio / uvloop
# --------------------------------------------------------------------------
def run_asyncio(args, loop, line=False):
    import asyncio

    recv_size = args.recv_size or MAX_RECV

    class EchoProtocol(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            if hasattr(transport, "max_size"):  # selector transport: 256 KiB default
                transport.max_size = recv_size

        def data_received(self, data):
            self.transport.write(data)

    async def line_echo(reader, writer):
        transport = writer.transport
        if hasattr(transport, "max_size"):
            transport.max_size = recv_size
        try:
            while True:
                line_ = await reader.readline()
                if not line_:
                    break
                writer.write(line_)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    asyncio.set_event_loop(loop)
    tls = tls_context(args)  # TLS rows: asyncio's sslproto (MemoryBIO) does the records
    if line:
        server = loop.run_until_complete(
            asyncio.start_server(line_echo, args.host, args.port, backlog=BACKLOG, ssl=tls)
        )
    else:
        server = loop.run_until_complete(
            loop.create_server(EchoProtocol, args.host, args.port, backlog=BACKLOG, ssl=tls)
        )
    announce(server.sockets[0].getsockname()[1])
    stop = loop.stop
    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.close()


def tls_context(args):
    """The server's ssl.SSLContext for --tls-cert/--tls-key, or None."""
    if not args.tls_cert:
        return None
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.tls_cert, args.tls_key)
    return ctx


def serve_asyncio(args):
    import asyncio

    run_asyncio(args, asyncio.new_event_loop())


def serve_asyncio_streams(args):
    import asyncio

    run_asyncio(args, asyncio.new_event_loop(), line=True)


def serve_uvloop(args):
    import uvloop

    run_asyncio(args, uvloop.new_event_loop())


def serve_uvloop_streams(args):
    import uvloop

    run_asyncio(args, uvloop.new_event_loop(), line=True)


# --------------------------------------------------------------------------
# minimal hand-written epoll loop (floor reference)
# --------------------------------------------------------------------------
def serve_minimal_epoll(args):
    import select

    recv_size = args.recv_size or MAX_RECV
    poll_timeout = getattr(args, "poll_timeout", None)
    lsock = listening_socket(args.host, args.port)
    lsock.setblocking(False)
    lfd = lsock.fileno()
    ep = select.epoll()
    EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
    ep.register(lfd, EPOLLIN)
    socks = {}
    pending = {}  # fd -> bytearray not yet sent (reading paused meanwhile)

    def drop(fd):
        s = socks.pop(fd, None)
        pending.pop(fd, None)
        if s is not None:
            try:
                ep.unregister(fd)
            except OSError:
                pass
            s.close()

    announce(lsock.getsockname()[1])
    try:
        while True:
            for fd, _events in ep.poll(poll_timeout):
                if fd == lfd:
                    while True:
                        try:
                            s, _ = lsock.accept()
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:  # e.g. EMFILE: try again on next poll
                            break
                        s.setblocking(False)
                        socks[s.fileno()] = s
                        ep.register(s.fileno(), EPOLLIN)
                    continue
                s = socks.get(fd)
                if s is None:
                    continue
                if fd in pending:
                    buf = pending[fd]
                    try:
                        n = s.send(buf)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        drop(fd)
                        continue
                    del buf[:n]
                    if not buf:
                        del pending[fd]
                        ep.modify(fd, EPOLLIN)
                    continue
                try:
                    data = s.recv(recv_size)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    drop(fd)
                    continue
                if not data:
                    drop(fd)
                    continue
                try:
                    n = s.send(data)
                except (BlockingIOError, InterruptedError):
                    n = 0
                except OSError:
                    drop(fd)
                    continue
                if n < len(data):
                    pending[fd] = bytearray(data[n:])
                    ep.modify(fd, EPOLLOUT)
    except Stop:
        pass
    finally:
        for fd in list(socks):
            drop(fd)
        ep.close()
        lsock.close()


# --------------------------------------------------------------------------
# the legacy echo on the thinnest asyncore API (floor reference; minimal_asyncore.py)
# --------------------------------------------------------------------------
def serve_minimal_asyncore(args):
    import minimal_asyncore  # (benchmarks/: sys.path[0] of serve.py and of this script)

    mod = minimal_asyncore.new()
    _, EchoServer = make_dispatcher_classes(mod, args.recv_size or LEGACY_RECV)
    server = EchoServer(args.host, args.port)
    announce(server.socket.getsockname()[1])
    try:
        mod.loop()
    except Stop:
        pass


SERVE = {
    "netloop-dispatcher": serve_netloop_dispatcher,
    "netloop-socketserver": serve_netloop_socketserver,
    "netloop-chat": serve_netloop_chat,
    "netloop-aio": lambda args: run_netloop_aio(args),
    "netloop-aio-uvloop": lambda args: run_netloop_aio(args, uv=True),
    "netloop-chat-aio": lambda args: run_netloop_aio(args, chat=True),
    "netloop-chat-aio-uvloop": lambda args: run_netloop_aio(args, chat=True, uv=True),
    "uvloop-streams": serve_uvloop_streams,
    "asyncore": serve_asyncore,
    "asynchat": serve_asynchat,
    "asyncio": serve_asyncio,
    "asyncio-streams": serve_asyncio_streams,
    "uvloop": serve_uvloop,
    "socketserver": serve_socketserver,
    "minimal-epoll": serve_minimal_epoll,
    "minimal-asyncore": serve_minimal_asyncore,
}


# --------------------------------------------------------------------------
# probing
# --------------------------------------------------------------------------
def _try_import(name):
    try:
        mod = importlib.import_module(name)
    except Exception as exc:  # ImportError, or a half-written core raising
        return None, "%s: %s" % (type(exc).__name__, exc)
    return mod, None


def probe():
    import select

    info = {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "tag": "%d.%d" % sys.version_info[:2],
        "executable": sys.executable,
        "pollers": [p for p in ("select", "poll", "epoll") if p == "select" or hasattr(select, p)],
        "modules": {},
    }
    for name in (
        "netloop",
        "netloop.asyncore",
        "netloop.asynchat",
        "netloop.socketserver",
        "netloop.aio",
        "asyncore",
        "asynchat",
        "uvloop",
    ):
        mod, err = _try_import(name)
        entry = {"ok": mod is not None}
        if mod is None:
            entry["error"] = err
        else:
            path = getattr(mod, "__file__", "") or ""
            entry["file"] = path
            entry["version"] = str(getattr(mod, "__version__", ""))
            if name in ("asyncore", "asynchat"):
                stdlib = os.path.dirname(os.__file__)
                entry["source"] = (
                    "stdlib" if os.path.dirname(path) == stdlib else "py" + name
                )
            if name == "netloop.asyncore":
                entry["loop_accepts_poller"] = loop_accepts_poller(getattr(mod, "loop", None))
        info["modules"][name] = entry
    return info


def apply_limits(cpu, nofile):
    if cpu is not None and cpu >= 0 and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError as exc:
            print("servers.py: cannot pin to CPU %d: %s" % (cpu, exc), file=sys.stderr)
    if nofile:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < nofile:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, max(hard, nofile)))
            except (ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


_PLAIN_OPTIONS = {"--kind": str, "--poller": str, "--host": str, "--port": int,
                  "--recv-size": int, "--cpu": int, "--nofile": int}


def _plain_args(argv):
    """The options of a plain server command line (what the runner passes), parsed without
    argparse; None for anything else (--probe, --help, TLS, a bad value...).

    argparse costs every server about 0.5 MiB of RSS it never uses again, which the memory
    scenarios (RSS with 10,000 idle connections) would otherwise count against all of them."""
    values = {"kind": None, "poller": "auto", "host": "127.0.0.1", "port": 0, "recv_size": 0,
              "cpu": None, "nofile": 0, "probe": False, "tls_cert": None, "tls_key": None}
    if len(argv) % 2:
        return None
    for opt, value in zip(argv[::2], argv[1::2]):
        conv = _PLAIN_OPTIONS.get(opt)
        if conv is None:
            return None
        try:
            values[opt[2:].replace("-", "_")] = conv(value)
        except ValueError:
            return None
    if values["kind"] not in ALL_KINDS or values["recv_size"] > MAX_RECV:
        return None
    return _Args(values)


class _Args:
    """What argparse.Namespace would hold."""

    def __init__(self, values):
        self.__dict__.update(values)


def main(argv=None):
    args = _plain_args(sys.argv[1:] if argv is None else argv)
    if args is not None:
        return _serve(args)
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", choices=ALL_KINDS)
    ap.add_argument("--poller", default="auto", help="auto|select|poll|epoll (asyncore family)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--recv-size", type=int, default=0, help="bytes per recv (max 65536)")
    ap.add_argument("--poll-timeout", type=float, default=None,
                    help="minimal-epoll: poll with this timeout (default: none), as a loop "
                         "that keeps a timeout per poll does (bench_timed_wait.py)")
    ap.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    ap.add_argument("--nofile", type=int, default=0, help="raise RLIMIT_NOFILE to this")
    ap.add_argument("--probe", action="store_true", help="print capabilities as JSON")
    ap.add_argument("--tls-cert", default=None, help="serve TLS with this certificate (PEM; "
                    "asyncio, asyncio-streams and uvloop kinds; netloop's TLS rows use the CLI)")
    ap.add_argument("--tls-key", default=None, help="the key of --tls-cert, if not in it")
    args = ap.parse_args(argv)
    if args.probe:
        import json

        print(json.dumps(probe()))
        return 0
    if not args.kind:
        ap.error("--kind is required")
    if args.recv_size > MAX_RECV:
        ap.error("--recv-size must be <= %d" % MAX_RECV)
    if args.tls_cert and args.kind not in ("asyncio", "asyncio-streams", "uvloop"):
        ap.error("--tls-cert: only the asyncio, asyncio-streams and uvloop kinds here")
    return _serve(args)


def _serve(args):
    apply_limits(args.cpu, args.nofile)
    if args.kind not in ("asyncio", "asyncio-streams", "uvloop", "uvloop-streams"):
        install_stop_handlers()
    try:
        SERVE[args.kind](args)
    except Stop:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
