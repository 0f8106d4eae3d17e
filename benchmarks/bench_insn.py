#!/usr/bin/env python3
"""User-space instructions per request, counted by callgrind: deterministic, unlike CPU time.

One child process per variant runs under ``valgrind --tool=callgrind``: it sets the variant up,
warms it up, then calls ``os.getppid()`` before and after the measured rounds. Callgrind is
told to dump its counters each time ``getppid`` is entered (``--dump-before``), so the second
dump holds exactly the measured rounds: no start-up, no imports, no set-up. Each round runs one
server pass the way ``loop()`` runs it (``Loop._pass``), with the clients in the same process;
only the server passes are counted (each is called through ``functools.reduce``, and callgrind
counts only inside that function: ``--toggle-collect``), unless ``--whole`` is given. The
kernel's work is never counted: these are the instructions a Python loop can change.
Objects made before the measured rounds are frozen out of the garbage collector (gc.freeze),
and PYTHONHASHSEED is fixed, so repeated runs give the same figure to the instruction.

    python benchmarks/bench_insn.py                      # every variant, a table
    python benchmarks/bench_insn.py pp-legacy bulk-cli   # some variants
    python benchmarks/bench_insn.py --check              # compare with the committed baseline
    python benchmarks/bench_insn.py --write-baseline     # re-baseline (after a deliberate change)

Variants (``--list``):

- ``pp-*``: 100 socket pairs; a round is: each client sends 64 bytes, one server pass, each
  client reads its echo. Per request.
- ``pp1-*``: the same with one socket pair: a pass per request, so the fixed cost of a pass
  (its set-up, the poll call, the dispatch call) weighs as much as the request's own work.
- ``bulk-*``: 10 connections (Unix socket pairs, which the kernel serves synchronously; loopback
  TCP with BENCH_INSN_TCP=1, whose counts vary by a few percent from run to run), each keeping
  256 KiB in flight in 64 KiB writes (the deep-window stream scenario); a round is: the
  clients top up their windows, one server pass, the clients read what came back. Per 64 KiB
  echoed. ``BENCH_INSN_SNDBUF=N`` sets the server sides' send buffers (default: the system's).
- ``rr1m-*``: 10 connections (Unix socket pairs, 1 MiB send buffers both sides), each sending a
  1 MiB request in 64 KiB writes and reading the whole echo before the next (the rr1m
  scenario); a round is: the clients send what their sockets take, one server pass, the
  clients read. Per request (2 MiB through the server).
- ``accept-*``: a round is 8 clients connecting, sending 64 bytes, reading the echo and
  resetting, with server passes until all are closed. Per connection.
- ``accept-cli-v1`` / ``-v2``: the same against the listener of ``python -m netloop echo
  --proxy-protocol`` (``cli._make_echo_on``), each client sending a PROXY header (v1 text, v2
  binary) before its 64 bytes; ``-v1late`` / ``-v2late``: the server accepts before the header
  arrives (a pass between connect and send), as when a balancer's header follows its connect;
  ``accept-cli-adopted``: that listener without the PROXY protocol (the CLI's scaled path).

- ``srv-pp1-cli`` / ``srv-pp1-legacy``: the ``python -m netloop echo`` and legacy server
  processes in their real run, counted by ``bench_insn_servers.py`` (pp1, 1,000 requests):
  there ``_dispatch`` polls again itself between passes, which the ``_pass(0)`` calls of the
  variants above do not show. Both are checked.

``*-minimal`` is a hand-written epoll loop (the floor), ``*-legacy`` the legacy
``dispatcher_with_send`` echo of ``benchmarks/servers.py`` on ``netloop.asyncore`` (8 KiB
reads), ``*-cli`` the handler ``python -m netloop echo`` runs (``netloop.cli.EchoHandler``,
64 KiB reads).

The baseline (``benchmarks/insn_baseline.json``) records the Python version it was measured
with; counts from another build are not comparable, so ``--check`` then skips with a note.
``--check`` fails (exit 1) when a checked variant grew by more than ``--tolerance`` (10%).

``BENCH_INSN_IDLE=N`` (pp and pp1 variants) also registers N idle socket pairs with the server
before the measured rounds: their channels exist and are watched but never ready, as in the
``pp100-idle10k`` scenario (N=10000 needs 20,000 descriptors; the child raises its limit). With
``BENCH_INSN_NOFREEZE=1`` the objects made during set-up are not frozen out of the garbage
collector, so a collection during the measured rounds traverses them as it would in a server
(counts then depend on when the collector happens to run).
"""

