"""http.server on netloop's ThreadingTCPServer against the standard library's, and how long
``shutdown()`` takes on each. Self-contained: standard library and netloop only.

    python benchmarks/bench_socketserver.py [--duration 2] [--clients 4] [--trials 8] [--quick]

Throughput: the same ``http.server`` handler (a 1 KiB 200 response, HTTP/1.0 so one connection
per request, which exercises the server's accept path) behind ``socketserver.ThreadingTCPServer``
and ``netloop.socketserver.ThreadingTCPServer``, both with a listen backlog of 128. The load runs
in a subprocess (this script with ``--load``), so client work does not share the server's GIL:
``--clients`` threads issue requests back to back, with ``http.client`` or with a raw socket
(send the request bytes, read to EOF), for ``--duration`` seconds after a short warm-up. Each
measurement is run ``--rounds`` times, alternating servers; the best is shown.

Shutdown latency: ``serve_forever(poll_interval=0.5)`` in a thread; after a request has been
served (so the loop is inside its wait), time from calling ``shutdown()`` until it returns.
The standard library notices the request only when its poll times out (0 to 0.5 s); netloop
wakes its loop through the wake-up pipe.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import os
import platform
import socket
import socketserver as std_socketserver
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")
if os.path.isdir(SRC) and SRC not in sys.path:
    sys.path.insert(0, SRC)

from netloop import socketserver as nl_socketserver  # noqa: E402

BODY = b"x" * 1024
RAW_REQUEST = b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n"


class FixedPage(http.server.BaseHTTPRequestHandler):
    """A 1 KiB page for every GET; no logging."""

    def do_GET(self) -> None:
        self.server.nl_bench_served += 1  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _http_server(base: type) -> type:
    class Server(base):  # type: ignore[misc, valid-type]
        allow_reuse_address = True
        request_queue_size = 128
        nl_bench_served = 0

        def server_bind(self) -> None:
            base.server_bind(self)
            self.server_name, self.server_port = self.server_address[:2]

    Server.__name__ = base.__module__ + "." + base.__name__
    return Server


IMPLEMENTATIONS = {
    "stdlib socketserver": _http_server(std_socketserver.ThreadingTCPServer),
    "netloop.socketserver": _http_server(nl_socketserver.ThreadingTCPServer),
}


# ---------------------------------------------------------------------- load (subprocess)
def _one_http(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.status == 200 and resp.read() == BODY
    finally:
        conn.close()


def _one_raw(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(RAW_REQUEST)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    reply = b"".join(chunks)
    return reply.startswith(b"HTTP/1.0 200") and reply.endswith(BODY)


def load_main(host: str, port: int, kind: str, duration: float, clients: int,
              warmup: float) -> None:
    one = _one_http if kind == "http" else _one_raw
    start = time.monotonic() + warmup
    end = start + duration
    counts = [0] * clients
    errors = [0] * clients

    def worker(i: int) -> None:
        while True:
            now = time.monotonic()
            if now >= end:
                return
            try:
                ok = one(host, port)
            except OSError:
                ok = False
            if time.monotonic() >= start:
                if ok:
                    counts[i] += 1
                else:
                    errors[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sum(counts), sum(errors), duration)


# ---------------------------------------------------------------------- measurements
def measure_throughput(server_cls: type, kind: str, duration: float, clients: int) -> tuple:
    server = server_cls(("127.0.0.1", 0), FixedPage)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        host, port = server.server_address[:2]
        cpu = time.process_time()
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--load", host, str(port), kind,
             str(duration), str(clients)],
            capture_output=True, text=True, timeout=duration + 60)
        if proc.returncode != 0:
            raise RuntimeError("load generator failed:\n" + proc.stderr)
        cpu = time.process_time() - cpu  # the server's CPU (loop and request threads)
        done, errors, seconds = proc.stdout.split()
        # Warm-up requests are served too: CPU per request counts every request served.
        served = getattr(server, "nl_bench_served", 0) or int(done)
        return int(done) / float(seconds), int(errors), cpu * 1e6 / served
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def measure_shutdown(server_cls: type, trials: int) -> list:
    latencies = []
    for _ in range(trials):
        server = server_cls(("127.0.0.1", 0), FixedPage)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5})
        thread.start()
        try:
            # A served request proves serve_forever() is running and back in its wait.
            if not _one_http(*server.server_address[:2]):
                raise RuntimeError("request failed")
            start = time.perf_counter()
            server.shutdown()
            latencies.append(time.perf_counter() - start)
        finally:
            thread.join()
            server.server_close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per run")
    parser.add_argument("--clients", type=int, default=4, help="client threads")
    parser.add_argument("--rounds", type=int, default=2, help="runs per measurement (best)")
    parser.add_argument("--trials", type=int, default=8, help="shutdown trials per server")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds, args.trials = 0.5, 1, 3

    print("socketserver benchmark: Python %s, %s, %d CPUs; http.server handler, 1 KiB "
          "responses, HTTP/1.0" % (platform.python_version(), platform.system(),
                                   os.cpu_count() or 0))
    print("load: %d client threads in a subprocess, %.1f s per run, best of %d\n"
          % (args.clients, args.duration, args.rounds))
    names = list(IMPLEMENTATIONS)
    header = "%-44s %22s %22s %7s" % ("", names[0], names[1], "ratio")
    print(header)
    print("-" * len(header))
    for kind, label in (("http", "http.client, connection per request"),
                        ("raw", "raw socket, connection per request")):
        best = {name: 0.0 for name in names}
        cpu = {name: float("inf") for name in names}
        errors = {name: 0 for name in names}
        for _ in range(args.rounds):
            for name in names:
                rate, errs, us = measure_throughput(IMPLEMENTATIONS[name], kind, args.duration,
                                                    args.clients)
                best[name] = max(best[name], rate)
                cpu[name] = min(cpu[name], us)
                errors[name] += errs
        note = "" if not any(errors.values()) else "   (errors: %s)" % errors
        print("%-44s %22s %22s %6.2fx%s" % (
            label + ": req/s", "%.0f" % best[names[0]], "%.0f" % best[names[1]],
            best[names[1]] / best[names[0]], note))
        print("%-44s %22s %22s %6.2fx" % (
            "  server CPU per request", "%.0f us" % cpu[names[0]], "%.0f us" % cpu[names[1]],
            cpu[names[1]] / cpu[names[0]]))

    print("\nshutdown() latency, serve_forever(poll_interval=0.5), %d trials:" % args.trials)
    header = "%-24s %12s %12s %12s %12s" % ("", "mean", "median", "min", "max")
    print(header)
    print("-" * len(header))
    for name in names:
        lat = [x * 1000 for x in measure_shutdown(IMPLEMENTATIONS[name], args.trials)]
        print("%-24s %9.3f ms %9.3f ms %9.3f ms %9.3f ms" % (
            name, statistics.mean(lat), statistics.median(lat), min(lat), max(lat)))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load"]:
        host, port, kind, duration, clients = sys.argv[2:7]
        load_main(host, int(port), kind, float(duration), int(clients), warmup=0.3)
    else:
        main()
