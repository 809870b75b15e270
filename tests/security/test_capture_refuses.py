"""Capture refuses what it cannot store truthfully (labels outside the classes or the vocabulary, non-integer labels),
naming the sample and the fix; a capture killed by a signal leaves nothing that a later capture keeps; an export
never holds a local path."""

from __future__ import annotations

import html as html_lib
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import TinyCNN, gpt2_pair

import kdviz
from kdviz import temporaries
from kdviz.cli import main
from kdviz.errors import InputError


@pytest.mark.parametrize("labels, message", [
    (torch.tensor([0, 1, 2, 5, 1, 0]), r"class label 5 at sample 3 is outside 0\.\.4"),
    (torch.tensor([0, 1, -1, 2, 1, 0]), r"class label -1 at sample 2 is outside 0\.\.4"),
    (torch.tensor([0, 1, -100, 2, 1, 0]), r"class label -100 at sample 2"),  # no ignore index for whole samples
    (torch.tensor([0.0, 1.0, 2.0, 3.0, 1.0, 0.0]), r"class labels must be integer ids, got torch\.float32"),
    (torch.tensor([True, False, True, True, False, False]), r"must be integer ids, got torch\.bool"),
])
def test_class_labels_that_cannot_be_stored_are_refused(tmp_path, labels, message):
    torch.manual_seed(0)
    x = torch.randn(6, 1, 8, 8)
    with pytest.raises(InputError, match=message):
        kdviz.capture(TinyCNN(4, n_classes=5), TinyCNN(2, n_classes=5), (x, labels), path=tmp_path / "r.kdviz",
                      batch_size=2, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


def test_language_model_labels_outside_the_vocabulary_are_refused(tmp_path):
    teacher, student = gpt2_pair(vocab=20)
    ids = torch.randint(1, 20, (4, 8))
    labels = ids.clone()
    labels[2, 5] = 20  # one past the vocabulary
    labels[0, 0] = -100  # ignored positions are fine
    with pytest.raises(InputError, match=r"token label 20 at sample 2, position 5 is outside 0\.\.19 or -100"):
        kdviz.capture(teacher, student, {"input_ids": ids, "labels": labels}, path=tmp_path / "lm.kdviz", progress=False)
    labels[2, 5] = -7
    with pytest.raises(InputError, match=r"token label -7 at sample 2"):
        kdviz.capture(teacher, student, {"input_ids": ids, "labels": labels}, path=tmp_path / "lm.kdviz", progress=False)
    labels[2, 5] = 3
    run = kdviz.capture(teacher, student, {"input_ids": ids, "labels": labels}, path=tmp_path / "lm.kdviz", progress=False)
    assert run.n_samples == 4


CAPTURE_FOREVER = textwrap.dedent("""
    import sys, torch, kdviz
    from torch import nn

    class Slow(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 3)
        def forward(self, x):
            print("batch", flush=True)
            import time; time.sleep(0.2)
            return self.head(x)

    kdviz.capture(Slow(), Slow(), torch.randn(4000, 4), path=sys.argv[1], batch_size=2, progress=False)
""")


def start_capture(tmp_path) -> subprocess.Popen:
    """A capture in a child process that writes its run slowly; returns once it has written a batch."""
    script = tmp_path / "slow_capture.py"
    script.write_text(CAPTURE_FOREVER, encoding="utf-8")
    process = subprocess.Popen([sys.executable, str(script), str(tmp_path / "runs" / "slow.kdviz")], stdout=subprocess.PIPE,
                               text=True)
    for _ in range(3):  # a few batches: the temporary directory and its owner record exist
        assert process.stdout.readline().strip() == "batch"
    return process


def leftovers(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "runs").iterdir())


def test_sigterm_cleans_up_as_sigint_does(tmp_path):
    process = start_capture(tmp_path)
    assert any(name.startswith(".slow.kdviz.tmp-") for name in leftovers(tmp_path))
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    assert leftovers(tmp_path) == []


def test_what_a_killed_capture_left_is_removed_by_the_next_one_and_by_verify(tmp_path, capsys):
    process = start_capture(tmp_path)
    process.kill()
    process.wait(timeout=60)
    left = leftovers(tmp_path)
    assert len(left) == 2 and left[1] == left[0] + temporaries.OWNER_SUFFIX  # the directory and its owner record
    alive = start_capture(tmp_path)  # a new capture beside it removes what the killed one left
    try:
        running = leftovers(tmp_path)
        assert left[0] not in running and len(running) == 2
        assert temporaries.remove_stale(tmp_path / "runs") == []  # a live owner's directory is never touched
        assert leftovers(tmp_path) == running
    finally:
        alive.kill()
        alive.wait(timeout=60)
    torch.manual_seed(0)
    run = kdviz.capture(TinyCNN(4, n_classes=3), TinyCNN(2, n_classes=3), torch.randn(6, 1, 8, 8),
                        path=tmp_path / "runs" / "next.kdviz", progress=False)
    assert leftovers(tmp_path) == ["next.kdviz"]  # the next capture removed what the killed one left, in-process too
    process = start_capture(tmp_path)
    process.kill()
    process.wait(timeout=60)
    assert main(["verify", str(run.path), "--quiet"]) == 0  # and so does kdviz verify
    assert "left by a capture whose process is gone" in capsys.readouterr().out
    assert leftovers(tmp_path) == ["next.kdviz"]


def test_an_export_holds_no_local_path(demo_runs, tmp_path):
    out = tmp_path / "out.html"
    run = demo_runs["digits-cnn"]
    assert main(["export", str(run.path), str(out), "--pages", "overview", "logits"]) == 0
    html = out.read_text(encoding="utf-8")
    for private in (str(run.path), str(run.path.parent), os.path.expanduser("~"), str(tmp_path)):
        assert private not in html, private
    assert "kdviz run 'digits-cnn'" in html_lib.unescape(html)


def test_owner_records_tell_a_dead_process_from_a_live_one(tmp_path):
    directory = tmp_path / ".x.kdviz.tmp-0123abcd"
    directory.mkdir()
    temporaries.claim(directory)  # this process: alive
    assert temporaries.remove_stale(tmp_path) == []
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    record = directory.with_name(directory.name + temporaries.OWNER_SUFFIX)
    record.write_text(record.read_text().replace(f'"pid": {os.getpid()}', f'"pid": {child.pid}'))
    assert temporaries.remove_stale(tmp_path) == [directory]
    assert list(tmp_path.iterdir()) == []
