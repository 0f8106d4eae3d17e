#!/usr/bin/env python3
"""netloop benchmark runner.

Runs a matrix of (echo server x scenario); every cell is repeated R times and
summarised by its median.  Each run starts a fresh server process pinned to
one CPU and the C load generator (benchmarks/loadgen.c) pinned to another.

    python benchmarks/run.py --quick                  # smoke test, < 60 s (CI)
    python benchmarks/run.py                          # full matrix, < 30 min
    python benchmarks/run.py --servers 'netloop*,asyncio@3.11' --scenarios pp100,stream64k
    python benchmarks/run.py --list                   # show servers and scenarios

Results go to benchmarks/results/<timestamp>/ (results.json with every raw
run, results.md, and PNG plots when matplotlib is importable); the Markdown
report is also printed.  See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402
from benchlib import BenchError  # noqa: E402

# --------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------
SCENARIOS = {
    # name: loadgen settings, which servers (bytes/line) and the headline metric
    "pp1": dict(mode="pingpong", conns=1, size=64, title="pingpong 64 B, 1 conn"),
    "pp10": dict(mode="pingpong", conns=10, size=64, title="pingpong 64 B, 10 conns"),
    "pp100": dict(mode="pingpong", conns=100, size=64, title="pingpong 64 B, 100 conns"),
    "pp1000": dict(mode="pingpong", conns=1000, size=64, title="pingpong 64 B, 1000 conns"),
    "pp100-idle10k": dict(mode="pingpong", conns=100, size=64, idle=10000,
                          title="pingpong 64 B, 100 conns + 10,000 idle"),
    "stream64k": dict(mode="stream", conns=10, size=65536,
                      title="stream, 64 KiB in flight, 10 conns"),
    # Deep window (issue #17): each connection keeps 256 KiB in flight in 64 KiB writes, so a
    # server handles several full 64 KiB reads per connection per pass. Per MB echoed.
    "stream256k": dict(mode="stream", conns=10, size=262144, write_size=65536,
                       title="stream, 256 KiB in flight in 64 KiB writes, 10 conns"),
    # Large messages (issue #17): a 1 MiB request (sent in 64 KiB writes), then the whole
    # 1 MiB reply before the next request. Per request (2 MiB through the server).
    "rr1m": dict(mode="pingpong", conns=10, size=1 << 20, write_size=65536,
                 title="request/response, 1 MiB each way, 10 conns"),
    "connrate": dict(mode="connrate", conns=32, size=64,
                     title="connect+64 B echo+close, 32 workers"),
    "mem-idle10k": dict(mode="pingpong", conns=1, size=64, idle=10000, duration=1.0,
                        warmup=0.2, metric="rss_per_idle", max_repeat=1,
                        title="RSS per idle conn, 10,000 idle"),
    "line100": dict(mode="pingpong", conns=100, size=64, line=True, category="line",
                    title="line echo 64 B lines, 100 conns"),
    # Pipelined lines: each message is 16 lines of 64 B sent in one write (a client that
    # pipelines commands: SMTP PIPELINING, Redis, log shippers). Figures are per line.
    "line100-x16": dict(mode="pingpong", conns=100, size=1024, line=16, category="line",
                        title="line echo, 16 pipelined 64 B lines per message, 100 conns"),
    # Line echo next to 1,000 idle connections (under select's 1024-fd limit, so that
    # stdlib asynchat on select can take part).
    "line100-idle1k": dict(mode="pingpong", conns=100, size=64, idle=1000, line=True,
                           category="line",
                           title="line echo 64 B lines, 100 conns + 1,000 idle"),
    # TLS (issue #14): the load generator speaks TLS through OpenSSL; the servers' records go
    # through the same OpenSSL whatever the loop, so the difference is the loop's own work.
    "tls-pp100": dict(mode="pingpong", conns=100, size=64, tls=True, category="tls",
                      title="TLS pingpong 64 B, 100 conns"),
    "tls-stream64k": dict(mode="stream", conns=10, size=65536, tls=True, category="tls",
                          title="TLS stream, 64 KiB in flight, 10 conns"),
    "tls-connrate": dict(mode="connrate", conns=32, size=64, tls=True, category="tls",
                         title="TLS handshakes: connect+handshake+64 B echo+close, 32 workers"),
}
for _name, _sc in SCENARIOS.items():
    _sc.setdefault("idle", 0)
    _sc.setdefault("line", False)
    _sc.setdefault("category", "bytes")
    _sc.setdefault("metric", "rate")
    _sc.setdefault("tls", False)

QUICK_SCENARIOS = ["pp10", "connrate"]
UNITS = {"pingpong": "req/s", "stream": "MB/s", "connrate": "conn/s"}

# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------
NETLOOP_POLLERS = ("auto", "select", "poll", "epoll")


class ServerDef:
    def __init__(self, base, tag, python, kind, category, poller=None, source="servers.py",
                 note=""):
        self.base = base  # e.g. "netloop[epoll]"; TLS rows: "netloop-tls[auto]", ...
        self.tag = tag
        self.python = python
        self.kind = kind
        self.category = category
        self.poller = poller
        self.source = source
        self.note = note

    @property
    def name(self):
        return "%s@%s" % (self.base, self.tag)

    def command(self, host):
        """(argv, fixed_port or None, extra env)"""
        env = {}
        if self.kind.startswith("netloop") and self.poller and self.poller != "auto":
            env["NETLOOP_POLLER"] = self.poller
        if self.source == "netloop CLI":
            port = benchlib.free_port(host)
            cli_kind = {"netloop-dispatcher": "dispatcher", "netloop-chat": "chat",
                        "netloop-socketserver": "socketserver"}[self.kind]
            cmd = [self.python, "-m", "netloop", "echo", "--host", host, "--port", str(port),
                   "--kind", cli_kind]
            if self.poller:
                cmd += ["--backend", self.poller]
            return cmd + self._tls_args(), port, env
        cmd = [self.python, benchlib.SERVERS_PY, "--kind", self.kind, "--host", host,
               "--port", "0"]
        if self.poller:
            cmd += ["--poller", self.poller]
        return cmd + self._tls_args(), None, env

    def _tls_args(self):
        if self.category != "tls":
            return []
        cert, key = benchlib.tls_files()
        return ["--tls-cert", cert, "--tls-key", key]

    def to_json(self):
        return dict(name=self.name, base=self.base, tag=self.tag, python=self.python,
                    kind=self.kind, category=self.category, poller=self.poller,
                    source=self.source, note=self.note)


def glob_match(pattern, name):
    """Shell-style match where only * and ? are wildcards ([...] is literal)."""
    rx = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(rx, name) is not None


def discover_servers(py_infos, log):
    """All server definitions each interpreter can run, plus skip lines."""
    servers = []
    for tag, python, info in py_infos:
        mods = info["modules"]
        pollers = info["pollers"]

        def ok(mod, mods=mods):
            return mods.get(mod, {}).get("ok", False)

        def why(mod, mods=mods):
            return "%s not importable: %s" % (mod, mods.get(mod, {}).get("error", "?"))

        cli = info.get("netloop_cli", False)
        src = "netloop CLI" if cli else "servers.py"
        # netloop dispatcher_with_send echo, one row per backend
        if ok("netloop.asyncore") or cli:
            for p in NETLOOP_POLLERS:
                if p != "auto" and p not in pollers:
                    log("skip: netloop[%s]@%s (poller not available here)" % (p, tag))
                    continue
                servers.append(ServerDef("netloop[%s]" % p, tag, python, "netloop-dispatcher",
                                         "bytes", poller=p, source=src))
            if cli and ok("netloop.asyncore"):
                # the CLI runs netloop's native echo; also measure legacy asyncore code
                # (dispatcher_with_send, recv(8192)) on the netloop.asyncore facade
                for p in NETLOOP_POLLERS:
                    if p == "auto" or p in pollers:
                        servers.append(ServerDef("netloop-asyncore[%s]" % p, tag, python,
                                                 "netloop-dispatcher", "bytes", poller=p,
                                                 source="servers.py"))
        else:
            log("skip: netloop[*]@%s (%s)" % (tag, why("netloop.asyncore")))
        if ok("netloop.socketserver"):
            servers.append(ServerDef("netloop-socketserver", tag, python,
                                     "netloop-socketserver", "bytes", source=src))
        else:
            log("skip: netloop-socketserver@%s (%s)" % (tag, why("netloop.socketserver")))
        if ok("netloop.asynchat"):
            servers.append(ServerDef("netloop-chat", tag, python, "netloop-chat", "line",
                                     poller="auto", source=src))
        else:
            log("skip: netloop-chat@%s (%s)" % (tag, why("netloop.asynchat")))
        # asyncore: stdlib up to 3.11, the pyasyncore package afterwards
        if ok("asyncore"):
            label = "asyncore" if mods["asyncore"].get("source") == "stdlib" else "pyasyncore"
            for p in ("select", "poll"):
                if p in pollers:
                    servers.append(ServerDef("%s[%s]" % (label, p), tag, python, "asyncore",
                                             "bytes", poller=p))
        else:
            log("skip: asyncore@%s (%s)" % (tag, why("asyncore")))
        if ok("asynchat") and ok("asyncore"):
            label = "asynchat" if mods["asynchat"].get("source") == "stdlib" else "pyasynchat"
            servers.append(ServerDef(label, tag, python, "asynchat", "line", poller="poll"))
        else:
            log("skip: asynchat@%s (%s)" % (tag, why("asynchat")))
        servers.append(ServerDef("asyncio", tag, python, "asyncio", "bytes"))
        servers.append(ServerDef("asyncio-streams", tag, python, "asyncio-streams", "line"))
        if ok("uvloop"):
            servers.append(ServerDef("uvloop", tag, python, "uvloop", "bytes"))
            servers.append(ServerDef("uvloop-streams", tag, python, "uvloop-streams", "line"))
        else:
            log("skip: uvloop@%s (%s)" % (tag, why("uvloop")))
        # netloop on asyncio (netloop.aio): the legacy echo and chat code, served by asyncio's
        # loop and by uvloop, beside asyncio's own Protocol/streams rows above
        if ok("netloop.aio"):
            servers.append(ServerDef("netloop-aio", tag, python, "netloop-aio", "bytes",
                                     source="servers.py"))
            servers.append(ServerDef("netloop-chat-aio", tag, python, "netloop-chat-aio",
                                     "line", source="servers.py"))
            if ok("uvloop"):
                servers.append(ServerDef("netloop-aio-uvloop", tag, python,
                                         "netloop-aio-uvloop", "bytes", source="servers.py"))
                servers.append(ServerDef("netloop-chat-aio-uvloop", tag, python,
                                         "netloop-chat-aio-uvloop", "line",
                                         source="servers.py"))
        else:
            log("skip: netloop-aio@%s (%s)" % (tag, why("netloop.aio")))
        servers.append(ServerDef("socketserver", tag, python, "socketserver", "bytes"))
        # TLS rows (the tls-* scenarios): netloop's CLI echo with --tls-cert, asyncio, uvloop
        if cli:
            servers.append(ServerDef("netloop-tls[auto]", tag, python, "netloop-dispatcher",
                                     "tls", poller="auto", source=src))
        servers.append(ServerDef("asyncio-tls", tag, python, "asyncio", "tls"))
        if ok("uvloop"):
            servers.append(ServerDef("uvloop-tls", tag, python, "uvloop", "tls"))
        if "epoll" in pollers:
            servers.append(ServerDef("minimal-epoll", tag, python, "minimal-epoll", "bytes"))
            # the legacy echo's code on the thinnest asyncore API: what of the legacy server's
            # cost the code's own calls take (not in the default matrix: name it to run it)
            servers.append(ServerDef("minimal-asyncore", tag, python, "minimal-asyncore",
                                     "bytes"))
    return servers


# default full matrix: everything on the first interpreter, a core set on the others
PRIMARY_EXCLUDE = ("netloop-asyncore[select]", "netloop-asyncore[poll]",
                   "netloop-asyncore[epoll]", "minimal-asyncore")
SECONDARY_DEFAULT = ("netloop[auto]", "netloop-asyncore[auto]", "netloop-chat",
                     "pyasyncore[poll]", "asyncore[poll]",
                     "asyncio", "asyncio-streams", "uvloop", "minimal-epoll")
QUICK_PREFERENCE = (("netloop[auto]", "minimal-epoll"), ("asyncio",))


def select_servers(servers, patterns, primary_tag, quick):
    if quick and not patterns:
        chosen = []
        for group in QUICK_PREFERENCE:
            for base in group:
                hit = [s for s in servers if s.base == base and s.tag == primary_tag]
                if hit:
                    chosen.append(hit[0])
                    break
        return chosen
    if not patterns:
        return [s for s in servers
                if (s.tag == primary_tag and s.base not in PRIMARY_EXCLUDE)
                or s.base in SECONDARY_DEFAULT]
    if patterns == ["all"]:
        return list(servers)
    out = []
    for s in servers:
        for pat in patterns:
            target = s.name if "@" in pat else s.base
            if glob_match(pat, target) or glob_match(pat, s.kind):
                out.append(s)
                break
    return out


# --------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------
def noise_of(result):
    """CPUs' worth of foreign work (other processes + hypervisor steal) in the window."""
    sysinfo = (result or {}).get("system") or {}
    if "other_cpu_util" not in sysinfo:
        return None
    return sysinfo.get("other_cpu_util", 0) + sysinfo.get("steal_util", 0)


