"""Execute a notebook top to bottom in a fresh kernel and write the executed copy: python notebook_runner.py
SOURCE TARGET CWD [CHECKS]. CHECKS, a Python file, runs after the last cell in the same kernel (the notebook's own
checks, kept out of what a reader sees: tests/notebook_checks/); it ends by printing `CHECKS_DONE`.

A small executor over jupyter_client's blocking (synchronous zmq) channels, instead of nbclient: nbclient waits for
each reply with one asyncio poll as long as the cell timeout, and on this machine a wake-up of that poll is
sometimes missed (seen most with cells that show widgets, whose comm messages flood IOPub), so a cell that ended in
a second held the notebook for the full 300 s, or failed. Here every wait is a level-triggered poll of at most one
second, repeated until the cell's deadline, so no missed wake-up can stall a notebook. Exit status 1 (and the
error on stderr) when a cell raises or times out.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from queue import Empty

import nbformat
from jupyter_client.manager import KernelManager

CELL_TIMEOUT_S = 300
POLL_S = 1.0
OUTPUT_TYPES = {"stream", "display_data", "execute_result", "error"}


def wait_for(channel, msg_id: str, deadline: float, accept) -> dict:
    """Read ``channel`` until ``accept(msg)`` is true for a message answering ``msg_id``, and return that message;
    TimeoutError past ``deadline``."""
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer within {CELL_TIMEOUT_S} s")
        try:
            msg = channel.get_msg(timeout=POLL_S)
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id and accept(msg):
            return msg


def output(msg: dict) -> nbformat.NotebookNode:
    kind, content = msg["msg_type"], msg["content"]
    if kind == "stream":
        return nbformat.v4.new_output("stream", name=content["name"], text=content["text"])
    if kind == "error":
        return nbformat.v4.new_output("error", ename=content["ename"], evalue=content["evalue"], traceback=content["traceback"])
    fields = {"data": content["data"], "metadata": content.get("metadata", {})}
    if kind == "execute_result":
        fields["execution_count"] = content.get("execution_count")
    return nbformat.v4.new_output(kind, **fields)


CHECKS_DONE = "kdviz: the notebook's checks passed"


def run(source: Path, target: Path, cwd: Path, checks: Path | None = None) -> int:
    notebook = nbformat.read(source, as_version=4)
    if checks is not None:
        notebook.cells.append(nbformat.v4.new_code_cell(checks.read_text(encoding="utf-8") + f"\nprint({CHECKS_DONE!r})"))
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(cwd))
    client = manager.blocking_client()
    client.start_channels()
    failed = None
    try:
        client.wait_for_ready(timeout=120)
        for index, cell in enumerate(c for c in notebook.cells if c.cell_type == "code"):
            msg_id = client.execute(cell.source, store_history=True, allow_stdin=False, stop_on_error=True)
            deadline = time.monotonic() + CELL_TIMEOUT_S
            cell.outputs = []

            def on_iopub(msg: dict, cell=cell) -> bool:
                if msg["msg_type"] in OUTPUT_TYPES:
                    cell.outputs.append(output(msg))
                elif msg["msg_type"] == "clear_output":
                    cell.outputs = []
                return msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"

            try:
                wait_for(client.iopub_channel, msg_id, deadline, on_iopub)  # every output, up to the kernel's idle
                reply = wait_for(client.shell_channel, msg_id, deadline, lambda msg: True)["content"]
            except TimeoutError as exc:
                failed = f"cell {index} timed out: {exc}\n{cell.source[:300]}"
                break
            cell.execution_count = reply.get("execution_count")
            if reply["status"] != "ok":
                failed = f"cell {index} raised {reply.get('ename')}: {reply.get('evalue')}\n" + "\n".join(reply.get("traceback", []))
                break
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    nbformat.write(notebook, target)
    if failed:
        print(failed, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(run(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]) if len(sys.argv) > 4 else None))
