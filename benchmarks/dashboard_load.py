"""Dashboard load: sessions per second and the p50 and p95 session-open times of `kdviz serve --num-procs N` under
30 concurrent visitors, N = 1 and 4 (issue 20).

A session here is what the server does for one page a visitor opens: a Bokeh client connects, the server builds the
session's app (header and the Overview or the Logits page) from the cached runs and sends the whole document, and the
client disconnects (tests/load.py; a visit opens both pages). Several client processes visit back to back for a fixed
time; the figures are sessions completed per second and the 95th percentile of the open time. Bounded: --seconds
per setting, --clients processes, and it stops by itself. The baseline is the same load on one process, measured
in the same run (ratio printed).

On a machine with C cores, more than C server processes cannot add throughput: the clients share the cores too.

Run: python benchmarks/dashboard_load.py [--seconds 20] [--clients 30] [--procs 1 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import write_result
from browser import free_port, served
from load import open_session, run_clients


def measure(run_path: Path, procs: int, clients: int, seconds: float) -> dict[str, float]:
    port = free_port()
    command = [sys.executable, "-m", "kdviz.cli", "serve", str(run_path), "--port", str(port), "--warm", "--num-procs", str(procs)]
    with served(command, port, timeout=120):
        url = f"http://localhost:{port}/"
        for _ in range(2 * procs):  # every process has imported Panel and built a session once
            open_session(url)
        per_client, errors, _ = run_clients(url, clients, seconds)  # a visit is two sessions: Overview, then Logits
    times = [t for client_times in per_client for t in client_times]
    return {"sessions": len(times), "errors": len(errors), "sessions_per_s": len(times) / seconds,
            "p50_ms": 1000 * float(np.percentile(times, 50)) if times else float("nan"),
            "p95_ms": 1000 * float(np.percentile(times, 95)) if times else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=30, help="concurrent visitors, each a process")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 4])
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