def client_util(result):
    client = (result or {}).get("client") or {}
    return client.get("busy_util", client.get("cpu_util"))


def starved(scenario, result):
    """True when a throughput run had neither side busy: something outside the
    benchmark (host contention, other processes) held the server back."""
    if scenario["metric"] != "rate" or scenario["mode"] == "connrate":
        return False
    if scenario["mode"] == "pingpong" and scenario["conns"] < 10:
        return False  # one connection is latency-bound by design
    srv = ((result or {}).get("server") or {}).get("cpu_util")
    cli = client_util(result)
    return srv is not None and cli is not None and srv < 0.85 and cli < 0.85


def lines_per_msg(scenario):
    """Lines in each message of a line scenario (1 unless pipelined), else 1."""
    return int(scenario["line"]) if scenario["line"] else 1


def metric_of(scenario, result):
    if scenario["metric"] == "rss_per_idle":
        return result.get("server", {}).get("rss_per_idle_conn_bytes")
    rate = result.get("rate")
    if rate is not None and scenario["mode"] == "pingpong":
        rate *= lines_per_msg(scenario)  # line scenarios count lines, not messages
    return rate


def interleave(cells, repeat, repeats):
    """The order of the runs: [(repetition, scenario, server)].

    Repetitions are the outer loop, so each server of a scenario runs once before any runs
    again: a slow drift, or the loopback switching between its slow and fast modes (which
    lasts from seconds to minutes), spreads over all servers instead of landing on one
    server's repeats. Within a repetition the servers of a scenario take turns in a rotated
    order (each repetition starts one server further on), so no server is always the first
    after a change of scenario or always follows the same neighbour."""
    by_scenario = {}
    for n, s in cells:
        by_scenario.setdefault(n, []).append(s)
    schedule = []
    for rep in range(repeat):
        for n, servers in by_scenario.items():
            if rep >= repeats(n):
                continue
            k = rep % len(servers)
            schedule.extend((rep, n, s) for s in servers[k:] + servers[:k])
    return schedule


