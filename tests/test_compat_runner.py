"""``python -m netloop.compat``: running unmodified asyncore/asynchat/smtpd programs on 3.12+,
and the opt-in alias modules for a whole virtual environment."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any, List, Optional

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
PY313 = "/root/.pyenv/versions/3.13.0/bin/python"


def _modern_python() -> Optional[str]:
    """A Python without asyncore (3.12+): this one, or the 3.13 install."""
    if sys.version_info >= (3, 12):
        return sys.executable
    if os.path.exists(PY313):
        return PY313
    if os.environ.get("CI"):
        pytest.fail("CI: no Python 3.12+ to run the removed-module tests on")
    return None


def _modern_venv(tmp_path: Any) -> str:
    """The python of a new virtual environment (no pip) of a Python without asyncore."""
    python = _modern_python()
    if python is None:
        pytest.skip("no Python 3.12+ here")
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    return str(venv / "bin" / "python")


def _run(python: str, args: List[str], cwd: Any = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC
    return subprocess.run([python, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


# A program as it was written for Python 3.11: asyncore, asynchat and smtpd imported by name.
LEGACY = textwrap.dedent('''\
    import asynchat
    import asyncore
    import smtpd
    import socket
    import sys


    class Upper(asynchat.async_chat):
        def __init__(self, sock):
            asynchat.async_chat.__init__(self, sock)
            self.set_terminator(b"\\n")
            self.data = []

        def collect_incoming_data(self, data):
            self.data.append(data)

        def found_terminator(self):
            self.push(b"".join(self.data).upper() + b"\\n")
            self.data = []


    class Server(asyncore.dispatcher):
        def __init__(self):
            asyncore.dispatcher.__init__(self)
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.set_reuse_addr()
            self.bind(("127.0.0.1", 0))
            self.listen(5)

        def handle_accepted(self, sock, addr):
            Upper(sock)


    class Client(asyncore.dispatcher_with_send):
        def __init__(self, port):
            asyncore.dispatcher_with_send.__init__(self)
            self.create_socket(socket.AF_INET, socket.SOCK_STREAM)
            self.connect(("127.0.0.1", port))
            self.send(b"hello from 3.11\\n")
            self.got = b""

        def handle_read(self):
            self.got += self.recv(100)
            if self.got.endswith(b"\\n"):
                print(self.got.decode().strip(), sys.argv[1:], __name__,
                      smtpd.SMTPServer.__module__)
                asyncore.close_all()
                sys.exit(int(sys.argv[1]))


    Client(Server().socket.getsockname()[1])
    asyncore.loop(timeout=5)
''')


def test_unmodified_asyncore_program_runs_on_a_python_without_asyncore(tmp_path: Any) -> None:
    python = _modern_python()
    if python is None:
        pytest.skip("no Python 3.12+ here")
    script = tmp_path / "legacy.py"
    script.write_text(LEGACY)
    direct = _run(python, [str(script), "0"])
    assert "No module named 'asynchat'" in direct.stderr  # what the issue ran into
    proc = _run(python, ["-m", "netloop.compat", "run", str(script), "7", "--opt"])
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout.strip() == "HELLO FROM 3.11 ['7', '--opt'] __main__ netloop.smtpd"


def test_run_keeps_argv_path_main_and_tracebacks_as_a_direct_run(tmp_path: Any) -> None:
    (tmp_path / "helper.py").write_text("VALUE = 42\n")
    script = tmp_path / "prog.py"
    script.write_text(textwrap.dedent('''\
        import sys
        import helper  # found through sys.path[0], the script's directory
        print(repr(sys.argv), __name__, __file__ == %r, helper.VALUE,
              sys.modules["__main__"].__dict__ is globals())

        def fail():
            raise ValueError("boom")

        if sys.argv[1:] == ["fail"]:
            fail()
    ''' % str(script)))
    proc = _run(sys.executable, ["-m", "netloop.compat", "run", "prog.py", "a", "-m", "b"],
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['prog.py', 'a', '-m', 'b'] __main__ True 42 True"
    ours = _run(sys.executable, ["-m", "netloop.compat", "run", "prog.py", "fail"],
                cwd=tmp_path)
    theirs = _run(sys.executable, ["prog.py", "fail"], cwd=tmp_path)
    assert ours.returncode == theirs.returncode == 1
    assert ours.stderr == theirs.stderr  # no runner or runpy frames
    assert ours.stderr.startswith("Traceback") and "boom" in ours.stderr


def test_run_module(tmp_path: Any) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tool.py").write_text(textwrap.dedent('''\
        import sys
        import asyncore
        print(repr(sys.argv[1:]), __name__, sys.argv[0].endswith("tool.py"),
              asyncore.__name__)
        sys.exit(3)
    '''))
    proc = _run(sys.executable, ["-m", "netloop.compat", "run", "--force", "-m", "pkg.tool",
                                 "x", "--y"], cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.strip() == "['x', '--y'] __main__ True netloop.asyncore"


def test_help_and_usage_errors(tmp_path: Any) -> None:
    shown = _run(sys.executable, ["-m", "netloop.compat", "--help"])
    assert shown.returncode == 0
    for text in ("run [--force] SCRIPT", "-m MODULE", "install-aliases", "remove-aliases"):
        assert text in shown.stdout
    bare = _run(sys.executable, ["-m", "netloop.compat"])
    assert bare.returncode == 2 and "usage:" in bare.stderr
    missing = _run(sys.executable, ["-m", "netloop.compat", "run", str(tmp_path / "no.py")])
    assert missing.returncode == 2 and "can't open file" in missing.stderr


def test_install_and_remove_aliases_in_a_venv(tmp_path: Any) -> None:
    vpython = _modern_venv(tmp_path)
    site = _run(vpython, ["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    site_packages = site.stdout.strip()
    # Someone else's asynchat.py is there already (pyasyncore ships such modules).
    foreign = os.path.join(site_packages, "asynchat.py")
    with open(foreign, "w") as f:
        f.write("FOREIGN = True\n")
    check = ("import asyncore, asynchat, smtpd, netloop.asyncore; "
             "print(asyncore is netloop.asyncore, getattr(asynchat, 'FOREIGN', False), "
             "smtpd.__name__)")

    installed = _run(vpython, ["-m", "netloop.compat", "install-aliases"])
    assert installed.returncode == 1  # it says what it refused...
    assert "asynchat.py is already there and was not written by netloop" in installed.stderr
    with open(foreign) as f:
        assert f.read() == "FOREIGN = True\n"  # ...and left it alone
    seen = _run(vpython, ["-c", check])
    assert seen.stdout.split() == ["True", "True", "netloop.smtpd"], seen.stderr

    removed = _run(vpython, ["-m", "netloop.compat", "remove-aliases"])
    assert removed.returncode == 0
    assert sorted(os.path.basename(line.split()[-1]) for line in
                  removed.stdout.splitlines()) == ["asyncore.py", "smtpd.py"]
    assert "asyncore.py" not in os.listdir(site_packages)
    assert os.path.exists(foreign)
    gone = _run(vpython, ["-c", "import asyncore"])
    assert "No module named 'asyncore'" in gone.stderr


def test_install_aliases_refuses_a_python_that_is_not_a_venv(tmp_path: Any) -> None:
    if not os.path.exists(PY313):
        pytest.skip("no base (non-venv) Python 3.13 here")
    probe = _run(PY313, ["-c", "import sys; print(sys.prefix == sys.base_prefix)"])
    if probe.stdout.strip() != "True":  # never write aliases into a shared environment
        pytest.skip("%s is a virtual environment's Python" % PY313)
    refused = _run(PY313, ["-m", "netloop.compat", "install-aliases"])
    assert refused.returncode == 1
    assert "is not a virtual environment's Python" in refused.stderr
    # --target writes where it is told (a directory on a test runner's PYTHONPATH, say).
    done = _run(PY313, ["-m", "netloop.compat", "install-aliases", "--target", str(tmp_path)])
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path)) == ["asynchat.py", "asyncore.py", "smtpd.py"]
    removed = _run(PY313, ["-m", "netloop.compat", "remove-aliases", "--target", str(tmp_path)])
    assert removed.returncode == 0 and os.listdir(tmp_path) == []


def test_run_prefers_netloop_over_a_third_party_module_of_the_same_name(tmp_path: Any) -> None:
    python = _modern_python()
    if python is None:
        pytest.skip("no Python 3.12+ here")
    other = tmp_path / "other"
    other.mkdir()
    (other / "asyncore.py").write_text("THIRD_PARTY = True\n")  # as pyasyncore's would be
    script = tmp_path / "which.py"
    script.write_text("import asyncore\nprint(asyncore.__name__)\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + str(other)
    proc = subprocess.run([python, "-m", "netloop.compat", "run", str(script)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "netloop.asyncore"


def test_run_module_smtpd_runs_netloops_server(tmp_path: Any) -> None:
    # `python -m smtpd -n -c pkg.Class host:port` is how smtpd-based tools were started (the
    # README of mr.hermes, say): `run -m smtpd` must run netloop's smtpd as the program.
    proc = _run(sys.executable, ["-m", "netloop.compat", "run", "--force", "-m", "smtpd",
                                 "--version"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "Python SMTP proxy version 0.3"
    assert proc.stderr == ""  # no runpy warning about netloop.smtpd imported already
    bad = _run(sys.executable, ["-m", "netloop.compat", "run", "--force", "-m", "smtpd",
                                "--no-such-option"], cwd=tmp_path)
    assert bad.returncode == 1 and "option --no-such-option not recognized" in bad.stderr


def test_python_m_an_alias_module_runs_netloops_module(tmp_path: Any) -> None:
    vpython = _modern_venv(tmp_path)
    installed = _run(vpython, ["-m", "netloop.compat", "install-aliases"])
    assert installed.returncode == 0, installed.stderr
    # `python -m smtpd ...` with the alias module in site-packages: it ran nothing and exited 0.
    shown = _run(vpython, ["-m", "smtpd", "--version"])
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "Python SMTP proxy version 0.3"
    bad = _run(vpython, ["-m", "smtpd", "--no-such-option"])
    assert bad.returncode == 1 and "option --no-such-option not recognized" in bad.stderr
    # An import still gets netloop's module.
    seen = _run(vpython, ["-c", "import smtpd; print(smtpd.__name__)"])
    assert seen.stdout.strip() == "netloop.smtpd", seen.stderr
