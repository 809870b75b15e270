"""Notebooks and examples run top to bottom, offline."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))


EXECUTE = """
import sys, nbformat
from nbclient import NotebookClient
source, target, cwd = sys.argv[1:4]
notebook = nbformat.read(source, as_version=4)
NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": cwd}}).execute()
nbformat.write(notebook, target)
"""


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_offline(path, tmp_path):
    """Executed top to bottom in a fresh process and directory, so each notebook builds the demo runs it needs itself.

    (One process per notebook: executing several in one process left nbclient waiting minutes for a lost message.)
    """
    executed = tmp_path / "executed.ipynb"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", EXECUTE, str(path), str(executed), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]  # a failing cell (or an assert in a check cell) fails here
    notebook = nbformat.read(executed, as_version=4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type in ("display_data", "execute_result") for o in outputs), "the notebook showed nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") and not cell.get("execution_count") for cell in notebook.cells if cell.cell_type == "code")


def test_hf_example_runs(tmp_path, capsys):
    module = runpy.run_path(str(ROOT / "examples" / "capture_hf_pair.py"))
    run = module["main"](str(tmp_path))
    assert run.teacher.heads == [4, 4, 4, 4] and run.class_names == ["negative", "positive"]
    assert "bert.encoder.layer.1.output" in capsys.readouterr().out