from __future__ import annotations

import argparse
import gc
import glob
import json
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# The netloop measured: this checkout's src/, or $BENCH_INSN_SRC (e.g. an older commit's src
# unpacked with `git archive COMMIT src | tar -x -C DIR`, to measure what a landing changed).
SRC = os.environ.get("BENCH_INSN_SRC") or os.path.join(os.path.dirname(HERE), "src")
BASELINE = os.path.join(HERE, "insn_baseline.json")

#: variant -> (warm-up rounds, measured rounds); chosen so each child takes a few seconds under
#: callgrind and the per-unit figure is stable to well under 1%.
VARIANTS = {
    "pp-minimal": (30, 60),
    "pp-legacy": (30, 60),
    "pp-cli": (30, 60),
    "pp1-minimal": (300, 3000),
    "pp1-legacy": (300, 3000),
    "pp1-cli": (300, 3000),
    "bulk-minimal": (40, 150),
    "bulk-legacy": (40, 150),
    "bulk-cli": (40, 150),
    "rr1m-minimal": (20, 100),
    "rr1m-legacy": (20, 100),
    "rr1m-cli": (20, 100),
    "accept-minimal": (10, 40),
    "accept-legacy": (10, 40),
    "accept-cli": (10, 40),
    "accept-cli-adopted": (10, 40),
    "accept-cli-v1": (10, 40),
    "accept-cli-v2": (10, 40),
    "accept-cli-v1late": (10, 40),
    "accept-cli-v2late": (10, 40),
}
#: Whole server processes in their real run (``run_forever()``, asyncore's ``loop()``), counted
#: by ``bench_insn_servers.py`` (server name, scenario): the passes ``_dispatch`` runs itself
#: there are not the ``_pass(0)`` calls the variants above make.
SERVER_VARIANTS = {
    "srv-pp1-cli": ("netloop", "pp1"),
    "srv-pp1-legacy": ("netloop-asyncore", "pp1"),
}
#: Their rounds (warm-up, short, long): 1,000 requests in the difference, stable to about 0.5%.
SERVER_ROUNDS = (20, 10, 1010)
#: What ``--check`` (the benchmark smoke) compares: the hot path of both server styles.
CHECKED = ("pp-legacy", "pp-cli", "bulk-cli", "srv-pp1-cli", "srv-pp1-legacy")
UNITS = {"pp": "request", "pp1": "request", "bulk": "64 KiB", "rr1m": "1 MiB request",
         "accept": "connection", "srv": "request"}

PP_CONNS = 100
BULK_CONNS = 10
BULK_WINDOW = 256 * 1024
BULK_WRITE = 64 * 1024
RR_SIZE = 1 << 20
RR_SNDBUF = 1 << 20
ACCEPT_CONNS = 8
MESSAGE = b"x" * 64
RESET = struct.pack("ii", 1, 0)


def python_id() -> str:
    """What makes instruction counts comparable: implementation, version, build."""
    return "%s %s (%s)" % (platform.python_implementation(), platform.python_version(),
                           " ".join(platform.python_build()))


