#!/usr/bin/env python3
"""Start one echo server of ``servers.py``: ``python benchmarks/serve.py --kind KIND ...``.

The command every benchmark starts its servers with (``benchlib.SERVERS_PY``). Python
compiles the script it is given at every start and never caches it, while a module the script
imports loads from its cached bytecode (``benchlib.probe_python`` fills the cache). Run as the
script, ``servers.py`` (~800 lines) was compiled by every server it started, and that left
about 1.1 MB more in each server's peak RSS, which ``mem-idle10k`` reports: a cost of the
harness, not of the server under test.
"""
import sys

import servers  # (this file's directory is sys.path[0])

sys.exit(servers.main())
