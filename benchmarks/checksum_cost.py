"""Checksum cost: a full read of the demo runs through kdviz's checks, against reading the same arrays without them.

With checks: `Run.open` (meta.json validated, manifest read), then every array read whole through `Run.array`: its
metadata compared with the run's manifest, every chunk read through `CheckedLocalStore` and its crc32c verified.
Without: the same arrays (same values, chunk grid and compression) copied into a plain zarr group with no crc32c
codec, read whole through zarr directly. The two are timed interleaved in one process; the ratio is with / without.
Goal: under 1.1×.

Run: python benchmarks/checksum_cost.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, time_interleaved, write_result


def plain_copy(run, target: Path) -> list[str]:
    """Copy every array of ``run`` into a zarr group at ``target`` with the same chunks and compressor, no crc32c."""
    from zarr.codecs import Crc32cCodec

    group = zarr.open_group(str(target), mode="w", zarr_format=3)
    keys = run.array_keys()
    for key in keys:
        source = run._root[key]
        compressors = [c for c in source.compressors if not isinstance(c, Crc32cCodec)]
        group.create_array(key, data=np.asarray(source[...]), chunks=source.chunks, compressors=compressors or None,
                           config={"write_empty_chunks": True})
    return keys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from kdviz.demo.build import build_demo_runs
    from kdviz.store import Run

    with tempfile.TemporaryDirectory() as tmp:
        print("building the demo runs …", flush=True)
        runs = build_demo_runs(Path(tmp) / "runs", progress=False, attributions=False)
        plain = {run.name: (Path(tmp) / "plain" / run.name, plain_copy(run, Path(tmp) / "plain" / run.name)) for run in runs}
        total_bytes = sum(Run.open(run.path).array(key).read().nbytes for run in runs for key in run.array_keys())

        keys = {run.name: run.array_keys() for run in runs}  # both sides read the same known keys (no listing)

        def checked() -> None:
            for run in runs:
                opened = Run.open(run.path)  # meta.json validated against the schema, manifest read
                for key in keys[run.name]:
                    opened.array(key).read()  # zarr.json checked against the manifest, every chunk's crc32c

        def unchecked() -> None:
            for path, keys in plain.values():
                group = zarr.open_group(str(path), mode="r", zarr_format=3)
                for key in keys:
                    np.asarray(group[key][...])

        times = time_interleaved({"checked": checked, "unchecked": unchecked}, repeats=args.repeats)
    with_checks, without = median(times["checked"]), median(times["unchecked"])
    ratio = with_checks / without
    print(f"full read of the 3 demo runs ({total_bytes / 1e6:.1f} MB decoded), median of {args.repeats}:")
    print(f"  with checks (schema, manifest, crc32c)        {1000 * with_checks:8.1f} ms")
    print(f"  without (same arrays, plain zarr)             {1000 * without:8.1f} ms")
    print(f"  ratio {ratio:.3f}×  (goal < 1.1×)")
    print("wrote", write_result("checksum_cost", {"bytes": total_bytes, "checked_s": times["checked"],
                                                  "unchecked_s": times["unchecked"], "ratio": ratio}))


if __name__ == "__main__":
    main()
