#!/usr/bin/env python3
"""Scaling out: echo servers with worker processes, and behind HAProxy (PROXY protocol).

    python benchmarks/bench_scale.py                 # every server x scenario, 3 repeats
    python benchmarks/bench_scale.py --quick         # smoke run (a few seconds)
    python benchmarks/bench_scale.py --servers netloop-w2,uvloop-w2 --scenarios pp100
    python benchmarks/bench_scale.py --list

Servers (each in its own process tree, not pinned: the workers need every core):

    netloop              python -m netloop echo (one process, no supervisor): the reference
    netloop-w1           python -m netloop echo --workers 1 (supervisor + one worker)
    netloop-w2           python -m netloop echo --workers 2 (SO_REUSEPORT, one socket each)
    asyncio-w2           two asyncio processes, create_server(reuse_port=True)
    uvloop-w2            the same on uvloop
    haproxy+netloop      HAProxy (mode tcp) in front of netloop, no PROXY header
    haproxy-v1+netloop   HAProxy send-proxy    -> netloop echo --proxy-protocol
    haproxy-v2+netloop   HAProxy send-proxy-v2 -> netloop echo --proxy-protocol

Scenarios: pp1 (one connection: latency), pp100 (100 connections: throughput), connrate
(connect, 64 B echo, close, 32 at a time: connections per second across workers, and the
per-connection cost of the PROXY header).

CPU per operation is the CPU time of the whole server process tree (supervisor and workers)
and, apart, of HAProxy, read from /proc before and after each load run, divided by the
operations completed (the load generator runs without warm-up, so the window is the run).
The load generator's own CPU is reported too.

What the figures can and cannot show on a 2-core machine: the load generator needs most of
one core, so two workers share what is left with it. Throughput with 2 workers cannot double
here; what the rows show is the cost per request of the multi-process set-up (supervisor, one
socket per worker, the kernel's balancing) against one process, how evenly connections spread,
and, behind HAProxy, the CPU and latency the balancer and the PROXY header add per request
and per connection. Scaling with cores needs a machine with more cores than load generator +
workers.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402
from benchlib import BenchError  # noqa: E402

SCENARIOS = {
    "pp1": dict(mode="pingpong", conns=1, size=64, title="pingpong 64 B, 1 conn"),
    "pp100": dict(mode="pingpong", conns=100, size=64, title="pingpong 64 B, 100 conns"),
    "connrate": dict(mode="connrate", conns=32, size=64,
                     title="connect + 64 B echo + close, 32 at a time"),
}
SERVERS = ["netloop", "netloop-w1", "netloop-w2", "asyncio-w2", "uvloop-w2",
           "haproxy+netloop", "haproxy-v1+netloop", "haproxy-v2+netloop"]
QUICK_SERVERS = ["netloop-w2", "asyncio-w2", "haproxy-v2+netloop"]
QUICK_SCENARIOS = ["pp1", "connrate"]

HAPROXY_CONFIG = """
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend front
    bind {host}:{front}
    default_backend netloop
backend netloop
    server one {host}:{back}{send}
