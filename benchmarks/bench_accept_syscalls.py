#!/usr/bin/env python3
"""What the end of an accept burst costs: an accept() that finds the queue empty, against asking
the kernel how many connections wait (Linux, ``TCP_INFO``; ``dispatcher.accept_queue_length``).

Each variant opens a loopback connection, accepts it, and closes both ends with a reset, in
one process; it differs only in what else it does per connection:

- ``accept``: nothing else (the floor);
- ``+ failing accept``: one more ``accept()`` on the now empty, non-blocking listener, which
  raises ``BlockingIOError`` (how a burst that accepts until it fails ends);
- ``+ queue length``: one ``getsockopt(IPPROTO_TCP, TCP_INFO)`` on the listener before the
  accept (how netloop's listeners bound a burst on Linux).

Process CPU time (user + sys) per connection, over ROUNDS batches of BATCH connections per
variant, the variants interleaved batch by batch so that machine noise falls on all three;
the table gives each variant's quartiles and its median's excess over the floor's median.
The difference between the rows is the figure to read (the connection itself is most of each).

    python benchmarks/bench_accept_syscalls.py            # ROUNDS=30 BATCH=500: ~1 minute
    ROUNDS=3 BATCH=50 python benchmarks/bench_accept_syscalls.py
"""

from __future__ import annotations

import os
import socket
import statistics
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

ROUNDS = int(os.environ.get("ROUNDS", 30))
BATCH = int(os.environ.get("BATCH", 500))
RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets, no TIME_WAIT left
VARIANTS = ("accept", "+ failing accept", "+ queue length")


def batch(listener: socket.socket, variant: str, n: int) -> float:
    """CPU seconds per connection for ``n`` connections of ``variant``."""
    from netloop.dispatcher import accept_queue_length

    address = listener.getsockname()
    t0 = time.process_time()
    for _ in range(n):
        c = socket.socket()
        c.connect(address)
        if variant == "+ queue length" and accept_queue_length(listener) < 1:
            raise RuntimeError("the accept queue was not counted")
        conn, _ = listener.accept()
        if variant == "+ failing accept":
            try:
                listener.accept()
            except BlockingIOError:
                pass
            else:
                raise RuntimeError("the second accept() found a connection")
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
        c.close()
        conn.close()
    return (time.process_time() - t0) / n


def main() -> int:
    from netloop.dispatcher import _TCP_INFO

    if _TCP_INFO is None:
        print("bench_accept_syscalls: the accept queue is counted on Linux only (TCP_INFO)")
        return 0
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.setblocking(False)
    try:
        for variant in VARIANTS:  # warm-up
            batch(listener, variant, max(1, BATCH // 10))
        times = {v: [] for v in VARIANTS}
        for _ in range(ROUNDS):
            for variant in VARIANTS:
                times[variant].append(batch(listener, variant, BATCH) * 1e6)
    finally:
        listener.close()
    floor = statistics.median(times["accept"])
    print("CPU per connection, us (%d rounds of %d connections per variant, Python %s)"
          % (ROUNDS, BATCH, sys.version.split()[0]))
    print("| variant | p25 | median | p75 | median over the floor |")
    print("|---|---:|---:|---:|---:|")
    for variant in VARIANTS:
        xs = sorted(times[variant])
        q1, med, q3 = xs[len(xs) // 4], statistics.median(xs), xs[(3 * len(xs)) // 4]
        print("| %s | %.2f | %.2f | %.2f | %+.2f |" % (variant, q1, med, q3, med - floor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
