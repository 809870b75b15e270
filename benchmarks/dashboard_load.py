"""Dashboard load: sessions per second and p95 session-open time of `kdviz serve --num-procs N`, N = 1, 2, 4.

A session here is what the server does for one visitor opening the dashboard: a Bokeh client connects, the server
builds the session's app (header, Overview page) from the cached runs and sends the whole document, and the client
disconnects. Several client processes open sessions back to back for a fixed time; the figures are sessions completed
per second and the 95th percentile of the open time. Bounded: --seconds per setting, --clients processes, and it
stops by itself. The baseline is the same load on one process, measured in the same run (ratio printed).

On a machine with C cores, more than C server processes cannot add throughput: the clients share the cores too.

Run: python benchmarks/dashboard_load.py [--seconds 20] [--clients 6] [--procs 1 2 4]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import write_result
from browser import free_port, served

CLIENT_STARTUP_S = 15


def open_session(url: str) -> float:
    """Seconds to open one session (the server builds the app and sends its document) and close it."""
    import panel.models.plotly  # noqa: F401  (registers Panel's Bokeh models, so the client can read the document)
    from bokeh.client import pull_session

    start = time.perf_counter()
    session = pull_session(url=url)
    elapsed = time.perf_counter() - start
    if not session.document.roots:
        raise RuntimeError("the session came back without a document")
    session.close()
    return elapsed


def client(url: str, start: float, deadline: float) -> tuple[list[float], int]:
    """One client process: warmed up (imports, one session) before ``start``, then sessions back to back until
    ``deadline``; (open times, errors) of the timed ones."""
    open_session(url)
    time.sleep(max(0.0, start - time.time()))
    times, errors = [], 0
    while time.time() < deadline:
        try:
            times.append(open_session(url))
        except Exception:  # counted: a session that failed to open
            errors += 1
    return times, errors


def measure(run_path: Path, procs: int, clients: int, seconds: float) -> dict[str, float]:
    port = free_port()
    command = [sys.executable, "-m", "kdviz.cli", "serve", str(run_path), "--port", str(port), "--warm", "--num-procs", str(procs)]
    with served(command, port, timeout=120):
        url = f"http://localhost:{port}/"
        for _ in range(2 * procs):  # every process has imported Panel and built a session once
            open_session(url)
        start = time.time() + CLIENT_STARTUP_S  # the clients import Panel first; the clock starts for all at once
        with multiprocessing.get_context("spawn").Pool(clients) as pool:
            results = pool.starmap(client, [(url, start, start + seconds)] * clients)
    times = [t for ts, _ in results for t in ts]
    errors = sum(e for _, e in results)
    return {"sessions": len(times), "errors": errors, "sessions_per_s": len(times) / seconds,
            "p50_ms": 1000 * float(np.percentile(times, 50)) if times else float("nan"),
            "p95_ms": 1000 * float(np.percentile(times, 95)) if times else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4])
    args = parser.parse_args()
    from kdviz.demo.build import build_demo_runs

    with tempfile.TemporaryDirectory() as tmp:
        print("building the demo runs …", flush=True)
        build_demo_runs(Path(tmp), progress=False, attributions=False)
        results = {}
        for procs in args.procs:
            print(f"{args.clients} clients for {args.seconds:g} s against --num-procs {procs} …", flush=True)
            results[procs] = measure(Path(tmp), procs, args.clients, args.seconds)
    base = results[args.procs[0]]["sessions_per_s"]
    print(f"\n{'server processes':>16s} {'sessions/s':>11s} {'p50':>8s} {'p95':>8s} {'errors':>7s} {'× 1 process':>12s}")
    for procs, r in results.items():
        print(f"{procs:16d} {r['sessions_per_s']:11.2f} {r['p50_ms']:6.0f}ms {r['p95_ms']:6.0f}ms {r['errors']:7d} "
              f"{r['sessions_per_s'] / base:11.2f}×")
    print(f"(machine: {os.cpu_count()} cores; clients and servers share them)")
    print("wrote", write_result("dashboard_load", {"seconds": args.seconds, "clients": args.clients, "cores": os.cpu_count(),
                                                   "results": {str(k): v for k, v in results.items()},
                                                   "scaling": {str(k): v["sessions_per_s"] / base for k, v in results.items()}}))


if __name__ == "__main__":
    main()
