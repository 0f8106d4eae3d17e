"""Opt-in aliases: make ``import asyncore`` / ``asynchat`` / ``smtpd`` find netloop's modules.

Python 3.12 removed all three. ``install()`` puts netloop's drop-ins in ``sys.modules`` under the
old names so unmodified programs run; it is never done on import of netloop. On Python 3.11 and
older it leaves the standard library's modules alone unless ``force=True``.

For programs you cannot edit, the command line does it for them (``python -m netloop.compat
--help``):

- ``run script.py [args...]`` and ``run -m package.module [args...]`` run a program with the
  aliases installed, as ``python script.py`` / ``python -m`` would: ``sys.argv``, ``sys.path[0]``,
  ``__main__``, the exit status and the traceback of an uncaught exception (which starts in the
  program, not in this runner) are the same.
- ``install-aliases`` writes three small modules (``asyncore.py``, ``asynchat.py``, ``smtpd.py``)
  into the running virtual environment's site-packages, each replacing itself with netloop's
  module when imported, so every program and test runner of that environment sees them;
  ``remove-aliases`` deletes them. No ``.pth`` file: nothing runs at interpreter start-up, a
  module is only involved when a program imports its name, and removing the files undoes it all.
  It writes only names the standard library lacks (3.12+), never over a file it did not write
  (``pyasyncore``'s, say), and only into a virtual environment unless ``--target`` names a
  directory.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterable, List, Optional

__all__ = ["install", "uninstall", "MODULES", "run_script", "run_module", "install_aliases",
           "remove_aliases", "main"]

#: Legacy name -> netloop module that replaces it.
MODULES: Dict[str, str] = {
    "asyncore": "netloop.asyncore",
    "asynchat": "netloop.asynchat",
    "smtpd": "netloop.smtpd",
}

_installed: Dict[str, object] = {}

#: First line of every alias module ``install_aliases()`` writes (how it knows its own files).
ALIAS_MARKER = "# netloop compat alias"

_ALIAS_SOURCE = '''{marker}: `import {name}` gives {target}.
# Written by `python -m netloop.compat install-aliases`; delete it with
# `python -m netloop.compat remove-aliases` (or by hand: it is only this file).
import sys

if __name__ == "__main__":
    # `python -m {name}`: run {target} as the program, as `python -m {name}` ran the
    # standard library's module.
    import runpy

    runpy.run_module("{target}", run_name="__main__", alter_sys=True)
else:
    import {target} as _target

    sys.modules[__name__] = _target
'''


def install(names: Optional[Iterable[str]] = None, force: bool = False) -> Dict[str, str]:
    """Alias the legacy module names to netloop's; returns {name: module installed}.

    ``names`` defaults to every module in ``MODULES``. A name the running Python's standard
    library still provides (3.11 and older) is skipped unless ``force`` is true, and so is one
    already imported; a third-party module of the same name (``pyasyncore``'s) is not, since
    asking for netloop's modules is the point.
    """
    done: Dict[str, str] = {}
    for name in names if names is not None else MODULES:
        target = MODULES[name]
        if not force:
            if name in sys.modules:
                continue
            if _python_has(name):
                continue
        try:
            module = importlib.import_module(target)
        except ImportError:
            continue
        if name in sys.modules and name not in _installed:
            _installed[name] = sys.modules[name]
        sys.modules[name] = module
        done[name] = target
    return done


def _python_has(name: str) -> bool:
    """Whether ``import name`` finds a module of the standard library (not site-packages)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    origin = spec.origin
    if origin in (None, "built-in", "frozen"):
        return True
    import sysconfig
    paths = sysconfig.get_paths()
    where = os.path.normcase(os.path.realpath(origin))
    for key in ("stdlib", "platstdlib"):
        lib = os.path.normcase(os.path.realpath(paths[key]))
        if where.startswith(lib + os.sep) and "site-packages" not in where[len(lib):]:
            return True
    return False


def uninstall() -> None:
    """Undo ``install()``: drop the aliases and restore what they replaced."""
    for name, target in MODULES.items():
        module = sys.modules.get(name)
        if module is not None and getattr(module, "__name__", None) == target:
            previous = _installed.pop(name, None)
            if previous is not None:
                sys.modules[name] = previous  # type: ignore[assignment]
            else:
                del sys.modules[name]


# ---------------------------------------------------------------------- running programs
def _report(exc: BaseException) -> int:
    """Print an uncaught exception as Python would for the program itself; the exit status."""
    import runpy
    skip = {os.path.normcase(os.path.abspath(__file__))}
    if runpy.__file__:
        skip.add(os.path.normcase(os.path.abspath(runpy.__file__)))
    tb = exc.__traceback__
    # The first frames are this runner's and runpy's: the program's own come after them.
    while tb is not None and (
            os.path.normcase(os.path.abspath(tb.tb_frame.f_code.co_filename)) in skip
            or tb.tb_frame.f_code.co_filename.startswith("<frozen runpy")):
        tb = tb.tb_next
    if tb is not None:
        exc.__traceback__ = tb
    sys.excepthook(type(exc), exc, exc.__traceback__)
    if isinstance(exc, KeyboardInterrupt):
        # Python ends a program interrupted by Ctrl-C with the signal itself, so the shell
        # sees "killed by SIGINT"; do the same.
        import signal
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    return 1


def run_script(path: str, args: List[str], force: bool = False) -> int:
    """Run the file (or directory/zip with ``__main__.py``) ``path`` as ``python path args``
    would, with the aliases installed. Returns the exit status for an uncaught exception (1)
    after printing its traceback; ``SystemExit`` is left to propagate."""
    install(force=force)
    sys.argv[:] = [path] + list(args)
    if os.path.isdir(path) or not path.endswith((".py", ".pyw")) and _is_zip(path):
        import runpy
        sys.path[0:1] = [path]
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit:
            raise
        except BaseException as exc:
            return _report(exc)
        return 0
    import builtins
    import types
    with open(path, "rb") as f:  # bytes: compile() honours a coding declaration
        source = f.read()
    filename = os.path.abspath(path)  # as Python 3.9+ names a script run directly
    code = compile(source, filename, "exec", dont_inherit=True)
    sys.path[0:1] = [os.path.dirname(os.path.realpath(path))]
    main = types.ModuleType("__main__")
    main.__file__ = filename
    main.__dict__["__builtins__"] = builtins
    main.__dict__["__spec__"] = None
    main.__dict__["__cached__"] = None
    sys.modules["__main__"] = main
    try:
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        return _report(exc)
    return 0


def _is_zip(path: str) -> bool:
    import zipfile
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def run_module(name: str, args: List[str], force: bool = False) -> int:
    """Run module ``name`` as ``python -m name args`` would, with the aliases installed."""
    import runpy
    install(force=force)
    sys.argv[:] = [name] + list(args)  # runpy puts the module's file in sys.argv[0]
    sys.path[0:1] = [os.getcwd()]
    target = MODULES.get(name)
    if target is not None and getattr(sys.modules.get(name), "__name__", None) == target:
        # `run -m smtpd`: the name is netloop's module now, whose loader runpy refuses under
        # another name ("loader for netloop.smtpd cannot handle smtpd"). Run netloop's module
        # as __main__, as `python -m smtpd` ran the standard library's; install() imported it
        # already, which is what runpy's RuntimeWarning would say.
        import re
        import warnings
        warnings.filterwarnings("ignore", category=RuntimeWarning,
                                message=re.escape("%r found in sys.modules" % target))
        name = target
    try:
        runpy.run_module(name, run_name="__main__", alter_sys=True)
    except SystemExit:
        raise
    except BaseException as exc:
        return _report(exc)
    return 0


# ---------------------------------------------------------------------- venv alias files
def _stdlib_has(name: str) -> bool:
    import sysconfig
    stdlib = sysconfig.get_paths()["stdlib"]
    return os.path.exists(os.path.join(stdlib, name + ".py")) or \
        os.path.isdir(os.path.join(stdlib, name))


def _in_venv() -> bool:
    return sys.prefix != getattr(sys, "base_prefix", sys.prefix)


def _default_target() -> str:
    import sysconfig
    return sysconfig.get_paths()["purelib"]


def _is_ours(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().startswith(ALIAS_MARKER)
    except (OSError, UnicodeDecodeError):
        return False


def _taken(target: str, name: str) -> Optional[str]:
    """What in ``target`` already answers ``import name`` (besides our alias file), if any."""
    for entry in sorted(os.listdir(target)):
        if entry == name + ".py":
            if not _is_ours(os.path.join(target, entry)):
                return entry
        elif entry == name or (entry.startswith(name + ".") and
                               entry.endswith((".so", ".pyd", ".pyc"))):
            return entry
    return None


def install_aliases(target: Optional[str] = None, force: bool = False) -> List[str]:
    """Write the alias modules into ``target`` (default: this virtual environment's
    site-packages); returns the files written. Raises ``RuntimeError`` when it must not."""
    if target is None:
        if not _in_venv() and not force:
            raise RuntimeError("%s is not a virtual environment's Python: aliases there would "
                               "change every program of the system. Run it with the venv's "
                               "python, or give --target DIR." % sys.executable)
        target = _default_target()
    if not os.path.isdir(target):
        raise RuntimeError("no such directory: %s" % target)
    written: List[str] = []
    problems: List[str] = []
    for name, module in MODULES.items():
        if _stdlib_has(name):
            continue  # 3.11 and older: the standard library's module stays in charge
        taken = _taken(target, name)
        if taken is not None:
            problems.append("%s: %s is already there and was not written by netloop; left "
                            "alone" % (name, os.path.join(target, taken)))
            continue
        path = os.path.join(target, name + ".py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(_ALIAS_SOURCE.format(marker=ALIAS_MARKER, name=name, target=module))
        written.append(path)
    if problems:
        raise RuntimeError("\n".join(problems) + ("\nwritten: " + ", ".join(written)
                                                  if written else ""))
    return written


def remove_aliases(target: Optional[str] = None) -> List[str]:
    """Delete the alias modules ``install_aliases()`` wrote (and their bytecode); returns the
    files removed. Files it did not write are never touched."""
    target = _default_target() if target is None else target
    removed: List[str] = []
    for name in MODULES:
        path = os.path.join(target, name + ".py")
        if os.path.isfile(path) and _is_ours(path):
            os.remove(path)
            removed.append(path)
            cache = os.path.join(target, "__pycache__")
            if os.path.isdir(cache):
                for entry in os.listdir(cache):
                    if entry.startswith(name + ".") and entry.endswith(".pyc"):
                        os.remove(os.path.join(cache, entry))
    return removed


# ---------------------------------------------------------------------- command line
_HELP = """\
usage: python -m netloop.compat run [--force] SCRIPT [ARGS...]
       python -m netloop.compat run [--force] -m MODULE [ARGS...]
       python -m netloop.compat install-aliases [--target DIR] [--force]
       python -m netloop.compat remove-aliases [--target DIR]

Run programs written for asyncore, asynchat and smtpd (removed in Python 3.12) on netloop's
drop-in modules, unchanged.

run             Run SCRIPT (or, with -m, MODULE) with `import asyncore`, `asynchat` and
                `smtpd` giving netloop's modules, as `python SCRIPT ARGS` / `python -m MODULE
                ARGS` would: same sys.argv, __main__, exit status and tracebacks. Where the
                standard library still has a module (3.11 and older) it is used, unless
                --force is given.
install-aliases Make every program of this virtual environment (test runners too) see
                netloop's modules under the old names: writes asyncore.py, asynchat.py and
                smtpd.py into its site-packages (only those the standard library lacks, never
                over a file netloop did not write). Run it with the venv's python:
                    .venv/bin/python -m netloop.compat install-aliases
                --target DIR writes into DIR instead; --force allows a Python that is not a
                virtual environment's.
remove-aliases  Delete the files install-aliases wrote (pip uninstall does not: run this
                first).

In your own code, call netloop.compat.install() before the first import instead."""


def main(argv: Optional[List[str]] = None) -> int:
    """The command line (see ``--help``); returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_HELP, file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "run":
        force = False
        while rest and rest[0] == "--force":
            force = True
            rest = rest[1:]
        if not rest or rest[0] in ("-h", "--help"):
            print(_HELP, file=sys.stderr if not rest else sys.stdout)
            return 2 if not rest else 0
        if rest[0] == "-m":
            if len(rest) < 2:
                print("netloop.compat run: -m needs a module name", file=sys.stderr)
                return 2
            return run_module(rest[1], rest[2:], force)
        if not os.path.exists(rest[0]):
            print("netloop.compat run: can't open file %r: no such file" % rest[0],
                  file=sys.stderr)
            return 2
        return run_script(rest[0], rest[1:], force)
    if command in ("install-aliases", "remove-aliases"):
        target = None
        force = False
        i = 0
        while i < len(rest):
            if rest[i] == "--target" and i + 1 < len(rest):
                target = rest[i + 1]
                i += 2
            elif rest[i] == "--force":
                force = True
                i += 1
            else:
                print("netloop.compat %s: unknown argument %r\n\n%s" % (command, rest[i], _HELP),
                      file=sys.stderr)
                return 2
        try:
            if command == "install-aliases":
                done = install_aliases(target, force)
                verb = "wrote"
            else:
                done = remove_aliases(target)
                verb = "removed"
        except (RuntimeError, OSError) as exc:
            print("netloop.compat %s: %s" % (command, exc), file=sys.stderr)
            return 1
        for path in done:
            print("%s %s" % (verb, path))
        if not done:
            print("nothing to do (the standard library has these modules, or no alias files "
                  "were there)")
        return 0
    print("netloop.compat: unknown command %r\n\n%s" % (command, _HELP), file=sys.stderr)
    return 2


if __name__ == "__main__":
    # Run as ``python -m netloop.compat``: this file is __main__, a second copy of the module;
    # use the real one, so install() records its state where programs will look for it.
    from netloop.compat import main as _main
    sys.exit(_main())
