"""`kdviz.capture` under torchrun: 2 processes, the gloo backend, on CPU. The run equals a capture in one process
(arrays and metadata), live CKA's accumulators are summed across ranks, and a rank that fails is named while no
run (and no part of one) is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from browser import free_port
from distributed_capture import CASES, demo_case

import kdviz
from kdviz.capture import live_cka
from kdviz.distributed import Shard, batch_order
from kdviz.parts import merge_parts, parts_dir
from kdviz.store import RunWriter

WORKER = Path(__file__).resolve().parent / "distributed_capture.py"

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def torchrun(out: Path, *args: str, processes: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               f"--master_port={free_port()}", str(WORKER), str(out), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=400, env=env)


def assert_same_run(distributed: kdviz.Run, single: kdviz.Run) -> None:
    assert distributed.array_keys() == single.array_keys()
    for key in single.array_keys():
        got, expected = distributed.array(key)[:], single.array(key)[:]
        assert got.dtype == expected.dtype and got.shape == expected.shape, key
        if np.issubdtype(expected.dtype, np.floating):  # one thread per rank vs several here: last-bit differences
            np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), rtol=1e-5,
                                       atol=2e-3 if expected.dtype == np.float16 else 1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(got, expected, err_msg=key)
    meta_d, meta_s = dict(distributed.meta), dict(single.meta)
    for meta in (meta_d, meta_s):
        meta.pop("created")
        for role in ("teacher", "student"):
            for stat in ("accuracy", "perplexity"):
                meta[role][stat] = None if meta[role][stat] is None else round(meta[role][stat], 9)
    assert meta_d == meta_s


@pytest.mark.timeout(600)
@pytest.mark.parametrize("chunk_bytes", [None, 1], ids=["copied", "chunks-moved"])
def test_torchrun_capture_equals_a_capture_in_one_process(tmp_path, chunk_bytes):
    """Default chunking (small arrays are copied into the run) and one sample per chunk (every array is assembled
    by moving the parts' chunk files)."""
    # with one sample per chunk: the image pair, and the language model (kept logits: rows unlike the batches')
    cases = list(CASES) if chunk_bytes is None else ["demo-cnn", "gpt2"]
    done = torchrun(tmp_path / "dist", *cases, *(() if chunk_bytes is None else ("--chunk-bytes", str(chunk_bytes))))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    for name in cases:
        make = CASES[name]
        teacher, student, kwargs = make()
        single = kdviz.capture(teacher, student, path=tmp_path / "single" / f"{name}.kdviz", progress=False, **kwargs)
        merged = kdviz.Run.open(tmp_path / "dist" / f"{name}.kdviz")
        assert_same_run(merged, single)
        if chunk_bytes == 1:
            assert zarr.open_array(store=str(merged.path / "teacher" / "logits"), mode="r").chunks[0] == 1
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == sorted([f"{n}.kdviz" for n in cases] + ["live_cka.npy"])
    teacher, student, kwargs = demo_case()
    expected = live_cka(teacher, student, kwargs["data"], layers=kwargs["layers"], batch_size=32, progress=False)
    np.testing.assert_allclose(np.load(tmp_path / "dist" / "live_cka.npy"), expected["cross"], rtol=1e-6, atol=1e-9)


@pytest.mark.timeout(300)
def test_a_rank_that_fails_is_named_and_no_run_is_left(tmp_path):
    out = tmp_path / "dist"
    done = torchrun(out, "demo-cnn", "--fail-on-rank", "1")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "distributed capture failed while capturing its batches on rank 1" in output
    assert "simulated failure in the student's forward pass" in output
    assert list(out.iterdir()) == []  # neither the run nor its parts nor a temporary directory


def test_batches_are_dealt_round_robin_and_merged_back_in_order():
    shards = [Shard(rank, 3) for rank in range(3)]
    assert [[i for i in range(8) if s.owns(i)] for s in shards] == [[0, 3, 6], [1, 4, 7], [2, 5]]
    captured = [[0, 3, 6], [1, 4, 7], [2, 5]]
    rows = [[{"x": 10 + i} for i in indices] for indices in captured]
    order = batch_order(captured, rows)
    assert [r["x"] for _, _, r in order] == [10 + i for i in range(8)]
    assert [(rank, local) for rank, local, _ in order][:4] == [(0, 0), (1, 0), (2, 0), (0, 1)]
    assert not Shard().distributed and Shard().owns(5)


def test_rank_0_moves_the_chunks_that_follow_batches_and_copies_the_rest(tmp_path):
    """Two parts as two ranks write them (batches of 4 rows dealt round-robin, the last one of 2 rows): an array
    chunked by 2 rows is assembled by renaming chunk files, one chunked by 8 rows is copied; both read back in the
    data's order."""
    final = tmp_path / "run.kdviz"
    parts_dir(final).mkdir()
    rows = np.arange(14 * 3, dtype=np.float32).reshape(14, 3)
    batches = [(0, 0, 4), (1, 0, 4), (0, 1, 4), (1, 1, 2)]  # (rank, local index, rows), in data order
    starts = np.cumsum([0] + [count for *_, count in batches])
    for rank in (0, 1):
        with RunWriter(parts_dir(final) / f"rank-{rank}") as writer:
            writer.configure("small", chunk_rows=2)
            writer.configure("big", chunk_rows=8)
            for (owner, _, _), start, stop in zip(batches, starts[:-1], starts[1:], strict=True):
                if owner == rank:
                    writer.append_batch({"small": rows[start:stop], "big": rows[start:stop] * 10})
            writer.commit({"part_of": final.name})
    order = [(rank, local, {"small": count, "big": count}) for rank, local, count in batches]
    meta = {"task": "classification", "n_samples": 14, "teacher": {"name": "t"}, "student": {"name": "s"}, "layer_map": {"pairs": []}}
    done = merge_parts(final, False, order, meta)
    assert done == {"moved": ["small"], "copied": ["big"]}
    run = kdviz.Run.open(final)
    np.testing.assert_array_equal(run.array("small")[:], rows)
    np.testing.assert_array_equal(run.array("big")[:], rows * 10)
    assert not parts_dir(final).exists()


@pytest.mark.timeout(300)
def test_misuse_under_torchrun_is_caught_on_every_rank(tmp_path):
    """A capture on rank 0 alone (distributed=False) works while the other rank waits; a DataLoader already split by
    a DistributedSampler is refused on every rank; live CKA failing on one rank raises on both, naming it."""
    out = tmp_path / "dist"
    out.mkdir()
    done = torchrun(out, "--scenario", "rank0-only", "sampler", "cka-fails-on-rank-1")  # one job, one after another
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 captured 200 samples alone" in done.stdout and kdviz.Run.open(out / "rank0.kdviz").n_samples == 200
    assert all(f"rank {r} refused: under torchrun, give kdviz.capture the same data" in done.stdout for r in (0, 1))
    for rank in (0, 1):
        assert f"rank {rank} raised: distributed capture failed while computing live CKA on rank 1" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["rank0.kdviz"]
