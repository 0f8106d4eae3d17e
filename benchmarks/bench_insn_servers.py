#!/usr/bin/env python3
"""User-space instructions per request of whole server processes, any implementation.

``bench_insn.py`` counts netloop's own server passes in-process, which needs a loop it can run
one pass at a time. This script counts what any echo server of ``benchmarks/servers.py`` (or
``python -m netloop echo``) executes in user space per request, uvloop's C included, so the
figures of a Python loop and of uvloop sit in one table:

- the server runs under ``valgrind --tool=callgrind`` (every instruction of the process: the
  interpreter, C extensions, libuv, libc's system call wrappers; never the kernel's work);
- this process is the client (not under valgrind): 100 connections (``pp100``) or one
  (``pp1``), in lock-step rounds. Each round stops the server (SIGSTOP, and waits until the
  kernel says it is stopped), sends 64 bytes on every connection, lets the server go on
  (SIGCONT) and reads every echo. So every round is exactly one batch of ready connections,
  as many as a real pp100 run hands one ``epoll_wait`` (about 90 there), or one per pass.
  ``connrate``: each round opens 8 new connections while the server is stopped, sends 64
  bytes on each, reads the echoes and resets them (per connection: accept, echo, close).
  ``stream64k``: each round sends a 64 KiB chunk on each of 10 connections and reads every
  echo back (checked byte for byte): the bulk path of ``run.py``'s ``stream256k``, counted
  per 64 KiB (x16 per MB);
- each server runs twice, with a short and a long measured part after the same warm-up; the
  difference of the two totals, divided by the requests of the difference, is the cost per
  request with start-up, set-up and shutdown cancelled out.

    python benchmarks/bench_insn_servers.py                  # 3.11 runner venv: the table
    python benchmarks/bench_insn_servers.py --python 3.13 --servers netloop,uvloop --scenarios pp1
    python benchmarks/bench_insn_servers.py --python 3.11 --json insn.json   # kept for verdict17
    python benchmarks/bench_insn_servers.py --python 3.13 --bytecodes --scenarios connrate \
        --servers netloop-asyncore,minimal-asyncore      # Python bytecodes, by function

Servers (``--servers``): ``netloop`` (``python -m netloop echo``), ``netloop-asyncore`` (the
legacy ``dispatcher_with_send`` echo on ``netloop.asyncore``), ``minimal-asyncore`` (that
legacy code on the thinnest asyncore API: the floor of any asyncore implementation),
``minimal-epoll`` (the hand-written loop), ``uvloop`` and ``asyncio`` (their echo Protocols).
The interpreter is the benchmark runner's venv (``benchmarks/.venvs/pyXY``, made by
``run.py``) or a path.

Counts repeat to within about 1% (the garbage collector's timing and hash seeds are the
remaining sources; PYTHONHASHSEED is fixed). They are instructions, not time: a C loop's
instructions run at a higher rate than the interpreter's, so the CPU-time ratio of two servers
is not the ratio of these counts, but a Python loop cannot spend less time than the
instructions it executes need.

``--bytecodes`` (Python 3.12+) counts, instead, the Python bytecode instructions per request
by function (``--lines``: by line) with ``sys.monitoring`` (``bytecode_count.py``): no
valgrind, seconds instead of minutes, the same lock-step rounds. It says where a Python
server's own code spends its work (a C call counts as one instruction, whatever it costs).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_insn
import benchlib

SERVERS = ("netloop", "netloop-asyncore", "minimal-asyncore", "minimal-epoll", "uvloop", "asyncio")
# scenario: (connections, warm-up rounds, short measured rounds, long measured rounds)
SCENARIOS = {"pp100": (100, 30, 30, 230), "pp1": (1, 300, 300, 2300),
             "connrate": (8, 50, 50, 550), "stream64k": (10, 20, 20, 120)}
MESSAGE = b"x" * 64
# stream64k: each round sends one 64 KiB chunk on each of 10 connections (the bulk path of
# run.py's stream256k, counted per 64 KiB: x16 for its per-MB figures).
MESSAGES = {"stream64k": bytes(range(256)) * 256}
BYTECODE_COUNT_PY = os.path.join(HERE, "bytecode_count.py")
UNITS = {"connrate": "connection", "stream64k": "64 KiB"}


def server_command(python: str, name: str, port: int):
    if name == "netloop":
        return [python, "-m", "netloop", "echo", "--host", "127.0.0.1", "--port", str(port),
                "--kind", "dispatcher"]
    kind = {"netloop-asyncore": "netloop-dispatcher"}.get(name, name)
    return [python, benchlib.SERVERS_PY, "--kind", kind, "--host", "127.0.0.1", "--port", "0"]


def _stopped(pid: int) -> bool:
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return False
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state not in ("T", "t"):
            return False
    return True


def _children(pid: int):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _round(pid: int, conns, port: int = 0, stop: bool = True,
           message: bytes = MESSAGE) -> None:
    """One lock-step round; with ``port``, a connrate round: ``conns`` is a number of new
    connections, each opened while the server is stopped, echoed once and reset. Without
    ``stop`` the server is not stopped (for system call counts: a stop interrupts and
    restarts the server's wait, which strace would count)."""
    if stop:
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while not _stopped(pid):
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not stop")
            time.sleep(0.0002)
    if port:
        conns = [socket.create_connection(("127.0.0.1", port), timeout=60)
                 for _ in range(conns)]
    for c in conns:
        c.sendall(message)
    if stop:
        os.kill(pid, signal.SIGCONT)
    for c in conns:
        got = bytearray()
        while len(got) < len(message):
            chunk = c.recv(len(message) - len(got))
            if not chunk:
                raise RuntimeError("the server closed a connection")
            got += chunk
        if got != message:
            raise RuntimeError("the echo differs from what was sent")
    if port:
        for c in conns:  # reset, as loadgen's connrate does (no TIME_WAIT left behind)
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()


def run_once(python: str, name: str, conns_n: int, warmup: int, rounds: int,
             timeout: float = 120, connrate: bool = False, syscalls: bool = False,
             message: bytes = MESSAGE, bytecodes: bool = False, keep: str = ""):
    """One server under callgrind: the process's total instructions for warm-up + rounds;
    with ``syscalls``, under ``strace -c`` instead: {system call: calls}; with ``bytecodes``,
    under bytecode_count.py: {"FILE:LINE FUNCTION": {line: bytecodes}}."""
    if bytecodes:
        tool = python
    else:
        tool = shutil.which("strace") if syscalls else bench_insn.find_valgrind()
    if tool is None:
        raise RuntimeError("%s is not installed (apt-get install %s)"
                           % (("strace",) * 2 if syscalls else ("valgrind",) * 2))
    with tempfile.TemporaryDirectory(prefix="bench_insn_servers.") as tmp:
        out = os.path.join(tmp, "cg.out")
        port = benchlib.free_port() if name == "netloop" else None
        cmd = server_command(python, name, port or 0)
        if bytecodes:
            cmd[:1] = [python, BYTECODE_COUNT_PY, out]
        elif syscalls:
            cmd[:0] = [tool, "-f", "-c", "-o", out]
        else:
            cmd[:0] = [tool, "--tool=callgrind", "--callgrind-out-file=" + out]
        srv = benchlib.ServerProcess(cmd, env=benchlib.server_env({"PYTHONHASHSEED": "0"}),
                                     port=port, ready_timeout=timeout, name=name)
        try:
            srv.start()
            _drive(srv, conns_n, warmup, rounds, connrate, syscalls, message)
        finally:
            if syscalls and srv.alive():
                # strace ends (and writes its summary) when the server it runs exits.
                for child in _children(srv.proc.pid):
                    try:
                        os.kill(child, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            # SIGTERM (the servers stop their loops and exit: callgrind writes its totals),
            # once more if it is still there, then SIGKILL to the process group.
            srv.stop(timeout=timeout / 2, again=True)
            srv.cleanup_files()
        if srv.stuck and not srv.killed:
            sys.stderr.write("bench_insn_servers: %s exited only after a second SIGTERM (after "
                             "the first: %s)\n" % (name, srv.stuck))
        if srv.killed:
            raise RuntimeError("%s did not exit %.0f s after each of two SIGTERMs (%s): %s"
                               % (name, timeout / 2, srv.stuck, srv.stderr_tail()))
        if syscalls:
            return _strace_counts(out)
        if bytecodes:
            try:
                with open(out) as f:
                    return json.load(f)
            except (OSError, ValueError):
                raise RuntimeError("%s wrote no bytecode counts: %s"
                                   % (name, srv.stderr_tail())) from None
        if keep:
            shutil.copyfile(out, keep)  # (for --functions: callgrind_annotate reads it)
        total = bench_insn.callgrind_total(out)
        if not total:
            raise RuntimeError("callgrind wrote no totals for %s: %s" % (name, srv.stderr_tail()))
        return total


def _drive(srv, conns_n: int, warmup: int, rounds: int, connrate: bool, syscalls: bool,
           message: bytes = MESSAGE) -> None:
    """The client's side: connect, then the warm-up and measured rounds. valgrind runs the
    server in its own process, which each round stops; strace runs it as a child, not
    stopped."""
    pid, port = srv.proc.pid, srv.port
    if connrate:
        for _ in range(warmup + rounds):
            _round(pid, conns_n, port, stop=not syscalls)
        return
    conns = []
    try:
        while len(conns) < conns_n:
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=60))
        for c in conns:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(warmup + rounds):
            _round(pid, conns, stop=not syscalls, message=message)
    finally:
        for c in conns:
            c.close()


