#!/usr/bin/env python3
"""Issue #17's targets, read from one recorded run: a table of ratios, met or not.

    python benchmarks/verdict17.py benchmarks/results/RUN/results.json
    python benchmarks/verdict17.py RUN/results.json --strict     # exit 1 when a target misses
    python benchmarks/verdict17.py RUN1/results.json RUN2/results.json ...   # across runs
    python benchmarks/verdict17.py RUN/results.json --insn insn.json   # + each miss taken apart

The run must hold the cells the targets compare (``run.py --servers
'netloop[auto]@*,netloop-asyncore[auto]@*,uvloop@*,minimal-epoll@*' --scenarios
pp1,pp100,pp100-idle10k,stream256k,connrate,mem-idle10k``); a cell that is missing or failed is
reported as such, never as met. Each row also gives the hand-written loop's own ratio where the
target compares with uvloop: a target that the smallest Python loop misses in the same run
is noise or kernel time, not netloop's code (see benchmarks/README.md).

The targets (issue #17), server CPU from ``run.py``'s summary:

- stream256k: CPU per MB of ``python -m netloop echo`` <= 1.1x the hand-written loop's and
  <= 1.5x uvloop's (medians);
- pp100: CPU per request <= 1.0x uvloop's, best run, for the CLI and the legacy server;
- connrate: CPU per connection <= uvloop's (medians), both servers;
- pp1: CPU per request <= 1.1x uvloop's (medians), both servers;
- pp100-idle10k: throughput >= 0.95x the same server's pp100 throughput (medians);
- mem-idle10k: peak RSS <= 20 MB (decimal), both servers.

Given several runs, it prints for each target and server how many runs met it and the range of
its ratio, with the hand-written loop judged by the same limit (and uvloop for the idle
target): how far the machine moves a cell from run to run, next to how often netloop meets it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional, Tuple

SERVERS = {"CLI": "netloop[", "legacy": "netloop-asyncore[", "uvloop": "uvloop",
           "loop": "minimal-epoll"}


def _find(summary: dict, servers: List[dict], role: str, tag: str,
          scenario: str) -> Optional[dict]:
    """The summary cell of ``role``'s server on interpreter ``tag``, None if absent or failed."""
    prefix = SERVERS[role]
    for s in servers:
        base = s["base"]
        if s.get("tag") != tag:
            continue
        if role in ("uvloop", "loop") and base != prefix:
            continue
        if role not in ("uvloop", "loop") and not base.startswith(prefix):
            continue
        cell = summary.get("%s|%s" % (s["name"], scenario))
        if cell and cell.get("ok_runs"):
            return cell
    return None


def _tags(data: dict) -> List[str]:
    """The interpreters of a run (``3.11``, ``3.13``), sorted."""
    return sorted({s["tag"] for s in data["servers"] if s.get("tag")})


def _table(head: List[str], rows: List[List[str]], text_columns: int = 0) -> str:
    """A Markdown table; columns after the first ``text_columns`` (but the last, a word)
    are right-aligned figures when ``text_columns`` is given."""
    if text_columns:
        align = "---|" * text_columns + "---:|" * (len(head) - text_columns - 1) + "---|"
    else:
        align = "---|" * len(head)
    lines = ["| " + " | ".join(head) + " |", "|" + align]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or not b:
        return None
    return a / b


# The targets, the one definition both views read: label, scenario, summary key, the server
# compared with (None: the same server's pp100, for the idle target; "MB": an absolute limit),
# the limit, whether higher is better, the servers measured (the references included: the
# one-run table judges the others and shows the hand-written loop beside uvloop).
TARGETS = [
    ("stream256k <= 1.1x hand-written loop", "stream256k", "server_cpu_us_per_mb", "loop", 1.1,
     False, ("CLI",)),
    ("stream256k <= 1.5x uvloop", "stream256k", "server_cpu_us_per_mb", "uvloop", 1.5, False,
     ("CLI", "loop")),
    ("pp100 <= 1.0x uvloop, best run", "pp100", "server_cpu_us_per_op_min", "uvloop", 1.0,
     False, ("CLI", "legacy", "loop")),
    ("connrate <= uvloop", "connrate", "server_cpu_us_per_op", "uvloop", 1.0, False,
     ("CLI", "legacy", "loop")),
    ("pp1 <= 1.1x uvloop", "pp1", "server_cpu_us_per_op", "uvloop", 1.1, False,
     ("CLI", "legacy", "loop")),
    ("10k idle: throughput >= 0.95x no idle", "pp100-idle10k", "metric", None, 0.95, True,
     ("CLI", "legacy", "loop", "uvloop")),
    ("RSS with 10k idle <= 20 MB", "mem-idle10k", "vmhwm_kb", "MB", 20.0, False,
     ("CLI", "legacy")),
]