def cpu_split(scenario, result):
    """(user, sys) of the server's CPU per unit of work (µs per request/line/connection; per
    MB in stream mode), or (None, None). The kernel accounts the split by sampling at its
    tick (utime/stime of /proc/PID/stat): over a 1.5 s run at 100% CPU it is good to a few
    percent; the sum is exact."""
    srv = (result or {}).get("server") or {}
    u, s = srv.get("cpu_user_s"), srv.get("cpu_sys_s")
    key = "cpu_us_per_mb" if scenario["mode"] == "stream" else "cpu_us_per_op"
    total = srv.get(key)
    if u is None or s is None or total is None or u + s <= 0:
        return None, None
    if key == "cpu_us_per_op":
        total /= lines_per_msg(scenario)
    return total * u / (u + s), total * s / (u + s)


def client_us_per_op(scenario, result):
    """The load generator's own busy CPU per request (per MB in stream mode): its half of
    the kernel's loopback work, whatever the server. It moves with the loopback's slow and
    fast modes, so it tells which mode a run fell into."""
    r = result or {}
    busy = (r.get("client") or {}).get("busy_util")
    dur = r.get("duration_s")
    if not busy or not dur:  # 0: descheduled while it spun (a loaded machine): unknown
        return None
    if scenario["mode"] == "stream":
        work = (r.get("bytes") or 0) / 1e6
    else:
        work = (r.get("requests") or 0) * lines_per_msg(scenario)
    return busy * dur * 1e6 / work if work else None


def run_one(loadgen, server, sc_name, sc, opts, cpus):
    host = opts.host
    cmd, fixed_port, env_extra = server.command(host)
    duration = sc.get("duration", opts.duration)
    if opts.quick:
        duration = min(duration, opts.duration)
    warmup = sc.get("warmup", opts.warmup)
    nofile = sc["conns"] + sc["idle"] + 256
    record = {"server": server.name, "scenario": sc_name, "ok": False, "error": None,
              "command": cmd}
    t0 = time.monotonic()
    srv = benchlib.ServerProcess(cmd, env=benchlib.server_env(env_extra), cpu=cpus[0],
                                 nofile=nofile, host=host, port=fixed_port,
                                 name=server.name, ready_timeout=opts.ready_timeout)
    try:
        srv.start()
        result = benchlib.run_loadgen(
            loadgen, srv.port, mode=sc["mode"], conns=sc["conns"], size=sc["size"],
            duration=duration, warmup=warmup, idle=sc["idle"], line=sc["line"],
            server_pid=srv.proc.pid, cpu=cpus[1], host=host,
            setup_timeout=opts.setup_timeout, tls=sc["tls"],
            write_size=sc.get("write_size"))
        record["result"] = result
        record["server_alive_after"] = srv.alive()
        if result.get("fatal"):
            record["error"] = "loadgen: " + result["fatal"]
        elif not srv.alive():
            record["error"] = "server died during the run: " + srv.stderr_tail()
        elif metric_of(sc, result) is None:
            record["error"] = "no metric in result"
        else:
            record["ok"] = True
    except BenchError as exc:
        record["error"] = str(exc)
    finally:
        srv.stop()
        record["server_exit"] = srv.exit_code
        record["server_killed"] = srv.killed
        tail = srv.stderr_tail(2000)
        if tail:
            record["server_stderr_tail"] = tail
        srv.cleanup_files()
    record["wall_s"] = round(time.monotonic() - t0, 3)
    return record