"""


# ---------------------------------------------------------------- the asyncio/uvloop server

def serve_reuseport(kind: str, procs: int, host: str) -> int:
    """``procs`` forked processes, each with its own event loop and SO_REUSEPORT socket."""
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    probe.bind((host, 0))  # holds the port (bound, not listening: takes no connection)
    port = probe.getsockname()[1]
    children = []
    ready_r, ready_w = os.pipe()
    for _ in range(procs):
        pid = os.fork()
        if pid == 0:
            code = 0
            os.close(ready_r)
            try:
                _reuseport_child(kind, host, port, ready_w)
            except BaseException:
                code = 1
            os._exit(code)
        children.append(pid)
    os.close(ready_w)
    got = b""
    while len(got) < procs:  # announce the port once every process listens
        chunk = os.read(ready_r, procs)
        if not chunk:
            break
        got += chunk
    os.close(ready_r)
    print("listening on %s:%d" % (host, port), flush=True)

    def stop(signum, frame):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for pid in children:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
    probe.close()
    return 0


def _reuseport_child(kind: str, host: str, port: int, ready: int) -> None:
    import asyncio

    if kind == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):  # type: ignore[no-untyped-def]
            self.transport = transport

        def data_received(self, data):  # type: ignore[no-untyped-def]
            self.transport.write(data)

    server = loop.run_until_complete(loop.create_server(Echo, host, port, reuse_port=True,
                                                        backlog=1024))
    os.write(ready, b"r")
    os.close(ready)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.add_signal_handler(signal.SIGINT, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.close()


# ---------------------------------------------------------------- process trees and CPU

def tree(pid: int) -> list:
    out = [pid]
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            for child in f.read().split():
                out.extend(tree(int(child)))
    except OSError:
        pass
    return out


def cpu_seconds(pids: list) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def haproxy_path() -> str:
    for path in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy"):
        if os.path.exists(path):
            return path
    import shutil
    return shutil.which("haproxy") or ""


class Setup:
    """The processes of one server row: (backend, optional balancer)."""

    def __init__(self, name: str, host: str) -> None:
        self.name = name
        self.host = host
        self.backend = None  # type: benchlib.ServerProcess | None
        self.balancer = None  # type: benchlib.ServerProcess | None
        self.port = 0
        self._dir = tempfile.mkdtemp(prefix="netloop-scale-")

    def start(self) -> None:
        py = sys.executable
        env = benchlib.server_env()
        cli = [py, "-m", "netloop", "echo", "--host", self.host, "--port", "0"]
        if self.name == "netloop":
            cmd = cli
        elif self.name.startswith("netloop-w"):
            cmd = cli + ["--workers", self.name[len("netloop-w"):]]
        elif self.name in ("asyncio-w2", "uvloop-w2"):
            cmd = [py, os.path.abspath(__file__), "--serve", self.name.split("-")[0],
                   "--procs", "2", "--host", self.host]
        elif self.name.startswith("haproxy"):
            cmd = cli + (["--proxy-protocol"] if "-v" in self.name else [])
        else:
            raise BenchError("unknown server %r" % self.name)
        self.backend = benchlib.ServerProcess(cmd, env=env, host=self.host, name=self.name)
        self.backend.start()
        self.port = self.backend.port
        if self.name.startswith("haproxy"):
            binary = haproxy_path()
            if not binary:
                raise BenchError("haproxy is not installed (apt-get install haproxy)")
            front = benchlib.free_port(self.host)
            send = {"haproxy+netloop": "", "haproxy-v1+netloop": " send-proxy",
                    "haproxy-v2+netloop": " send-proxy-v2"}[self.name]
            config = os.path.join(self._dir, "haproxy.cfg")
            with open(config, "w") as f:
                f.write(HAPROXY_CONFIG.format(host=self.host, front=front, back=self.port,
                                              send=send))
            self.balancer = benchlib.ServerProcess([binary, "-db", "-f", config], env=env,
                                                   host=self.host, port=front,
                                                   name="haproxy", nofile=50000)
            self.balancer.start()
            self.port = front

    def server_pids(self) -> list:
        assert self.backend is not None and self.backend.proc is not None
        return tree(self.backend.proc.pid)

    def balancer_pids(self) -> list:
        if self.balancer is None or self.balancer.proc is None:
            return []
        return tree(self.balancer.proc.pid)

    def stop(self) -> None:
        for proc in (self.balancer, self.backend):
            if proc is not None:
                proc.stop()
                proc.cleanup_files()
        import shutil
        shutil.rmtree(self._dir, ignore_errors=True)


def run_cell(loadgen: str, name: str, sc_name: str, opts: argparse.Namespace) -> dict:
    sc = SCENARIOS[sc_name]
    setup = Setup(name, opts.host)
    record = {"server": name, "scenario": sc_name, "ok": False}
    try:
        setup.start()
        # Worker processes may still be starting: one short run first (not measured).
        benchlib.run_loadgen(loadgen, setup.port, mode="pingpong", conns=2, size=64,
                             duration=0.2, warmup=0.0, host=opts.host, timeout=60)
        spids, bpids = setup.server_pids(), setup.balancer_pids()
        s0, b0 = cpu_seconds(spids), cpu_seconds(bpids)
        result = benchlib.run_loadgen(loadgen, setup.port, mode=sc["mode"], conns=sc["conns"],
                                      size=sc["size"], duration=opts.duration, warmup=0.0,
                                      host=opts.host, timeout=120)
        s1, b1 = cpu_seconds(spids), cpu_seconds(bpids)
        ops = result.get("requests") or 0
        record.update(
            ok=result.get("errors", 0) == 0 and ops > 0,
            rate=result.get("rate"), unit=result.get("rate_unit"),
            p50_us=(result.get("latency_us") or {}).get("p50"),
            p99_us=(result.get("latency_us") or {}).get("p99"),
            server_cpu_us_per_op=round((s1 - s0) * 1e6 / ops, 2) if ops else None,
            balancer_cpu_us_per_op=round((b1 - b0) * 1e6 / ops, 2) if ops and bpids else None,
            client_cpu_util=(result.get("client") or {}).get("cpu_util"),
            workers=len(spids) - (1 if name.startswith(("netloop-w", "asyncio-w", "uvloop-w"))
                                  else 0),
            errors=result.get("errors"))
        if not record["ok"]:
            record["error"] = "errors=%s requests=%s" % (result.get("errors"), ops)
    except BenchError as exc:
        record["error"] = str(exc)
    finally:
        setup.stop()
    return record


def summarise(records: list, servers: list, scenarios: list) -> str:
    lines = []
    for sc_name in scenarios:
        sc = SCENARIOS[sc_name]
        lines.append("\n### %s (%s)\n" % (sc_name, sc["title"]))
        lines.append("| server | rate | p50 us | p99 us | server CPU us/op | balancer CPU us/op "
                     "| loadgen CPU |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for name in servers:
            cell = [r for r in records if r["server"] == name and r["scenario"] == sc_name
                    and r["ok"]]
            if not cell:
                errs = [r.get("error") for r in records
                        if r["server"] == name and r["scenario"] == sc_name]
                lines.append("| %s | failed: %s | | | | | |" % (name, (errs or ["-"])[0]))
                continue

            def med(key: str) -> str:
                vals = [r[key] for r in cell if r.get(key) is not None]
                return "%.1f" % statistics.median(vals) if vals else "-"
            rate = statistics.median(r["rate"] for r in cell)
            lines.append("| %s | %.0f %s | %s | %s | %s | %s | %s%% |" % (
                name, rate, cell[0]["unit"], med("p50_us"), med("p99_us"),
                med("server_cpu_us_per_op"), med("balancer_cpu_us_per_op"),
                "%.0f" % (100 * statistics.median(r["client_cpu_util"] or 0 for r in cell))))
    return "\n".join(lines)


def main(argv: list = None) -> int:  # type: ignore[assignment]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", help="comma-separated (default: all)")
    ap.add_argument("--scenarios", help="comma-separated (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--quick", action="store_true", help="smoke run: few cells, short runs")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--out", help="write the raw records as JSON here")
    ap.add_argument("--serve", choices=["asyncio", "uvloop"], help=argparse.SUPPRESS)
    ap.add_argument("--procs", type=int, default=2, help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.serve:
        return serve_reuseport(opts.serve, opts.procs, opts.host)
    if opts.list:
        print("servers:", ", ".join(SERVERS))
        print("scenarios:", ", ".join(SCENARIOS))
        return 0
    servers = opts.servers.split(",") if opts.servers else (QUICK_SERVERS if opts.quick
                                                              else SERVERS)
    scenarios = opts.scenarios.split(",") if opts.scenarios else (
        QUICK_SCENARIOS if opts.quick else list(SCENARIOS))
    if opts.quick:
        opts.repeat, opts.duration = 1, min(opts.duration, 0.5)
    for name in servers:
        if name not in SERVERS:
            ap.error("unknown server %r (see --list)" % name)
    for name in scenarios:
        if name not in SCENARIOS:
            ap.error("unknown scenario %r (see --list)" % name)
    loadgen = benchlib.build_loadgen(quiet=True)
    records = []
    for rep in range(opts.repeat):
        for name in servers:
            for sc_name in scenarios:
                rec = run_cell(loadgen, name, sc_name, opts)
                rec["repeat"] = rep
                records.append(rec)
                print("%-20s %-9s %s" % (name, sc_name, "%.0f %s, server %s us/op" % (
                    rec["rate"], rec["unit"], rec["server_cpu_us_per_op"]) if rec["ok"]
                    else "FAILED: %s" % rec.get("error")), file=sys.stderr, flush=True)
    report = summarise(records, servers, scenarios)
    print("# bench_scale: %s, %d cores, %s\n" % (" ".join(sys.argv[1:]) or "(defaults)",
                                                 os.cpu_count() or 0, sys.version.split()[0]))
    print(report)
    if opts.out:
        with open(opts.out, "w") as f:
            json.dump({"argv": sys.argv, "records": records}, f, indent=1)
    return 0 if all(r["ok"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