def figures(data: dict) -> dict:
    """{(target label, tag, server role): the ratio (MB for RSS), None when a cell is missing}."""
    summary, servers = data["summary"], data["servers"]
    tags = _tags(data)
    out: dict = {}

    def cell(role: str, tag: str, scenario: str, key: str) -> Optional[float]:
        found = _find(summary, servers, role, tag, scenario)
        return None if found is None else found.get(key)

    for label, scenario, key, other, _, _, roles in TARGETS:
        for tag in tags:
            for role in roles:
                value = cell(role, tag, scenario, key)
                if other == "MB":
                    figure = None if value is None else value * 1024 / 1e6
                elif other is None:
                    figure = _ratio(value, cell(role, tag, "pp100", key))
                else:
                    figure = _ratio(value, cell(other, tag, scenario, key))
                out[(label, tag, role)] = figure
    return out


def _met(value: float, limit: float, higher: bool) -> bool:
    return value >= limit if higher else value <= limit


def _judged(other: Optional[str], roles: Tuple[str, ...]) -> Tuple[str, ...]:
    """The servers a target judges: its roles less the references shown beside them."""
    refs = ("loop",) if other == "uvloop" else ("loop", "uvloop") if other is None else ()
    return tuple(r for r in roles if r not in refs)


def verdicts(data: dict) -> Tuple[List[str], List[List[str]], bool]:
    """(the interpreter tags, the table's rows, whether every target was met)."""
    tags = _tags(data)
    found = figures(data)
    rows: List[List[str]] = []
    all_met = True
    for label, _, _, other, limit, higher, roles in TARGETS:
        judged = _judged(other, roles)
        cells = []
        for tag in tags:
            parts = []
            for role in judged:
                value = found.get((label, tag, role))
                if value is None:
                    parts.append("missing")
                    all_met = False
                    continue
                met = _met(value, limit, higher)
                all_met = all_met and met
                text = ("%.1f MB" if other == "MB" else "%.2fx") % value
                parts.append("**%s**" % text if met else text)
            text = " / ".join(parts)
            if other == "uvloop":
                ref = found.get((label, tag, "loop"))
                text += " (loop %s)" % ("%.2fx" % ref if ref is not None else "missing")
            cells.append(text)
        rows.append(["%s (%s)" % (label, " / ".join(judged))] + cells)
    return tags, rows, all_met


def across(runs: List[dict]) -> str:
    """The table of how often each target held over ``runs`` (results.json contents)."""
    per_run = [figures(d) for d in runs]
    tags = sorted({k[1] for f in per_run for k in f})
    rows = []
    for label, _, _, other, limit, higher, roles in TARGETS:
        for role in roles:
            cells = []
            for tag in tags:
                values = [f.get((label, tag, role)) for f in per_run]
                got = [v for v in values if v is not None]
                met = sum(1 for v in got if _met(v, limit, higher))
                unit = " MB" if other == "MB" else "x"
                span = ("%.2f-%.2f%s" % (min(got), max(got), unit)) if got else "missing"
                cells.append("%d/%d met (%s)" % (met, len(values), span))
            name = {"loop": "hand-written loop"}.get(role, role)
            rows.append([label, name] + cells)
    return _table(["target", "server"] + tags, rows)


def render(tags: List[str], rows: List[List[str]]) -> str:
    return _table(["target"] + tags, rows)


# The CPU targets as split_gaps() reads them: target label -> (the summary keys of CPU, user
# and sys; the scenario of bench_insn_servers.py's counts and how many of its units make one
# of run.py's; the server compared with, the limit).
CPU_TARGETS = {
    "stream256k <= 1.1x hand-written loop": (
        ("server_cpu_us_per_mb", "server_user_us", "server_sys_us"), ("stream64k", 16),
        "loop", 1.1),
    "stream256k <= 1.5x uvloop": (
        ("server_cpu_us_per_mb", "server_user_us", "server_sys_us"), ("stream64k", 16),
        "uvloop", 1.5),
    "pp100 <= 1.0x uvloop, best run": (
        ("server_cpu_us_per_op_min", "server_user_us_best", "server_sys_us_best"),
        ("pp100", 1), "uvloop", 1.0),
    "connrate <= uvloop": (
        ("server_cpu_us_per_op", "server_user_us", "server_sys_us"), ("connrate", 1),
        "uvloop", 1.0),
    "pp1 <= 1.1x uvloop": (
        ("server_cpu_us_per_op", "server_user_us", "server_sys_us"), ("pp1", 1), "uvloop", 1.1),
}
INSN_NAMES = {"CLI": "netloop", "legacy": "netloop-asyncore", "loop": "minimal-epoll",
              "uvloop": "uvloop", "asyncore floor": "minimal-asyncore"}