def fmt_rate(v, unit):
    if v is None:
        return "-"
    if unit == "MB/s":
        return "%.0f" % v if v >= 100 else "%.1f" % v
    if v >= 1e6:
        return "%.2fM" % (v / 1e6)
    if v >= 1e3:
        return "%.1fk" % (v / 1e3)
    return "%.0f" % v


def fmt_bytes(v):
    if v is None:
        return "-"
    if abs(v) >= 1024:
        return "%.1f KiB" % (v / 1024)
    return "%.0f B" % v


def short_error(text, width=160):
    lines = [ln.strip() for ln in (text or "?").splitlines() if ln.strip()] or ["?"]
    if len(lines) == 1:
        return lines[0][:width]
    return (lines[0][:60] + " ... " + lines[-1])[:width]


def progress_line(i, total, rec, sc):
    r = rec.get("result") or {}
    if not rec["ok"]:
        msg = "FAILED: %s" % short_error(rec["error"])
    else:
        lat = r.get("latency_us", {})
        srvd = r.get("server", {})
        if sc["metric"] == "rss_per_idle":
            msg = "%s/idle conn, hwm %s KiB" % (fmt_bytes(srvd.get("rss_per_idle_conn_bytes")),
                                                srvd.get("vmhwm_kb"))
        else:
            msg = "%s %s p50 %.0fus p99 %.0fus" % (fmt_rate(r["rate"], r["rate_unit"]),
                                                   r["rate_unit"], lat.get("p50", 0),
                                                   lat.get("p99", 0))
            if "cpu_us_per_op" in srvd:
                msg += " srv %.1fus/op (%.0f%% cpu)" % (srvd["cpu_us_per_op"],
                                                        100 * srvd.get("cpu_util", 0))
                user, system = cpu_split(sc, r)
                if user is not None:
                    msg += " usr %.1f sys %.1f" % (user, system)
            cli_op = client_us_per_op(sc, r)
            if cli_op is not None and sc["mode"] != "stream":
                msg += " lg %.1fus/op" % cli_op
        msg += " cli %.0f%%" % (100 * (client_util(r) or 0))
        other = noise_of(r)
        if other:
            msg += " other %.0f%%" % (100 * other)
        if r.get("errors"):
            msg += " ERRORS %d %s" % (r["errors"], {k: v for k, v in
                                                   r.get("error_detail", {}).items() if v})
    if rec.get("server_killed"):
        msg += " [server ignored SIGTERM: killed]"
    if rec.get("noisy_retry"):
        msg += " [noisy: retrying]"
    return "[%3d/%d] %-14s %-26s %s (%.1fs)" % (i, total, rec["scenario"], rec["server"], msg,
                                                rec["wall_s"])


# --------------------------------------------------------------------------
# summary / report
# --------------------------------------------------------------------------
def _median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _sum_kinds(results):
    kinds = {}
    for x in results:
        for k, v in (x.get("error_detail") or {}).items():
            if v:
                kinds[k] = kinds.get(k, 0) + v
    return kinds


def best_split(scenario, results):
    """(user, sys) of the run with the least server CPU per unit of work."""
    splits = [cpu_split(scenario, x) for x in results]
    splits = [sp for sp in splits if sp[0] is not None]
    if not splits:
        return None, None
    return min(splits, key=lambda sp: sp[0] + sp[1])


def summarise(runs, servers, scenarios):
    cells = {}
    for s in servers:
        for sc_name, sc in scenarios.items():
            rs = [r for r in runs if r["server"] == s.name and r["scenario"] == sc_name
                  and not r.get("noisy_retry")]
            if not rs:
                continue
            good = [r for r in rs if r["ok"]]
            res = [r["result"] for r in good]
            cell = {
                "runs": len(rs),
                "ok_runs": len(good),
                "failures": [r["error"] for r in rs if not r["ok"]],
                "metric": _median([metric_of(sc, x) for x in res]),
                "metric_all": [metric_of(sc, x) for x in res],
                "unit": ("bytes/idle conn" if sc["metric"] == "rss_per_idle"
                         else "lines/s" if sc["category"] == "line" else UNITS[sc["mode"]]),
                "p50_us": _median([x["latency_us"]["p50"] for x in res if x.get("requests")]),
                "p99_us": _median([x["latency_us"]["p99"] for x in res if x.get("requests")]),
                # per line in line scenarios (a message of a pipelined one holds several)
                "server_cpu_us_per_op": _median([
                    x["server"]["cpu_us_per_op"] / lines_per_msg(sc)
                    if x["server"].get("cpu_us_per_op") is not None else None for x in res]),
                "server_cpu_us_per_op_min": min([
                    x["server"]["cpu_us_per_op"] / lines_per_msg(sc)
                    for x in res if x["server"].get("cpu_us_per_op") is not None] or [None],
                    key=lambda v: float("inf") if v is None else v),
                "server_cpu_us_per_mb": _median([x["server"].get("cpu_us_per_mb") for x in res]),
                "server_cpu_us_per_mb_min": min(
                    [x["server"]["cpu_us_per_mb"] for x in res
                     if x["server"].get("cpu_us_per_mb") is not None] or [None],
                    key=lambda v: float("inf") if v is None else v),
                "server_cpu_util": _median([x["server"].get("cpu_util") for x in res]),
                # user and kernel (sys) parts of the server's CPU per request (per MB in
                # stream mode): medians of each, and the split of the best run (the run with
                # the least CPU in all, as in the best-run table)
                "server_user_us": _median([cpu_split(sc, x)[0] for x in res]),
                "server_sys_us": _median([cpu_split(sc, x)[1] for x in res]),
                "server_user_us_best": best_split(sc, res)[0],
                "server_sys_us_best": best_split(sc, res)[1],
                "client_us_per_op": _median([client_us_per_op(sc, x) for x in res]),
                "client_cpu_util": _median([client_util(x) for x in res]),
                "starved": _median([1.0 if starved(sc, x) else 0.0 for x in res]) == 1.0,
                "other_cpu_util": _median([noise_of(x) for x in res]),
                "vmhwm_kb": max([x["server"].get("vmhwm_kb") or 0 for x in res] or [0]) or None,
                "rss_per_idle_conn_bytes": _median([x["server"].get("rss_per_idle_conn_bytes")
                                                    for x in res]),
                "errors": sum(x.get("errors", 0) for x in res),
                "error_kinds": _sum_kinds(res),
                "unclean_stop": any(r.get("server_killed") for r in rs),
            }
            cells["%s|%s" % (s.name, sc_name)] = cell
    return cells


