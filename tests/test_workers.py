"""Worker processes: ``python -m netloop echo --workers N`` and ``netloop.run_workers`` as real
process trees (supervisor plus forked workers), driven by real signals."""

from __future__ import annotations

import os
import signal
import socket
import sys
import textwrap
import time

import pytest

from scale_support import ENV, Proc, alive, echo_once, netloop_argv, wait

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="workers need os.fork()")


def _workers(proc: Proc, n: int, exclude: frozenset = frozenset()) -> set:
    """Wait until the supervisor has ``n`` live workers not in ``exclude``; their pids."""
    def ready() -> set:
        kids = {pid for pid in proc.children() if alive(pid)}
        return kids if len(kids) == n and not kids & exclude else set()
    return wait(ready, 10, "%d workers" % n)


def test_workers_serve_and_balance_then_survive_kill9():
    with Proc(netloop_argv("echo", "--workers", "2", "--log-peers", "--grace", "2")) as proc:
        address = proc.address()
        assert "2 workers" in proc.find(r"listening on")[0].string
        first = _workers(proc, 2)
        # Both workers serve (the kernel spreads connections over their sockets): bounded.
        for i in range(60):
            got, _ = echo_once(address, b"hello %d" % i)
            assert got == b"hello %d" % i
            if {m.group(1) for m in proc.find(r"worker (\d): peer")} == {"0", "1"}:
                break
        assert {m.group(1) for m in proc.find(r"worker (\d): peer")} == {"0", "1"}
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        line = proc.wait_line(r"worker \d \(pid %d\) killed by signal 9 \(SIGKILL\); "
                              r"restarting it in [\d.]+s" % victim)
        assert line
        second = _workers(proc, 2, exclude=frozenset({victim}))
        assert max(first) in second
        for i in range(20):  # every connection is served, whichever socket it lands on
            assert echo_once(address, b"again %d" % i)[0] == b"again %d" % i
        assert proc.stop() == 0


