#!/usr/bin/env python3
"""CPU a loop spends on idle connections: N silent connections and one periodic timer.

    python benchmarks/bench_idle_cpu.py                # N=5000, 10 Hz timer, 5 s, each backend
    N=9000 SECONDS=10 python benchmarks/bench_idle_cpu.py epoll

A loop with nothing to do but a timer should cost the same with 10 or 10,000 idle
connections: a pass is O(events). Until issue 12 item 6, the epoll backend re-armed every
registration once a second after an empty poll (a sweep for descriptors closed behind a
channel's back), which cost O(connections) per second. Prints the process's CPU time over
the run as a percentage of wall time (both ends of each connection live in this process;
only the server ends are channels). Figures depend on the machine; they are not asserted.
"""

from __future__ import annotations

import os
import resource
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

import netloop  # noqa: E402

N = int(os.environ.get("N", 5000))
SECONDS = float(os.environ.get("SECONDS", 5))
HZ = float(os.environ.get("HZ", 10))


class Silent(netloop.BufferedDispatcher):
    def handle_read(self) -> None:
        if not self.recv(4096):
            self.close()


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(poller: str, n: int) -> float:
    lp = netloop.Loop(poller=poller)
    peers = []
    try:
        for _ in range(n):
            a, b = socket.socketpair()
            Silent(a, map=lp.map)
            peers.append(b)
        ticks = [0]
        lp.call_every(1.0 / HZ, lambda: ticks.__setitem__(0, ticks[0] + 1))
        lp.call_later(0.5, lp.stop)
        lp.run_forever()  # warm-up: registrations made
        start_cpu, start = cpu(), time.monotonic()
        lp.call_later(SECONDS, lp.stop)
        lp.run_forever()
        return 100.0 * (cpu() - start_cpu) / (time.monotonic() - start)
    finally:
        for obj in list(lp.map.values()):
            obj.close()
        lp.close()
        for b in peers:
            b.close()


def main() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * N + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    names = sys.argv[1:] or [p for p in netloop.available_pollers() if p != "select"]
    for name in names:
        for n in (10, N):
            print("%-6s %6d idle connections, %g Hz timer: %.3f%% CPU"
                  % (name, n, HZ, measure(name, n)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