def pick_reference(servers, category, primary_tag, forced=None):
    if forced:
        hits = [s.name for s in servers if s.category == category and s.name in forced]
        if hits:
            return hits[0]
    prefs = {
        "bytes": ["netloop[auto]@" + primary_tag, "netloop[auto]@*", "asyncore[select]@*",
                  "pyasyncore[select]@*", "asyncio@" + primary_tag],
        "line": ["netloop-chat@" + primary_tag, "netloop-chat@*", "asynchat@*",
                 "pyasynchat@*", "asyncio-streams@" + primary_tag],
        "tls": ["asyncio-tls@" + primary_tag, "asyncio-tls@*", "netloop-tls[auto]@*"],
    }[category]
    names = [s.name for s in servers if s.category == category]
    for pat in prefs:
        hits = [n for n in names if glob_match(pat, n)]
        if hits:
            return hits[0]
    return names[0] if names else None


def markers(cell):
    m = ""
    if cell["errors"]:
        m += "!"
    if cell["ok_runs"] < cell["runs"]:
        m += "*"
    if (cell.get("client_cpu_util") or 0) > 0.90:
        m += "†"
    if (cell.get("other_cpu_util") or 0) > 0.15:
        m += "~"
    if cell.get("starved"):
        m += "?"
    return m


def render_markdown(meta, servers, scenarios, cells, primary_tag, ref=None):
    out = []
    w = out.append
    ref_names = [r.strip() for r in (ref or "").split(",") if r.strip()]
    w("# netloop benchmark results")
    w("")
    mi = meta["machine"]
    w("- date: %s" % meta["date"])
    w("- machine: %s CPUs, %s, Linux %s, %.0f GiB RAM" % (
        mi.get("nproc"), mi.get("cpu_model", "?"), mi.get("kernel"),
        (mi.get("mem_total_kb") or 0) / 1048576))
    w("- servers pinned to CPU %s, load generator to CPU %s; %s run(s) per cell (median); "
      "%.1f s measured after %.1f s warm-up" % (meta["server_cpu"], meta["client_cpu"],
                                               meta["repeat"], meta["duration"], meta["warmup"]))
    w("- interpreters: %s" % ", ".join("%s (%s)" % (t, p) for t, p in meta["pythons"]))
    if meta.get("netloop_source"):
        w("- netloop servers started via: %s" % meta["netloop_source"])
    w("")
    w("Markers: `!` errors seen, `*` some runs failed, `†` load generator above 90% CPU "
      "(client-bound: the server may be faster), `~` other processes (or hypervisor "
      "steal) used > 15% of a CPU during the median run (noisy), `?` neither the server nor "
      "the load generator was 85% busy although the scenario should saturate the server "
      "(held back from outside; trust the CPU-per-request figure).")
    w("")

    def table(category, title, value_fn, ratio):
        scs = [(n, sc) for n, sc in scenarios.items() if sc["category"] == category]
        rows = [s for s in servers if s.category == category]
        if not scs or not rows:
            return
        ref = pick_reference(servers, category, primary_tag, ref_names) if ratio else None
        w("## " + title + (" (ratio vs `%s`)" % ref if ref else ""))
        w("")
        w("| server | " + " | ".join("%s<br>%s" % (n, _unit_label(sc)) for n, sc in scs) + " |")
        w("|---|" + "---:|" * len(scs))
        for s in rows:
            vals = []
            for n, sc in scs:
                cell = cells.get("%s|%s" % (s.name, n))
                if cell is None:
                    vals.append("")
                    continue
                if cell["ok_runs"] == 0:
                    vals.append("FAIL")
                    continue
                txt = value_fn(cell, sc)
                if ref and cell["metric"] is not None:
                    rc = cells.get("%s|%s" % (ref, n))
                    if rc and rc["metric"]:
                        txt += " (×%.2f)" % (cell["metric"] / rc["metric"])
                vals.append(txt + markers(cell))
            w("| %s | %s |" % (s.name, " | ".join(vals)))
        w("")

    def headline(cell, sc):
        if sc["metric"] == "rss_per_idle":
            return fmt_bytes(cell["metric"])
        return fmt_rate(cell["metric"], cell["unit"])

    def latency(cell, sc):
        if cell["p50_us"] is None:
            return "-"
        return "%.0f / %.0f" % (cell["p50_us"], cell["p99_us"])

    def cpu(cell, sc):
        util = cell["server_cpu_util"]
        if sc["mode"] == "stream":
            v = cell["server_cpu_us_per_mb"]
            txt = "-" if v is None else "%.0f µs/MB" % v
        else:
            v = cell["server_cpu_us_per_op"]
            txt = "-" if v is None else "%.1f" % v
        if util is not None:
            txt += " [%.0f%%]" % (100 * util)
        return txt

    def cpu_best(cell, sc):
        if sc["metric"] == "rss_per_idle":
            return "-"
        if sc["mode"] == "stream":
            v = cell.get("server_cpu_us_per_mb_min")
            return "-" if v is None else "%.0f µs/MB" % v
        v = cell.get("server_cpu_us_per_op_min")
        return "-" if v is None else "%.1f" % v

    def split(cell, sc):
        if sc["metric"] == "rss_per_idle" or cell.get("server_user_us") is None:
            return "-"
        fmt = "%.0f" if sc["mode"] == "stream" else "%.1f"
        txt = (fmt + " + " + fmt) % (cell["server_user_us"], cell["server_sys_us"])
        if cell.get("server_user_us_best") is not None:
            txt += (" (" + fmt + " + " + fmt + ")") % (cell["server_user_us_best"],
                                                       cell["server_sys_us_best"])
        return txt

    def client(cell, sc):
        v = cell.get("client_us_per_op")
        if sc["metric"] == "rss_per_idle" or v is None:
            return "-"
        return ("%.0f" if sc["mode"] == "stream" else "%.1f") % v

    def memory(cell, sc):
        hwm = cell["vmhwm_kb"]
        txt = "-" if hwm is None else "%.1f MiB" % (hwm / 1024)
        return txt

    table("bytes", "Throughput, median", headline, True)
    table("bytes", "Latency p50 / p99 (µs)", latency, False)
    table("bytes", "Server CPU per request (µs; stream: µs per MB) [server CPU use]", cpu, False)
    table("bytes", "Server CPU per request, best run (µs): loopback has a slow and a fast "
          "mode, about 2 µs apart, that a run falls into whatever the server", cpu_best, False)
    table("bytes", "Server CPU per request, user + sys (µs; stream: per MB): median of each "
          "(best run's split): sys is kernel time, user what the server's own code costs",
          split, False)
    table("bytes", "Load generator CPU per request (µs; stream: per MB), median: its share of "
          "the loopback's kernel work; it moves with the loopback's slow and fast modes",
          client, False)
    table("bytes", "Server peak RSS (VmHWM)", memory, False)
    table("line", "Line echo (issue #3): throughput, median", headline, True)
    table("line", "Line echo: latency p50 / p99 (µs)", latency, False)
    table("line", "Line echo: server CPU per line (µs) [server CPU use]", cpu, False)
    table("line", "Line echo: server CPU per line, best run (µs)", cpu_best, False)
    table("line", "Line echo: server CPU per line, user + sys (µs): median (best run)", split,
          False)
    table("tls", "TLS echo (issue #14): throughput, median", headline, True)
    table("tls", "TLS echo: latency p50 / p99 (µs)", latency, False)
    table("tls", "TLS echo: server CPU per request / per MB / per handshake (µs) "
          "[server CPU use]", cpu, False)
    table("tls", "TLS echo: server CPU per request, best run (µs)", cpu_best, False)
    table("tls", "TLS echo: server CPU, user + sys (µs): median (best run)", split, False)
    notes = []
    for key, cell in cells.items():
        srv_name, sc_name = key.split("|")
        if sc_name not in scenarios:
            continue
        if cell["failures"]:
            notes.append("- `%s` / `%s`: %d of %d run(s) failed: %s" % (
                srv_name, sc_name, len(cell["failures"]), cell["runs"],
                short_error(cell["failures"][-1], 220)))
        if cell.get("unclean_stop"):
            notes.append("- `%s` / `%s`: the server did not exit within 5 s of SIGTERM and was "
                         "killed" % (srv_name, sc_name))
        if cell["errors"]:
            notes.append("- `%s` / `%s`: %d error(s) counted by the load generator: %s" % (
                srv_name, sc_name, cell["errors"],
                ", ".join("%s %d" % kv for kv in sorted(cell.get("error_kinds", {}).items()))))
    if notes:
        w("Failures and errors:")
        w("")
        out.extend(notes)
        w("")
    w("Scenarios:")
    w("")
    for n, sc in scenarios.items():
        w("- `%s`: %s" % (n, sc["title"]))
    w("")
    return "\n".join(out)


