"""``kdviz serve --num-procs N``: stopping the command stops every server process it forked (they used to run on,
each holding its port and its runs in memory)."""

from __future__ import annotations

import sys
import time

import psutil
import pytest
from browser import free_port, served


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the workers follow their parent through prctl (Linux)")
def test_stopping_serve_stops_the_processes_it_forked(demo_runs):
    port = free_port()
    command = [sys.executable, "-m", "kdviz.cli", "serve", str(demo_runs["digits-cnn"].path), "--port", str(port),
               "--num-procs", "2"]
    with served(command, port) as process:
        deadline = time.monotonic() + 30
        workers: list[psutil.Process] = []
        while time.monotonic() < deadline and len(workers) < 2:
            workers = psutil.Process(process.pid).children()
            time.sleep(0.2)
        assert len(workers) == 2, "kdviz serve --num-procs 2 should fork two server processes"
    # `served` has terminated the parent; the kernel ends the workers with it
    gone, alive = psutil.wait_procs(workers, timeout=15)
    for worker in alive:
        worker.kill()
    assert alive == [], f"server processes outlived kdviz serve: {[w.pid for w in alive]}"
    assert len(gone) == 2
