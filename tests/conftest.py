"""Shared fixtures: a leak check after every test, and helpers to drive a loop to a condition.

The leak check fails a test that leaves behind open file descriptors, threads, child processes,
entries in the global ``socket_map``, or loops holding kernel objects.

Parallel runs. ``pytest`` runs the suite in several worker processes (pytest-xdist, ``-n auto``
in pyproject.toml; ``-n 0`` runs in one process). Each worker imports this file and runs the
leak check around each of its own tests, in its own process, so it sees only that test's fds,
threads and children. A test is parallel-safe when it:

- listens on port 0 (never a fixed port) and makes files and Unix sockets under ``tmp_path``
  (unique per test), never at a fixed path;
- changes process-wide state (``os.environ``, RLIMIT_NOFILE, signal handlers, the cwd, the
  ``netloop``/``asyncore`` globals) only for its own duration and restores it (monkeypatch,
  or try/finally);
- waits for conditions with a bound (``support.run_until``), never for a fixed time: another
  worker may hold the CPU for a while;
- kills and reaps every child it starts, and asserts no timing beyond generous bounds.

A test that takes seconds gets ``@pytest.mark.slow``: slow tests are scheduled first, so the
quick ones fill the workers around them instead of one long test finishing last.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from typing import Iterator, List, Optional

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
if os.path.isdir(SRC) and SRC not in sys.path:  # running from a checkout without install
    sys.path.insert(0, SRC)

import netloop  # noqa: E402
from netloop import pollers, reactor  # noqa: E402

ALL_POLLERS = pollers.available()


def _no_op(signum: int, frame: object) -> None:
    pass


# A test run under nohup, or as a background job of a non-interactive shell, starts with SIGHUP
# or SIGINT ignored, and every program it starts would inherit that: netloop's command line and
# smtpd keep a stop or restart signal ignored when they start (as smtpd did), so the tests that
# send those signals to them would fail. A handler that does nothing still ignores the signal
# here, but, unlike SIG_IGN, is not inherited through exec(): the programs start with the
# default dispositions. (Tests of the inherited-SIG_IGN case set it up themselves.)
for _signum in (signal.SIGHUP, signal.SIGINT):
    if signal.getsignal(_signum) == signal.SIG_IGN:
        signal.signal(_signum, _no_op)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> Optional[int]:
    """Workers for ``-n auto``: none (one process) for a run of one or two files or tests,
    where starting workers costs more than it saves; else two per usable CPU, 2 to 8: most
    tests wait on sockets, subprocesses and timeouts rather than compute (on 2 busy cores,
    4 workers ran the suite in 3m48s where 2 took 4m26s).
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still wins."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist's own hook reads it
    args = [a for a in config.args if not a.startswith("-")]
    if args and len(args) <= 2 and all(os.path.isfile(a.split("::")[0]) for a in args):
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(2, min(2 * cpus, 8))


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """Tests marked ``slow`` first (a stable sort: the rest keep their order)."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def _open_fds() -> set:
    try:
        listed = os.listdir("/proc/self/fd")
    except OSError:  # pragma: no cover - not Linux
        return set()
    # The listing holds the descriptor listdir() itself had open: leave it out, or a test that
    # leaks exactly one descriptor (which gets that number) passes unseen.
    return {fd for fd in listed if os.path.exists("/proc/self/fd/" + fd)}


def _children() -> set:
    try:
        with open("/proc/self/task/%d/children" % os.getpid()) as f:
            return set(f.read().split())
    except OSError:  # pragma: no cover
        return set()


def _leftovers(fds: set, threads: set, children: set, active: set) -> List[str]:
    """What the test left behind, compared with the snapshot taken before it."""
    problems = []
    if netloop.socket_map:
        problems.append("channels left in the global socket_map: %r" % netloop.socket_map)
    new_loops = [lp for lp in reactor._active if lp not in active]
    if new_loops:
        problems.append("loops left holding kernel objects: %r" % new_loops)
    extra_threads = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
    if extra_threads:
        problems.append("threads left running: %r" % extra_threads)
    leaked = _open_fds() - fds
    if leaked:
        targets = []
        for fd in sorted(leaked):
            try:
                targets.append("%s->%s" % (fd, os.readlink("/proc/self/fd/" + fd)))
            except OSError:
                pass
        if targets:
            problems.append("file descriptors leaked: %s" % ", ".join(targets))
    new_children = _children() - children
    if new_children:
        problems.append("child processes left: %s" % ", ".join(sorted(new_children)))
    return problems


@pytest.fixture(autouse=True)
def leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("no_leak_check"):
        yield
        return
    # Garbage of earlier tests is collected now, and everything alive is frozen (gc.freeze):
    # the collections around this test then look only at the objects made since, which takes
    # well under a millisecond where a full collection of the test session's objects took
    # 25-60 ms, about a third of the whole run's CPU time.
    gc.collect()
    gc.freeze()
    fds = _open_fds()
    threads = set(threading.enumerate())
    children = _children()
    active = set(reactor._active)
    yield
    # Give threads a bounded chance to finish (they were told to stop by the test).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        extra_threads = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
        if not extra_threads:
            break
        time.sleep(0.01)
    # Garbage (a socket or loop in a reference cycle) is not a leak: collect it first, so its
    # finalizers (and their ResourceWarnings) belong to this test.
    gc.collect()
    problems = _leftovers(fds, threads, children, active)
    if problems:
        for obj in list(netloop.socket_map.values()):
            try:
                obj.close()
            except Exception:
                pass
        netloop.socket_map.clear()
        for lp in [lp for lp in reactor._active if lp not in active]:
            lp.close()
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture(params=ALL_POLLERS)
def poller_name(request: pytest.FixtureRequest) -> str:
    """Every poller this platform has (kqueue where the platform has it)."""
    return request.param  # type: ignore[no-any-return]


# The `loop` fixture of these modules also runs hosted by asyncio (netloop.aio), on asyncio's
# default loop and on uvloop where it is installed: the same tests, a second driver.
# "asyncio-each": asyncio's default loop with every channel's descriptor registered with it
# (attach(nested=False), the way on platforms without epoll or kqueue); the others watch the
# loop's own epoll/kqueue through asyncio where the platform has one.
HOSTED_MODULES = {"test_dispatcher", "test_buffered", "test_chat_channel", "test_services",
                  "test_files", "test_smoke_core"}
try:
    import uvloop
    HOSTS = ["asyncio", "asyncio-each", "uvloop"]
    # libuv opens a process-wide pipe pair with the first loop: take it now, not in a test.
    uvloop.new_event_loop().close()
except ImportError:
    HOSTS = ["asyncio", "asyncio-each"]


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    import inspect
    if (metafunc.module.__name__.rpartition(".")[2] in HOSTED_MODULES
            and "loop" in metafunc.fixturenames
            and "poller_name" not in inspect.signature(metafunc.function).parameters):
        metafunc.parametrize("poller_name", ALL_POLLERS + HOSTS)


def _hosted_loop(host: str) -> Iterator[netloop.Loop]:
    import asyncio

    import netloop.aio
    if host == "uvloop":
        import uvloop
        ev = uvloop.new_event_loop()
    else:
        ev = asyncio.new_event_loop()
    lp = netloop.Loop()
    handle = netloop.aio.attach(lp, event_loop=ev,
                                nested=False if host == "asyncio-each" else None)
    try:
        yield lp
        for obj in list(lp.map.values()):
            try:
                obj.close()
            except Exception:
                pass
        lp.map.clear()
        ev.stop()
        ev.run_forever()  # one iteration: let callbacks scheduled by the closes run
        poller = handle.poller
        handle.detach()
        assert not poller._masks, "registrations left in asyncio: %r" % poller._masks
        assert poller._timer is None and poller._kick_handle is None
        selector = getattr(ev, "_selector", None)
        if selector is not None:  # asyncio's own loop: only its self-pipe may be left
            assert len(selector.get_map()) == 1, selector.get_map()
        assert not asyncio.all_tasks(ev)
    finally:
        handle.detach()
        lp.close()
        ev.close()


@pytest.fixture
def loop(poller_name: str) -> Iterator[netloop.Loop]:
    """A private loop on each poller, closed after the test (its channels too). In the
    modules of HOSTED_MODULES also attached to an asyncio loop ("asyncio", "uvloop")."""
    if poller_name in HOSTS:
        yield from _hosted_loop(poller_name)
        return
    lp = netloop.Loop(poller=poller_name)
    yield lp
    for obj in list(lp.map.values()):
        try:
            obj.close()
        except Exception:
            pass
    lp.map.clear()
    lp.close()