def _unit_label(sc):
    if sc["metric"] == "rss_per_idle":
        return "per conn"
    if sc.get("category") == "line":
        return "lines/s"
    return UNITS[sc["mode"]]


def plot_from_json(json_path, outdir):
    """Draw one PNG bar chart per scenario from a results.json (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(json_path) as f:
        data = json.load(f)
    cells = data["summary"]
    paths = []
    for n, sc in data["scenarios"].items():
        rows = [(s["name"], cells.get("%s|%s" % (s["name"], n))) for s in data["servers"]
                if s["category"] == sc["category"]]
        rows = [(name, c["metric"]) for name, c in rows if c and c["metric"] is not None]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2))
        names = [r[0] for r in rows][::-1]
        vals = [r[1] for r in rows][::-1]
        ax.barh(names, vals, color="#4a7ab5")
        unit = ("bytes per idle connection" if sc["metric"] == "rss_per_idle"
                else _unit_label(sc))
        ax.set_xlabel(unit)
        ax.set_title(sc["title"])
        ax.tick_params(axis="y", labelsize=8)
        fig.tight_layout()
        path = os.path.join(outdir, "%s.png" % n)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def make_plots(json_path, outdir, pythons, log):
    """Plots with this interpreter's matplotlib, else with a benchmark venv's."""
    try:
        return plot_from_json(json_path, outdir)
    except ImportError:
        pass
    code = ("import sys; sys.path.insert(0, %r); import run; "
            "print(len(run.plot_from_json(%r, %r)))" % (benchlib.BENCH_DIR, json_path, outdir))
    for py in pythons:
        try:
            proc = subprocess.run([py, "-c", code], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError):
            continue
        if proc.returncode == 0:
            return [None] * int(proc.stdout.strip() or 0)
    log("plots skipped: matplotlib not importable")
    return []


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------
def parse_args(argv):
    ap = argparse.ArgumentParser(description="netloop benchmark runner",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="scenarios: " + ", ".join(SCENARIOS))
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2 servers x 2 scenarios, ~1 s each, current Python")
    ap.add_argument("--insn-check", dest="insn_check", action="store_true", default=None,
                    help="after the runs, compare user-space instructions per request "
                         "(callgrind, bench_insn.py) with the committed baseline; fail on "
                         "more than 10%% growth (default with --quick)")
    ap.add_argument("--no-insn-check", dest="insn_check", action="store_false")
    ap.add_argument("--servers", default="",
                    help="comma-separated globs on server names, e.g. 'netloop*,asyncio@3.11'; "
                         "'all' for every available server (default: all on the first "
                         "interpreter, a core set on the others)")
    ap.add_argument("--scenarios", default="", help="comma-separated scenario names")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds per run")
    ap.add_argument("--repeat", type=int, default=None, help="runs per cell (median)")
    ap.add_argument("--python", default=None,
                    help="comma-separated interpreters: versions (3.11,3.13), paths or "
                         "'current' (default: 3.11,3.13; --quick: current)")
    ap.add_argument("--no-venv", action="store_true",
                    help="use the interpreters directly instead of benchmarks/.venvs/*")
    ap.add_argument("--host", default="127.0.0.1", help="loopback address (127.0.0.1 or ::1)")
    ap.add_argument("--out", default=None, help="output directory")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="stop starting new runs after this many seconds")
    ap.add_argument("--setup-timeout", type=float, default=15.0,
                    help="seconds allowed for opening connections per phase")
    ap.add_argument("--ready-timeout", type=float, default=30.0,
                    help="seconds a server may take to print its port")
    ap.add_argument("--noise-threshold", type=float, default=0.15,
                    help="CPUs' worth of foreign activity that makes a run 'noisy'")
    ap.add_argument("--noise-retries", type=int, default=None,
                    help="re-run a noisy run up to this many times (default 1; --quick: 0)")
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="max seconds to wait for an idle machine before each run "
                         "(default 10; --quick: 2)")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when any run failed or saw errors (always on with --quick)")
    ap.add_argument("--list", action="store_true", help="list servers and scenarios, then exit")
    ap.add_argument("--report", metavar="RESULTS_JSON",
                    help="only re-render the Markdown of an earlier run (honours --servers, "
                         "--scenarios and --ref)")
    ap.add_argument("--ref", default=None,
                    help="server name(s) to compute ratios against (default: netloop[auto] "
                         "on the first interpreter, else stdlib asyncore)")
    opts = ap.parse_args(argv)
    if opts.host not in ("127.0.0.1", "::1", "localhost"):
        ap.error("benchmarks only run against loopback (127.0.0.1 or ::1)")
    if opts.quick:
        opts.duration = 1.0 if opts.duration is None else opts.duration
        opts.warmup = 0.3 if opts.warmup is None else opts.warmup
        opts.repeat = 1 if opts.repeat is None else opts.repeat
        opts.python = opts.python or "current"
        opts.time_budget = 55.0 if opts.time_budget is None else opts.time_budget
        opts.setup_timeout = min(opts.setup_timeout, 10.0)
        opts.noise_retries = 0 if opts.noise_retries is None else opts.noise_retries
        opts.quiet_wait = 2.0 if opts.quiet_wait is None else opts.quiet_wait
        opts.strict = True
        opts.insn_check = True if opts.insn_check is None else opts.insn_check
    opts.noise_retries = 1 if opts.noise_retries is None else opts.noise_retries
    opts.quiet_wait = 10.0 if opts.quiet_wait is None else opts.quiet_wait
    opts.duration = 1.5 if opts.duration is None else opts.duration
    opts.warmup = 0.5 if opts.warmup is None else opts.warmup
    opts.repeat = 3 if opts.repeat is None else max(1, opts.repeat)
    opts.python = opts.python or "3.11,3.13"
    opts.time_budget = 1740.0 if opts.time_budget is None else opts.time_budget
    return opts


def report_main(opts):
    with open(opts.report) as f:
        data = json.load(f)
    servers = [ServerDef(d["base"], d["tag"], d["python"], d["kind"], d["category"],
                         poller=d.get("poller"), source=d.get("source", ""))
               for d in data["servers"]]
    patterns = [p.strip() for p in opts.servers.split(",") if p.strip()]
    if patterns:
        servers = select_servers(servers, patterns, None, False)
    scenarios = data["scenarios"]
    if opts.scenarios:
        names = [n.strip() for n in opts.scenarios.split(",") if n.strip()]
        scenarios = {n: scenarios[n] for n in names if n in scenarios}
    primary_tag = data["meta"]["pythons"][0][0] if data["meta"].get("pythons") else ""
    cells = summarise(data["runs"], servers, scenarios)
    print(render_markdown(data["meta"], servers, scenarios, cells, primary_tag, opts.ref))
    return 0


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    t_start = time.monotonic()

    def log(msg):
        print(msg, flush=True)

    if opts.report:
        return report_main(opts)

    # SIGTERM, and SIGINT even when started in the background with SIGINT ignored,
    # end the matrix through the clean-up path (servers stopped, partial results saved)
    def interrupted(signum, frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)

    if not sys.platform.startswith("linux"):
        log("error: the benchmark suite needs Linux (epoll load generator, /proc accounting)")
        return 2
    try:
        loadgen = benchlib.build_loadgen()
    except BenchError as exc:
        log("error: %s" % exc)
        return 2

    # interpreters
    py_infos = []
    for spec in [p.strip() for p in opts.python.split(",") if p.strip()]:
        base = benchlib.find_base_python(spec)
        if base is None:
            log("skip: Python %s (interpreter not found)" % spec)
            continue
        try:
            tag = benchlib.python_tag(base)
            python = base
            if spec != "current" and not opts.no_venv and not opts.list:
                python = benchlib.ensure_venv(base, tag, log=log)
            elif opts.list and os.path.exists(benchlib.venv_python(tag)) and not opts.no_venv:
                python = benchlib.venv_python(tag)
            info = benchlib.probe_python(python)
        except (BenchError, OSError, ValueError, subprocess.SubprocessError) as exc:
            log("skip: Python %s (%s)" % (spec, exc))
            continue
        if any(t == tag for t, _, _ in py_infos):
            log("skip: Python %s (duplicate of %s)" % (spec, tag))
            continue
        py_infos.append((tag, python, info))
    if not py_infos:
        log("error: no usable Python interpreter")
        return 2
    primary_tag = py_infos[0][0]

    all_servers = discover_servers(py_infos, log)
    patterns = [p.strip() for p in opts.servers.split(",") if p.strip()]
    servers = select_servers(all_servers, patterns, primary_tag, opts.quick)
    if opts.scenarios:
        names = [n.strip() for n in opts.scenarios.split(",") if n.strip()]
        unknown = [n for n in names if n not in SCENARIOS]
        if unknown:
            log("error: unknown scenario(s) %s; known: %s" % (", ".join(unknown),
                                                              ", ".join(SCENARIOS)))
            return 2
    else:
        names = QUICK_SCENARIOS if opts.quick else list(SCENARIOS)
    scenarios = {n: SCENARIOS[n] for n in names}
    tls_names = [n for n, sc in scenarios.items() if sc["tls"]]
    if tls_names and not opts.list:
        why = None
        if not benchlib.loadgen_has_tls(loadgen):
            why = "the load generator was built without OpenSSL (install libssl-dev)"
        else:
            try:
                benchlib.tls_files()
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                why = str(exc)
        if why:
            log("skip: %s (%s)" % (", ".join(tls_names), why))
            scenarios = {n: sc for n, sc in scenarios.items() if not sc["tls"]}

    if opts.list:
        log("servers:")
        for s in all_servers:
            log("  %-30s %-6s %s%s" % (s.name, s.category, s.source,
                                        "" if s in servers else "  (not in default set)"))
        log("scenarios:")
        for n, sc in SCENARIOS.items():
            log("  %-14s %s" % (n, sc["title"]))
        return 0

    cells = [(n, s) for n in scenarios for s in servers
             if s.category == scenarios[n]["category"]]

    def repeats(n):
        return min(opts.repeat, scenarios[n].get("max_repeat", opts.repeat))

    if not cells:
        log("error: nothing to run (no server matches the scenarios' category)")
        return 2
    per_run = lambda sc: (sc.get("warmup", opts.warmup) + sc.get("duration", opts.duration)  # noqa
                          + 1.0 + (2.0 if sc["idle"] else 0))
    estimate = sum(repeats(n) * per_run(scenarios[n]) for n, _ in cells)
    cpus = benchlib.cpu_plan()
    if cpus[0] is None:
        log("warning: fewer than 2 CPUs available: server and load generator are not pinned")
    total = sum(repeats(n) for n, _ in cells)
    log("%d servers x %d scenarios: %d cells, up to %d repeats: %d runs, estimated %.1f min "
        "(time budget %.0f min)" % (len(servers), len(scenarios), len(cells), opts.repeat,
                                    total, estimate / 60, opts.time_budget / 60))

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    outdir = opts.out or os.path.join(benchlib.BENCH_DIR, "results", stamp)
    os.makedirs(outdir, exist_ok=True)
    netloop_sources = sorted({s.source for s in servers if s.kind.startswith("netloop")})
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": benchlib.machine_info(),
        "argv": sys.argv,
        "duration": opts.duration,
        "warmup": opts.warmup,
        "repeat": opts.repeat,
        "server_cpu": cpus[0],
        "client_cpu": cpus[1],
        "pythons": [(t, p) for t, p, _ in py_infos],
        "probes": {t: info for t, _, info in py_infos},
        "netloop_source": ", ".join(netloop_sources),
        "loadgen": loadgen,
    }
    runs = []
    json_path = os.path.join(outdir, "results.json")

    def save():
        data = {"meta": meta, "servers": [s.to_json() for s in servers],
                "scenarios": scenarios, "runs": runs,
                "summary": summarise(runs, servers, scenarios)}
        tmp = json_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, json_path)
        return data

    i = 0
    skipped_budget = 0
    try:
        schedule = interleave(cells, opts.repeat, repeats)
        seen_wall = {}  # (server, scenario) -> wall seconds of its last run

        def expected(n, s):
            return seen_wall.get((s.name, n), per_run(scenarios[n]))

        for k, (rep, n, s) in enumerate(schedule):
            i += 1
            elapsed = time.monotonic() - t_start
            if elapsed + expected(n, s) > opts.time_budget:
                skipped_budget += 1
                continue
            # spare time (budget minus what the remaining runs should take) pays for
            # waiting for a quiet machine and for re-running noisy runs
            remaining = sum(expected(n2, s2) for _, n2, s2 in schedule[k:])
            slack = opts.time_budget - elapsed - remaining
            for attempt in range(opts.noise_retries + 1):
                allowed = min(opts.quiet_wait, max(0.0, slack / max(1, len(schedule) - k)))
                waited, busy = benchlib.wait_for_quiet(opts.noise_threshold, allowed)
                rec = run_one(loadgen, s, n, scenarios[n], opts, cpus)
                seen_wall[(s.name, n)] = rec["wall_s"]
                slack -= waited + (rec["wall_s"] if attempt else 0)
                rec["repeat"] = rep
                rec["attempt"] = attempt
                rec["quiet_wait_s"] = round(waited, 2)
                rec["busy_before"] = round(busy, 3)
                other = noise_of(rec.get("result"))
                noisy = rec["ok"] and ((other is not None and other > opts.noise_threshold)
                                       or starved(scenarios[n], rec["result"]))
                last = attempt == opts.noise_retries or slack < rec["wall_s"]
                if noisy and not last:
                    rec["noisy_retry"] = True  # kept in the JSON, left out of medians
                runs.append(rec)
                log(progress_line(i, total, rec, scenarios[n]))
                if not (noisy and not last):
                    break
            save()  # after every run: an interrupted matrix keeps its data
    except KeyboardInterrupt:
        log("interrupted: writing partial results")
    finally:
        benchlib.stop_all_servers()
    if skipped_budget:
        log("skip: %d run(s) not started: time budget of %.0fs used up" % (skipped_budget,
                                                                        opts.time_budget))
    data = save()
    md = render_markdown(meta, servers, scenarios, data["summary"], primary_tag, opts.ref)
    with open(os.path.join(outdir, "results.md"), "w") as f:
        f.write(md + "\n")
    plots = make_plots(json_path, outdir, [p for _, p, _ in py_infos], log)
    print()
    print(md)
    log("results: %s (%s)%s" % (outdir, "results.json, results.md",
                                 ", %d plot(s)" % len(plots) if plots else ""))
    log("total time %.1fs" % (time.monotonic() - t_start))
    kept = [r for r in runs if not r.get("noisy_retry")]
    failed = [r for r in kept if not r["ok"]]
    with_errors = [r for r in kept if r["ok"] and r["result"].get("errors")]
    if failed or with_errors:
        log("%d run(s) failed, %d run(s) saw errors" % (len(failed), len(with_errors)))
        for r in failed[:10]:
            log("  failed: %s %s: %s" % (r["server"], r["scenario"], short_error(r["error"])))
        if opts.strict:
            return 1
    if opts.strict and skipped_budget:
        return 1
    if opts.insn_check:
        return insn_check(log)
    return 0


def insn_check(log):
    """The instruction-count regression check (bench_insn.py --check) on this interpreter.

    valgrind missing: a loud skip, or a failure when $CI is set (CI installs it)."""
    import bench_insn
    t0 = time.monotonic()
    log("instruction-count check (callgrind, %s; baseline %s):"
        % (bench_insn.python_id(), os.path.relpath(bench_insn.BASELINE)))
    try:
        status = bench_insn.check()
    except Exception as exc:  # a variant that failed to run is a failure of the check
        log("bench_insn: FAILED to measure: %s" % exc)
        return 1
    log("instruction-count check: %.0fs" % (time.monotonic() - t0))
    if status == 2:
        return 1 if os.environ.get("CI") else 0
    return status


if __name__ == "__main__":
    sys.exit(main())
