"""Assembling one run from the parts that the ranks of a distributed capture wrote (`kdviz.distributed`).

Part of the store floor: it reads the parts' zarr arrays and moves their chunk files into the run being committed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from kdviz.store import RunWriter


def parts_dir(final_path: Path) -> Path:
    """Where the ranks write their parts: a hidden sibling of the run, removed once the run is committed."""
    return final_path.with_name(f".{final_path.name}.parts")


def merge_parts(final_path: Path, overwrite: bool, order: list[tuple[int, int, dict[str, int]]],
                meta: Mapping[str, Any]) -> dict[str, list[str]]:
    """Rank 0: put every part's rows into the run in the data's order, commit it, and remove the parts.

    ``order`` lists the global batches as (rank, index of the batch on that rank, rows per key), in data order.
    An array whose chunks fall on batch boundaries (the large ones: attention maps are one sample per chunk) is
    assembled by moving its chunk files, one rename each, without reading them; the others (small rows, many per
    chunk) are copied row by row. Either way the run has the arrays and chunking of a capture in one process.
    Returns the keys ``{"moved": [...], "copied": [...]}``.
    """
    directory = parts_dir(final_path)
    parts = {rank: zarr.open_group(store=str(directory / f"rank-{rank}"), mode="r") for rank in {r for r, _, _ in order}}
    keys = list(dict.fromkeys(key for _, _, rows in order for key in rows))
    moved = [key for key in keys if _chunks_follow_batches(key, order, parts)]
    copied = [key for key in keys if key not in moved]
    cursors: dict[tuple[int, str], int] = {}
    with RunWriter(final_path, overwrite=overwrite) as writer:
        for rank, _, rows in order:
            batch = {}
            for key in copied:
                if rows.get(key):
                    start = cursors.get((rank, key), 0)
                    batch[key] = np.asarray(parts[rank][key][start:start + rows[key]])
                    cursors[(rank, key)] = start + rows[key]
            if batch:
                writer.append_batch(batch)
        staging = writer.finish_rows()
        for key in moved:
            _move_chunks(key, order, parts, directory, staging)
        writer.commit(meta)
    shutil.rmtree(directory, ignore_errors=True)
    return {"moved": moved, "copied": copied}


def _chunks_follow_batches(key: str, order: list[tuple[int, int, dict[str, int]]], parts: Mapping[int, zarr.Group]) -> bool:
    """Whether every chunk of ``key`` in every part holds rows of one batch only, at a chunk boundary of the run."""
    arrays = [parts[rank][key] for rank in {r for r, _, rows in order if rows.get(key)}]
    chunk_rows = {array.chunks[0] for array in arrays}
    if len(chunk_rows) != 1 or len({(a.dtype, a.shape[1:], a.chunks) for a in arrays}) != 1:
        return False
    size = chunk_rows.pop()
    total = sum(rows.get(key, 0) for _, _, rows in order)
    offset = 0
    for _, _, rows in order:
        count = rows.get(key, 0)
        if count and (offset % size or (count % size and offset + count != total)):
            return False
        offset += count
    return True


def _move_chunks(key: str, order: list[tuple[int, int, dict[str, int]]], parts: Mapping[int, zarr.Group],
                 directory: Path, staging: Path) -> None:
    """Create ``key`` in the run being committed, with the parts' metadata, and rename each part chunk into place."""
    template = next(parts[rank][key] for rank, _, rows in order if rows.get(key))
    total = sum(rows.get(key, 0) for _, _, rows in order)
    zarr.open_group(store=str(staging), mode="a", zarr_format=3).create_array(
        key, shape=(total, *template.shape[1:]), chunks=template.chunks, dtype=template.dtype,
        compressors=template.compressors, fill_value=template.fill_value, config={"write_empty_chunks": True})
    size = template.chunks[0]
    inner = "/0" * (len(template.shape) - 1)  # one chunk across every other axis
    local: dict[int, int] = {}
    offset = 0
    for rank, _, rows in order:
        count = rows.get(key, 0)
        first_local = local.get(rank, 0) // size
        for step in range(-(-count // size)):
            source = directory / f"rank-{rank}" / key / "c" / f"{first_local + step}{inner}"
            target = staging / key / "c" / f"{offset // size + step}{inner}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        local[rank] = local.get(rank, 0) + count
        offset += count
