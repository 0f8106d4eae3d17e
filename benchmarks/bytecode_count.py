"""Run a Python program and count the bytecode instructions it executes, by line (3.12+).

    python bytecode_count.py OUT.json SCRIPT [ARG ...]
    python bytecode_count.py OUT.json -m MODULE [ARG ...]

``sys.monitoring``'s INSTRUCTION event counts every bytecode instruction the interpreter
runs in Python code (C functions are one CALL each; the counting callback itself is not
counted). At exit (a normal exit, SystemExit, or an exception that ends the program) it
writes ``{"FILE:FIRSTLINE QUALNAME": {"LINE": count, ...}, ...}`` to OUT.json.

``bench_insn_servers.py --bytecodes`` runs its servers under this script. Counts do not
depend on the machine's load or caches, and they take seconds where callgrind takes minutes;
what they cannot show is what an instruction costs (a CALL of a C function is one).
The program runs 20-50x slower: never time it.
"""

import atexit
import json
import os
import runpy
import sys


def main() -> None:
    if sys.version_info < (3, 12):
        raise SystemExit("bytecode_count.py needs Python 3.12 or newer (sys.monitoring); "
                         "this is %d.%d" % sys.version_info[:2])
    if len(sys.argv) < 3 or (sys.argv[2] == "-m" and len(sys.argv) < 4):
        raise SystemExit(__doc__.split("\n\n")[1])
    out = sys.argv[1]
    counts: dict = {}
    mon = sys.monitoring
    tool = mon.PROFILER_ID
    mon.use_tool_id(tool, "bytecode_count")

    def on_instruction(code, offset, counts=counts):
        key = (code, offset)
        counts[key] = counts.get(key, 0) + 1

    def dump() -> None:
        mon.set_events(tool, 0)
        lines_of: dict = {}
        result: dict = {}
        for (code, offset), n in counts.items():
            lines = lines_of.get(code)
            if lines is None:
                lines = lines_of[code] = {}
                for start, end, line in code.co_lines():
                    for o in range(start, end, 2):
                        lines[o] = line
            where = "%s:%d %s" % (os.path.basename(code.co_filename), code.co_firstlineno,
                                  code.co_qualname)
            per_line = result.setdefault(where, {})
            line = str(lines.get(offset))
            per_line[line] = per_line.get(line, 0) + n
        with open(out, "w") as f:
            json.dump(result, f)

    atexit.register(dump)
    mon.register_callback(tool, mon.events.INSTRUCTION, on_instruction)
    if sys.argv[2] == "-m":
        module = sys.argv[3]
        sys.argv = [module] + sys.argv[4:]
        sys.path[0] = os.getcwd()  # as python -m has it
        mon.set_events(tool, mon.events.INSTRUCTION)
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[2:]
        sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
        mon.set_events(tool, mon.events.INSTRUCTION)
        runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
