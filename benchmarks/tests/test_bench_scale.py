"""Smoke test for benchmarks/bench_scale.py: worker processes and HAProxy rows run, and every
process they start is gone afterwards."""
import os
import shutil
import subprocess
import sys

import pytest

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, BENCH_DIR)

import benchlib  # noqa: E402

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="loadgen needs Linux/epoll"),
]


def test_bench_scale_quick(tmp_path):
    if benchlib.find_compiler() is None:
        pytest.skip("no C compiler: cannot build benchmarks/loadgen.c")
    servers = ["netloop-w2", "asyncio-w2"]
    if shutil.which("haproxy") or os.path.exists("/usr/sbin/haproxy"):
        servers.append("haproxy-v2+netloop")
    elif os.environ.get("CI"):
        pytest.fail("CI is set and haproxy is not installed (.ci/run installs it)")
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, os.path.join(BENCH_DIR, "bench_scale.py"), "--quick",
                           "--servers", ",".join(servers), "--scenarios", "pp1",
                           "--duration", "0.3", "--out", str(out)],
                          capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in servers:
        assert "| %s |" % name in proc.stdout
    import json
    records = json.loads(out.read_text())["records"]
    # CPU comes from /proc in clock ticks (10 ms): a 0.3 s smoke run at a few hundred requests
    # per second can honestly read 0, so only its presence is checked here.
    assert all(r["ok"] and r["rate"] > 0 and r["server_cpu_us_per_op"] is not None
               for r in records), records
    assert [r["workers"] for r in records if r["server"] == "netloop-w2"] == [2]
