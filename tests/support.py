"""Helpers for tests: drive a loop until a condition holds, and a manual clock."""

from __future__ import annotations

import time
from typing import Callable

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
