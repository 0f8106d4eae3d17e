"""Shared helpers for the netloop benchmarks: building the C load generator,
finding interpreters and venvs, starting/stopping server processes and
running the load generator.  Used by run.py and by benchmarks/tests/."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
SRC_DIR = os.path.join(REPO_DIR, "src")
BUILD_DIR = os.path.join(BENCH_DIR, ".build")
VENV_DIR = os.path.join(BENCH_DIR, ".venvs")
LOADGEN_SRC = os.path.join(BENCH_DIR, "loadgen.c")
# The servers' code, and the command that starts one (serve.py imports servers.py, so that it
# loads from the bytecode cache instead of being compiled at each start: see serve.py).
SERVERS_MODULE = os.path.join(BENCH_DIR, "servers.py")
SERVERS_PY = os.path.join(BENCH_DIR, "serve.py")
CFLAGS = ["-O2", "-Wall"]
TLS_FLAGS = (["-DLOADGEN_TLS"], ["-lssl", "-lcrypto"])


class BenchError(RuntimeError):
    """A benchmark step failed in a way the caller should report."""


# --------------------------------------------------------------------------
# load generator build
# --------------------------------------------------------------------------
def find_compiler():
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def build_loadgen(force=False, quiet=False):
    """Compile loadgen.c into benchmarks/.build/loadgen (cached by source hash)."""
    with open(LOADGEN_SRC, "rb") as f:
        src = f.read()
    cc = find_compiler()
    if cc is None:
        raise BenchError(
            "no C compiler found: the load generator (benchmarks/loadgen.c) must be "
            "compiled with the system compiler. Install one (e.g. `apt-get install gcc`) "
            "or point $CC at it."
        )
    digest = hashlib.sha256(src + repr((cc, CFLAGS, TLS_FLAGS)).encode()).hexdigest()[:16]
    binary = os.path.join(BUILD_DIR, "loadgen")
    stamp = binary + ".stamp"
    if not force and os.path.exists(binary) and os.path.exists(stamp):
        with open(stamp) as f:
            if f.read().strip() == digest:
                return binary
    os.makedirs(BUILD_DIR, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="loadgen.", dir=BUILD_DIR)
    os.close(fd)
    # With OpenSSL's headers and libraries (libssl-dev) the load generator speaks TLS too
    # (--tls, for the TLS rows); without them it is built plain and those rows are skipped.
    cmd = [cc] + CFLAGS + TLS_FLAGS[0] + ["-o", tmp, LOADGEN_SRC, "-lm"] + TLS_FLAGS[1]
    if not quiet:
        print("building load generator: %s" % " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        cmd = [cc] + CFLAGS + ["-o", tmp, LOADGEN_SRC, "-lm"]
        if not quiet:
            print("(no OpenSSL to build with: no TLS) %s" % " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise BenchError("compiling loadgen.c failed:\n%s" % proc.stdout)
    os.chmod(tmp, 0o755)
    os.replace(tmp, binary)  # atomic: concurrent builders never see half a file
    # A temporary name of its own too: test workers may build at the same time, and a shared
    # "stamp.tmp" would be renamed away by one of them under the other.
    fd, stamp_tmp = tempfile.mkstemp(prefix="loadgen.stamp.", dir=BUILD_DIR)
    with os.fdopen(fd, "w") as f:
        f.write(digest + "\n")
    os.replace(stamp_tmp, stamp)
    return binary


# --------------------------------------------------------------------------
# interpreters and venvs
# --------------------------------------------------------------------------
def _version_key(path):
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", path)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


def find_base_python(spec):
    """Map '3.11', '3.11.7', 'current' or a path to an interpreter path (or None)."""
    if spec in (None, "", "current"):
        return sys.executable
    if os.sep in spec:
        return spec if os.access(spec, os.X_OK) else None
    roots = [os.environ.get("PYENV_ROOT"), os.path.expanduser("~/.pyenv"), "/root/.pyenv"]
    for root in roots:
        if not root:
            continue
        hits = glob.glob(os.path.join(root, "versions", spec + "*", "bin", "python"))
        hits = [h for h in hits if re.search(r"/versions/%s(\.\d+)*/bin" % re.escape(spec), h)]
        if hits:
            return sorted(hits, key=_version_key)[-1]
    for name in ("python" + spec, "python" + ".".join(spec.split(".")[:2])):
        path = shutil.which(name)
        if path:
            return path
    return None


def python_tag(python):
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        timeout=60,
    )
    return out.stdout.strip()


def venv_python(tag):
    return os.path.join(VENV_DIR, "py" + tag.replace(".", ""), "bin", "python")


def bench_requirements(tag):
    major, minor = (int(x) for x in tag.split("."))
    reqs = ["uvloop", "matplotlib"]
    if (major, minor) >= (3, 12):
        reqs += ["pyasyncore", "pyasynchat"]
    return reqs


def ensure_venv(base_python, tag, log=print):
    """Create benchmarks/.venvs/pyXY with the repo (editable) and optional extras.

    Every install step is optional: failures are reported and skipped; the
    servers still find netloop through PYTHONPATH=<repo>/src."""
    vpy = venv_python(tag)
    vdir = os.path.dirname(os.path.dirname(vpy))
    if not os.path.exists(vpy):
        log("creating venv %s (%s)" % (vdir, base_python))
        subprocess.run([base_python, "-m", "venv", vdir], check=True, timeout=300)
    stamp_path = os.path.join(vdir, "bench-stamp.json")
    wanted = {"repo": os.path.exists(os.path.join(REPO_DIR, "pyproject.toml")),
              "reqs": bench_requirements(tag)}
    try:
        with open(stamp_path) as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        stamp = {}
    if stamp.get("wanted") == wanted:
        return vpy
    logfile = os.path.join(vdir, "bench-install.log")
    results = {}
    with open(logfile, "a") as lf:
        steps = []
        if wanted["repo"]:
            steps.append(("netloop (editable)", ["-e", REPO_DIR]))
        steps += [(r, [r]) for r in wanted["reqs"]]
        for label, args in steps:
            cmd = [vpy, "-m", "pip", "install", "--disable-pip-version-check", "-q"] + args
            lf.write("$ %s\n" % " ".join(cmd))
            lf.flush()
            try:
                rc = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT,
                                    timeout=600).returncode
            except subprocess.TimeoutExpired:
                rc = -1
            results[label] = rc == 0
            if rc != 0:
                log("skip: could not pip-install %s into %s (see %s)" % (label, vdir, logfile))
    with open(stamp_path, "w") as f:
        json.dump({"wanted": wanted, "results": results}, f)
    return vpy


def server_env(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("NETLOOP_POLLER", None)
    # Servers start from cached bytecode (__pycache__, gitignored), as an installed package
    # does: compiling at start-up would leave about 2 MiB more in a server's RSS. probe_python
    # fills the cache. (A PYTHONPYCACHEPREFIX would also hide the stdlib's own .pyc files.)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    if extra:
        env.update(extra)
    return env


def fill_bytecode_cache(python: str, check: bool = False) -> None:
    """Compile netloop and the modules the servers import (servers.py, the floor) for
    ``python``, so that no server run compiles them (see server_env): a run that did would
    count tens of millions of instructions of compiler work."""
    subprocess.run([python, "-m", "compileall", "-q", SRC_DIR, SERVERS_MODULE,
                    os.path.join(BENCH_DIR, "minimal_asyncore.py")],
                   stdout=subprocess.DEVNULL, stderr=None if check else subprocess.DEVNULL,
                   env=server_env(), timeout=300, check=check)


def probe_python(python):
    """Capabilities of an interpreter (see servers.py --probe) plus the netloop CLI."""
    proc = subprocess.run(
        [python, SERVERS_PY, "--probe"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(),
        timeout=120,
    )
    if proc.returncode != 0:
        raise BenchError("probe failed for %s: %s" % (python, proc.stderr.strip()[-500:]))
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    fill_bytecode_cache(python)
    info["netloop_cli"] = False
    if info["modules"].get("netloop", {}).get("ok"):
        try:
            cli = subprocess.run(
                [python, "-m", "netloop", "echo", "--help"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=server_env(),
                timeout=60,
            )
            info["netloop_cli"] = cli.returncode == 0 and "--backend" in cli.stdout
        except subprocess.TimeoutExpired:
            pass
    return info


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------
def cpu_plan():
    """(server_cpu, client_cpu) or (None, None) when there are not 2 CPUs."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return None, None
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def _preexec(cpu, nofile):
    def fn():
        if cpu is not None:
            try:
                os.sched_setaffinity(0, {cpu})
            except OSError:
                pass
        if nofile:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            if soft < nofile:
                try:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, max(hard, nofile)))
                except (ValueError, OSError):
                    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    return fn


