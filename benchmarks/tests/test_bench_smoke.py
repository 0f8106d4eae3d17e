"""Smoke tests for the benchmark tooling (load generator, servers, runner).

They build benchmarks/loadgen.c, start stdlib-only echo servers in their own
processes and drive them for about a second each.  Every server is stopped
and reaped even when an assertion fails."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, BENCH_DIR)

import benchlib  # noqa: E402

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="loadgen needs Linux/epoll"),
]


@pytest.fixture(scope="module")
def loadgen():
    if benchlib.find_compiler() is None:
        pytest.skip("no C compiler: cannot build benchmarks/loadgen.c")
    return benchlib.build_loadgen(quiet=True)


def server_cmd(kind):
    return [sys.executable, benchlib.SERVERS_PY, "--kind", kind, "--port", "0"]


def run_against(kind, loadgen, **kw):
    srv = benchlib.ServerProcess(server_cmd(kind), ready_timeout=30, name=kind)
    try:
        srv.start()
        result = benchlib.run_loadgen(loadgen, srv.port, server_pid=srv.proc.pid,
                                      timeout=90, **kw)
        alive = srv.alive()
    finally:
        srv.stop()
        srv.cleanup_files()
    assert alive, "server died during the run"
    assert srv.exit_code == 0, "server did not stop cleanly on SIGTERM: %r" % srv.exit_code
    assert not srv.killed
    return result


def test_pingpong_minimal_epoll(loadgen):
    r = run_against("minimal-epoll", loadgen, mode="pingpong", conns=4, size=64,
                    duration=1.0, warmup=0.2)
    for key in ("mode", "requests_per_s", "latency_us", "errors", "duration_s", "server",
                "client", "rate", "rate_unit"):
        assert key in r
    assert r["mode"] == "pingpong"
    assert r["errors"] == 0, r["error_detail"]
    assert r["requests"] > 100
    assert r["requests_per_s"] > 100
    assert 0.8 < r["duration_s"] < 2.0
    lat = r["latency_us"]
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert r["active_alive"] == 4
    # the server's own CPU accounting was sampled over the window
    assert r["server"]["pid"] > 0
    assert "cpu_util" in r["server"] and "vmhwm_kb" in r["server"]


def test_stream_line_connrate_idle(loadgen):
    # one server, several loadgen modes in sequence
    srv = benchlib.ServerProcess(server_cmd("minimal-epoll"), ready_timeout=30)
    try:
        srv.start()
        common = dict(server_pid=srv.proc.pid, duration=0.5, warmup=0.1, timeout=60)
        stream = benchlib.run_loadgen(loadgen, srv.port, mode="stream", conns=2,
                                      size=65536, **common)
        line = benchlib.run_loadgen(loadgen, srv.port, mode="pingpong", conns=3, size=64,
                                    line=True, **common)
        lines16 = benchlib.run_loadgen(loadgen, srv.port, mode="pingpong", conns=3, size=1024,
                                       line=16, **common)
        conn = benchlib.run_loadgen(loadgen, srv.port, mode="connrate", conns=4, size=64,
                                    **common)
        idle = benchlib.run_loadgen(loadgen, srv.port, mode="pingpong", conns=2, size=64,
                                    idle=200, **common)
    finally:
        srv.stop()
        srv.cleanup_files()
    assert srv.exit_code == 0
    assert stream["errors"] == 0 and stream["mb_per_s"] > 1 and stream["rate_unit"] == "MB/s"
    assert line["errors"] == 0 and line["line"] is True and line["requests"] > 0
    assert line["lines_per_msg"] == 1
    assert lines16["errors"] == 0 and lines16["lines_per_msg"] == 16 and lines16["requests"] > 0
    assert conn["errors"] == 0 and conn["conns_per_s"] > 10
    assert idle["errors"] == 0 and idle["idle_ready"] == 200
    assert "rss_per_idle_conn_bytes" in idle["server"]


def test_minimal_asyncore_serves_the_legacy_echo(loadgen):
    # The asyncore-API floor reference (servers.py --kind minimal-asyncore) runs the legacy
    # echo's code unchanged: one-by-one and pipelined echoes, a deep stream (its send queue),
    # connections reset after one echo, and it stops cleanly on SIGTERM.
    srv = benchlib.ServerProcess(server_cmd("minimal-asyncore"), ready_timeout=30,
                                 name="minimal-asyncore")
    try:
        srv.start()
        common = dict(server_pid=srv.proc.pid, duration=0.5, warmup=0.1, timeout=60)
        pp = benchlib.run_loadgen(loadgen, srv.port, mode="pingpong", conns=4, size=64,
                                  **common)
        stream = benchlib.run_loadgen(loadgen, srv.port, mode="stream", conns=4,
                                      size=262144, write_size=65536, **common)
        conn = benchlib.run_loadgen(loadgen, srv.port, mode="connrate", conns=4, size=64,
                                    **common)
        alive = srv.alive()
    finally:
        srv.stop()
        srv.cleanup_files()
    assert alive and srv.exit_code == 0 and not srv.killed
    assert pp["errors"] == 0 and pp["requests"] > 100, pp.get("error_detail")
    assert stream["errors"] == 0 and stream["mb_per_s"] > 1, stream.get("error_detail")
    assert conn["errors"] == 0 and conn["conns_per_s"] > 10, conn.get("error_detail")


def test_minimal_asyncore_queues_what_a_slow_reader_cannot_take():
    # A client with a 4 KiB receive buffer sends 8 MiB: the server's sends come up short
    # and its queue (dispatcher_with_send.send()/handle_write()) must keep every byte in order.
    import socket
    import threading
    srv = benchlib.ServerProcess(server_cmd("minimal-asyncore"), ready_timeout=30,
                                 name="minimal-asyncore")
    data = bytes(range(251)) * (8 * 1024 * 1024 // 251)
    got = bytearray()
    try:
        srv.start()
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.settimeout(60)
        c.connect(("127.0.0.1", srv.port))
        sender = threading.Thread(target=c.sendall, args=(data,))
        sender.start()
        try:
            while len(got) < len(data):
                chunk = c.recv(65536)
                if not chunk:
                    break
                got += chunk
        finally:
            sender.join(60)
            c.close()
        alive = srv.alive()
    finally:
        srv.stop()
        srv.cleanup_files()
    assert alive and srv.exit_code == 0
    assert len(got) == len(data) and got == data


BAD_ECHO = textwrap.dedent(
    """
    import socket, sys
    ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(16)
    print(ls.getsockname()[1], flush=True)
    while True:
        c, _ = ls.accept()
        while True:
            d = c.recv(65536)
            if not d:
                break
            c.sendall(d[:-1] + bytes([d[-1] ^ 0x20]))  # corrupt the last byte
        c.close()
    """
)


def test_loadgen_detects_corrupted_echo(loadgen):
    srv = benchlib.ServerProcess([sys.executable, "-c", BAD_ECHO], ready_timeout=30)
    try:
        srv.start()
        r = benchlib.run_loadgen(loadgen, srv.port, mode="pingpong", conns=1, size=64,
                                 duration=0.3, warmup=0.0, setup_timeout=5, timeout=60)
    finally:
        srv.stop()
        srv.cleanup_files()
    assert r["errors"] >= 1
    assert r["error_detail"]["mismatch"] >= 1


def test_missing_compiler_message(monkeypatch):
    monkeypatch.setattr(benchlib, "find_compiler", lambda: None)
    with pytest.raises(benchlib.BenchError, match="no C compiler"):
        benchlib.build_loadgen(force=True, quiet=True)


@pytest.mark.timeout(120)
def test_concurrent_loadgen_builds_all_succeed(tmp_path):
    # Test workers may build the load generator at the same time. With a stand-in compiler
    # that finishes at once, eight builders per round race for the stamp file: each must
    # succeed (a shared temporary name for the stamp failed here in 5 of 160 builds).
    cc = tmp_path / "cc"
    cc.write_text('#!/bin/sh\nwhile [ $# -gt 0 ]; do\n  if [ "$1" = "-o" ]; then shift; '
                  'printf "#!/bin/sh\\n" > "$1"; fi\n  shift\ndone\n')
    cc.chmod(0o755)
    build = tmp_path / "build"
    code = ("import sys; sys.path.insert(0, %r); import benchlib; "
            "benchlib.BUILD_DIR = sys.argv[1]; benchlib.build_loadgen(force=True, quiet=True)"
            % BENCH_DIR)
    env = dict(os.environ, CC=str(cc))
    for _ in range(10):
        procs = [subprocess.Popen([sys.executable, "-c", code, str(build)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for _ in range(8)]
        errors = [p.communicate(timeout=60)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), [e for e in errors if e]
    assert (build / "loadgen.stamp").read_text().strip()
    assert not [n for n in os.listdir(build) if n.startswith("loadgen.") and n not in
                ("loadgen.stamp",)], os.listdir(build)


def test_runner_quick_subset(loadgen, tmp_path):
    out = tmp_path / "res"
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH_DIR, "run.py"), "--quick", "--servers",
         "minimal-epoll", "--scenarios", "pp10", "--duration", "0.5", "--warmup", "0.1",
         "--out", str(out), "--no-insn-check"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=100,
    )
    assert proc.returncode == 0, proc.stdout
    data = json.loads((out / "results.json").read_text())
    assert len(data["runs"]) == 1 and data["runs"][0]["ok"]
    assert data["runs"][0]["result"]["errors"] == 0
    md = (out / "results.md").read_text()
    assert "minimal-epoll@" in md and "pp10" in md


def test_runner_reports_user_and_sys_time(loadgen, tmp_path):
    # Every cell carries the server's CPU per request split into user and kernel time (the
    # load generator reads utime and stime apart); the parts add up to the total, and the
    # Markdown has the split table.
    out = tmp_path / "res"
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCH_DIR, "run.py"), "--quick", "--servers",
         "minimal-epoll", "--scenarios", "pp10", "--duration", "0.5", "--warmup", "0.1",
         "--repeat", "2", "--out", str(out), "--no-insn-check"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=100,
    )
    assert proc.returncode == 0, proc.stdout
    data = json.loads((out / "results.json").read_text())
    assert len(data["runs"]) == 2
    cell = data["summary"]["minimal-epoll@%d.%d|pp10" % sys.version_info[:2]]
    assert cell["server_user_us"] is not None and cell["server_sys_us"] is not None
    best = cell["server_user_us_best"] + cell["server_sys_us_best"]
    assert abs(best - cell["server_cpu_us_per_op_min"]) < 1e-6 * max(1.0, best)
    # The load generator's own CPU per request: None when it was descheduled while it spun
    # (a loaded machine, such as this suite's parallel workers make; see
    # test_load_generator_share_per_request for the figure itself).
    assert cell["client_us_per_op"] is None or cell["client_us_per_op"] > 0
    md = (out / "results.md").read_text()
    assert "user + sys" in md
    assert "usr " in proc.stdout and " sys " in proc.stdout


def test_runner_split_and_schedule():
    import run
    sc = dict(run.SCENARIOS["pp100"])
    res = {"server": {"cpu_user_s": 1.0, "cpu_sys_s": 3.0, "cpu_us_per_op": 8.0}}
    assert run.cpu_split(sc, res) == (2.0, 6.0)
    assert run.cpu_split(sc, {"server": {}}) == (None, None)
    stream = dict(run.SCENARIOS["stream256k"])
    res = {"server": {"cpu_user_s": 1.0, "cpu_sys_s": 1.0, "cpu_us_per_mb": 500.0}}
    assert run.cpu_split(stream, res) == (250.0, 250.0)
    # repetitions outermost; within one, each scenario's servers in a rotated order
    cells = [("a", "s1"), ("a", "s2"), ("a", "s3"), ("b", "s1")]
    order = run.interleave(cells, 3, lambda n: 3 if n == "a" else 1)
    assert order == [(0, "a", "s1"), (0, "a", "s2"), (0, "a", "s3"), (0, "b", "s1"),
                     (1, "a", "s2"), (1, "a", "s3"), (1, "a", "s1"),
                     (2, "a", "s3"), (2, "a", "s1"), (2, "a", "s2")]


def test_load_generator_share_per_request():
    import run
    pp = dict(run.SCENARIOS["pp10"])
    res = {"client": {"busy_util": 0.5}, "duration_s": 2.0, "requests": 100000}
    assert run.client_us_per_op(pp, res) == pytest.approx(10.0)  # 1 s busy / 100,000
    stream = dict(run.SCENARIOS["stream256k"])
    res = {"client": {"busy_util": 0.25}, "duration_s": 2.0, "bytes": 500e6}
    assert run.client_us_per_op(stream, res) == pytest.approx(1000.0)  # per MB
    # Unknown, not zero, when the load generator never ran busy (descheduled) or did nothing.
    assert run.client_us_per_op(pp, {"client": {"busy_util": 0.0}, "duration_s": 2.0,
                                     "requests": 5}) is None
    assert run.client_us_per_op(pp, {"client": {"busy_util": 0.5}, "duration_s": 2.0,
                                     "requests": 0}) is None


@pytest.mark.parametrize("script", ["bench_pass.py", "bench_accept.py"])
def test_in_process_benches(script):
    env = dict(os.environ, ROUNDS="5", N="4", K="4")
    for variant in ("minimal", "netloop"):
        proc = subprocess.run([sys.executable, os.path.join(BENCH_DIR, script), variant],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "us CPU per" in proc.stdout


def run_script(script, **env):
    """Run a benchmark script of this directory with ``env`` added; its standard output."""
    proc = subprocess.run([sys.executable, os.path.join(BENCH_DIR, script)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=dict(os.environ, **env), timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_accept_syscalls_bench():
    out = run_script("bench_accept_syscalls.py", ROUNDS="2", BATCH="10")
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == [
        "| accept", "| + failing accept", "| + queue length"]


def test_timed_wait_bench(loadgen):
    out = run_script("bench_timed_wait.py", ROUNDS="1", SECONDS="0.5")
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| poll()", "| poll(30.0)"]
    assert "timeout on every poll:" in out


def test_idle_cpu_bench():
    out = run_script("bench_idle_cpu.py", N="20", SECONDS="0.2")
    assert "20 idle connections" in out and "% CPU" in out


def test_tls_rows_netloop_and_asyncio(loadgen):
    # The TLS rows (tls-pp100, tls-stream64k, tls-connrate) in miniature: the load generator
    # speaks TLS to netloop's CLI echo and to asyncio, with a generated certificate.
    if not benchlib.loadgen_has_tls(loadgen):
        if os.environ.get("CI"):
            pytest.fail("loadgen was built without OpenSSL (libssl-dev is needed in CI)")
        pytest.skip("loadgen was built without OpenSSL (libssl-dev)")
    cert, key = benchlib.tls_files()
    root = os.path.dirname(BENCH_DIR)
    env = dict(os.environ, PYTHONPATH=os.path.join(root, "src"))
    port = benchlib.free_port("127.0.0.1")
    commands = {
        "netloop": ([sys.executable, "-m", "netloop", "echo", "--port", str(port),
                     "--tls-cert", cert, "--tls-key", key], port),
        "asyncio": (server_cmd("asyncio") + ["--tls-cert", cert, "--tls-key", key], None),
    }
    for name, (cmd, fixed) in commands.items():
        srv = benchlib.ServerProcess(cmd, env=env, ready_timeout=30, name=name, port=fixed)
        try:
            srv.start()
            for mode, conns, size in (("pingpong", 4, 64), ("stream", 2, 65536),
                                      ("connrate", 4, 64)):
                r = benchlib.run_loadgen(loadgen, srv.port, mode=mode, conns=conns, size=size,
                                         duration=0.3, warmup=0.05, server_pid=srv.proc.pid,
                                         timeout=60, tls=True)
                assert r["errors"] == 0, (name, mode, r["error_detail"])
                assert r["rate"] > 0, (name, mode)
        finally:
            srv.stop()
            srv.cleanup_files()


def _has_uvloop():
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("kind,line", [
    ("netloop-aio", False), ("netloop-chat-aio", True),
    pytest.param("netloop-aio-uvloop", False, marks=pytest.mark.skipif(
        not _has_uvloop(), reason="uvloop is not installed")),
    pytest.param("netloop-chat-aio-uvloop", True, marks=pytest.mark.skipif(
        not _has_uvloop(), reason="uvloop is not installed")),
])
def test_netloop_on_asyncio_rows(loadgen, kind, line):
    # netloop.aio rows: the legacy echo/chat code with asyncore.loop() replaced by
    # netloop.aio.run(); the server must echo correctly and stop cleanly on SIGTERM.
    r = run_against(kind, loadgen, mode="pingpong", conns=3, size=64, duration=0.3,
                    warmup=0.1, line=line)
    assert r["errors"] == 0, r["error_detail"]
    assert r["requests"] > 0


def test_in_process_bench_on_asyncio():
    env = dict(os.environ, ROUNDS="5", N="4")
    variants = ["aio", "protocol"] + (["aio-uvloop", "protocol-uvloop"] if _has_uvloop() else [])
    for variant in variants:
        proc = subprocess.run([sys.executable, os.path.join(BENCH_DIR, "bench_pass.py"), variant],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "us CPU per" in proc.stdout


def test_deep_window_and_large_message_scenarios(loadgen):
    # issue #17's scenarios: 256 KiB in flight in 64 KiB writes, and 1 MiB request/response
    import run
    deep, big = run.SCENARIOS["stream256k"], run.SCENARIOS["rr1m"]
    assert (deep["mode"], deep["conns"], deep["size"], deep["write_size"]) == (
        "stream", 10, 262144, 65536)
    assert (big["mode"], big["size"], big["write_size"]) == ("pingpong", 1 << 20, 65536)
    srv = benchlib.ServerProcess(server_cmd("minimal-epoll"), ready_timeout=30)
    try:
        srv.start()
        common = dict(server_pid=srv.proc.pid, duration=0.4, warmup=0.1, timeout=60,
                      write_size=65536)
        stream = benchlib.run_loadgen(loadgen, srv.port, mode="stream", conns=2,
                                      size=262144, **common)
        rr = benchlib.run_loadgen(loadgen, srv.port, mode="pingpong", conns=2,
                                  size=1 << 20, **common)
        small = benchlib.run_loadgen(loadgen, srv.port, mode="pingpong", conns=1, size=4096,
                                     server_pid=srv.proc.pid, duration=0.3, warmup=0.1,
                                     timeout=60, write_size=1000)
    finally:
        srv.stop()
        srv.cleanup_files()
    for r in (stream, rr, small):
        assert r["errors"] == 0, r["error_detail"]
    assert stream["write_size"] == 65536 and stream["mb_per_s"] > 0
    assert rr["requests"] > 0 and rr["size"] == 1 << 20
    assert small["write_size"] == 1000 and small["requests"] > 0


def test_loadgen_rejects_bad_write_size(loadgen):
    proc = subprocess.run([loadgen, "--port", "1", "--write-size", "70000"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=10)
    assert proc.returncode != 0 and "--write-size" in proc.stderr


def test_bench_insn_children_run():
    # every variant's measured code runs (without valgrind: a few rounds each)
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(BENCH_DIR), "src"))
    import bench_insn
    for variant in bench_insn.VARIANTS:
        proc = subprocess.run([sys.executable, os.path.join(BENCH_DIR, "bench_insn.py"),
                               "--child", variant, "2", "3"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=60)
        assert proc.returncode == 0, (variant, proc.stderr)
        assert json.loads(proc.stdout.strip().splitlines()[-1])["units"] > 0, variant
    # idle channels beside the busy one, the collector not frozen (BENCH_INSN_IDLE/NOFREEZE)
    proc = subprocess.run([sys.executable, os.path.join(BENCH_DIR, "bench_insn.py"),
                           "--child", "pp1-legacy", "2", "3"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60,
                          env=dict(env, BENCH_INSN_IDLE="50", BENCH_INSN_NOFREEZE="1"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["units"] == 3


def test_bench_insn_baseline_file():
    import bench_insn
    base = bench_insn.load_baseline()
    assert base["python"].startswith("CPython 3.")
    for variant in bench_insn.CHECKED:
        assert base["insn"][variant] > 1000


def test_bench_insn_check_detects_growth(tmp_path, monkeypatch):
    # --check against a baseline 30% below what this tree measures must fail, and one for
    # another Python must skip loudly (exit 0, a note); no valgrind: the check says so.
    import io
    import bench_insn
    monkeypatch.setattr(bench_insn, "measure", lambda variant: {"insn": 13000.0})
    path = tmp_path / "base.json"
    path.write_text(json.dumps({"python": bench_insn.python_id(), "insn": {"pp-cli": 10000}}))
    out = io.StringIO()
    monkeypatch.setattr(bench_insn, "find_valgrind", lambda: "/usr/bin/valgrind")
    assert bench_insn.check(str(path), 0.10, ("pp-cli",), out=out) == 1
    assert "FAIL" in out.getvalue()
    path.write_text(json.dumps({"python": bench_insn.python_id(), "insn": {"pp-cli": 12500}}))
    assert bench_insn.check(str(path), 0.10, ("pp-cli",), out=io.StringIO()) == 0
    path.write_text(json.dumps({"python": "CPython 0.0", "insn": {"pp-cli": 1}}))
    out = io.StringIO()
    assert bench_insn.check(str(path), 0.10, ("pp-cli",), out=out) == 0
    assert "SKIPPED" in out.getvalue()
    monkeypatch.setattr(bench_insn, "find_valgrind", lambda: None)
    out = io.StringIO()
    assert bench_insn.check(str(path), 0.10, ("pp-cli",), out=out) == 2
    assert "valgrind is not installed" in out.getvalue()


def test_bench_insn_measures_with_callgrind():
    import bench_insn
    if bench_insn.find_valgrind() is None:
        if os.environ.get("CI"):
            pytest.fail("valgrind is not installed (CI must install it: apt-get install valgrind)")
        pytest.skip("valgrind is not installed")
    saved = bench_insn.VARIANTS["pp-cli"]
    bench_insn.VARIANTS["pp-cli"] = (2, 3)
    try:
        r = bench_insn.measure("pp-cli")
    finally:
        bench_insn.VARIANTS["pp-cli"] = saved
    assert r["units"] == 3 * bench_insn.PP_CONNS
    assert 2000 < r["insn"] < 200000, r


@pytest.mark.timeout(300)
def test_bench_insn_servers_counts_whole_server_processes():
    # The lock-step client and the difference of two runs under callgrind: a positive,
    # plausible count per request for the CLI server and the hand-written loop, and the
    # CLI's system calls per request (strace, where installed) are one read and one send
    # (write(2) on the socket's descriptor since the CLI echo sends with os.write()).
    # Enough requests that a full collection of the server's heap landing in one of the two
    # runs (a few million instructions) cannot take the difference out of the bounds.
    import shutil
    import bench_insn_servers as bis
    if shutil.which("valgrind") is None:
        if os.environ.get("CI"):
            pytest.fail("valgrind is not installed (CI must install it: apt-get install valgrind)")
        pytest.skip("valgrind is not installed")
    for name in ("netloop", "minimal-epoll"):
        r = bis.measure(sys.executable, name, "pp1", rounds=(20, 10, 1010))
        assert r["requests"] == 1000
        assert 2000 < r["insn"] < 60000, r
    r = bis.measure(sys.executable, "netloop", "connrate", rounds=(4, 2, 42))
    assert r["requests"] == 40 * 8 and 10000 < r["insn"] < 500000, r
    # stream64k: 64 KiB chunks on 10 connections, each echo checked byte for byte
    r = bis.measure(sys.executable, "netloop", "stream64k", rounds=(2, 2, 12))
    assert r["requests"] == 10 * 10 and 500 < r["insn"] < 500000, r
    if shutil.which("strace") is None:
        if os.environ.get("CI"):
            pytest.fail("strace is not installed (CI must install it: apt-get install strace)")
        pytest.skip("strace is not installed (the instruction counts passed)")
    r = bis.measure(sys.executable, "netloop", "pp1", syscalls=True, rounds=(10, 10, 60))
    calls = r["calls"]
    assert calls.get("recvfrom", 0) == pytest.approx(1, abs=0.05), calls
    assert calls.get("write", 0) == pytest.approx(1, abs=0.05), calls
    assert calls.get("sendto", 0) == pytest.approx(0, abs=0.05), calls
    assert calls.get("epoll_wait", 0) == pytest.approx(1, abs=0.1), calls


def test_bench_insn_servers_json_keeps_each_interpreters_counts(tmp_path):
    import json
    import bench_insn_servers as bis
    path = str(tmp_path / "insn.json")
    bis.store_json(path, "3.11", {("pp1", "netloop"): 8409.4, ("pp1", "uvloop"): 4007.0})
    bis.store_json(path, "3.13", {("pp1", "netloop"): 9000.0})
    bis.store_json(path, "3.11", {("stream64k", "netloop"): 3100.0})
    with open(path) as f:
        data = json.load(f)
    assert data["insn"]["3.11"] == {"pp1": {"netloop": 8409.4, "uvloop": 4007.0},
                                    "stream64k": {"netloop": 3100.0}}
    assert data["insn"]["3.13"] == {"pp1": {"netloop": 9000.0}}
    assert data["units"]["stream64k"] == "64 KiB"


def test_a_stuck_server_is_described_from_proc():
    # What the error about a server that SIGTERM did not end says: here a stopped process.
    import signal
    import time
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while "state T" not in benchlib._proc_state(proc.pid):
            assert time.monotonic() < deadline, benchlib._proc_state(proc.pid)
            time.sleep(0.01)
        text = benchlib._proc_state(proc.pid)
        assert "wchan" in text and "SigBlk" in text, text
    finally:
        proc.kill()
        proc.wait()
    assert "/proc" in benchlib._proc_state(proc.pid)  # gone: says so, does not raise


def test_stop_again_gives_a_slow_server_a_second_sigterm(tmp_path):
    # A server that lets its first SIGTERM pass: stop(again=True) sends another before any
    # SIGKILL, and says what it saw; stop() without it kills, as before.
    code = textwrap.dedent("""
        import signal, sys, time
        seen = []
        def on_term(signum, frame):
            seen.append(signum)
            if len(seen) > 1:
                sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        print(4321, flush=True)
        while True:
            time.sleep(0.01)
    """)
    for again in (True, False):
        srv = benchlib.ServerProcess([sys.executable, "-c", code], port=None, name="slow",
                                     ready_timeout=20)
        try:
            srv.start()
            srv.stop(timeout=1.0, again=again)
        finally:
            srv.cleanup_files()
        assert "state" in srv.stuck, srv.stuck
        if again:
            assert not srv.killed and srv.exit_code == 0
        else:
            assert srv.killed and srv.exit_code != 0


def test_fill_bytecode_cache_compiles_what_the_servers_import(tmp_path, monkeypatch):
    # A server run that compiles servers.py (changed, or a fresh clone) counts ~45 million
    # instructions of compiler work: bench_insn_servers.py saw -26,000 instructions per
    # request before measure() filled the cache for servers.py too.
    import importlib.util
    import shutil

    for name in ("servers.py", "minimal_asyncore.py"):
        shutil.copy(os.path.join(BENCH_DIR, name), tmp_path / name)
    (tmp_path / "src").mkdir()
    monkeypatch.setattr(benchlib, "BENCH_DIR", str(tmp_path))
    monkeypatch.setattr(benchlib, "SERVERS_MODULE", str(tmp_path / "servers.py"))
    monkeypatch.setattr(benchlib, "SRC_DIR", str(tmp_path / "src"))
    benchlib.fill_bytecode_cache(sys.executable, check=True)
    for name in ("servers.py", "minimal_asyncore.py"):
        assert os.path.exists(importlib.util.cache_from_source(str(tmp_path / name))), name


@pytest.mark.timeout(300)
def test_bench_insn_servers_counts_python_bytecodes_by_function_and_line():
    # --bytecodes: the servers run under bytecode_count.py (sys.monitoring, 3.12+). The
    # hand-written loop's echo is one function, which executes nearly all the bytecodes of a
    # request (a wake-up with nothing to read, or a signal, adds a few now and then).
    import bench_insn_servers as bis
    if sys.version_info < (3, 12):
        with pytest.raises(RuntimeError, match="3.12 or newer"):
            bis.measure(sys.executable, "minimal-epoll", "pp1", bytecodes=True)
        return
    r = bis.measure(sys.executable, "minimal-epoll", "pp1", rounds=(5, 5, 105), bytecodes=True)
    assert r["requests"] == 100
    assert 20 < r["bytecodes"] < 400, r
    (where, lines), = [(w, per) for w, per in r["by_line"].items()
                       if sum(per.values()) > 0.5]
    assert where.startswith("servers.py:") and "serve_minimal_epoll" in where, where
    assert sum(lines.values()) > 0.95 * r["bytecodes"], r
    # the CLI server too (python -m netloop echo), through its handler
    r = bis.measure(sys.executable, "netloop", "pp1", rounds=(5, 5, 45), bytecodes=True)
    assert r["requests"] == 40
    assert any("EchoHandler.handle_read" in where for where in r["by_line"]), r["by_line"]


def test_bench_insn_servers_reads_callgrind_annotate_by_function():
    """--functions: callgrind_annotate's exclusive counts by C function (file:function), the
    program's total left out and one function's lines from two paths summed."""
    import bench_insn_servers as bis
    text = """--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
7,891,859 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                  file:function
--------------------------------------------------------------------------------
2,246,200 (28.46%)  /build/Python/generated_cases.c.h:_PyEval_EvalFrameDefault [/usr/bin/py]
  344,000 ( 4.36%)  /build/Python/getargs.c:vgetargs1_impl [/usr/bin/py]
      100 ( 0.00%)  /other/getargs.c:vgetargs1_impl
"""
    counts = bis.parse_annotate(text)
    assert counts == {"generated_cases.c.h:_PyEval_EvalFrameDefault": 2246200,
                      "getargs.c:vgetargs1_impl": 344100}
