"""CPython 3.11's own test suites for the stdlib modules built on asyncore/asynchat, on netloop.

``smtpd`` (removed in 3.12) is built on asyncore and asynchat; ``test_ftplib``, ``test_poplib``,
``test_smtplib`` and ``test_ssl`` run their dummy servers on them (their TLS mixins included);
``test_imaplib``'s servers are socketserver's, run on ``netloop.socketserver``; ``test_logging``
tests ``SMTPHandler`` against ``smtpd``. Each suite is run twice in subprocesses at the same
time, once with netloop's modules in ``sys.modules`` and once with the stdlib's, and every test
must end the same way. Only on Python 3.11: the files and ``smtpd`` come from the 3.11 install.

The default run takes, of ``test_ssl`` and ``test_logging``, the tests that use asyncore or
smtpd (their other ~400 tests never touch them and take about two minutes). With
``NETLOOP_FULL_COMPAT=1`` (``.ci/run`` sets it) both run whole, each split into shards that
finish well inside the faulthandler timeout and that pytest-xdist spreads over its workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from typing import List, Tuple

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "cpython_suite.py")
FULL = os.environ.get("NETLOOP_FULL_COMPAT") == "1"

pytestmark = pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                                reason="these suites and smtpd are Python 3.11's")


def _runs() -> List[Tuple[str, Tuple[str, ...]]]:
    """(suite, runner options) of each run: whole suites, selections, or shards."""
    runs: List[Tuple[str, Tuple[str, ...]]] = [
        ("test_smtpd", ()), ("test_ftplib", ()), ("test_poplib", ()), ("test_smtplib", ())]
    # test_imaplib waits out four 10 s timeouts (the stdlib's run too): in shards, in parallel.
    runs += [("test_imaplib", ("--shard", "%d/4" % k)) for k in range(1, 5)]
    if FULL:
        runs += [("test_ssl", ("--shard", "%d/4" % k)) for k in range(1, 5)]
        runs += [("test_logging", ("--shard", "%d/3" % k)) for k in range(1, 4)]
    else:
        runs += [("test_ssl", ("--only", "ThreadedTests.test_asyncore_server")),
                 ("test_logging", ("--only", "SMTPHandlerTest"))]
    return runs


RUNS = _runs()


def run_pair(name: str, *extra: str) -> Tuple[dict, dict]:
    """The reports of the netloop run and of the stdlib run of one selection, run at once.

    Each in a working directory of its own: suites write files there by fixed names
    (test_logging's BasicConfigTest writes and removes ``test.log``), and two at once in one
    directory removed each other's."""
    dirs = [tempfile.TemporaryDirectory(prefix="cpython_users.") for _ in range(2)]
    procs = [subprocess.Popen([sys.executable, RUNNER, name, "--json", *extra, *stdlib],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=cwd.name)
             for stdlib, cwd in zip(((), ("--stdlib",)), dirs)]
    reports = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=900)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            assert lines, out[-2000:] + err[-2000:]
            reports.append(json.loads(lines[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        for cwd in dirs:
            cwd.cleanup()
    ours, theirs = reports
    if "skipped" in ours and "run" not in ours:
        pytest.skip(ours["skipped"])
    return ours, theirs


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name,extra", RUNS,
                         ids=["%s%s" % (name, "[%s]" % " ".join(extra) if extra else "")
                              for name, extra in RUNS])
def test_suite_ends_as_with_the_stdlib(name: str, extra: Tuple[str, ...]) -> None:
    ours, theirs = run_pair(name, *extra)
    assert ours["run"] == theirs["run"] and ours["run"] > 0
    differ = {test: (ours["outcomes"].get(test), outcome)
              for test, outcome in theirs["outcomes"].items()
              if ours["outcomes"].get(test) != outcome}
    assert not differ, "\n".join(ours.get("details", []))[:4000]
    passed = sum(1 for outcome in ours["outcomes"].values() if outcome == "pass")
    print("%s %s: %d run, %d passed on netloop, the same outcomes as the stdlib"
          % (name, " ".join(extra), ours["run"], passed))


def test_shards_cover_every_test_once() -> None:
    import importlib.util
    import unittest
    spec = importlib.util.spec_from_file_location("cpython_suite", RUNNER)
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)

    class A(unittest.TestCase):
        def test_1(self) -> None: pass
        def test_2(self) -> None: pass
        def test_3(self) -> None: pass

    class B(unittest.TestCase):
        def test_4(self) -> None: pass
        def test_5(self) -> None: pass

    loader = unittest.defaultTestLoader
    whole = unittest.TestSuite([loader.loadTestsFromTestCase(A), loader.loadTestsFromTestCase(B)])
    shards = [runner.shard_tests(whole, "%d/3" % k) for k in (1, 2, 3)]
    ids = [t.id() for shard in shards for t in shard]
    assert sorted(ids) == sorted(t.id() for t in runner._tests(whole)) and len(ids) == 5
    with pytest.raises(ValueError):
        runner.shard_tests(whole, "4/3")
