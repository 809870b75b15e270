"""A run checks itself: what it wrote is recorded at commit, and every read is checked against it.

- Every array kdviz writes ends its codec chain with zarr v3's ``crc32c`` codec, so a chunk that was truncated or
  altered fails its checksum when read.
- ``manifest.json`` (written at commit, beside ``meta.json``) records each array's shape, dtype and chunk grid, and
  the size in bytes of each of its chunks; `check_array` compares an array's ``zarr.json`` with it before the array
  is read, so an edited shape or dtype is caught instead of reinterpreted, and `chunk_problems` finds absent or
  truncated chunk files without reading them (``kdviz info``).
- `CheckedLocalStore` (local runs) and `CheckedStore` (object storage) are the stores a run is read from: a chunk
  that was written but is absent raises instead of reading as fill values (kdviz writes every chunk of every array,
  zeros included).
- `verify_arrays` reads every chunk once (``kdviz verify``).

Runs of schema 1 (before this module) have no manifest and no checksums: they are read with the absent-chunk
check only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec
from zarr.storage import LocalStore, WrapperStore

from kdviz.errors import CorruptRunError

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
# a chunk key of zarr v3's default encoding: <array path>/c/<i>/<j>/… (or <array path>/c for a 0-d array)
CHUNK_KEY = re.compile(r"(?:^|/)c(?:/\d+)*$")
FIX = "capture the run again, or restore it from a copy (kdviz verify RUN lists every damaged array)"


def checksummed(compressors: Any) -> list[Any]:
    """The bytes-to-bytes codecs of a new array: ``compressors`` (None or a list) then crc32c last."""
    return [*(compressors or []), Crc32cCodec()]


# ---- the manifest -----------------------------------------------------------------------------------
def describe(array: zarr.Array) -> dict[str, Any]:
    """What the manifest records of one array's metadata."""
    return {"shape": list(array.shape), "dtype": str(np.dtype(array.dtype)), "chunks": list(array.chunks)}


def chunk_key(index: tuple[int, ...]) -> str:
    """The key of a chunk within its array (zarr v3's default encoding): ``c/0/3``, or ``c`` for a 0-d array."""
    return "c/" + "/".join(map(str, index)) if index else "c"


def chunk_sizes(array_dir: Path, array: zarr.Array) -> list[int | None]:
    """The size in bytes of each chunk file of a local array, in grid order (None where there is no file)."""
    sizes: list[int | None] = []
    for index in chunk_indices(array):
        try:
            sizes.append((array_dir / chunk_key(index)).stat().st_size)
        except FileNotFoundError:
            sizes.append(None)
    return sizes


def scan(root: zarr.Group, prefix: str = "", directory: Path | None = None) -> dict[str, dict[str, Any]]:
    """Manifest entries of every array under ``root`` (keys prefixed with ``prefix``), with their chunk sizes read
    from ``directory``, the group's directory on disk."""
    import warnings

    with warnings.catch_warnings():  # zarr notes that meta.json is not a zarr node; it is ours
        warnings.simplefilter("ignore")
        members = root.members(max_depth=None)
    entries = {}
    for path, node in members:
        if isinstance(node, zarr.Array):
            entry = describe(node)
            if directory is not None:
                entry["chunk_bytes"] = chunk_sizes(directory / path, node)
            entries[f"{prefix}{path}"] = entry
    return entries


def write_manifest(run_dir: Path, arrays: Mapping[str, Mapping[str, Any]]) -> None:
    """Write ``manifest.json`` atomically (a temporary file renamed over the old one)."""
    rows = ",\n".join(f"  {json.dumps(key)}: {json.dumps(entry)}" for key, entry in sorted(arrays.items()))
    text = f'{{"format": {MANIFEST_FORMAT}, "arrays": {{\n{rows}\n}}}}\n'  # one array a line
    tmp = run_dir / f".{MANIFEST_FILE}.tmp-{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, run_dir / MANIFEST_FILE)