def _strace_counts(path: str) -> dict:
    """{system call: calls} from an ``strace -c`` summary."""
    counts = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            # "% time  seconds  usecs/call  calls  [errors]  syscall"
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                counts[parts[-1]] = int(parts[3])
    return counts


def measure(python: str, name: str, scenario: str, syscalls: bool = False,
            rounds=None, bytecodes: bool = False, functions: bool = False) -> dict:
    """Per request (connrate: per connection) of ``name`` in ``scenario``: instructions
    (``insn``), or with ``syscalls`` the calls of each system call (``calls``), or with
    ``bytecodes`` the Python bytecodes (``bytecodes``; by function and line in ``by_line``:
    {"FILE:LINE FUNCTION": {line: bytecodes}}). ``rounds``: (warm-up, short, long) instead of
    the scenario's."""
    conns_n, warmup, short, long_ = SCENARIOS[scenario]
    if rounds:
        warmup, short, long_ = rounds
    connrate = scenario == "connrate"
    if bytecodes:
        tag = benchlib.python_tag(python)
        if tuple(int(x) for x in tag.split(".")) < (3, 12):
            raise RuntimeError("--bytecodes needs Python 3.12 or newer (sys.monitoring): %s is "
                               "%s" % (python, tag))
    # Both runs must start from cached bytecode: a first run in a fresh tree, or after an
    # edit, would also compile what changed (netloop's modules, servers.py: tens to hundreds
    # of millions of instructions) and spoil the difference; it did, in one run of ~20,
    # until servers.py was compiled here too. (serve.py, the script, is compiled at every
    # start: the same in both.)
    benchlib.fill_bytecode_cache(python, check=True)
    message = MESSAGES.get(scenario, MESSAGE)
    with tempfile.TemporaryDirectory(prefix="bench_insn_servers.") as kept:
        keep_a = os.path.join(kept, "a.out") if functions else ""
        keep_b = os.path.join(kept, "b.out") if functions else ""
        a = run_once(python, name, conns_n, warmup, short, connrate=connrate,
                     syscalls=syscalls, message=message, bytecodes=bytecodes, keep=keep_a)
        b = run_once(python, name, conns_n, warmup, long_, connrate=connrate,
                     syscalls=syscalls, message=message, bytecodes=bytecodes, keep=keep_b)
        requests = (long_ - short) * conns_n
        if functions:
            fa, fb = annotate(keep_a), annotate(keep_b)
            per_function = {k: (fb.get(k, 0) - fa.get(k, 0)) / requests for k in set(fa) | set(fb)}
    if bytecodes:
        by_line = {}
        for where in set(a) | set(b):
            la, lb = a.get(where, {}), b.get(where, {})
            lines = {line: (lb.get(line, 0) - la.get(line, 0)) / requests
                     for line in set(la) | set(lb)}
            by_line[where] = {line: n for line, n in lines.items() if n}
        return {"server": name, "scenario": scenario, "requests": requests,
                "bytecodes": sum(sum(lines.values()) for lines in by_line.values()),
                "by_line": {where: lines for where, lines in by_line.items() if lines}}
    result = {"server": name, "scenario": scenario, "requests": requests, "totals": (a, b)}
    if functions:
        result["functions"] = per_function
    if syscalls:
        result["calls"] = {k: (b.get(k, 0) - a.get(k, 0)) / requests
                           for k in set(a) | set(b)}
    else:
        result["insn"] = (b - a) / requests
    return result


