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
