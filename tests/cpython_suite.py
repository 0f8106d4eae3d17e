"""Run one of CPython 3.11's own test modules with netloop's drop-ins put in its place.

Usage: python cpython_suite.py TEST_NAME [--stdlib] [--smtpd | --smtpd311] [--json]
                          [--only NAMES] [--shard K/N]

The test file is read from the machine's Python 3.11 install (found through ``pyenv root``, or
``$NETLOOP_CPYTHON311_LIB``); nothing of it is copied into this repository. It runs under the
interpreter running this script, with that interpreter's own ``test.support``. Unless
``--stdlib`` is given, ``sys.modules['asyncore']`` and ``['asynchat']`` are netloop's modules
(and ``['socketserver']`` for the suites in ``SOCKETSERVER_USERS``);
``--smtpd`` makes ``sys.modules['smtpd']`` netloop's too, ``--smtpd311`` makes it 3.11's own
``smtpd.py`` read from that install (the reference on Pythons that no longer have it: 3.12+,
where it runs on netloop's asyncore/asynchat).
Prints one JSON line: counts and the outcome of every test.
``--only A,B`` runs only the named classes or tests of the module (``SMTPHandlerTest``,
``ThreadedTests.test_asyncore_server``); ``--shard K/N`` runs every Nth test starting at the Kth
(1-based), so a long suite can run as N shorter ones (the split depends only on the module, so
the netloop and stdlib runs of a shard hold the same tests).
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys
import unittest
import warnings


def cpython311_lib() -> str | None:
    env = os.environ.get("NETLOOP_CPYTHON311_LIB")
    if env:
        return env if os.path.isdir(env) else None
    roots = []
    try:
        roots.append(subprocess.run(["pyenv", "root"], capture_output=True, text=True,
                                    check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    roots.append(os.path.expanduser("~/.pyenv"))
    for root in roots:
        found = sorted(glob.glob(os.path.join(root, "versions", "3.11*", "lib", "python3.11")))
        for lib in reversed(found):
            if os.path.isfile(os.path.join(lib, "test", "test_asyncore.py")):
                return lib
    return None


#: Suites whose servers are socketserver's, not asyncore's: they run on netloop.socketserver.
SOCKETSERVER_USERS = {"test_imaplib"}


class _Recorder(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, str] = {}

    def addSuccess(self, test):  # type: ignore[no-untyped-def]
        super().addSuccess(test)
        self.outcomes[test.id()] = "pass"

    def addFailure(self, test, err):  # type: ignore[no-untyped-def]
        super().addFailure(test, err)
        self.outcomes[test.id()] = "fail"

    def addError(self, test, err):  # type: ignore[no-untyped-def]
        super().addError(test, err)
        self.outcomes[test.id()] = "error"

    def addSkip(self, test, reason):  # type: ignore[no-untyped-def]
        super().addSkip(test, reason)
        self.outcomes[test.id()] = "skip"


def _option(args: list[str], name: str) -> str | None:
    if name in args:
        return args[args.index(name) + 1]
    return None


def _tests(suite: unittest.TestSuite) -> list[unittest.TestCase]:
    """The tests of ``suite`` in order, nested suites flattened."""
    found: list[unittest.TestCase] = []
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            found.extend(_tests(test))
        else:
            found.append(test)
    return found


def shard_tests(suite: unittest.TestSuite, shard: str) -> list[unittest.TestCase]:
    """The tests of shard ``"K/N"``: every Nth test of ``suite`` from the Kth (1-based), so
    neighbours (often one class, one slow server) are spread over the shards."""
    k, n = (int(part) for part in shard.split("/"))
    if not 1 <= k <= n:
        raise ValueError("shard %r: K must be 1 to N" % shard)
    return _tests(suite)[k - 1::n]


def main() -> int:
    args = sys.argv[1:]
    name = args[0]
    use_stdlib = "--stdlib" in args
    only = _option(args, "--only")
    shard = _option(args, "--shard")
    lib = cpython311_lib()
    if lib is None:
        print(json.dumps({"skipped": "no Python 3.11 install with its test suite found"}))
        return 0
    path = os.path.join(lib, "test", name + ".py")
    if not use_stdlib:
        here = os.path.dirname(os.path.abspath(__file__))
        src = os.path.join(os.path.dirname(here), "src")
        if os.path.isdir(src) and src not in sys.path:
            sys.path.insert(0, src)
        import netloop.asyncore
        sys.modules["asyncore"] = netloop.asyncore
        try:
            import netloop.asynchat
            sys.modules["asynchat"] = netloop.asynchat
        except ImportError:
            pass
        if name in SOCKETSERVER_USERS:
            import netloop.socketserver
            sys.modules["socketserver"] = netloop.socketserver
        if "--smtpd" in args:
            import netloop.smtpd
            sys.modules["smtpd"] = netloop.smtpd
        elif "--smtpd311" in args:
            # Its call to warnings._deprecated() raises on 3.12+, where it was removed.
            saved = getattr(warnings, "_deprecated", None)
            warnings._deprecated = lambda *a, **k: None  # type: ignore[attr-defined]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ref = importlib.util.spec_from_file_location("smtpd", os.path.join(lib, "smtpd.py"))
                assert ref is not None and ref.loader is not None
                smtpd = importlib.util.module_from_spec(ref)
                sys.modules["smtpd"] = smtpd
                ref.loader.exec_module(smtpd)
            if saved is not None:
                warnings._deprecated = saved  # type: ignore[attr-defined]
    warnings.simplefilter("ignore", DeprecationWarning)
    from test import support
    if not hasattr(support, "requires_working_socket"):
        # 3.11's test files call it at import; 3.10's test.support has not got it. It only
        # skips on platforms without sockets (Emscripten, WASI), which netloop does not run on.
        support.requires_working_socket = lambda *, module=False: None  # type: ignore
    from test.support import warnings_helper
    if not hasattr(warnings_helper, "import_deprecated"):
        # (3.11+) Import a module that warns on import, quietly: here, the drop-in put in its
        # place in sys.modules above.
        def import_deprecated(name: str) -> object:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return importlib.import_module(name)
        warnings_helper.import_deprecated = import_deprecated  # type: ignore
    spec = importlib.util.spec_from_file_location("cpython_" + name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loader = unittest.defaultTestLoader
    if only:
        suite = loader.loadTestsFromNames(only.split(","), module)
    else:
        suite = loader.loadTestsFromModule(module)
    if shard:
        suite = unittest.TestSuite(shard_tests(suite, shard))
    stream = open(os.devnull, "w") if "--json" in args else sys.stderr
    runner = unittest.TextTestRunner(stream=stream, resultclass=_Recorder, verbosity=2)
    result = runner.run(suite)
    report = {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "module": name,
        "only": only,
        "shard": shard,
        "implementation": "stdlib" if use_stdlib else "netloop",
        "poller": os.environ.get("NETLOOP_POLLER", "auto"),
        "smtpd": getattr(sys.modules.get("smtpd"), "__file__", None),
        "run": result.testsRun,
        "failures": len(result.failures),
        "errors": len(result.errors),
        "skipped": len(result.skipped),
        "outcomes": result.outcomes,  # type: ignore[attr-defined]
    }
    if not result.wasSuccessful():
        report["details"] = [t.id() + "\n" + tb for t, tb in result.failures + result.errors]
    print(json.dumps(report))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