_ANNOTATE_LINE = re.compile(r"\s*([\d,]+)\s+\([^)]*\)\s+(\S.*)")


def parse_annotate(text: str) -> dict:
    """{"file:function": exclusive instructions} from ``callgrind_annotate --inclusive=no``."""
    counts: dict = {}
    for line in text.splitlines():
        m = _ANNOTATE_LINE.match(line)
        if m and "PROGRAM TOTALS" not in line:
            where = m.group(2).split(" [")[0].rsplit("/", 1)[-1]
            counts[where] = counts.get(where, 0) + int(m.group(1).replace(",", ""))
    return counts


def annotate(path: str) -> dict:
    """A callgrind output file's instructions by C function (``callgrind_annotate``)."""
    tool = shutil.which("callgrind_annotate")
    if tool is None:
        raise RuntimeError("callgrind_annotate is not installed (it comes with valgrind)")
    out = subprocess.run([tool, "--threshold=100", "--inclusive=no", path],
                         capture_output=True, text=True, check=True).stdout
    return parse_annotate(out)


def resolve_python(spec: str) -> str:
    if os.sep in spec:
        return spec
    path = benchlib.venv_python(spec)
    if not os.path.exists(path):
        raise SystemExit("no runner venv for %s (%s): run benchmarks/run.py --python %s once, "
                         "or pass an interpreter's path" % (spec, path, spec))
    return path


