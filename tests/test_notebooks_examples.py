"""Notebooks and examples run top to bottom, offline."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_offline(path, tmp_path, monkeypatch):
    """Executed in a fresh directory, so each notebook builds the demo runs it needs itself."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]  # a failing cell (or assert in a check cell) raises above
    text = json.dumps([o.get("data", {}).get("text/plain", "") for o in outputs])
    assert "accuracy" in text or "LogitExplorer" in text or "TemperatureLab" in text, "the notebook showed nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") and not cell.get("execution_count") for cell in notebook.cells if cell.cell_type == "code")


def test_hf_example_runs(tmp_path, capsys):
    module = runpy.run_path(str(ROOT / "examples" / "capture_hf_pair.py"))
    run = module["main"](str(tmp_path))
    assert run.teacher.heads == [4, 4, 4, 4] and run.class_names == ["negative", "positive"]
    assert "bert.encoder.layer.1.output" in capsys.readouterr().out
