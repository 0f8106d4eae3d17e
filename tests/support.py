"""Helpers for tests: drive a loop until a condition holds, and a manual clock."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from typing import Callable, Iterator

import netloop


def run_until(lp: netloop.Loop, condition: Callable[[], bool], timeout: float = 5.0,
              step: float = 0.05) -> None:
    """Run ``lp`` one pass at a time until ``condition()`` holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached within %.1fs" % timeout)
        lp.run_once(step)


class ManualClock:
    """A clock that moves only when told to: time-dependent tests without sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


#: The environment of a test's subprocess: this checkout's netloop first on the path.
SUBPROCESS_ENV = dict(os.environ, PYTHONPATH=os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))


@contextlib.contextmanager
def server_process(*argv: str) -> Iterator[subprocess.Popen]:
    """A server process (``python ARGV``, stdout piped), killed and reaped if still running."""
    proc = subprocess.Popen([sys.executable, *argv], env=SUBPROCESS_ENV, stdout=subprocess.PIPE,
                            text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
