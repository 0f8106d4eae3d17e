"""The test suite's own set-up: it runs in parallel by default, and the leak check still catches
a leak in every worker process (tests/conftest.py)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
ENV.pop("PYTEST_XDIST_AUTO_NUM_WORKERS", None)

LEAKY = '''
import socket
held = []

def test_leaks_one_descriptor():
    held.append(socket.socket())

def test_clean():
    socket.socket().close()
'''


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", ["0", "2"])
def test_leak_check_catches_leaks_in_each_worker(tmp_path, workers: str) -> None:
    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_leaky.py").write_text(LEAKY)
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "-n", workers, "test_leaky.py"], cwd=str(tmp_path), env=ENV,
                            capture_output=True, text=True, timeout=100)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    # One descriptor is the case that slipped through: it took the number of the descriptor
    # listdir() had open while the check took its first snapshot.
    assert "file descriptors leaked" in out, out
    assert "2 passed, 1 error" in out, out


def test_default_run_is_parallel() -> None:
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        text = f.read()
    addopts = next(line for line in text.splitlines() if line.startswith("addopts"))
    assert "-n auto" in addopts
    assert '"pytest-xdist' in text.split("[project.optional-dependencies]")[1].split("\n")[1]

    # By path: in a whole-suite run, ``import conftest`` may give benchmarks/tests' one.
    spec = importlib.util.spec_from_file_location("tests_conftest",
                                                  os.path.join(ROOT, "tests", "conftest.py"))
    assert spec is not None and spec.loader is not None
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)

    def workers(*args: str) -> object:
        config = types.SimpleNamespace(args=list(args))
        return conftest.pytest_xdist_auto_num_workers(config)  # type: ignore[arg-type]

    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        pytest.skip("PYTEST_XDIST_AUTO_NUM_WORKERS decides")
    assert isinstance(workers("tests", "benchmarks/tests"), int)
    assert workers("tests", "benchmarks/tests") >= 2  # type: ignore[operator]
    here = os.path.abspath(__file__)
    assert workers(here) == 0 and workers(here + "::test_default_run_is_parallel") == 0
