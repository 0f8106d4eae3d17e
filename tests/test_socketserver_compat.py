"""netloop.socketserver as a drop-in: the standard module's names, signatures, defaults and
class tree, and CPython's own test_socketserver.py run against it.

Run as a script (``python tests/test_socketserver_compat.py --cpython-suite PATH``) this file
loads CPython's test module from PATH with ``sys.modules['socketserver']`` set to netloop's and
prints one JSON line of results. The tests below run it that way, under the interpreter whose
test file it is (its own ``test.support``), and skip when that Python is not installed.
"""

from __future__ import annotations

import glob
import importlib.util
import inspect
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


def _run_cpython_suite(test_file: str) -> int:
    """Script mode: run CPython's test_socketserver.py against netloop.socketserver."""
    import unittest
    import warnings

    sys.path.insert(0, SRC)
    import netloop.socketserver
    sys.modules["socketserver"] = netloop.socketserver
    import test.support
    test.support.verbose = False
    # Its forking tests fork from a process with threads; 3.12+ warns about that.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    spec = importlib.util.spec_from_file_location("cpython_test_socketserver", test_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    outcomes = {}

    class Recorder(unittest.TextTestResult):
        def addSuccess(self, test):
            super().addSuccess(test)
            outcomes[test.id()] = "pass"

        def addFailure(self, test, err):
            super().addFailure(test, err)
            outcomes[test.id()] = "fail"

        def addError(self, test, err):
            super().addError(test, err)
            outcomes[test.id()] = "error"

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            outcomes[test.id()] = "skip"

    with open(os.devnull, "w") as devnull:
        runner = unittest.TextTestRunner(stream=devnull, resultclass=Recorder, verbosity=2)
        result = runner.run(unittest.defaultTestLoader.loadTestsFromModule(module))
    print(json.dumps({
        "python": "%d.%d.%d" % sys.version_info[:3],
        "run": result.testsRun,
        "passed": sum(1 for o in outcomes.values() if o == "pass"),
        "failures": len(result.failures),
        "errors": len(result.errors),
        "skipped": len(result.skipped),
        "outcomes": outcomes,
        "details": [t.id() + "\n" + tb for t, tb in result.failures + result.errors],
    }))
    return 0


if __name__ == "__main__" and "--cpython-suite" in sys.argv:
    sys.exit(_run_cpython_suite(sys.argv[sys.argv.index("--cpython-suite") + 1]))

import pytest  # noqa: E402  (after the script mode, which runs where pytest may be missing)

#: CPython tests that cannot pass against any replacement module, with the reason.
KNOWN_DIFFERENCES: dict = {}

STDLIB_NAMES = [
    "BaseServer", "TCPServer", "UDPServer", "UnixStreamServer", "UnixDatagramServer",
    "ForkingMixIn", "ThreadingMixIn", "ForkingTCPServer", "ForkingUDPServer",
    "ForkingUnixStreamServer", "ForkingUnixDatagramServer", "ThreadingTCPServer",
    "ThreadingUDPServer", "ThreadingUnixStreamServer", "ThreadingUnixDatagramServer",
    "BaseRequestHandler", "StreamRequestHandler", "DatagramRequestHandler",
]


def _common(std):
    """The names this Python's own socketserver has (3.11 lacks the ForkingUnix* servers)."""
    return [name for name in STDLIB_NAMES if hasattr(std, name)]


def _stdlib():
    import socketserver
    assert socketserver.__file__ and "netloop" not in socketserver.__file__
    return socketserver


def _facade():
    if SRC not in sys.path:
        sys.path.insert(0, SRC)
    from netloop import socketserver
    return socketserver


def test_every_public_name_is_there():
    std, ours = _stdlib(), _facade()
    # Python 3.13's list (3.11 and older left the ForkingUnix* servers out of __all__).
    assert sorted(ours.__all__) == sorted(STDLIB_NAMES)
    assert set(std.__all__) <= set(ours.__all__)
    for name in dir(std):
        obj = getattr(std, name)
        if not name.startswith("_") and getattr(obj, "__module__", None) == "socketserver":
            assert hasattr(ours, name), name


def test_class_tree_matches():
    std, ours = _stdlib(), _facade()
    for a in _common(std):
        for b in _common(std):
            assert issubclass(getattr(ours, a), getattr(ours, b)) == \
                issubclass(getattr(std, a), getattr(std, b)), (a, b)


def test_signatures_accept_the_stdlib_arguments():
    std, ours = _stdlib(), _facade()
    for name in _common(std):
        for method in ("__init__", "serve_forever", "handle_request", "shutdown",
                       "process_request", "finish_request", "verify_request", "handle_error",
                       "collect_children", "process_request_thread", "setup", "finish"):
            theirs = getattr(getattr(std, name), method, None)
            if theirs is None or theirs is object.__init__:
                continue
            mine = getattr(getattr(ours, name), method)
            std_params = list(inspect.signature(theirs).parameters.values())
            our_params = list(inspect.signature(mine).parameters.values())
            # Same leading parameters (name, kind, default); netloop may add keyword-only ones.
            assert [(p.name, p.kind, p.default) for p in std_params] == \
                [(p.name, p.kind, p.default) for p in our_params[:len(std_params)]], \
                (name, method)
            assert all(p.kind == p.KEYWORD_ONLY and p.default is not p.empty
                       for p in our_params[len(std_params):]), (name, method)


def test_class_attributes_match():
    std, ours = _stdlib(), _facade()
    attrs = ["timeout", "address_family", "socket_type", "request_queue_size",
             "allow_reuse_address", "allow_reuse_port", "max_packet_size", "daemon_threads",
             "block_on_close", "max_children", "active_children", "rbufsize", "wbufsize",
             "disable_nagle_algorithm"]
    for name in _common(std):
        for attr in attrs:
            if hasattr(getattr(std, name), attr):
                assert getattr(getattr(ours, name), attr) == getattr(getattr(std, name), attr), \
                    (name, attr)


def _cpython_test_files():
    roots = [os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")]
    found = []
    for series in ("3.13", "3.11"):
        for lib in sorted(glob.glob(os.path.join(roots[0], "versions", series + ".*", "lib",
                                                 "python" + series)), reverse=True):
            test_file = os.path.join(lib, "test", "test_socketserver.py")
            python = os.path.join(os.path.dirname(os.path.dirname(lib)), "bin", "python" + series)
            if os.path.isfile(test_file) and os.access(python, os.X_OK):
                found.append(pytest.param(python, test_file, id="cpython" + series))
                break
        else:
            found.append(pytest.param(None, None, id="cpython" + series,
                                      marks=pytest.mark.skip("Python %s not installed" % series)))
    return found


@pytest.mark.timeout(300)
@pytest.mark.parametrize("python,test_file", _cpython_test_files())
def test_cpython_test_socketserver_passes(python, test_file):
    proc = subprocess.run([python, os.path.abspath(__file__), "--cpython-suite", test_file],
                          capture_output=True, text=True, timeout=280)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout + proc.stderr
    report = json.loads(lines[-1])
    print("\nCPython %s test_socketserver against netloop: run %d, passed %d, failed %d, "
          "errors %d, skipped %d" % (report["python"], report["run"], report["passed"],
                                     report["failures"], report["errors"], report["skipped"]))
    bad = {name.rsplit(".", 1)[-1] for name, outcome in report["outcomes"].items()
           if outcome in ("fail", "error")}
    assert bad <= set(KNOWN_DIFFERENCES), (bad, report.get("details"))
    assert report["passed"] >= report["run"] - report["skipped"] - len(KNOWN_DIFFERENCES)