SYSCALLS_SHOWN = ("epoll_wait", "epoll_pwait", "epoll_ctl", "poll", "select", "read", "recvfrom",
                  "recvmsg", "write", "sendto", "sendmsg", "writev", "accept4", "close",
                  "setsockopt", "getsockname", "getpeername", "ioctl", "fcntl", "futex")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default="3.11", help="3.11, 3.13 (runner venvs) or a path")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--syscalls", action="store_true",
                    help="count system calls per request (strace -c) instead of instructions")
    ap.add_argument("--bytecodes", action="store_true",
                    help="count Python bytecodes per request by function (Python 3.12+) "
                    "instead of instructions")
    ap.add_argument("--lines", action="store_true", help="with --bytecodes: also by line")
    ap.add_argument("--top", type=int, default=15, metavar="N",
                    help="with --bytecodes: the N largest functions (and lines) of each server")
    ap.add_argument("--json", metavar="FILE",
                    help="also store the instruction counts in FILE, under this interpreter's "
                    "version (other interpreters' figures already there are kept): "
                    "verdict17.py --insn FILE reads them")
    ap.add_argument("--functions", type=int, default=0, metavar="N",
                    help="also show the N C functions with the most instructions per request "
                    "of each server (callgrind_annotate of the two runs' outputs)")
    opts = ap.parse_args(argv)
    python = resolve_python(opts.python)
    servers = [s for s in opts.servers.split(",") if s]
    scenarios = [s for s in opts.scenarios.split(",") if s]
    for s in servers:
        if s not in SERVERS:
            ap.error("unknown server %r (known: %s)" % (s, ", ".join(SERVERS)))
    for s in scenarios:
        if s not in SCENARIOS:
            ap.error("unknown scenario %r (known: %s)" % (s, ", ".join(SCENARIOS)))
    print("python: %s (%s)" % (python, benchlib.python_tag(python)))
    unit = UNITS
    results = {}
    if opts.bytecodes:
        if opts.syscalls or opts.json:
            ap.error("--bytecodes goes with neither --syscalls nor --json")
        if "uvloop" in servers or "asyncio" in servers:
            ap.error("--bytecodes counts Python servers: not uvloop or asyncio")
        for scenario in scenarios:
            for name in servers:
                show_bytecodes(measure(python, name, scenario, bytecodes=True), opts.top,
                               opts.lines)
        return 0
    for scenario in scenarios:
        for name in servers:
            r = measure(python, name, scenario, syscalls=opts.syscalls,
                        functions=bool(opts.functions) and not opts.syscalls)
            results[(scenario, name)] = r
            if opts.syscalls:
                shown = ", ".join("%s %.2f" % (k, v) for k, v in sorted(r["calls"].items())
                                  if v >= 0.005)
                print("%-8s %-18s per %s: %s" % (scenario, name, unit.get(scenario, "request"),
                                                 shown), flush=True)
            else:
                print("%-8s %-18s %9.0f instructions per %s  (%d; totals %d, %d)"
                      % (scenario, name, r["insn"], unit.get(scenario, "request"),
                         r["requests"], r["totals"][0], r["totals"][1]), flush=True)
                for where, n in sorted(r.get("functions", {}).items(),
                                       key=lambda kv: -kv[1])[:opts.functions]:
                    print("    %9.1f  %s" % (n, where))
    print()
    if opts.syscalls:
        for scenario in scenarios:
            names = sorted({k for name in servers
                            for k, v in results[(scenario, name)]["calls"].items()
                            if v >= 0.005 and k in SYSCALLS_SHOWN})
            print("| %s: system calls per %s | %s |" % (scenario, unit.get(scenario, "request"),
                                                       " | ".join(servers)))
            print("|---|" + "---:|" * len(servers))
            for k in names:
                print("| %s | %s |" % (k, " | ".join(
                    "%.2f" % results[(scenario, name)]["calls"].get(k, 0) for name in servers)))
            print()
        return 0
    print("| instructions per request (connrate: per connection; stream64k: per 64 KiB) | %s |"
          % " | ".join(servers))
    print("|---|" + "---:|" * len(servers))
    for scenario in scenarios:
        ref = results.get((scenario, "uvloop"))
        cells = []
        for name in servers:
            insn = results[(scenario, name)]["insn"]
            cells.append("{:,.0f}".format(insn) + (" (%.2fx)" % (insn / ref["insn"])
                                                   if ref and name != "uvloop" else ""))
        print("| %s | %s |" % (scenario, " | ".join(cells)))
    if opts.json:
        store_json(opts.json, benchlib.python_tag(python),
                   {(scenario, name): r["insn"] for (scenario, name), r in results.items()})
    return 0


