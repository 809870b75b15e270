"""Capture under ``torchrun``: each process (rank) captures every world-th batch into a part of the run, and rank 0
merges the parts in the data's order and commits the run once every rank has finished.

Nothing here starts processes: kdviz uses the process group ``torchrun`` (or the caller) set up with
``torch.distributed.init_process_group``. Every collective goes through `agree`, so a failure on one rank reaches
every rank as a `CaptureError` naming the failed ranks instead of leaving the others waiting.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from kdviz import remote
from kdviz.errors import CaptureError, InputError
from kdviz.parts import merge_parts, parts_dir
from kdviz.store import RunWriter, refuse_existing

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place in the process group: rank ``rank`` of ``world`` (0 of 1 without torch.distributed)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Shard:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def owns(self, batch_index: int) -> bool:
        """Batches are dealt round-robin: rank r captures batches r, r + world, r + 2·world, …"""
        return batch_index % self.world == self.rank


def default_device(shard: Shard) -> torch.device:
    """One GPU per process under torchrun (``cuda:LOCAL_RANK``), else CUDA when available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", shard.rank)) if shard.distributed else 0)
    return torch.device("cpu")


_CPU_GROUPS: dict[int, Any] = {}


def cpu_group() -> Any:
    """A gloo process group over every rank, for kdviz's small CPU exchanges (reports, CKA accumulators): NCCL, the
    usual GPU backend, reduces only GPU tensors. The default group when it is gloo already; otherwise made once per
    default group (a process group destroyed and initialised again gets a new one)."""
    if dist.get_backend() == "gloo":
        return None
    world = id(dist.group.WORLD)
    if world not in _CPU_GROUPS:
        _CPU_GROUPS.clear()
        _CPU_GROUPS[world] = dist.new_group(backend="gloo")
    return _CPU_GROUPS[world]


def shard_for(distributed: bool | None, data: Any) -> Shard:
    """The shard a capture over ``data`` runs in: the process group's under torchrun (``distributed`` None or True),
    this process alone with ``distributed=False``. Checked on every rank before any collective: ``True`` without a
    process group of several ranks, and a loader already split between the ranks, raise `InputError`."""
    shard = Shard.current() if distributed is not False else Shard()
    if distributed and not shard.distributed:
        raise InputError("distributed=True needs an initialised torch.distributed process group of several ranks "
                         "(launch with torchrun and call torch.distributed.init_process_group first)")
    if shard.distributed:
        refuse_sharded_loader(data)
    return shard


def refuse_sharded_loader(data: Any) -> None:
    """kdviz shares the batches out itself, so every rank must see the same data in the same order: a DataLoader
    already split by a DistributedSampler would give each rank different batch numbers (checked on every rank,
    before any collective)."""
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    if isinstance(data, DataLoader) and isinstance(getattr(data, "sampler", None), DistributedSampler):
        raise InputError("under torchrun, give kdviz.capture the same data on every rank, without a DistributedSampler: "
                         "kdviz deals the batches out to the ranks itself (and a shuffled loader needs the same seed)")


def agree(step: str, error: BaseException | None, payload: Any = None) -> list[Any]:
    """Every rank reports how ``step`` went; returns every rank's ``payload`` when all succeeded, else raises on every
    rank a `CaptureError` that names the ranks that failed and why."""
    report = (None if error is None else f"{type(error).__name__}: {error}", payload)
    reports: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(reports, report, group=cpu_group())
    failed = [(rank, message) for rank, (message, _) in enumerate(reports) if message is not None]
    if failed:
        detail = "; ".join(f"rank {rank}: {message}" for rank, message in failed)
        raise CaptureError(f"distributed capture failed while {step} on rank{'s' if len(failed) > 1 else ''} "
                           f"{', '.join(str(r) for r, _ in failed)} ({detail}); no run was written") from error
    return [payload for _, payload in reports]


def attempt(action: Callable[[], T]) -> tuple[T | None, BaseException | None]:
    """Run ``action``, returning its result or the exception it raised (to report through `agree`)."""
    try:
        return action(), None
    except Exception as exc:  # reported to every rank by agree, then raised there
        return None, exc


def prepare(final_path: Path, overwrite: bool, shard: Shard) -> None:
    """Every rank checks the (shared) destination, so an existing run raises `RunExistsError` everywhere with no
    collective; then rank 0 clears stale parts before any rank writes, and every rank learns the outcome."""
    refuse_existing(final_path, overwrite)

    def clear() -> None:
        if shard.rank == 0:
            shutil.rmtree(parts_dir(final_path), ignore_errors=True)
            parts_dir(final_path).mkdir(parents=True)

    agree("preparing the run directory", attempt(clear)[1])


def write_part(final_path: Path, shard: Shard, batches: Any) -> list[dict[str, int]]:
    """Write this rank's batches (an iterable of record dicts) to its part; returns the rows per key of each batch."""
    rows: list[dict[str, int]] = []
    with RunWriter(parts_dir(final_path) / f"rank-{shard.rank}", overwrite=True) as writer:
        for records in batches:
            rows.append({key: len(value) for key, value in records.items()})
            writer.append_batch(records)
        writer.commit({"part_of": final_path.name, "rank": shard.rank, "world": shard.world})
    return rows


def batch_order(reports: list[list[int]], rows: list[list[dict[str, int]]]) -> list[tuple[int, int, dict[str, int]]]:
    """Global batch order from each rank's captured batch indices and their rows: (rank, local index, rows)."""
    placed = [(index, rank, local) for rank, indices in enumerate(reports) for local, index in enumerate(indices)]
    return [(rank, local, rows[rank][local]) for _, rank, local in sorted(placed)]


def require_path(path: Any) -> None:
    if path is None:
        raise InputError("under torch.distributed, capture needs path=: one location that every rank can reach "
                         "(a shared filesystem), where rank 0 commits the run")
    if remote.is_url(path):
        raise InputError(f"under torch.distributed, capture writes its parts to a shared local path, not {path!r}; "
                         "capture to a shared path, then publish the run with kdviz.remote.upload")


def capture_in_parts(session: Any, final_path: Path, overwrite: bool, make_meta: Callable[[], dict[str, Any]]) -> None:
    """The distributed form of one capture: every rank writes its part, then rank 0 merges the parts with the
    sessions' statistics combined (`CaptureSession.absorb`) and commits. Every rank returns once the run is in place,
    or raises a `CaptureError` naming the failed ranks; the parts are removed either way."""
    shard = session.shard
    try:
        prepare(final_path, overwrite, shard)
        rows, error = attempt(lambda: write_part(final_path, shard, session))
        reports = agree("capturing its batches", error, None if error else (session.captured, rows, session.state()))

        def finish() -> None:
            if shard.rank == 0:
                session.absorb([state for _, _, state in reports])
                order = batch_order([captured for captured, _, _ in reports], [part_rows for _, part_rows, _ in reports])
                merge_parts(final_path, overwrite, order, make_meta())

        agree("merging the parts into the run (rank 0)", attempt(finish)[1])
    finally:
        if shard.rank == 0:
            shutil.rmtree(parts_dir(final_path), ignore_errors=True)
