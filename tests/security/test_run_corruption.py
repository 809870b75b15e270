"""A damaged run never reads wrong: a copy of the demo CNN run is damaged in many ways, and each one is caught as a
`KdvizError` (by `Run.open`, or by the read), makes `kdviz info`, `kdviz export` and `kdviz verify` exit 2 with one
line and no traceback, and leaves the dashboard serving the other runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from kdviz.cli import main
from kdviz.errors import CorruptRunError, KdvizError
from kdviz.explore.library import RunLibrary
from kdviz.store import Run


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def truncate(path: Path, keep: int = -8) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def set_meta(key: str, value) -> Callable[[Path], None]:
    return lambda run: edit_json(run / "meta.json", lambda meta: meta.__setitem__(key, value))


# name -> (damage, the read that must fail; None: Run.open itself fails)
DAMAGE: dict[str, tuple[Callable[[Path], None], Callable[[Run], object] | None]] = {
    "student logits chunk deleted": (lambda run: (run / "student/logits/c/0/0").unlink(), lambda r: r.student.logits[:]),
    "labels chunk deleted": (lambda run: (run / "inputs/labels/c/0").unlink(), lambda r: r.labels[:]),
    "dtype edited to int32": (lambda run: edit_json(run / "teacher/logits/zarr.json", lambda z: z.__setitem__("data_type", "int32")),
                              lambda r: r.teacher.logits[:]),
    "shape edited": (lambda run: edit_json(run / "teacher/logits/zarr.json", lambda z: z.__setitem__("shape", [400, 10])),
                     lambda r: r.teacher.logits[:]),
    "uncompressed chunk truncated": (lambda run: truncate(run / "teacher/logits/c/0/0"), lambda r: r.teacher.logits[:]),
    "compressed chunk truncated": (lambda run: truncate(run / "inputs/labels/c/0"), lambda r: r.labels[:]),
    # the teacher's logits: every view reads them (the student's of a run with training history are read from its
    # last snapshot, which the dashboard and export show)
    "chunk altered, same size": (lambda run: flip_a_bit(run / "teacher/logits/c/0/0"), lambda r: r.teacher.logits[:]),
    "snapshot chunk altered, same size": (lambda run: flip_a_bit(run / "history/00000630/student/logits/c/0/0"),
                                          lambda r: r.at_step(630).student.logits[:]),
    "array zarr.json broken": (lambda run: (run / "student/logits/zarr.json").write_text("{"), lambda r: r.student.logits[:]),
    "array directory deleted": (lambda run: shutil.rmtree(run / "teacher/feat/layer3"), lambda r: r.teacher.features("layer3")),
    "manifest deleted": (lambda run: (run / "manifest.json").unlink(), None),
    "model name missing": (lambda run: edit_json(run / "meta.json", lambda m: m["teacher"].pop("name")), None),
    "class_names too short": (set_meta("class_names", ["0", "1"]), None),
    "n_samples larger than the arrays": (set_meta("n_samples", 900), None),
    "n_samples negative": (set_meta("n_samples", -1), None),
    "meta.json not JSON": (lambda run: (run / "meta.json").write_text("{"), None),
}
# `kdviz info` checks the structure (every array and the size of every chunk file) without reading any chunk, so it
# cannot see bytes altered in place; export (which reads those logits) and verify do
INFO_CANNOT_SEE = {"chunk altered, same size", "snapshot chunk altered, same size"}


@pytest.fixture
def damaged(demo_runs, tmp_path, request) -> tuple[Path, Path]:
    """(a good copy of the demo CNN run, a damaged copy) side by side."""
    good = tmp_path / "good.kdviz"
    shutil.copytree(demo_runs["digits-cnn"].path, good)
    broken = tmp_path / "broken.kdviz"
    shutil.copytree(good, broken)
    DAMAGE[request.param][0](broken)
    return good, broken


def kdviz_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdviz.cli", *args], capture_output=True, text=True, timeout=300)


def kdviz_in_process(capsys, *args: str) -> tuple[int, str]:
    """`kdviz ARGS` run in this process (the same `main` as the command): (exit code, what it printed). An exception
    other than a clean exit would fail the test here, as a traceback would show on the command line."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_the_undamaged_copy_is_intact(demo_runs, tmp_path):
    run = Run.open(demo_runs["digits-cnn"].path)
    assert run.verify(progress=False) == []
    assert kdviz_cli("verify", str(run.path), "--quiet").returncode == 0


@pytest.mark.parametrize("damaged", sorted(DAMAGE), indirect=True)
def test_damage_is_caught_everywhere(damaged, request, tmp_path, capsys):
    good, broken = damaged
    name = request.node.callspec.params["damaged"]
    read = DAMAGE[name][1]
    with pytest.raises(KdvizError):
        run = Run.open(broken)
        if read is None:
            pytest.fail(f"{name}: Run.open accepted the run")
        read(run)
    commands = {"verify": ("verify", str(broken), "--quiet"), "export": ("export", str(broken), str(tmp_path / "x.html"))}
    if name not in INFO_CANNOT_SEE:
        commands["info"] = ("info", str(broken))
    for command, args in commands.items():
        code, printed = kdviz_in_process(capsys, *args)
        assert code == 2, (name, command, printed)
        assert "Traceback" not in printed and "kdviz: " in printed, (name, command, printed)
    assert not (tmp_path / "x.html").exists()  # no export of a damaged run
    library = RunLibrary.from_paths([good, broken])  # the dashboard serves the good run and lists the broken one
    np.testing.assert_array_equal(library.run("good").labels[:], Run.open(good).labels[:])
    if name in INFO_CANNOT_SEE:  # served (its structure is intact), but the page that reads the damage says so
        assert library.names == ["good", "broken"]
        page_reads = ("broken", 630) if name.startswith("snapshot") else ("broken", None)
        with pytest.raises(CorruptRunError, match="logits"):
            library.data("logits", *page_reads)
    else:
        assert library.names == ["good"] and list(library.failures) == ["broken"]


def test_verify_lists_each_damaged_chunk(demo_runs, tmp_path):
    """Through the real command: every damaged chunk is listed, with exit code 2."""
    run_path = tmp_path / "r.kdviz"
    shutil.copytree(demo_runs["digits-cnn"].path, run_path)
    (run_path / "student/logits/c/0/0").unlink()
    flip_a_bit(run_path / "teacher/logits/c/0/0")
    truncate(run_path / "inputs/thumbnails/c/0/0/0")
    done = kdviz_cli("verify", str(run_path), "--quiet")
    assert done.returncode == 2
    assert "student/logits: chunk c/0/0 is missing" in done.stdout
    assert "teacher/logits: chunk c/0/0 fails its checksum" in done.stdout
    assert "inputs/thumbnails: chunk c/0/0/0 has" in done.stdout and "written with" in done.stdout


def test_a_read_never_returns_fill_values_for_a_written_chunk(demo_runs, tmp_path):
    run_path = tmp_path / "r.kdviz"
    shutil.copytree(demo_runs["digits-cnn"].path, run_path)
    (run_path / "inputs/labels/c/0").unlink()
    with pytest.raises(CorruptRunError, match=r"chunk 'c/0' of array 'inputs/labels'.*missing"):
        Run.open(run_path).labels[:10]
