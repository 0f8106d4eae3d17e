#!/usr/bin/env python3
"""What a timeout on every poll costs the kernel: one-connection ping-pong against the
benchmarks' hand-written epoll echo loop (``servers.py --kind minimal-epoll``), once polling with
``poll()`` (no timeout, as in every other run) and once with ``poll(30.0)`` (``--poll-timeout
30``: asyncore's default ``loop(timeout=30.0)``, polled as 3.11's asyncore does).

A wait with a timeout arms a kernel timer when the process sleeps and cancels it when an
event wakes it; at one connection the server sleeps once per request, so the difference
between the rows is that cost per request (in system time: both loops run the same Python
code and make the same system calls). netloop's long runs with a timeout avoid it on Linux
with one periodic timer per run (``Loop._arm_tick``, ``netloop._timerfd``: the os module's
timerfd on 3.13+, the C library's through ctypes before; tests/test_run_tick.py).

Server CPU (user + sys) per request from the C load generator (``--server-pid``), the server
pinned to CPU 0 and the client to CPU 1 where there are two; the variants alternate run by
run, so that machine noise falls on both; the table gives medians over ROUNDS runs each.

    python benchmarks/bench_timed_wait.py          # ROUNDS=9 SECONDS=3: about 1.5 minutes
    ROUNDS=1 SECONDS=0.5 python benchmarks/bench_timed_wait.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402

ROUNDS = int(os.environ.get("ROUNDS", 9))
SECONDS = float(os.environ.get("SECONDS", 3))
VARIANTS = {"poll()": [], "poll(30.0)": ["--poll-timeout", "30.0"]}

def one_run(loadgen: str, variant: str) -> dict:
    """One loadgen run against the benchmarks' hand-written loop (servers.py minimal-epoll)."""
    two = len(os.sched_getaffinity(0)) >= 2
    cmd = [sys.executable, benchlib.SERVERS_PY, "--kind", "minimal-epoll", "--port", "0"]
    srv = benchlib.ServerProcess(cmd + VARIANTS[variant], cpu=0 if two else None,
                                 name="minimal-epoll " + variant)
    srv.start()
    try:
        lg = [loadgen, "--host", "127.0.0.1", "--port", str(srv.port), "--mode", "pingpong",
              "--conns", "1", "--size", "64", "--duration", str(SECONDS),
              "--warmup", str(min(1.0, SECONDS / 2)), "--server-pid", str(srv.proc.pid)]
        if two:
            lg += ["--cpu", "1"]
        out = subprocess.run(lg, stdout=subprocess.PIPE, text=True, timeout=SECONDS + 60,
                             check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        srv.stop()
        srv.cleanup_files()


def main() -> None:
    loadgen = benchlib.build_loadgen(quiet=True)
    got = {v: [] for v in VARIANTS}
    for _ in range(ROUNDS):
        for v in VARIANTS:
            d = one_run(loadgen, v)
            n = d["requests"]
            s = d["server"]
            got[v].append((s["cpu_us_per_op"], s["cpu_user_s"] / n * 1e6,
                           s["cpu_sys_s"] / n * 1e6, d["rate"]))
    print("one-connection ping-pong, hand-written epoll loop, Python %s, %d runs of %.1f s each"
          % (sys.version.split()[0], ROUNDS, SECONDS))
    print()
    print("| variant | CPU per request, us | user | sys | requests/s |")
    print("|---|---:|---:|---:|---:|")
    med = {}
    for v, rows in got.items():
        med[v] = [statistics.median(r[i] for r in rows) for i in range(4)]
        print("| %s | %.2f | %.2f | %.2f | %.0f |" % ((v,) + tuple(med[v])))
    base, timed = med["poll()"], med["poll(30.0)"]
    print()
    print("timeout on every poll: %+.2f us per request (sys %+.2f)"
          % (timed[0] - base[0], timed[2] - base[2]))
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))
    from netloop import _timerfd

    print("netloop on this system: %s" % (
        "long runs with a timeout wait on a periodic timerfd (no timeout per poll)"
        if _timerfd.AVAILABLE else "every poll keeps the run's timeout (no timerfd)"))


if __name__ == "__main__":
    main()
