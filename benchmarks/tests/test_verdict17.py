"""benchmarks/verdict17.py: issue #17's target table from a run's results.json."""

from __future__ import annotations

import json
import os
import sys

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, BENCH_DIR)

import verdict17  # noqa: E402

BASES = {"CLI": "netloop[auto]", "legacy": "netloop-asyncore[auto]", "uvloop": "uvloop",
         "loop": "minimal-epoll"}


def _results(cells: dict, tag: str = "3.11") -> dict:
    """A results.json with ``cells[(role, scenario)] = {summary fields}``."""
    servers = [{"name": "%s@%s" % (base, tag), "base": base, "tag": tag}
               for base in BASES.values()]
    summary = {}
    for (role, scenario), fields in cells.items():
        summary["%s@%s|%s" % (BASES[role], tag, scenario)] = dict(fields, ok_runs=3)
    return {"servers": servers, "summary": summary}


def _all_met() -> dict:
    cells = {}
    for role, per_op, per_mb in (("CLI", 10.0, 700.0), ("legacy", 10.0, 2000.0),
                                 ("uvloop", 10.5, 600.0), ("loop", 10.2, 680.0)):
        cells[(role, "pp100")] = {"server_cpu_us_per_op_min": per_op, "metric": 100.0}
        cells[(role, "pp1")] = {"server_cpu_us_per_op": per_op * 2}
        cells[(role, "connrate")] = {"server_cpu_us_per_op": per_op * 5}
        cells[(role, "stream256k")] = {"server_cpu_us_per_mb": per_mb}
        cells[(role, "pp100-idle10k")] = {"metric": 96.0}
        cells[(role, "mem-idle10k")] = {"vmhwm_kb": 18000}
    return cells


def test_every_target_met():
    tags, rows, met = verdict17.verdicts(_results(_all_met()))
    assert tags == ["3.11"] and met
    assert len(rows) == 7 and all("**" in r[1] for r in rows), rows


def test_each_kind_of_miss_is_reported(tmp_path, capsys):
    cases = [
        (("CLI", "stream256k"), {"server_cpu_us_per_mb": 800.0}),  # 1.18x the loop's
        (("legacy", "pp100"), {"server_cpu_us_per_op_min": 10.6, "metric": 100.0}),
        (("CLI", "pp1"), {"server_cpu_us_per_op": 23.2}),  # 1.105x uvloop's 21.0
        (("legacy", "pp100-idle10k"), {"metric": 94.0}),
        (("CLI", "mem-idle10k"), {"vmhwm_kb": 19600}),  # 20.07 MB
    ]
    for key, fields in cases:
        cells = _all_met()
        cells[key] = fields
        _, rows, met = verdict17.verdicts(_results(cells))
        assert not met, key
    cells = _all_met()
    del cells[("uvloop", "connrate")]  # a missing cell is never met
    _, rows, met = verdict17.verdicts(_results(cells))
    assert not met and any("missing" in r[1] for r in rows)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results(cells)))
    assert verdict17.main([str(path)]) == 0
    assert verdict17.main([str(path), "--strict"]) == 1
    assert "not every target met" in capsys.readouterr().out
    path.write_text(json.dumps(_results(_all_met())))
    assert verdict17.main([str(path), "--strict"]) == 0


def test_across_runs_counts_each_servers_met_runs(tmp_path, capsys):
    """Several runs: per target and server, how many runs met it and the ratio's range; the
    hand-written loop is judged by the same limit."""
    slow = _all_met()
    slow[("CLI", "pp1")] = {"server_cpu_us_per_op": 25.2}  # 1.2x uvloop's 21.0
    slow[("loop", "pp1")] = {"server_cpu_us_per_op": 23.1}  # 1.1x: met (<=)
    paths = []
    for i, cells in enumerate((_all_met(), slow, _all_met())):
        path = tmp_path / ("run%d.json" % i)
        path.write_text(json.dumps(_results(cells)))
        paths.append(str(path))
    assert verdict17.main(paths) == 0
    out = capsys.readouterr().out
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line
            for line in out.splitlines() if line.startswith("| ")}
    assert "2/3 met (0.95-1.20x)" in rows[("pp1 <= 1.1x uvloop", "CLI")]
    assert "3/3 met (0.97-1.10x)" in rows[("pp1 <= 1.1x uvloop", "hand-written loop")]
    assert "3/3 met (18.43-18.43 MB)" in rows[("RSS with 10k idle <= 20 MB", "legacy")]
    assert "3/3 met (0.96-0.96x)" in rows[("10k idle: throughput >= 0.95x no idle", "uvloop")]
    cells = _all_met()
    del cells[("uvloop", "connrate")]
    (tmp_path / "run1.json").write_text(json.dumps(_results(cells)))
    verdict17.main(paths)
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert "2/3 met" in rows[("connrate <= uvloop", "CLI")]  # a missing cell is not met