def _parts(cell: dict, keys: Tuple[str, str, str]) -> Optional[Tuple[float, float, float]]:
    """(CPU, user, sys) of a cell, user and sys scaled so that they add up to the CPU figure
    (run.py takes the medians of the two apart; their shares are what is kept)."""
    cpu, user, sys_ = (cell.get(k) for k in keys)
    if cpu is None or user is None or sys_ is None or user + sys_ <= 0:
        return None
    return cpu, cpu * user / (user + sys_), cpu * sys_ / (user + sys_)


def split_gaps(data: dict, insn: dict) -> List[List[str]]:
    """Every CPU target's cell that a judged server misses, its CPU over the limit taken apart:
    the kernel's part (system time over the reference's), netloop's own instructions (its
    count over the hand-written loop's, at this cell's user time per instruction) and the
    Python floor (the hand-written loop's count over uvloop's, at the same rate). ``insn``:
    bench_insn_servers.py --json's file. The last column says what decides the miss:
    "kernel" when the server's system time over the reference's alone is more than the
    limit allows (a loop with the reference's user time would still miss); "Python floor"
    when a loop without netloop's own instructions would still miss; else "netloop".

    The legacy server runs asyncore-style code, whose own calls (``handle_read()`` ->
    ``recv()`` -> ``send()``, each a Python function of the API) any implementation of
    asyncore makes. Where the counts hold ``minimal-asyncore`` (that code on the thinnest
    asyncore API), netloop's own part of the legacy server is its count over that floor, the
    code's asyncore calls are the floor's count over the hand-written loop's, and a miss that
    netloop's own part does not decide but the two together do is "asyncore API"."""
    summary, servers = data["summary"], data["servers"]
    tags = _tags(data)
    counts = insn.get("insn", {})
    rows: List[List[str]] = []
    for label, _, _, _, _, _, roles in TARGETS:
        if label not in CPU_TARGETS:
            continue
        keys, (insn_scenario, units), other, limit = CPU_TARGETS[label]
        scenario = next(t[1] for t in TARGETS if t[0] == label)
        for tag in tags:
            ref_cell = _find(summary, servers, other, tag, scenario)
            ref = _parts(ref_cell, keys) if ref_cell else None
            tag_counts = counts.get(tag, {}).get(insn_scenario, {})
            for role in _judged(other, roles):
                found = _find(summary, servers, role, tag, scenario)
                mine = _parts(found, keys) if found else None
                if mine is None or ref is None:
                    continue
                cpu, user, sys_ = mine
                over = cpu - limit * ref[0]
                if over <= 0:
                    continue
                n_mine = tag_counts.get(INSN_NAMES[role])
                n_loop = tag_counts.get(INSN_NAMES["loop"])
                n_uv = tag_counts.get(INSN_NAMES["uvloop"])
                kernel = sys_ - ref[2]
                n_api = tag_counts.get(INSN_NAMES["asyncore floor"]) if role == "legacy" else None
                netloop_own = None
                if n_mine and n_loop:
                    rate = user / (n_mine * units)  # µs per instruction, in this cell
                    own = max(0.0, (n_mine - n_loop) * units * rate)
                    own_text = "%+.0f insn: %.2f" % ((n_mine - n_loop) * units, own)
                    if n_api:
                        netloop_own = max(0.0, (n_mine - n_api) * units * rate)
                        own_text = ("%+.0f insn over the asyncore floor: %.2f; the code's "
                                    "asyncore calls %+.0f: %.2f"
                                    % ((n_mine - n_api) * units, netloop_own,
                                       (n_api - n_loop) * units,
                                       (n_api - n_loop) * units * rate))
                    if other == "uvloop" and n_uv and n_loop > n_uv:
                        floor = (n_loop - n_uv) * units * rate
                        floor_text = "%+.0f insn: %.2f" % ((n_loop - n_uv) * units, floor)
                    elif other == "uvloop" and n_uv:
                        # (stream64k: uvloop copies each read into a bytes object, and under
                        # valgrind memcpy is valgrind's own, slow one: its count is no floor)
                        floor_text = "none (uvloop %+.0f insn)" % ((n_uv - n_loop) * units)
                    else:
                        floor_text = "-"
                else:
                    own, own_text, floor_text = None, "no counts", "no counts"
                if ref[1] + sys_ > limit * ref[0]:
                    decided = "kernel"
                elif own is None:
                    decided = "no counts"
                elif cpu - own > limit * ref[0]:
                    decided = "Python floor"
                elif netloop_own is not None and cpu - netloop_own > limit * ref[0]:
                    decided = "asyncore API"
                else:
                    decided = "netloop"
                rows.append([label, tag, role,
                             "%.2f (%.2f + %.2f)" % (cpu, user, sys_),
                             "%.2f (%.2f + %.2f)" % ref, "%.2f" % (limit * ref[0]),
                             "%.2f" % over, "%+.2f" % kernel, own_text, floor_text, decided])
    return rows