@pytest.mark.parametrize("kind", ["dispatcher", "chat", "socketserver"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_is_graceful_within_grace_and_leaves_no_orphan(signum, kind):
    name = signal.Signals(signum).name
    with Proc(netloop_argv("echo", "--kind", kind, "--workers", "2", "--grace", "1")) as proc:
        address = proc.address()
        workers = _workers(proc, 2)
        with socket.create_connection(address, timeout=10) as busy:
            busy.sendall(b"before\n")
            assert busy.recv(100) == b"before\n"
            start = time.monotonic()
            proc.signal(signum)
            proc.wait_line(r"%s: stopping the workers gracefully \(grace 1s\)" % name)
            # New connections are refused, not queued: both copies of the listening socket
            # (the supervisor's and the worker's) are closed, so the worker is stopping...
            wait(lambda: _refused(address), 5, "new connections refused")
            # ...and the open connection is still served during the grace period (the
            # socketserver kind's request threads were daemons, which the stop did not wait
            # for: the connection was cut at once)...
            busy.sendall(b"during\n")
            assert busy.recv(100) == b"during\n"
            # ...and when the grace period is over the worker closes it and exits.
            assert busy.recv(100) == b""
        assert proc.popen.wait(10) == 0
        elapsed = time.monotonic() - start
        assert elapsed < 1 + 4, elapsed  # the grace period, plus start-up slack under load
        assert ("1 thread(s) still running after the 1s grace period; exiting anyway"
                if kind == "socketserver" else
                "1 connection(s) still open after the 1s grace period; closing them") \
            in proc.output()
        assert proc.output().count("exited with status 0") == 2
        assert not [pid for pid in workers if alive(pid)]


def test_stop_serves_connections_waiting_in_the_backlog():
    # Connections the kernel completed but the worker had not accepted yet when it was told to
    # stop: closing its listener would reset them (their clients already sent a request).
    # They are taken before the close and served within the grace period.
    with Proc(netloop_argv("echo", "--workers", "1", "--grace", "5")) as proc:
        address = proc.address()
        (worker,) = _workers(proc, 1)
        os.kill(worker, signal.SIGSTOP)
        clients = []
        try:
            proc.signal(signal.SIGTERM)  # the supervisor tells the (stopped) worker to stop
            proc.wait_line(r"SIGTERM: stopping the workers gracefully")
            # Queued in the worker's backlog after its stop message: it sees the message first.
            for i in range(3):
                c = socket.create_connection(address, timeout=10)
                c.sendall(b"waiting %d" % i)
                clients.append(c)
        finally:
            os.kill(worker, signal.SIGCONT)
        for i, c in enumerate(clients):
            with c:
                assert c.recv(100) == b"waiting %d" % i
        assert proc.popen.wait(10) == 0
        assert "still open after" not in proc.output()


def _refused(address: tuple) -> bool:
    try:
        socket.create_connection(address, timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sighup_restarts_without_refusing_a_connection():
    with Proc(netloop_argv("echo", "--workers", "2", "--grace", "2")) as proc:
        address = proc.address()
        old = _workers(proc, 2)
        served = failures = 0
        hup_at = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                got, _ = echo_once(address, b"x%d" % served, timeout=5)
                assert got == b"x%d" % served
                served += 1
            except OSError as err:
                failures += 1
                print("connection failed:", err)
            if served == 20 and hup_at is None:
                proc.signal(signal.SIGHUP)
                hup_at = served
            if hup_at is not None and "stopping 2 old workers" in proc.output():
                kids = {pid for pid in proc.children() if alive(pid)}
                if len(kids) == 2 and not kids & old and served > hup_at + 50:
                    break
        assert failures == 0
        assert "generation 1 ready; stopping 2 old workers gracefully" in proc.output()
        new = _workers(proc, 2, exclude=frozenset(old))
        assert not new & old
        assert not [pid for pid in old if alive(pid)]
        assert proc.stop() == 0


def test_supervisor_killed_workers_exit():
    with Proc(netloop_argv("echo", "--workers", "2")) as proc:
        proc.address()
        workers = _workers(proc, 2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.popen.wait(5)
        wait(lambda: not [pid for pid in workers if alive(pid)], 10, "workers to exit")


SCRIPT = textwrap.dedent("""
    import logging, os, sys
    import netloop
    from netloop import activation, workers

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    class Echo(netloop.BufferedDispatcher):
        def handle_read(self):
            data = self.recv(1024)
            if data:
                self.send(b"%d:" % workers.current_worker().index + data)

    class Server(netloop.Dispatcher):
        def handle_accepted(self, sock, addr):
            Echo(sock)                      # no map=: the worker's loop serves socket_map

    def setup():                            # no argument: current_worker() says who we are
        me = workers.current_worker()
        if os.environ.get("FAIL_SETUP") and me.generation >= int(os.environ["FAIL_SETUP"]):
            raise RuntimeError("cannot start")
        for sock in me.sockets:
            activation.adopt_listener(Server(), sock)

    if os.environ.get("FAIL_SETUP") == "0":
        sys.exit(netloop.run_workers(2, setup, address=("127.0.0.1", 0)))
    supervisor = workers.Supervisor(2, setup, address=("127.0.0.1", 0), reuse_port=REUSE)
    print("listening on %s:%d" % supervisor.listen()[0][:2], flush=True)
    sys.exit(supervisor.run())
""")


@pytest.mark.parametrize("reuse_port", [False, True])
def test_run_workers_api_with_a_zero_argument_setup(tmp_path, reuse_port):
    from netloop.workers import REUSE_PORT_OPTION
    if reuse_port and REUSE_PORT_OPTION is None:
        pytest.skip("no load-balancing SO_REUSEPORT here")
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT.replace("REUSE", str(reuse_port)))
    with Proc([sys.executable, str(script)]) as proc:
        address = proc.address()
        _workers(proc, 2)
        got, _ = echo_once(address, b"hi")
        assert got in (b"0:hi", b"1:hi")
        assert proc.stop() == 0


def test_worker_that_cannot_start_stops_everything(tmp_path):
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT.replace("REUSE", "None"))
    with Proc([sys.executable, str(script)], env=dict(ENV, FAIL_SETUP="0")) as proc:
        assert proc.popen.wait(15) == 1
        proc.wait_line(r"setup failed")
        proc.wait_line(r"worker \d \(pid \d+\) exited with status 3 before it was ready; "
                       r"stopping all workers")


def test_failed_restart_keeps_the_running_workers(tmp_path):
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT.replace("REUSE", "None"))
    with Proc([sys.executable, str(script)], env=dict(ENV, FAIL_SETUP="1")) as proc:
        address = proc.address()
        old = _workers(proc, 2)
        proc.signal(signal.SIGHUP)
        proc.wait_line(r"restart failed \(new worker \d \(pid \d+\) exited with status 3 "
                       r"while starting\); keeping the running workers")
        assert _workers(proc, 2) == old
        assert echo_once(address, b"still")[0] in (b"0:still", b"1:still")
        assert proc.stop() == 0



def _no_free_descriptor(pid: int) -> tuple:
    """Lower ``pid``'s soft RLIMIT_NOFILE to its lowest free descriptor number: its next
    socketpair() fails with EMFILE, even after one of its descriptors is closed. The old
    limits."""
    import resource
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    used = {int(name) for name in os.listdir("/proc/%d/fd" % pid)}
    lowest_free = min(n for n in range(len(used) + 1) if n not in used)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free, limits[1]))
    return limits


