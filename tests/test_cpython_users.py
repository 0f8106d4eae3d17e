"""CPython 3.11's own test suites for the stdlib modules built on asyncore/asynchat, on netloop.

``smtpd`` (removed in 3.12) is built on asyncore and asynchat; ``test_ftplib``, ``test_poplib``,
``test_smtplib`` and ``test_ssl`` run their dummy servers on them (their TLS mixins included);
``test_imaplib``'s servers are socketserver's, run on ``netloop.socketserver``; ``test_logging`` tests
``SMTPHandler`` against ``smtpd``. Each suite is run twice in a subprocess, once with netloop's
modules in ``sys.modules`` and once with the stdlib's, and every test must end the same way.
Only on Python 3.11: the files and ``smtpd`` come from the 3.11 install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "cpython_suite.py")

pytestmark = pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                                reason="these suites and smtpd are Python 3.11's")


def run_suite(name: str, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, RUNNER, name, "--json", *extra],
                          capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(lines[-1])
    if "skipped" in report and "run" not in report:
        pytest.skip(report["skipped"])
    return report


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", ["test_smtpd", "test_ftplib", "test_poplib", "test_smtplib",
                                  "test_ssl", "test_logging", "test_imaplib"])
def test_suite_ends_as_with_the_stdlib(name: str) -> None:
    ours = run_suite(name)
    theirs = run_suite(name, "--stdlib")
    assert ours["run"] == theirs["run"]
    differ = {test: (ours["outcomes"].get(test), outcome)
              for test, outcome in theirs["outcomes"].items()
              if ours["outcomes"].get(test) != outcome}
    assert not differ, "\n".join(ours.get("details", []))[:4000]
    passed = sum(1 for outcome in ours["outcomes"].values() if outcome == "pass")
    print("%s: %d run, %d passed on netloop, the same outcomes as the stdlib"
          % (name, ours["run"], passed))