# --------------------------------------------------------------------------- child side
def _server_handler(kind: str):
    """The per-connection handler class of a variant, or None for the hand-written loop."""
    if kind == "legacy":
        sys.path.insert(0, HERE)
        from servers import LEGACY_RECV, make_dispatcher_classes
        from netloop import asyncore
        handler, _ = make_dispatcher_classes(asyncore, LEGACY_RECV)
        return handler
    if kind == "cli":
        from netloop.cli import EchoHandler
        return EchoHandler
    return None


class _Minimal:
    """The hand-written epoll echo of servers.py (pauses reading while output is pending)."""

    def __init__(self, recv_size: int = 65536) -> None:
        import select
        self.ep = select.epoll()
        self.socks = {}
        self.pending = {}
        self.recv_size = recv_size
        self.listener = None

    def add(self, s: socket.socket) -> None:
        import select
        s.setblocking(False)
        self.socks[s.fileno()] = s
        self.ep.register(s.fileno(), select.EPOLLIN)

    def drop(self, fd: int) -> None:
        s = self.socks.pop(fd)
        self.pending.pop(fd, None)
        self.ep.unregister(fd)
        s.close()

    def one_pass(self) -> None:
        import select
        for fd, _ in self.ep.poll(0):
            if self.listener is not None and fd == self.listener.fileno():
                while True:
                    try:
                        s, _ = self.listener.accept()
                    except BlockingIOError:
                        break
                    self.add(s)
                continue
            s = self.socks.get(fd)
            if s is None:
                continue
            if fd in self.pending:
                buf = self.pending[fd]
                try:
                    n = s.send(buf)
                except BlockingIOError:
                    continue
                except OSError:
                    self.drop(fd)
                    continue
                del buf[:n]
                if not buf:
                    del self.pending[fd]
                    self.ep.modify(fd, select.EPOLLIN)
                continue
            try:
                data = s.recv(self.recv_size)
            except BlockingIOError:
                continue
            except OSError:
                self.drop(fd)
                continue
            if not data:
                self.drop(fd)
                continue
            try:
                n = s.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                self.drop(fd)
                continue
            if n < len(data):
                self.pending[fd] = bytearray(data[n:])
                self.ep.modify(fd, select.EPOLLOUT)

    def close(self) -> None:
        for fd in list(self.socks):
            self.drop(fd)
        if self.listener is not None:
            self.listener.close()
        self.ep.close()


def _netloop_server(handler, channels=None):
    """(channel map, loop, closer) for a netloop variant."""
    import netloop
    if channels is None:
        channels = {}
    lp = netloop.Loop(channels)

    def close() -> None:
        for obj in list(channels.values()):
            obj.close()
        lp.close()
    return channels, lp, close


def _tcp_pairs(n: int):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(n)
    pairs = []
    for _ in range(n):
        c = socket.create_connection(listener.getsockname())
        s, _ = listener.accept()
        c.setblocking(False)
        pairs.append((s, c))
    listener.close()
    sndbuf = int(os.environ.get("BENCH_INSN_SNDBUF", 0))
    if sndbuf:
        for s, _ in pairs:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    return pairs