@pytest.mark.skipif(not (hasattr(__import__("resource"), "prlimit")
                         and os.path.isdir("/proc/self/fd")), reason="needs prlimit and /proc")
def test_supervisor_out_of_descriptors_keeps_serving_and_restarts_later():
    # A SIGHUP, or a worker's restart, when the supervisor cannot open the new worker's socket
    # pair (EMFILE; fork() failing with EAGAIN or ENOMEM is the same path). Before, the
    # OSError ended run(), which SIGKILLed every worker: the whole server was gone.
    import resource
    with Proc(netloop_argv("echo", "--workers", "2", "--grace", "1")) as proc:
        address = proc.address()
        first = _workers(proc, 2)
        # A restart that works first: its log line says the supervisor has read both new
        # workers' "ready", and the old workers' exits that their descriptors are closed.
        proc.signal(signal.SIGHUP)
        proc.wait_line(r"generation 1 ready; stopping 2 old workers gracefully")
        proc.wait_line(r"exited with status 0", count=2)
        ready = _workers(proc, 2, exclude=frozenset(first))
        limits = _no_free_descriptor(proc.pid)
        proc.signal(signal.SIGHUP)
        proc.wait_line(r"restart failed \(could not start new worker 0: \[Errno 24\] .*\); "
                       r"keeping the running workers")
        assert echo_once(address, b"still")[0] == b"still"
        assert _workers(proc, 2) == ready
        victim = min(ready)
        os.kill(victim, signal.SIGKILL)
        proc.wait_line(r"could not restart worker \d \(\[Errno 24\] .*\); trying again in")
        assert alive(proc.pid) and alive(max(ready))
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, limits)
        second = _workers(proc, 2, exclude=frozenset({victim}))
        assert max(ready) in second
        assert echo_once(address, b"again")[0] == b"again"
        proc.signal(signal.SIGHUP)
        proc.wait_line(r"generation 2 ready; stopping 2 old workers gracefully")
        assert proc.stop() == 0


@pytest.mark.timeout(60)
def test_supervisor_without_a_descriptor_for_its_own_pair_exits_with_one_line(tmp_path):
    # Every descriptor taken once the listening sockets are open: the supervisor's wake-up
    # socket pair cannot be made. One error line and status 1, the listening sockets closed;
    # it was a traceback.
    script = tmp_path / "serve.py"
    script.write_text(textwrap.dedent("""\
        import logging, os, sys
        from netloop import workers

        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
        supervisor = workers.Supervisor(2, lambda: None, address=("127.0.0.1", 0),
                                        reuse_port=False)
        supervisor.listen()
        held = []
        try:
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        status = supervisor.run()
        for fd in held:
            os.close(fd)
        print("status", status, "open", [s.fileno() for s in supervisor.shared], flush=True)
        """))
    with Proc([sys.executable, str(script)]) as proc:
        assert proc.popen.wait(30) == 0
        proc.wait_line(r"cannot start the workers' supervisor: \[Errno 24\]")
        proc.wait_line(r"status 1 open \[-1\]")