_LIVE = set()  # server processes not yet reaped (for emergency clean-up)


def free_port(host="127.0.0.1"):
    import socket

    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _can_connect(host, port):
    import socket

    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect((host, port))
            return True
        except OSError:
            return False


class ServerProcess:
    """A server under test in its own process (and session).

    Use as a context manager: the process is always terminated and reaped,
    SIGTERM first, SIGKILL to its process group if it does not exit."""

    def __init__(self, cmd, env=None, cpu=None, nofile=0, host="127.0.0.1", port=None,
                 ready_timeout=30.0, name="server"):
        self.cmd = cmd
        self.env = env if env is not None else server_env()
        self.cpu = cpu
        self.nofile = nofile
        self.host = host
        self.fixed_port = port  # set when the command was given an explicit port
        self.ready_timeout = ready_timeout
        self.name = name
        self.proc = None
        self.port = None
        self.exit_code = None
        self.killed = False
        self.stuck = ""  # what /proc said of a server that SIGTERM did not end (stop())
        self._dir = tempfile.mkdtemp(prefix="netloop-bench-")
        self.out_path = os.path.join(self._dir, "stdout")
        self.err_path = os.path.join(self._dir, "stderr")

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                preexec_fn=_preexec(self.cpu, self.nofile),
                start_new_session=True,
                close_fds=True,
            )
        _LIVE.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self):
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    "%s exited with %s before it was ready: %s"
                    % (self.name, self.proc.returncode, self.stderr_tail())
                )
            with open(self.out_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            for line in text.splitlines():
                m = re.search(r"(?:^|[:\s])(\d{2,5})\s*$", line.strip())
                if m and 0 < int(m.group(1)) < 65536:
                    if self.fixed_port and int(m.group(1)) != self.fixed_port:
                        continue
                    self.port = int(m.group(1))
                    return
            if self.fixed_port and _can_connect(self.host, self.fixed_port):
                self.port = self.fixed_port
                return
            time.sleep(0.02)
        raise BenchError("%s not ready after %.0fs: %s" % (self.name, self.ready_timeout,
                                                          self.stderr_tail()))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self, n=800):
        try:
            with open(self.err_path, "rb") as f:
                data = f.read()
        except OSError:
            return ""
        return data[-n:].decode("utf-8", "replace").strip()

    def _exits_within(self, seconds):
        try:
            self.proc.wait(timeout=seconds)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _poke(self):
        if not self.port:
            return
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        except OSError:
            pass

    def stop(self, timeout=5.0, again=False):
        """SIGTERM, and SIGKILL to the process group after ``timeout`` s. With ``again``, a
        server still there after ``timeout`` gets a second SIGTERM and as long again first
        (``stuck`` then says what /proc showed; ``killed`` only if that did not end it either):
        for a server whose own exit writes what is measured (callgrind's totals)."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                try:
                    self.proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    if again and not self._exits_within(min(2.0, timeout)):
                        # Under valgrind a SIGTERM that comes while the server blocks in
                        # epoll_wait() can leave it there (the call goes on, and a Python
                        # handler runs only when it returns): a connection ends that wait.
                        self._poke()
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.stuck = _proc_state(self.proc.pid)
                    if again:
                        try:
                            self.proc.send_signal(signal.SIGTERM)
                            self.proc.wait(timeout=timeout)
                        except ProcessLookupError:
                            pass
                        except subprocess.TimeoutExpired:
                            self.stuck += " | after a second SIGTERM: " + _proc_state(
                                self.proc.pid)
                if self.proc.poll() is None:
                    self.killed = True
                    try:
                        os.killpg(self.proc.pid, signal.SIGKILL)  # its own session
                    except (ProcessLookupError, PermissionError):
                        self.proc.kill()
                    self.proc.wait(timeout=30)
            else:
                self.proc.wait()
            # anything it left behind in its own process group
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.exit_code = self.proc.returncode
        finally:
            _LIVE.discard(self)

    def cleanup_files(self):
        shutil.rmtree(self._dir, ignore_errors=True)


def _proc_state(pid):
    """A process's scheduler state, wait channel and signal masks, from /proc (for the error
    about a server that did not exit after SIGTERM: stopped, blocking signals, or waiting
    where)."""
    parts = []
    try:
        with open("/proc/%d/stat" % pid) as f:
            parts.append("state " + f.read().rsplit(")", 1)[1].split()[0])
        with open("/proc/%d/wchan" % pid) as f:
            parts.append("wchan " + (f.read().strip() or "-"))
        with open("/proc/%d/status" % pid) as f:
            parts += [line.strip().replace("\t", " ") for line in f
                      if line.startswith(("SigPnd", "ShdPnd", "SigBlk", "SigCgt", "Threads"))]
    except OSError as err:
        parts.append("(/proc: %s)" % err)
    return "; ".join(parts)


def stop_all_servers():
    for srv in list(_LIVE):
        srv.stop(timeout=3.0)


def run_loadgen(binary, port, mode="pingpong", conns=10, size=64, duration=2.0, warmup=0.5,
                idle=0, line=False, server_pid=None, cpu=None, host="127.0.0.1",
                setup_timeout=30.0, extra_args=(), timeout=None, tls=False,
                write_size=None):
    """Run the load generator once and return its parsed JSON result."""
    cmd = [binary, "--host", host, "--port", str(port), "--mode", mode, "--conns", str(conns),
           "--size", str(size), "--duration", str(duration), "--warmup", str(warmup),
           "--idle", str(idle), "--setup-timeout", str(setup_timeout)]
    if tls:
        cmd.append("--tls")
    if line:
        # line=True: one line per message; an int N > 1: N lines per message (pipelined)
        cmd += ["--line"] if line is True or line == 1 else ["--lines", str(int(line))]
    if write_size:
        cmd += ["--write-size", str(int(write_size))]
    if server_pid:
        cmd += ["--server-pid", str(server_pid)]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    cmd += list(extra_args)
    if timeout is None:
        timeout = 2 * setup_timeout + warmup + duration + 30
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError("load generator timed out after %.0fs" % timeout) from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise BenchError("load generator failed (rc=%s): %s" % (proc.returncode,
                                                                proc.stderr.strip()[-800:]))
    result = json.loads(lines[-1])
    result["loadgen_rc"] = proc.returncode
    if proc.stderr.strip():
        result["loadgen_stderr"] = proc.stderr.strip()[-800:]
    return result


def _read_stat_busy():
    """(busy CPU seconds of the whole machine, monotonic time) from /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    vals = [int(x) for x in fields[:8]]
    busy = vals[0] + vals[1] + vals[2] + vals[5] + vals[6]  # user nice system irq softirq
    return busy / float(os.sysconf("SC_CLK_TCK")), time.monotonic()