def parse_manifest(text: str | None, where: str) -> dict[str, dict[str, Any]] | None:
    """The ``arrays`` of a manifest's text; None for a run that has none (schema 1)."""
    if text is None:
        return None
    try:
        manifest = json.loads(text)
        arrays = manifest["arrays"]
        if not isinstance(arrays, dict) or not all(isinstance(v, dict) for v in arrays.values()):
            raise TypeError("arrays must map keys to entries")
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptRunError(f"{where} is damaged ({exc}); {FIX}") from exc
    return arrays


def merge_manifest(run_dir: Path, replaced_prefixes: Iterable[str], added: Mapping[str, Mapping[str, Any]]) -> None:
    """Update a local run's manifest after groups were added or replaced (attributions, history, caches)."""
    path = run_dir / MANIFEST_FILE
    arrays = parse_manifest(path.read_text(encoding="utf-8"), str(path)) if path.is_file() else None
    if arrays is None:
        return  # a schema-1 run: no manifest to keep
    prefixes = tuple(p.rstrip("/") + "/" for p in replaced_prefixes)
    kept = {key: entry for key, entry in arrays.items() if not key.startswith(prefixes)}
    write_manifest(run_dir, {**kept, **added})


def check_array(run_name: str, key: str, array: zarr.Array, manifest: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Raise `CorruptRunError` when an array's metadata differs from what was written."""
    if manifest is None:
        return
    expected = manifest.get(key)
    if expected is None:
        raise CorruptRunError(f"array {key!r} of run {run_name!r} was not written by kdviz (it is not in the run's "
                              f"{MANIFEST_FILE}); {FIX}")
    found = describe(array)
    changed = [f"{field} {found[field]} (written as {expected.get(field)})" for field in ("shape", "dtype", "chunks")
               if found[field] != expected.get(field)]
    if changed:
        raise CorruptRunError(f"array {key!r} of run {run_name!r} has been altered: {'; '.join(changed)}; {FIX}")


# ---- reading ------------------------------------------------------------------------------------------
class MissingChunkError(CorruptRunError):
    """A chunk the run wrote is absent."""


def _require_chunk(key: str, value: Any, run_name: str) -> Any:
    """``value`` as read for ``key``; `MissingChunkError` when it is a chunk that is absent."""
    if value is None and CHUNK_KEY.search(key):
        array, _, chunk = key.rpartition("/c")
        raise MissingChunkError(f"chunk {('c' + chunk)!r} of array {array!r} in run {run_name!r} is missing; {FIX}")
    return value


class CheckedLocalStore(LocalStore):
    """A local run's store in which an absent chunk raises `MissingChunkError` (never fill values). A subclass
    rather than a wrapper, so zarr keeps its synchronous read path for local files (a wrapper read 4× slower)."""

    def __init__(self, root: Path | str, *, read_only: bool = True, run_name: str = "") -> None:
        super().__init__(root, read_only=read_only)
        self.run_name = run_name

    def with_read_only(self, read_only: bool = False) -> CheckedLocalStore:
        return type(self)(self.root, read_only=read_only, run_name=self.run_name)

    async def get(self, key: str, prototype: Any = None, byte_range: Any = None) -> Any:
        return _require_chunk(key, await super().get(key, prototype, byte_range), self.run_name)

    def get_sync(self, key: str, *, prototype: Any = None, byte_range: Any = None) -> Any:
        return _require_chunk(key, super().get_sync(key, prototype=prototype, byte_range=byte_range), self.run_name)


class CheckedStore(WrapperStore):
    """Any other store (object storage) wrapped so that an absent chunk raises `MissingChunkError`."""

    def __init__(self, store: Any, run_name: str = "") -> None:
        super().__init__(store)
        self.run_name = run_name

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        return _require_chunk(key, await self._store.get(key, prototype, byte_range), self.run_name)

    def _with_store(self, store: Any) -> CheckedStore:
        return type(self)(store, self.run_name)


# ---- kdviz verify ----------------------------------------------------------------------------------------
@dataclass
class Damage:
    """One damaged part of a run: the array (or file) and what is wrong."""

    where: str
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


def chunk_indices(array: zarr.Array) -> Iterator[tuple[int, ...]]:
    """Every chunk index of an array's grid."""
    grid = [max(1, -(-size // chunk)) if size else 0 for size, chunk in zip(array.shape, array.chunks, strict=True)]
    yield from np.ndindex(*grid) if grid else [()]


def chunk_selection(array: zarr.Array, index: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, array.chunks, array.shape, strict=True))


def verify_arrays(root: zarr.Group, manifest: Mapping[str, Mapping[str, Any]] | None, run_name: str, *,
                  directory: Path | None = None, progress: bool = True) -> list[Damage]:
    """Read every chunk of every array of a run once (through a `CheckedStore`) and list what is damaged: arrays
    missing, altered or unknown to the manifest, and chunks that are absent, of the wrong size (local runs, in
    ``directory``), fail their checksum or do not decode."""
    from tqdm.auto import tqdm

    damage: list[Damage] = []
    try:
        found = scan(root)
    except Exception as exc:  # a broken zarr.json somewhere in the hierarchy
        return [Damage("arrays", f"the hierarchy cannot be listed ({exc})")]
    expected = manifest if manifest is not None else found
    arrays: dict[str, zarr.Array] = {}
    for key in sorted(expected):
        try:
            node = root[key]
        except KeyError:
            damage.append(Damage(key, "missing (its zarr.json is gone)"))
            continue
        except Exception as exc:
            damage.append(Damage(key, f"its zarr.json cannot be read ({exc})"))
            continue
        try:
            check_array(run_name, key, node, manifest)
        except CorruptRunError as exc:
            damage.append(Damage(key, str(exc).split(": ", 1)[-1].removesuffix(f"; {FIX}")))
            continue
        arrays[key] = node
    damage += [Damage(key, f"not written by kdviz (not in {MANIFEST_FILE})") for key in sorted(set(found) - set(expected))]
    total = sum(1 for array in arrays.values() for _ in chunk_indices(array))
    with tqdm(total=total, desc=f"verifying {run_name}", unit="chunk", disable=not progress) as bar:
        for key, array in arrays.items():
            reported = set()
            if directory is not None and manifest is not None:
                for name, problem in chunk_problems(directory / key, array, manifest[key]):
                    damage.append(Damage(key, problem))
                    reported.add(name)
            for index in chunk_indices(array):
                name = chunk_key(index)
                if name in reported:
                    bar.update()
                    continue
                try:
                    array[chunk_selection(array, index)]
                except MissingChunkError:
                    damage.append(Damage(key, f"chunk {name} is missing"))
                except Exception as exc:  # a checksum mismatch, a truncated or undecodable chunk
                    reason = "fails its checksum" if "checksum" in str(exc).lower() else f"cannot be decoded ({exc})"
                    damage.append(Damage(key, f"chunk {name} {reason}"))
                bar.update()
    return damage


def chunk_problems(array_dir: Path, array: zarr.Array, entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(chunk key, what is wrong) for each of a local array's chunk files that differs from its written size
    (``chunk c/0 is missing``, ``chunk c/0 has 10 bytes, written with 48``); nothing is read, files are looked up."""
    written = entry.get("chunk_bytes")
    if written is None:
        return []
    problems = []
    for index, found, expected in zip(chunk_indices(array), chunk_sizes(array_dir, array), written, strict=False):
        if found is None:
            problems.append((chunk_key(index), f"chunk {chunk_key(index)} is missing"))
        elif found != expected:
            problems.append((chunk_key(index), f"chunk {chunk_key(index)} has {found} bytes, written with {expected}"))
    return problems
