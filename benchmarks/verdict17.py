#!/usr/bin/env python3
"""Issue #17's targets, read from one recorded run: a table of ratios, met or not.

    python benchmarks/verdict17.py benchmarks/results/RUN/results.json
    python benchmarks/verdict17.py RUN/results.json --strict     # exit 1 when a target misses
    python benchmarks/verdict17.py RUN1/results.json RUN2/results.json ...   # across runs

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
    tags = sorted({s["tag"] for s in servers if s.get("tag")})
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
    tags = sorted({s["tag"] for s in data["servers"] if s.get("tag")})
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
    lines = ["| target | server | " + " | ".join(tags) + " |",
             "|---|---|" + "---|" * len(tags)]
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
            lines.append("| %s | %s | %s |" % (label, name, " | ".join(cells)))
    return "\n".join(lines)


def render(tags: List[str], rows: List[List[str]]) -> str:
    lines = ["| target | " + " | ".join(tags) + " |",
             "|---|" + "---|" * len(tags)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+",
                    help="a run's results.json (run.py --out DIR writes DIR/results.json); "
                    "several: how often each target held across them")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 when a target is not met (one run only)")
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
    return 1 if opts.strict and not all_met else 0


if __name__ == "__main__":
    sys.exit(main())