def machine_busy(interval=0.15):
    """CPUs' worth of work the machine did over `interval` seconds (0.0 .. nproc)."""
    try:
        b0, t0 = _read_stat_busy()
        time.sleep(interval)
        b1, t1 = _read_stat_busy()
    except (OSError, ValueError):
        return 0.0
    return max(0.0, (b1 - b0) / (t1 - t0))


def wait_for_quiet(threshold=0.15, max_wait=20.0):
    """Wait until other processes leave the machine (nearly) idle.

    Returns (seconds waited, last busy reading)."""
    t0 = time.monotonic()
    busy = machine_busy()
    while busy > threshold and time.monotonic() - t0 < max_wait:
        time.sleep(0.5)
        busy = machine_busy()
    return time.monotonic() - t0, busy


def machine_info():
    info = {"nproc": os.cpu_count(), "kernel": os.uname().release}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_kb"] = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return info


# --------------------------------------------------------------------------
# TLS rows
# --------------------------------------------------------------------------
def loadgen_has_tls(binary):
    """True if this load generator was built with OpenSSL (it accepts --tls)."""
    proc = subprocess.run([binary, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    if "--tls" not in proc.stdout:
        return False
    probe = subprocess.run([binary, "--port", "1", "--tls", "--duration", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return "built without TLS" not in probe.stderr


def tls_files():
    """(cert, key): a throw-away self-signed EC P-256 certificate for the TLS rows, made with
    the openssl command once per build directory (same key type for every server)."""
    final = os.path.join(BUILD_DIR, "tls")
    cert = os.path.join(final, "cert.pem")
    key = os.path.join(final, "key.pem")
    if os.path.exists(cert) and os.path.exists(key):
        return cert, key
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BenchError("the TLS rows need the openssl command to make a certificate")
    os.makedirs(BUILD_DIR, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="tls.", dir=BUILD_DIR)
    try:
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30", "-subj",
                        "/CN=localhost", "-keyout", os.path.join(tmp, "key.pem"),
                        "-out", os.path.join(tmp, "cert.pem")],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # The pair appears at once, or not at all if a concurrent run made one first.
        os.rename(tmp, final)
    except OSError:
        if not os.path.exists(cert):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cert, key
