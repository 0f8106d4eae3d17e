"""Wake-up latency and timer cancellation cost, printed as a table.

    PYTHONPATH=src python3 benchmarks/bench_timers.py [--rounds N] [--timers N]

Wake-up: a loop blocks in ``run_forever()`` (poll with no timeout); another thread calls
``stop()``; the time from that call to ``run_forever()`` returning, over N rounds per poller.
Timers: N ``call_later`` timers scheduled, all cancelled, then one ``run_once(0)``; the heap size
left shows the compaction.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from typing import List

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "src"))

import netloop  # noqa: E402


def wake_latency(poller: str, rounds: int) -> List[float]:
    lp = netloop.Loop(poller=poller)
    samples: List[float] = []
    stamp = [0.0]

    def stopper() -> None:
        while not lp.running:
            time.sleep(0.0002)
        time.sleep(0.002)  # let the loop block in poll
        stamp[0] = time.perf_counter()
        lp.stop()

    try:
        for _ in range(rounds):
            t = threading.Thread(target=stopper)
            t.start()
            lp.run_forever()
            samples.append(time.perf_counter() - stamp[0])
            t.join()
    finally:
        lp.close()
    return samples


def timers(n: int) -> dict:
    lp = netloop.Loop(poller="select")
    try:
        noop = lambda: None  # noqa: E731
        t0 = time.perf_counter()
        handles = [lp.call_later(60 + i * 1e-6, noop) for i in range(n)]
        t1 = time.perf_counter()
        peak = len(lp._timers._heap)
        for h in handles:
            h.cancel()
        t2 = time.perf_counter()
        delay = lp.run_once(0)
        t3 = time.perf_counter()
        return {"schedule": t1 - t0, "cancel": t2 - t1, "run_once": t3 - t2, "peak": peak,
                "left": len(lp._timers._heap), "delay": delay}
    finally:
        lp.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--timers", type=int, default=100_000)
    args = ap.parse_args()

    print("Python %s" % sys.version.split()[0])
    print()
    print("stop() from another thread -> run_forever() returns (%d rounds)" % args.rounds)
    print("%-8s %10s %10s %10s" % ("poller", "median us", "p99 us", "max us"))
    for name in netloop.available_pollers():
        s = sorted(wake_latency(name, args.rounds))
        p99 = s[min(len(s) - 1, int(len(s) * 0.99))]
        print("%-8s %10.1f %10.1f %10.1f" % (name, statistics.median(s) * 1e6, p99 * 1e6,
                                             s[-1] * 1e6))
    print()
    r = timers(args.timers)
    print("%d timers: call_later, then cancel every one, then run_once(0)" % args.timers)
    print("%-22s %12s" % ("step", "time"))
    print("%-22s %9.1f ms" % ("schedule", r["schedule"] * 1e3))
    print("%-22s %9.1f ms  (%.2f us each)" % ("cancel", r["cancel"] * 1e3,
                                               r["cancel"] / args.timers * 1e6))
    print("%-22s %9.3f ms  (returns %r: nothing pending)" % ("run_once(0) after",
                                                            r["run_once"] * 1e3, r["delay"]))
    print("%-22s %6d -> %d entries" % ("heap size", r["peak"], r["left"]))


if __name__ == "__main__":
    main()