def _split_cells() -> dict:
    cells = _all_met()
    # pp1 (limit 1.1 x uvloop's 20.0 = 22.0), user + sys per request:
    cells[("uvloop", "pp1")] = {"server_cpu_us_per_op": 20.0, "server_user_us": 4.0,
                                "server_sys_us": 16.0}
    # the CLI: its sys alone (19.0) with uvloop's user (4.0) is over the limit -> kernel
    cells[("CLI", "pp1")] = {"server_cpu_us_per_op": 25.0, "server_user_us": 6.0,
                             "server_sys_us": 19.0}
    # legacy: 23.0, of which netloop's own 2,000 instructions at 1 ns are 2.0 µs: 21.0 is
    # under the limit without them -> netloop
    cells[("legacy", "pp1")] = {"server_cpu_us_per_op": 23.0, "server_user_us": 8.0,
                                "server_sys_us": 15.0}
    # the idle target: the CLI's 10k-idle throughput 0.80x its pp100, the extra CPU sys time
    cells[("CLI", "pp100")].update({"server_cpu_us_per_op": 10.0, "server_user_us": 2.0,
                                    "server_sys_us": 8.0})
    cells[("CLI", "pp100-idle10k")] = {"metric": 80.0, "server_cpu_us_per_op": 12.5,
                                       "server_user_us": 2.1, "server_sys_us": 10.4,
                                       "server_cpu_util": 0.98}
    return cells


def test_misses_are_taken_apart_with_instruction_counts(tmp_path, capsys):
    insn = {"insn": {"3.11": {"pp1": {"netloop": 7000, "netloop-asyncore": 8000,
                                      "minimal-epoll": 6000, "uvloop": 4000}}}}
    data = _results(_split_cells())
    rows = verdict17.split_gaps(data, insn)
    by_role = {r[2]: r for r in rows}
    assert set(by_role) == {"CLI", "legacy"}, rows  # the met cells are not listed
    assert by_role["CLI"][-1] == "kernel" and by_role["CLI"][7] == "+3.00"
    legacy = by_role["legacy"]
    assert legacy[-1] == "netloop" and legacy[6] == "1.00", legacy
    assert legacy[8] == "+2000 insn: 2.00" and legacy[9] == "+2000 insn: 2.00", legacy
    # without counts for its scenario a miss is not blamed on anything
    rows = verdict17.split_gaps(data, {"insn": {}})
    assert {r[-1] for r in rows} == {"kernel", "no counts"}, rows
    idle = verdict17.split_idle(data)
    assert len(idle) == 1 and idle[0][:3] == ["3.11", "CLI", "0.80x"], idle
    assert idle[0][5:7] == ["+0.10", "+2.40"] and idle[0][-1] == "kernel", idle
    results, counts = tmp_path / "results.json", tmp_path / "insn.json"
    results.write_text(json.dumps(data))
    counts.write_text(json.dumps(insn))
    assert verdict17.main([str(results), "--insn", str(counts)]) == 0
    out = capsys.readouterr().out
    assert "| pp1 <= 1.1x uvloop | 3.11 | legacy |" in out and "| 3.11 | CLI | 0.80x |" in out


def test_the_legacy_servers_miss_is_split_at_the_asyncore_floor():
    # With minimal-asyncore counted: netloop's own part of the legacy server is its count over
    # that floor; the code's asyncore calls are the floor's over the hand-written loop.
    data = _results(_split_cells())  # legacy pp1: 23.0 against a limit of 22.0, user 8.0
    # 8,000 instructions at 1 ns: 1,500 over the floor (1.50 µs) decide the 1.00 over
    insn = {"insn": {"3.11": {"pp1": {"netloop": 7000, "netloop-asyncore": 8000,
                                      "minimal-asyncore": 6500, "minimal-epoll": 6000,
                                      "uvloop": 4000}}}}
    legacy = {r[2]: r for r in verdict17.split_gaps(data, insn)}["legacy"]
    assert legacy[8] == ("+1500 insn over the asyncore floor: 1.50; the code's asyncore "
                         "calls +500: 0.50"), legacy
    assert legacy[-1] == "netloop", legacy
    # 200 over the floor (0.20 µs) cannot decide it; with the code's 1,800 asyncore calls
    # (1.80 µs) it would be met: the API's
    insn["insn"]["3.11"]["pp1"]["minimal-asyncore"] = 7800
    legacy = {r[2]: r for r in verdict17.split_gaps(data, insn)}["legacy"]
    assert legacy[8].startswith("+200 insn over the asyncore floor: 0.20;"), legacy
    assert legacy[-1] == "asyncore API", legacy
    # a floor above the legacy server's count: netloop's own part is none
    insn["insn"]["3.11"]["pp1"]["minimal-asyncore"] = 8300
    legacy = {r[2]: r for r in verdict17.split_gaps(data, insn)}["legacy"]
    assert legacy[8].startswith("-300 insn over the asyncore floor: 0.00;"), legacy
    assert legacy[-1] == "asyncore API", legacy