def show_bytecodes(r: dict, top: int, lines: bool) -> None:
    unit = UNITS.get(r["scenario"], "request")
    print("%s %s: %.1f Python bytecodes per %s (%d)" % (r["scenario"], r["server"],
                                                       r["bytecodes"], unit, r["requests"]))
    by_line = r["by_line"]
    totals = {where: sum(per.values()) for where, per in by_line.items()}
    funcs = sorted((where for where, n in totals.items() if abs(n) >= 0.05),
                   key=lambda where: -totals[where])
    for where in funcs[:top]:
        print("  %8.1f  %s" % (totals[where], where))
    if lines:
        rows = sorted(((n, "%s:%s" % (where.split(":")[0], line))
                       for where, per in by_line.items() for line, n in per.items()
                       if abs(n) >= 0.05),
                      reverse=True)
        print("  by line:")
        for n, at in rows[:top]:
            print("  %8.1f  %s" % (n, at))
    print(flush=True)


def store_json(path: str, tag: str, insn: dict) -> None:
    """Add ``{(scenario, server): instructions}`` to ``path`` under ``tag`` (the interpreter)."""
    data: dict = {}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    per_tag = data.setdefault("insn", {}).setdefault(tag, {})
    for (scenario, name), value in insn.items():
        per_tag.setdefault(scenario, {})[name] = round(value, 1)
    data["units"] = dict(UNITS, default="request")
    data["command"] = "python benchmarks/bench_insn_servers.py --python %s --json %s" % (tag, path)
    with open(path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