def split_idle(data: dict) -> List[List[str]]:
    """The idle target's misses: the server's CPU per request with 10,000 idle connections
    against without them (same server, same run), user and sys apart. With epoll an idle
    connection costs a loop nothing per event; what moves is the kernel's side ("kernel" when
    most of the extra CPU is system time) or a server the client did not saturate."""
    summary, servers = data["summary"], data["servers"]
    tags = _tags(data)
    keys = ("server_cpu_us_per_op", "server_user_us", "server_sys_us")
    rows: List[List[str]] = []
    for tag in tags:
        for role in ("CLI", "legacy"):
            idle = _find(summary, servers, role, tag, "pp100-idle10k")
            base = _find(summary, servers, role, tag, "pp100")
            if not idle or not base or not base.get("metric"):
                continue
            ratio = idle["metric"] / base["metric"]
            a, b = _parts(idle, keys), _parts(base, keys)
            if ratio >= 0.95 or a is None or b is None:
                continue
            d_user, d_sys = a[1] - b[1], a[2] - b[2]
            saturated = (idle.get("server_cpu_util") or 0) >= 0.9
            decided = ("client" if not saturated else
                       "kernel" if d_sys >= d_user else "netloop")
            rows.append([tag, role, "%.2fx" % ratio, "%.2f (%.2f + %.2f)" % a,
                         "%.2f (%.2f + %.2f)" % b, "%+.2f" % d_user, "%+.2f" % d_sys,
                         "%.0f%%" % (100 * (idle.get("server_cpu_util") or 0)), decided])
    return rows


def render_idle(rows: List[List[str]]) -> str:
    head = ["python", "server", "throughput, idle / none", "CPU per request with 10k idle "
            "(user + sys), µs", "without", "user", "sys", "server CPU busy", "decided by"]
    return _table(head, rows, text_columns=2)


def render_gaps(rows: List[List[str]]) -> str:
    head = ["target", "python", "server", "CPU (user + sys), µs", "reference (user + sys)",
            "limit", "over by", "sys over the reference", "netloop's own: insn over the "
            "hand-written loop (legacy: over the asyncore floor, where counted), µs",
            "Python floor: the loop's insn over uvloop's, µs", "decided by"]
    return _table(head, rows, text_columns=3)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+",
                    help="a run's results.json (run.py --out DIR writes DIR/results.json); "
                    "several: how often each target held across them")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when a target is not met (one run only)")
    ap.add_argument("--insn", metavar="FILE",
                    help="instruction counts (bench_insn_servers.py --json FILE): take every "
                    "missed CPU target apart into kernel time, netloop's own instructions "
                    "and the Python floor (one run only)")
    opts = ap.parse_args(argv)
    runs = []
    for path in opts.results:
        with open(path) as f:
            runs.append(json.load(f))
    if len(runs) > 1:
        if opts.strict:
            ap.error("--strict judges one run")
        print(across(runs))
        print()
        print("runs: " + ", ".join(opts.results))
        return 0
    data = runs[0]
    tags, rows, all_met = verdicts(data)
    print(render(tags, rows))
    print()
    print("all targets met in this run" if all_met else
          "not every target met in this run (bold: met; 'loop': the hand-written loop's own "
          "ratio to uvloop in the same run)")
    if opts.insn:
        with open(opts.insn) as f:
            insn = json.load(f)
        rows = split_gaps(data, insn)
        print()
        print(render_gaps(rows) if rows else "no CPU target missed")
        idle = split_idle(data)
        if idle:
            print()
            print(render_idle(idle))
    return 1 if opts.strict and not all_met else 0


if __name__ == "__main__":
    sys.exit(main())
