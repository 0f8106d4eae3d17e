"""The command line as a newcomer meets it: help for every option, ``--version``, and mistakes
reported on one line with exit status 2 instead of a traceback or a run that goes wrong."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Iterator, List, Tuple

import pytest

import netloop
from netloop import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))


def run_main(argv: List[str], capsys: pytest.CaptureFixture[str]) -> Tuple[int, str, str]:
    """``cli.main(argv)`` in this process: (exit status, stdout, stderr)."""
    try:
        status = cli.main(argv)
    except SystemExit as exit:  # argparse's own exits (help, version, usage errors)
        status = exit.code if isinstance(exit.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err


def one_line_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("python -m netloop"), err
    assert "Traceback" not in err and "error:" in err
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port with a listener on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", ["echo", "demo"])
def test_every_option_has_help_that_shows_its_default(
        command: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_main([command, "--help"], capsys)
    assert status == 0
    text = " ".join(out.split())  # undo the line wrapping
    parser = cli._parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    options = [a for a in sub.choices[command]._actions if a.dest != "help"]  # type: ignore
    assert options
    for action in options:
        assert action.help, action.option_strings
        assert "(default: %s)" % (action.default,) in text, action.option_strings


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_main(["--version"], capsys)
    assert status == 0
    assert out.strip() == "netloop " + netloop.__version__


def test_top_level_help_is_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run_main(["--help"], capsys)
    assert status == 0
    assert "demo" in out and "echo" in out and "--version" in out
    for markup in ("``", ":func:", ":class:", "**"):
        assert markup not in out


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_main([], capsys)
    assert status == 2
    assert out == "" and "demo" in err and "echo" in err


@pytest.mark.parametrize("argv", [
    ["echo", "--port", "70000"], ["echo", "--port", "-1"], ["echo", "--port", "x"],
    ["echo", "--backend", "nope"], ["echo", "--kind", "nope"], ["echo", "extra"],
    ["demo", "--size", "0"], ["demo", "--size", "-5"],
    ["demo", "--connections", "0"], ["demo", "--connections", "-1"],
    ["demo", "--seconds", "-1"], ["demo", "--seconds", "-0.5"], ["demo", "--seconds", "nan"],
    ["demo", "--seconds", "inf"], ["demo", "--seconds", "soon"], ["nope"],
])
def test_bad_values_give_one_line_and_status_2(argv: List[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_main(argv, capsys)
    assert status == 2
    assert out == ""
    one_line_error(err)


@pytest.mark.parametrize("kind", cli.KINDS)
def test_echo_on_a_port_in_use_gives_one_line(kind: str, busy_port: int, poller_name: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_main(["echo", "--port", str(busy_port), "--kind", kind,
                                 "--backend", poller_name], capsys)
    assert status == 2
    assert out == ""
    line = one_line_error(err)
    assert "127.0.0.1 port %d" % busy_port in line and "in use" in line


def test_echo_on_a_host_that_does_not_resolve_gives_one_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    # .invalid never resolves (RFC 6761).
    status, out, err = run_main(["echo", "--host", "no-such-host.invalid"], capsys)
    assert status == 2
    assert out == ""
    assert "no-such-host.invalid" in one_line_error(err)


@pytest.mark.parametrize("kwargs", [{"connections": 0}, {"size": 0}, {"size": -1},
                                    {"seconds": -1.0}, {"seconds": float("nan")}])
def test_demo_function_rejects_what_cannot_run(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        cli.demo(**kwargs)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args", [["echo", "--port", "BUSY"], ["demo", "--size", "0"]])
def test_the_real_command_fails_with_one_line(args: List[str], busy_port: int) -> None:
    # Through `python -m netloop` itself: no traceback reaches the user.
    args = [str(busy_port) if arg == "BUSY" else arg for arg in args]
    result = subprocess.run([sys.executable, "-m", "netloop", *args], env=ENV,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stdout == ""
    one_line_error(result.stderr)


def test_plain_echo_command_line_skips_argparse(monkeypatch, capsys):
    # The command line the benchmarks run goes straight to echo(): argparse (and the shutil,
    # bz2, lzma it imports) would cost the server about 1.5 MiB of memory for nothing.
    calls: List[Tuple[object, ...]] = []
    monkeypatch.setattr(cli, "echo", lambda *a, **k: calls.append(a + tuple(k.items())) or 0)
    monkeypatch.setattr(cli, "_parser", lambda: pytest.fail("argparse parser built"))
    argv = ["echo", "--host", "::1", "--port", "8", "--backend", "auto", "--kind", "chat"]
    assert cli.main(argv) == 0
    assert calls == [("::1", 8, "auto", "chat")]
    for argv in (["echo"], ["echo", "--port", "0"]):
        assert cli.main(argv) == 0
    assert calls[1:] == [("127.0.0.1", 0, "auto", "dispatcher")] * 2


@pytest.mark.parametrize("argv", [
    ["echo", "--port", "70000"], ["echo", "--port", "x"], ["echo", "--backend", "nope"],
    ["echo", "--kind", "nope"], ["echo", "--port"], ["echo", "--workers", "2"],
    ["echo", "--port=0"], ["echo", "--help"], ["demo"],
])
def test_other_command_lines_still_go_through_argparse(argv):
    assert cli._plain_echo(argv) is None


def test_plain_echo_server_process_has_no_argparse():
    code = ("import sys; from netloop import cli; "
            "cli.echo = lambda *a: print(sorted({'argparse', 'shutil'} & set(sys.modules))) or 0; "
            "sys.exit(cli.main(['echo', '--port', '0', '--backend', 'auto']))")
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
