#!/usr/bin/env python3
"""What a timeout on every poll costs the kernel: one-connection ping-pong against the same
hand-written epoll echo loop, once polling with ``poll()`` (no timeout) and once with
``poll(30.0)`` (asyncore's default ``loop(timeout=30.0)``, polled as 3.11's asyncore does).

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
VARIANTS = {"poll()": "None", "poll(30.0)": "30.0"}

SERVER = r"""
import select, socket, sys
timeout = %s
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(16)
ls.setblocking(False)
ep = select.epoll()
ep.register(ls.fileno(), select.EPOLLIN)
socks = {}
print(ls.getsockname()[1], flush=True)
while True:
    for fd, ev in ep.poll(timeout):
        if fd == ls.fileno():
            try:
                s, _ = ls.accept()
            except OSError:
                continue
            s.setblocking(False)
            socks[s.fileno()] = s
            ep.register(s.fileno(), select.EPOLLIN)
            continue
        s = socks[fd]
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        if not data:
            ep.unregister(fd)
            del socks[fd]
            s.close()
            continue
        s.send(data)
"""


def one_run(loadgen: str, variant: str) -> dict:
    two = len(os.sched_getaffinity(0)) >= 2
    cmd = [sys.executable, "-c", SERVER % VARIANTS[variant]]
    if two:
        cmd = ["taskset", "-c", "0"] + cmd
    srv = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        port = srv.stdout.readline().strip()
        lg = [loadgen, "--host", "127.0.0.1", "--port", port, "--mode", "pingpong",
              "--conns", "1", "--size", "64", "--duration", str(SECONDS),
              "--warmup", str(min(1.0, SECONDS / 2)), "--server-pid", str(srv.pid)]
        if two:
            lg += ["--cpu", "1"]
        out = subprocess.run(lg, stdout=subprocess.PIPE, text=True, timeout=SECONDS + 60,
                             check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        srv.kill()
        srv.wait()
        srv.stdout.close()


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
