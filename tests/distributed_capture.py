"""A `kdviz.capture` script to launch with torchrun (tests/test_distributed.py does, with the gloo backend on CPU):

    torchrun --nproc_per_node 2 tests/distributed_capture.py OUT_DIR [CASE ...] [--fail-on-rank R]

Each CASE (default: all of `CASES`) is captured into OUT_DIR/CASE.kdviz by every rank together. The test captures
the same cases in one process and compares. ``--fail-on-rank R`` makes rank R's student raise on its second batch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import bert_pair, gpt2_pair

import kdviz
import kdviz.store
from kdviz.capture import live_cka


def demo_case() -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """The demo CNN pair on 200 digits: 7 batches of 32 (the last one 8), so the ranks get unequal shares."""
    from kdviz.demo.build import demo_pair

    teacher, student, (x, y) = demo_pair("digits-cnn")
    return teacher, student, {"data": (x[:200], y[:200]), "layers": ["layer*"], "batch_size": 32,
                              "class_names": [str(d) for d in range(10)]}


def bert_case() -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """A BERT pair built from configs on padded token ids with labels."""
    teacher, student = bert_pair()
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 120, (40, 16), generator=generator)
    mask = torch.ones_like(ids)
    mask[::3, 11:] = 0
    labels = torch.randint(0, 3, (40,), generator=generator)
    return teacher, student, {"data": {"input_ids": ids, "attention_mask": mask, "labels": labels}, "batch_size": 8}


def gpt2_case() -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """A GPT-2 pair built from configs: per-token statistics, decoded tokens and kept full logits depend on order."""
    teacher, student = gpt2_pair(vocab=50)
    ids = torch.randint(1, 50, (30, 12), generator=torch.Generator().manual_seed(2))
    return teacher, student, {"data": {"input_ids": ids}, "batch_size": 4, "keep_full_logits": [0, 5, 17, 29],
                              "tokenizer": [f"tok{i}" for i in range(50)]}


CASES: dict[str, Callable[[], tuple[nn.Module, nn.Module, dict[str, Any]]]] = {
    "demo-cnn": demo_case, "bert": bert_case, "gpt2": gpt2_case}


def fail_on_second_batch(model: nn.Module) -> nn.Module:
    """Make ``model``'s second forward pass raise (a rank that dies mid-capture); its modules keep their names."""
    forward, calls = model.forward, []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated failure in the student's forward pass")
        return forward(*args, **kwargs)

    model.forward = failing
    return model


def run_scenario(scenario: str, out: Path) -> None:
    """The ways a distributed job can use capture wrongly or partly; each prints what happened on each rank."""
    teacher, student, kwargs = demo_case()
    rank = dist.get_rank()
    if scenario == "rank0-only":
        if rank == 0:
            run = kdviz.capture(teacher, student, path=out / "rank0.kdviz", progress=False, distributed=False, **kwargs)
            print(f"rank 0 captured {run.n_samples} samples alone", flush=True)
        dist.barrier()
    elif scenario == "sampler":
        from torch.utils.data import DataLoader, TensorDataset
        from torch.utils.data.distributed import DistributedSampler

        dataset = TensorDataset(*kwargs.pop("data"))
        loader = DataLoader(dataset, batch_size=32, sampler=DistributedSampler(dataset, shuffle=False))
        try:
            kdviz.capture(teacher, student, loader, path=out / "sampler.kdviz", progress=False, **kwargs)
        except kdviz.KdvizError as exc:
            print(f"rank {rank} refused: {exc}", flush=True)
    else:
        if rank == 1:
            student = fail_on_second_batch(student)
        try:
            live_cka(teacher, student, kwargs["data"], layers=kwargs["layers"], batch_size=32, progress=False)
        except kdviz.KdvizError as exc:
            print(f"rank {rank} raised: {exc}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("cases", nargs="*", default=list(CASES))
    parser.add_argument("--fail-on-rank", type=int, default=None)
    parser.add_argument("--scenario", choices=["rank0-only", "sampler", "cka-fails-on-rank-1"], nargs="+", default=None,
                        help="rank0-only: rank 0 captures alone (distributed=False) while rank 1 waits; sampler: a "
                             "DataLoader with a DistributedSampler (refused); cka-fails-on-rank-1: live CKA fails on rank 1")
    parser.add_argument("--chunk-bytes", type=int, default=None, help="chunk size target of the run's arrays (tests: "
                        "1 byte makes every chunk one sample, so rank 0 assembles every array by moving chunk files)")
    args = parser.parse_args()
    if args.chunk_bytes is not None:
        kdviz.store.format.CHUNK_TARGET_BYTES = args.chunk_bytes  # where the writers read it
    dist.init_process_group("gloo")
    try:
        if args.scenario is not None:
            for scenario in args.scenario:
                run_scenario(scenario, args.out)
            return
        for name in args.cases:
            teacher, student, kwargs = CASES[name]()
            if args.fail_on_rank == dist.get_rank():
                student = fail_on_second_batch(student)
            run = kdviz.capture(teacher, student, path=args.out / f"{name}.kdviz", progress=False, **kwargs)
            print(f"rank {dist.get_rank()}: {run.name} has {run.n_samples} samples", flush=True)
        if args.fail_on_rank is None:
            teacher, student, kwargs = demo_case()
            cka = live_cka(teacher, student, kwargs["data"], layers=kwargs["layers"], batch_size=32, progress=False)
            if dist.get_rank() == 0:
                np.save(args.out / "live_cka.npy", cka["cross"])
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
