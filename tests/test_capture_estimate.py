"""A capture says what it will cost before it goes on (`kdviz.estimate`, ``capture(..., dry_run=True)``, the line
printed after the first batch) and refuses to fill a disk that cannot hold the run."""

from __future__ import annotations

import re
import shutil
from collections import namedtuple

import pytest
import torch
from conftest import bert_pair, gpt2_pair, hook_count

import kdviz
from kdviz import cost
from kdviz.errors import InputError


def run_bytes(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_the_estimate_is_close_to_the_run_written_and_a_dry_run_writes_nothing(tmp_path):
    teacher, student = bert_pair()
    ids = torch.randint(1, 120, (96, 40), generator=torch.Generator().manual_seed(0))
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    teacher.train()
    guess = kdviz.estimate(teacher, student, data, batch_size=16, path=tmp_path / "never.kdviz")
    assert not (tmp_path / "never.kdviz").exists() and list(tmp_path.iterdir()) == []
    assert teacher.training and hook_count(teacher, only_kdviz=True) == 0  # the models are given back as they came
    assert guess.samples == 96 and guess.sampled == 32  # two batches: the second is timed warm
    assert guess.seconds_per_sample > 0 and guess.total_seconds == pytest.approx(guess.seconds_per_sample * 96)
    keys = [key for key, _ in guess.arrays]
    assert keys[0].startswith("teacher/attn/")  # the attention maps are the largest arrays of this run
    run = kdviz.capture(teacher, student, data, batch_size=16, path=tmp_path / "r.kdviz", progress=False)
    captured = {key for key in run.array_keys() if not key.startswith("cache/")}  # the CKA stored after the capture
    assert set(keys) == captured and captured != set(run.array_keys())
    assert 0.7 < guess.total_bytes / run_bytes(tmp_path / "r.kdviz") < 1.4
    assert "for 96 samples" in str(guess) and "largest: teacher/attn/" in str(guess)


def test_capture_shows_the_estimate_on_its_progress_bar_before_it_goes_on(tmp_path, capsys):
    teacher, student = gpt2_pair()
    ids = torch.randint(0, 50, (12, 16), generator=torch.Generator().manual_seed(1))
    kdviz.capture(teacher, student, ids, batch_size=4, path=tmp_path / "r.kdviz", progress=True, attentions=False)
    err = capsys.readouterr().err
    assert re.search(r"kdviz capture r\.kdviz: .*run ≈ [\d.]+ KB, [\d.]+ s", err)
    assert "\nkdviz capture: about" not in err  # not a line of its own: a notebook would show it as an error


def test_a_run_that_would_not_fit_is_refused_before_it_fills_the_disk(tmp_path, monkeypatch):
    teacher, student = gpt2_pair()
    ids = torch.randint(0, 50, (12, 16), generator=torch.Generator().manual_seed(1))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(InputError, match=r"needs about .* but 1\.0 KB are free"):
        kdviz.capture(teacher, student, ids, batch_size=4, path=tmp_path / "big.kdviz", progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_data_of_unknown_length_is_estimated_per_sample():
    teacher, student = gpt2_pair()
    batches = (torch.randint(0, 50, (4, 16)) for _ in range(3))  # a generator: its length is not known ahead
    guess = kdviz.estimate(teacher, student, batches, attentions=False)
    assert guess.samples is None and guess.total_bytes is None and "not known ahead" in str(guess)
    assert guess.bytes_per_sample > 0


def test_sizes_and_durations_read_as_a_person_writes_them():
    assert cost.size(1.5e9) == "1.5 GB" and cost.size(2048) == "2.0 KB"
    assert cost.duration(5400) == "1.5 h" and cost.duration(90) == "2 min"


def test_exact_maps_kept_for_some_samples_are_counted_once(tmp_path):
    teacher, student = bert_pair()
    ids = torch.randint(1, 120, (96, 40), generator=torch.Generator().manual_seed(0))
    data = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    # the first batch keeps all its 16 samples exact, but the run keeps only 20 of 96: a per-sample count would
    # take the exact maps for every sample
    guess = kdviz.estimate(teacher, student, data, batch_size=16, attention_samples=20)
    run = kdviz.capture(teacher, student, data, batch_size=16, path=tmp_path / "r.kdviz", progress=False,
                        attention_samples=20)
    assert run.attention_samples == list(range(20))
    assert 0.7 < guess.total_bytes / run_bytes(tmp_path / "r.kdviz") < 1.4
    every = kdviz.estimate(teacher, student, data, batch_size=16, attention_samples="all")
    assert every.fixed_bytes == pytest.approx(guess.fixed_bytes * 96 / 20, rel=0.1)  # exact maps for 96, not 20
