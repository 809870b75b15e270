"""Notebooks and examples run top to bottom, offline."""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))


RUNNER = Path(__file__).resolve().parent / "notebook_runner.py"  # a fresh kernel per notebook, no nbclient
CHECKS = Path(__file__).resolve().parent / "notebook_checks"  # each notebook's checks, run after its last cell
CHECKS_DONE = "kdviz: the notebook's checks passed"  # what notebook_runner prints when they pass


def checks_of(path: Path) -> Path:
    """tests/notebook_checks/<path under notebooks/, '/' as '__'>.py: the notebook's checks (every notebook has them)."""
    return CHECKS / ("__".join(path.relative_to(ROOT / "notebooks").with_suffix("").parts) + ".py")


# two notebooks at a time, each kernel on one thread: the machine's 2 cores, never oversubscribed (two kernels of
# 2 torch threads each made a training notebook 4× slower, past its 300 s cell timeout)
CONCURRENT_NOTEBOOKS = 2
KERNEL_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def execute(path: Path, directory: Path, demo_runs: dict) -> subprocess.CompletedProcess:
    """Run one notebook top to bottom in a fresh process (its own kernel) with ``directory`` as its working directory.
    A notebook that opens ``runs/demo`` finds the demo runs there (a copy, as ``make demo`` leaves them), so it does
    not build them again; the build itself is tested once, by the ``demo_runs`` fixture and tests/test_demo.py."""
    if "runs/demo" in path.read_text(encoding="utf-8"):
        for run in demo_runs.values():
            shutil.copytree(run.path, directory / "runs" / "demo" / run.path.name)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **KERNEL_THREADS}
    checks = [str(checks_of(path))] if checks_of(path).exists() else []
    return subprocess.run([sys.executable, str(RUNNER), str(path), str(directory / "executed.ipynb"), str(directory), *checks],
                          env=env, capture_output=True, text=True, timeout=900, cwd=directory)


@pytest.fixture(scope="module")
def executions(explained_demo_runs, tmp_path_factory):
    """Every notebook's execution, started together on first use, two at a time: {path: Future of (its directory,
    the completed process)}. Each test below waits for its own notebook."""
    pool = ThreadPoolExecutor(max_workers=CONCURRENT_NOTEBOOKS)
    futures = {}
    for path in NOTEBOOKS:
        directory = tmp_path_factory.mktemp(path.stem)
        futures[path] = pool.submit(lambda p=path, d=directory: (d, execute(p, d, explained_demo_runs)))
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_offline(path, executions):
    """Executed top to bottom in a fresh process, kernel and directory (tests/notebook_runner.py)."""
    directory, done = executions[path].result()
    assert done.returncode == 0, done.stderr[-3000:]  # a failing cell (or an assert in a check cell) fails here
    notebook = nbformat.read(directory / "executed.ipynb", as_version=4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any(o.output_type in ("display_data", "execute_result") for o in outputs), "the notebook showed nothing"
    if checks_of(path).exists():  # its checks ran, after every cell, and passed
        assert CHECKS_DONE in "".join(o.get("text", "") for o in notebook.cells[-1].outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_show_no_test_code_and_have_their_checks(path):
    """A reader sees the lesson, not the suite's asserts; every lesson's checks live in tests/notebook_checks/."""
    notebook = nbformat.read(path, as_version=4)
    assert not [cell.source[:60] for cell in notebook.cells if cell.cell_type == "code" and "assert " in cell.source]
    if "teaching" in path.parts:
        assert checks_of(path).exists(), checks_of(path)


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if "teaching" in p.parts], ids=lambda p: p.name)
def test_every_lesson_states_at_its_top_how_long_it_runs(path):
    """A lecturer knows before class what a lesson costs: under 3 minutes on 2 cores, stated under its title."""
    import re

    first = nbformat.read(path, as_version=4).cells[0].source
    stated = re.search(r"Runs offline in about (\d+) s on 2 CPU cores", first)
    assert first.startswith("# Lesson") and stated and int(stated.group(1)) < 180


def test_every_checks_file_belongs_to_a_notebook():
    assert sorted(checks_of(path) for path in NOTEBOOKS if checks_of(path).exists()) == sorted(CHECKS.glob("*.py"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") and not cell.get("execution_count") for cell in notebook.cells if cell.cell_type == "code")


def test_hf_example_runs(tmp_path, capsys):
    module = runpy.run_path(str(ROOT / "examples" / "capture_hf_pair.py"))
    run = module["main"](str(tmp_path))
    assert run.teacher.heads == [4, 4, 4, 4] and run.class_names == ["negative", "positive"]
    assert "bert.encoder.layer.1.output" in capsys.readouterr().out


def test_cross_tokenizer_example_runs(capsys):
    module = runpy.run_path(str(ROOT / "examples" / "cross_tokenizer.py"))
    result = module["main"]()
    alignment, boundaries, spans = result["alignment"], result["boundaries"], result["spans"]
    assert len(alignment.boundaries) > 50 and alignment.boundaries[-1] == 400  # the whole text is covered
    assert (boundaries["kl"].numpy() >= 0).all() and (boundaries["reverse_kl"].numpy() >= 0).all()
    for role in ("teacher", "student"):
        outside = boundaries[f"{role}_outside_mass"].numpy()
        assert ((outside >= 0) & (outside <= 1)).all()
    assert np.isfinite(spans["difference"][1:]).all()
    assert "shared boundaries" in capsys.readouterr().out


def test_logit_lens_example_runs_on_the_trained_demo_pair(capsys):
    module = runpy.run_path(str(ROOT / "examples" / "logit_lens.py"))
    lens = module["main"](n_texts=4, length=64)
    assert lens.teacher.layers == 4 and lens.student.layers == 2
    assert lens.teacher.top1.shape == (5, sum(len(text) for text in lens.texts)) and len(lens.texts) == 4
    # trained models sharpen towards their output: the read-out is far from the final at the embeddings, 0 at the end
    for model in (lens.teacher, lens.student):
        medians = np.median(model.kl_to_own_final, axis=1)
        assert medians[0] > 1.0 and medians[-1] == 0.0
    assert "median commit depth" in capsys.readouterr().out


def test_cross_tokenizer_demo_example_runs_on_the_shipped_pair(capsys):
    module = runpy.run_path(str(ROOT / "examples" / "cross_tokenizer_demo.py"))
    figures = module["main"](n_texts=8)
    distilled, fresh = figures["distilled student"], figures["fresh student"]
    assert distilled["teacher_nats_per_char"] == fresh["teacher_nats_per_char"]  # the same teacher on the same text
    assert distilled["student_nats_per_char"] < fresh["student_nats_per_char"] and distilled["matched_kl"] < fresh["matched_kl"]
    assert 0 < distilled["teacher_outside_mass"] < 1
    assert "nats per character" in capsys.readouterr().out
