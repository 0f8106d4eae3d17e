"""Per-connection user-space cost of accepting, echoing once and closing, measured in-process.

Each round: K clients connect to a loopback listener and send 64 bytes; the server runs passes
until every client has its echo; the clients close with a reset; the server runs passes until
it has closed its side of each. Prints microseconds of CPU per
connection (server and clients together: compare variants, not absolute figures). For a
deterministic figure count instructions with callgrind and take the difference of two runs:

    for r in 20 60; do ROUNDS=$r valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        $(python3 -c 'import sys; print(sys.executable)') benchmarks/bench_accept.py netloop 2>&1 \\
        | grep Collected; done
    # (second - first) / (40 rounds * K) = instructions per connection

Variants: minimal (a hand-written epoll loop), netloop (legacy code on netloop.asyncore: a
listening dispatcher whose handle_accepted makes a dispatcher_with_send echo handler), asyncore
(the same code on the stdlib's asyncore, select loop; Python 3.11 and older).
Environment: K (connections per round, default 32), ROUNDS (default 200).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

K = int(os.environ.get("K", 32))
ROUNDS = int(os.environ.get("ROUNDS", 200))
MESSAGE = b"x" * 64
RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset, no TIME_WAIT


def drive(address, one_pass, open_conns) -> float:
    """Runs rounds; ``open_conns()`` is how many server-side connections are open."""

    def rounds(count: int) -> None:
        for _ in range(count):
            clients = []
            for _ in range(K):
                c = socket.socket()
                c.setblocking(False)
                c.connect_ex(address)
                clients.append(c)
            for c in clients:
                c.send(MESSAGE)  # queued by the kernel even before the server accepts
            waiting = clients
            for _ in range(100 * K):  # passes until every echo is back
                if not waiting:
                    break
                one_pass()
                waiting = [c for c in waiting if not _echoed(c)]
            else:
                raise RuntimeError("echoes missing")
            for c in clients:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
                c.close()
            for _ in range(100 * K):  # passes until the server closed its side of each
                if not open_conns():
                    break
                one_pass()
            else:
                raise RuntimeError("connections left open")

    rounds(20)  # warm-up
    start = time.process_time()
    rounds(ROUNDS)
    return (time.process_time() - start) / (ROUNDS * K) * 1e6


def _echoed(c: socket.socket) -> bool:
    try:
        return len(c.recv(1024)) == len(MESSAGE)
    except BlockingIOError:
        return False


def main() -> int:
    which = sys.argv[1] if len(sys.argv) > 1 else "netloop"
    if which == "minimal":
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        listener.setblocking(False)
        ep = select.epoll()
        lfd = listener.fileno()
        ep.register(lfd, select.EPOLLIN)
        socks = {}

        def one_pass() -> None:
            for fd, _ in ep.poll(0):
                if fd == lfd:
                    while True:
                        try:
                            s, _ = listener.accept()
                        except BlockingIOError:
                            break
                        s.setblocking(False)
                        socks[s.fileno()] = s
                        ep.register(s.fileno(), select.EPOLLIN)
                    continue
                s = socks[fd]
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    data = b""
                if data:
                    s.send(data)
                else:
                    del socks[fd]
                    ep.unregister(fd)
                    s.close()
        per_conn = drive(listener.getsockname(), one_pass, lambda: len(socks))
        ep.close()
        listener.close()
    else:
        # The benchmark servers' legacy echo (servers.py silences asyncore's deprecation).
        from servers import LEGACY_RECV, make_dispatcher_classes
        if which == "asyncore":  # the stdlib's (Python 3.11 and older)
            import asyncore
        else:
            from netloop import asyncore
        _, EchoServer = make_dispatcher_classes(asyncore, LEGACY_RECV)
        server = EchoServer("127.0.0.1", 0)
        socket_map = asyncore.socket_map
        per_conn = drive(server.socket.getsockname(),
                         lambda: asyncore.loop(0, map=socket_map, count=1),
                         lambda: len(socket_map) - 1)
        asyncore.close_all()
    print("%-8s K=%d: %.3f us CPU per connection (server and clients in one process)"
          % (which, K, per_conn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