def child(variant: str, warmup: int, rounds: int) -> dict:
    scenario, kind = variant.split("-", 1)
    if scenario == "accept":
        return _child_accept(kind, warmup, rounds)
    idle = []
    if scenario in ("pp", "pp1"):
        pairs = [socket.socketpair() for _ in range(PP_CONNS if scenario == "pp" else 1)]
        for a, b in pairs:
            a.setblocking(False)
            b.setblocking(False)
        idle = _idle_pairs(int(os.environ.get("BENCH_INSN_IDLE", 0) or 0))
    elif os.environ.get("BENCH_INSN_TCP"):
        pairs = _tcp_pairs(BULK_CONNS)
    else:
        # Unix socket pairs: the kernel delivers synchronously, so every run makes the same
        # calls (loopback TCP defers some work to softirqs and varies by up to 20%).
        pairs = [socket.socketpair() for _ in range(BULK_CONNS)]
        for a, b in pairs:
            a.setblocking(False)
            b.setblocking(False)
        # BENCH_INSN_SNDBUF: the send buffers of the server sides (and, for rr1m, of the
        # clients, which put a whole 1 MiB request in flight as loopback TCP's autotuned
        # buffers let them); 0, the default for bulk, keeps the system's (~208 KiB).
        sndbuf = int(os.environ.get("BENCH_INSN_SNDBUF",
                                    RR_SNDBUF if scenario == "rr1m" else 0))
        if sndbuf:
            for s, c in pairs:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
                if scenario == "rr1m":  # the client puts its whole request in flight
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    handler = _server_handler(kind)
    if handler is None:
        server = _Minimal(8192 if kind == "legacy" else 65536)
        for s, _ in pairs + idle:
            server.add(s)
        one_pass, close = server.one_pass, server.close
    else:
        channels, lp, close = _netloop_server(handler)
        for s, _ in pairs + idle:
            handler(s, map=channels) if kind == "cli" else handler(s, channels)
        lp.run_once(0)

        def one_pass() -> None:
            lp._pass(0)
    one_pass = _counted(one_pass)
    clients = [c for _, c in pairs]
    if scenario in ("pp", "pp1"):
        def run(count: int) -> int:
            for _ in range(count):
                for c in clients:
                    c.send(MESSAGE)
                one_pass()
                for c in clients:
                    c.recv(65536)
            return count * len(clients)
    elif scenario == "rr1m":
        # Each client sends a 1 MiB request in 64 KiB writes, reads the whole echo, then
        # sends the next one (the rr1m scenario). Per request: 2 MiB through the server.
        chunk = memoryview(bytes(range(256)) * (BULK_WRITE // 256))
        to_send = [RR_SIZE] * len(clients)
        to_recv = [RR_SIZE] * len(clients)
        echoed = [0]

        def run(count: int) -> int:
            start = echoed[0]
            for _ in range(count):
                for i, c in enumerate(clients):
                    while to_send[i]:
                        try:
                            to_send[i] -= c.send(chunk[:min(BULK_WRITE, to_send[i])])
                        except BlockingIOError:
                            break
                one_pass()
                for i, c in enumerate(clients):
                    while True:
                        try:
                            got = len(c.recv(262144))
                        except BlockingIOError:
                            break
                        to_recv[i] -= got
                        echoed[0] += got
                        if not to_recv[i]:
                            to_send[i] = to_recv[i] = RR_SIZE
            return echoed[0] - start
    else:
        payload = bytes(range(256)) * (BULK_WRITE // 256)
        drain = int(os.environ.get("BENCH_INSN_DRAIN", 1 << 30))
        inflight = [0] * len(clients)
        echoed = [0]

        def run(count: int) -> int:
            start = echoed[0]
            for _ in range(count):
                for i, c in enumerate(clients):
                    while inflight[i] <= BULK_WINDOW - BULK_WRITE:
                        try:
                            inflight[i] += c.send(payload)
                        except BlockingIOError:
                            break
                one_pass()
                for i, c in enumerate(clients):
                    budget = drain
                    while budget > 0:
                        try:
                            got = len(c.recv(min(budget, 262144)))
                        except BlockingIOError:
                            break
                        inflight[i] -= got
                        echoed[0] += got
                        budget -= got
            return echoed[0] - start
    run(warmup)
    # Objects made so far never reach a collection: the collector's work then depends on what
    # the measured rounds allocate, not on how big this script or the import graph is.
    gc.collect()
    if not os.environ.get("BENCH_INSN_NOFREEZE"):
        gc.freeze()
    collections = _count_collections()
    os.getppid()  # callgrind dumps here: what follows is the measured part
    units = run(rounds)
    os.getppid()
    close()
    for s, c in pairs + idle:
        c.close()
        s.close()
    if collections:
        # Which generations the collector ran during the measured rounds (stderr: the parent
        # reads the last stdout line as the result).
        print("gc collections during the measured rounds: %s" % collections, file=sys.stderr)
    if scenario == "bulk":
        return {"units": units / BULK_WRITE}
    if scenario == "rr1m":
        return {"units": units / RR_SIZE}
    return {"units": units}


def _idle_pairs(n: int):
    """``n`` socket pairs whose server sides are registered but never spoken to (both ends
    live in this process: 2n descriptors, so fewer than asked if the limit is lower)."""
    if not n:
        return []
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * n + 256
    if soft < want:
        try:  # above the hard limit too where allowed (root with CAP_SYS_RESOURCE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if want > limit:
        n = (limit - 256) // 2
        print("BENCH_INSN_IDLE: %d idle pairs (the descriptor limit is %d)" % (n, limit),
              file=sys.stderr)
    pairs = [socket.socketpair() for _ in range(n)]
    for a, _ in pairs:
        a.setblocking(False)
    return pairs


def _count_collections():
    """A dict {generation: collections} filled while the measured rounds run."""
    counts = {}

    def callback(phase, info):
        if phase == "start":
            counts[info["generation"]] = counts.get(info["generation"], 0) + 1
    gc.callbacks.append(callback)
    return counts


def _child_accept(kind: str, warmup: int, rounds: int) -> dict:
    kind, _, proxy = kind.partition("-")
    handler = _server_handler(kind)
    header = b""
    if handler is None:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        listener.setblocking(False)
        address = listener.getsockname()
        server = _Minimal()
        server.listener = listener
        import select
        server.ep.register(listener.fileno(), select.EPOLLIN)
        one_pass = server.one_pass
        open_conns = lambda: len(server.socks)  # noqa: E731
        close = server.close
    else:
        # The listeners the servers use: cli.EchoServer, servers.py's legacy EchoServer (on
        # the asyncore facade's socket_map, as legacy code runs).
        if kind == "cli" and proxy:
            # The listener of `python -m netloop echo --proxy-protocol` (the scaled path).
            channels, lp, close = _netloop_server(handler)
            from netloop import cli
            from netloop.proxy import format_v1, format_v2
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(1024)
            server = cli._make_echo_on("dispatcher", sock, lp, proxy != "adopted", False)
            if proxy != "adopted":
                fmt = format_v1 if proxy.startswith("v1") else format_v2
                header = fmt(("192.0.2.1", 40000), ("192.0.2.2", 80))
            # The passes run as inside run_forever(): a timer scheduled then (the header's
            # deadline) needs no wake-up through the loop's pipe, which it would get from a
            # loop that is not running.
            lp._running += 1
        elif kind == "cli":
            channels, lp, close = _netloop_server(handler)
            from netloop.cli import EchoServer
            server = EchoServer("127.0.0.1", 0, channels)
        else:
            from servers import LEGACY_RECV, make_dispatcher_classes
            from netloop import asyncore
            channels, lp, close = _netloop_server(handler, asyncore.socket_map)
            _, EchoServer = make_dispatcher_classes(asyncore, LEGACY_RECV)
            server = EchoServer("127.0.0.1", 0)
            # As asyncore.loop() serves it: select()-style dispatch (a reset is readable), and
            # a failure in handle_accepted() reaches the listener's handle_error().
            lp._hup_closes = False
            lp._contain = False
        address = server.socket.getsockname()
        lp.run_once(0)

        def one_pass() -> None:
            lp._pass(0)
        open_conns = lambda: len(channels) - 1  # noqa: E731
    one_pass = _counted(one_pass)
    late = proxy.endswith("late")

    def run(count: int) -> int:
        for _ in range(count):
            clients = []
            for _ in range(ACCEPT_CONNS):
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(address)
                clients.append(c)
            if late:
                one_pass()  # accepted before the header arrives
            for c in clients:
                c.send(header + MESSAGE)
            waiting = clients
            for _ in range(1000):
                if not waiting:
                    break
                one_pass()
                waiting = [c for c in waiting if not _echoed(c)]
            else:
                raise RuntimeError("echoes missing")
            for c in clients:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
                c.close()
            for _ in range(1000):
                if not open_conns():
                    break
                one_pass()
            else:
                raise RuntimeError("server did not close its side")
        return count * ACCEPT_CONNS
    run(warmup)
    gc.collect()
    gc.freeze()
    os.getppid()
    units = run(rounds)
    os.getppid()
    close()
    return {"units": units}


def _counted(one_pass):
    """``one_pass`` called through ``functools.reduce``: the parent tells callgrind to count
    only inside that C function (``--toggle-collect``), which this script calls for nothing
    else, so the server's work is counted apart from the clients'."""
    from functools import reduce
    items = (None,)

    def step(acc, item):
        one_pass()

    def counted_pass() -> None:
        reduce(step, items, None)
    return counted_pass


def _echoed(c: socket.socket) -> bool:
    try:
        return len(c.recv(64)) == 64
    except BlockingIOError:
        return False


# --------------------------------------------------------------------------- parent side
def find_valgrind():
    return shutil.which("valgrind")


def callgrind_total(path: str):
    """The instructions a callgrind output file counts in all (None if it has no total)."""
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    return None


def measure(variant: str, python: str = sys.executable, timeout: float = 300,
            server_only: bool = True) -> dict:
    """Run one variant under callgrind: {'insn': per unit, 'units': ..., 'total': ...}.

    ``server_only``: count the server passes alone (the default); False counts the clients'
    work too."""
    valgrind = find_valgrind()
    if valgrind is None:
        raise RuntimeError("valgrind is not installed (apt-get install valgrind)")
    if variant in SERVER_VARIANTS:
        import bench_insn_servers  # (it imports this module)
        name, scenario = SERVER_VARIANTS[variant]
        r = bench_insn_servers.measure(python, name, scenario, rounds=SERVER_ROUNDS)
        return {"insn": r["insn"], "units": r["requests"], "total": r["totals"][1]}
    warmup, rounds = VARIANTS[variant]
    tmp = tempfile.mkdtemp(prefix="bench_insn.")
    try:
        out = os.path.join(tmp, "cg.out")
        env = dict(os.environ, PYTHONPATH=SRC, PYTHONHASHSEED="0")
        env.pop("PYTHONDEVMODE", None)
        env.pop("PYTHONMALLOC", None)
        cmd = [valgrind, "--tool=callgrind", "--dump-before=getppid"]
        if server_only:
            cmd += ["--collect-atstart=no", "--toggle-collect=functools_reduce"]
        cmd += ["--callgrind-out-file=" + out, python, os.path.abspath(__file__), "--child",
                variant, str(warmup), str(rounds)]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (variant, proc.returncode,
                                                       proc.stderr[-2000:]))
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        for line in proc.stderr.splitlines():
            if line.startswith("gc collections"):
                result["gc"] = line.split(": ", 1)[1]
            elif line.startswith("BENCH_INSN_IDLE"):
                result["idle_note"] = line
        # Dumps: out.1 = start-up to the first getppid, out.2 = the measured rounds.
        parts = sorted(glob.glob(out + ".*"))
        measured = out + ".2"
        if measured not in parts:
            raise RuntimeError("callgrind wrote no dump for the measured part: %s" % parts)
        total = callgrind_total(measured)
        if not total:
            raise RuntimeError("no instructions counted in %s%s" % (
                measured, " (is functools_reduce in this Python's symbol table? "
                "try server_only=False / --whole)" if server_only else ""))
        result["total"] = total
        result["insn"] = total / result["units"]
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_baseline(path: str = BASELINE) -> dict:
    with open(path) as f:
        return json.load(f)


def check(path: str = BASELINE, tolerance: float = 0.10, variants=CHECKED, out=sys.stdout) -> int:
    """0 when every checked variant is within tolerance of the baseline (or the baseline is
    for another Python: skipped loudly), 1 when one grew too much, 2 when it cannot run."""
    if find_valgrind() is None:
        print("bench_insn: SKIPPED: valgrind is not installed; the instruction-count "
              "regression check did not run", file=out)
        return 2
    base = load_baseline(path)
    if base.get("python") != python_id():
        print("bench_insn: SKIPPED (loud): the baseline was measured on %s, this is %s; "
              "instruction counts are only comparable on the same build. Re-baseline with "
              "`python benchmarks/bench_insn.py --write-baseline` on that Python."
              % (base.get("python"), python_id()), file=out)
        return 0
    status = 0
    for variant in variants:
        ref = base["insn"].get(variant)
        got = measure(variant)["insn"]
        if ref is None:
            print("bench_insn: %-14s %9.0f instructions/%s (no baseline)"
                  % (variant, got, UNITS[variant.split("-")[0]]), file=out)
            continue
        ratio = got / ref
        verdict = "ok" if ratio <= 1 + tolerance else "FAIL"
        if verdict == "FAIL":
            status = 1
        print("bench_insn: %-14s %9.0f instructions/%s, baseline %9.0f: x%.3f %s"
              % (variant, got, UNITS[variant.split("-")[0]], ref, ratio, verdict), file=out)
    if status:
        print("bench_insn: user-space instructions grew by more than %d%% against %s. If the "
              "growth is deliberate, re-baseline (--write-baseline) and say why in the commit."
              % (tolerance * 100, os.path.relpath(path)), file=out)
    return status


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("variants", nargs="*", help="variants to measure (default: all)")
    ap.add_argument("--list", action="store_true", help="list the variants")
    ap.add_argument("--check", action="store_true",
                    help="compare %s with the baseline; exit 1 on growth" % ", ".join(CHECKED))
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--baseline", default=BASELINE)
    ap.add_argument("--write-baseline", action="store_true",
                    help="measure every variant and store the figures as the baseline")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--whole", action="store_true",
                    help="count the clients' work too (default: the server passes alone)")
    ap.add_argument("--child", nargs=3, metavar=("VARIANT", "WARMUP", "ROUNDS"),
                    help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.child:
        sys.path.insert(0, SRC)
        variant, warmup, rounds = opts.child
        print(json.dumps(child(variant, int(warmup), int(rounds))))
        return 0
    if opts.list:
        for name, (w, r) in VARIANTS.items():
            print("%-15s warm-up %d rounds, %d measured; per %s"
                  % (name, w, r, UNITS[name.split("-")[0]]))
        for name, (server, scenario) in SERVER_VARIANTS.items():
            print("%-15s the %s server process, bench_insn_servers.py %s; per request"
                  % (name, server, scenario))
        return 0
    if opts.check:
        return check(opts.baseline, opts.tolerance, opts.variants or CHECKED)
    names = opts.variants or list(VARIANTS) + list(SERVER_VARIANTS)
    unknown = [n for n in names if n not in VARIANTS and n not in SERVER_VARIANTS]
    if unknown:
        ap.error("unknown variant(s): %s (see --list)" % ", ".join(unknown))
    if opts.write_baseline:
        names = list(VARIANTS) + list(SERVER_VARIANTS)
    figures = {}
    for name in names:
        r = measure(name, server_only=not opts.whole)
        figures[name] = round(r["insn"])
        if not opts.json:
            print("%-15s %10.0f instructions per %s%s" % (
                name, r["insn"], UNITS[name.split("-")[0]],
                "  (gc collections, by generation: %s)" % r["gc"] if r.get("gc") else ""))
            sys.stdout.flush()
    if opts.json:
        print(json.dumps(figures, indent=1))
    if opts.write_baseline:
        if opts.whole:
            ap.error("the baseline holds server-pass counts: no --whole")
        data = {"python": python_id(), "insn": figures,
                "command": "python benchmarks/bench_insn.py --write-baseline"}
        with open(opts.baseline, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
        print("baseline written to %s" % opts.baseline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
