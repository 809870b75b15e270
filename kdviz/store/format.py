"""The on-disk format of a run: its schema version, chunk size and meta file, and reading ``meta.json`` and
``manifest.json`` with their checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from kdviz import integrity, remote
from kdviz._version import __version__
from kdviz.errors import (
    CorruptRunError,
    SchemaTooNewError,
)
from kdviz.meta_schema import validate_meta

# 3: each sample's attention digest, exact maps for `capture.attention_samples` only; 2: checksummed chunks and
# manifest.json (`kdviz.integrity`). 1 and 2 are still read (the attention views need 3).
SCHEMA_VERSION = 3
META_FILE = remote.META_FILE
READ_ERRORS = (ValueError, RuntimeError, OSError, EOFError)  # what zarr and its codecs raise for damaged bytes
CHUNK_TARGET_BYTES = 2 * 1024 * 1024


BLOSC_FLOATS = {"cname": "lz4", "clevel": 5}  # with bit-shuffle
ZSTD_INTEGERS = {"level": 0}


def compressors_for(dtype: np.dtype) -> list[Any]:
    """The compression codecs of a new array, chosen by benchmarks/run_codecs.py on real-shape captures: Blosc LZ4
    with bit-shuffle for floats (attention maps to 0.69× in 0.36× the raw write time, per-token statistics to
    0.4–0.9×), zstd level 0 for integers (token ids to 0.37×). Both also shrink a run's last, padded chunk to its
    data, which raw storage writes in full."""
    from zarr.codecs import BloscCodec, ZstdCodec

    if np.issubdtype(dtype, np.floating):
        return [BloscCodec(**BLOSC_FLOATS, shuffle="bitshuffle", typesize=np.dtype(dtype).itemsize)]
    return [ZstdCodec(**ZSTD_INTEGERS)]


def stored_bytes_per_row(rows: np.ndarray) -> int:
    """The bytes one row of ``rows`` [B, ...] takes on disk under `compressors_for`, measured by encoding its first
    row with the same codecs (numcodecs', which zarr's wrap), plus the 4-byte checksum: for capture's estimate."""
    import numcodecs

    row = np.ascontiguousarray(rows[:1])
    if np.issubdtype(row.dtype, np.floating):
        codec = numcodecs.Blosc(**BLOSC_FLOATS, shuffle=numcodecs.Blosc.BITSHUFFLE)
    else:
        codec = numcodecs.Zstd(**ZSTD_INTEGERS)
    return len(codec.encode(row)) + 4


def _read_meta(meta_path: Path) -> dict[str, Any]:
    try:
        text = meta_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptRunError(f"{str(meta_path)!r} is not valid JSON ({exc}); the run is damaged, capture it again") from exc
    return _parse_meta(text, meta_path)


def _open_checked(path: Path) -> zarr.Group:
    """A local run's root, read through a `kdviz.integrity.CheckedLocalStore` (an absent chunk raises)."""
    store = integrity.CheckedLocalStore(str(path), read_only=True, run_name=path.name.removesuffix(".kdviz"))
    return zarr.open_group(store=store, mode="r", zarr_format=3)


def _read_manifest(path: Path, meta: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    manifest_path = path / integrity.MANIFEST_FILE
    if not manifest_path.is_file():
        if meta["schema_version"] >= 2:
            raise CorruptRunError(f"run {str(path)!r} has no {integrity.MANIFEST_FILE}; {integrity.FIX}")
        return None
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptRunError(f"{str(manifest_path)!r} cannot be read ({exc}); {integrity.FIX}") from exc
    return integrity.parse_manifest(text, str(manifest_path))


def _parse_meta(text: str, meta_path: Path | str) -> dict[str, Any]:
    """Check and return a run's metadata (``meta_path`` names it in errors)."""
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptRunError(f"{str(meta_path)!r} is not valid JSON ({exc}); the run is damaged, capture it again") from exc
    if not isinstance(meta, dict) or "schema_version" not in meta:
        raise CorruptRunError(f"{str(meta_path)!r} has no schema_version; it was not written by kdviz, capture the run again")
    version = meta["schema_version"]
    if not isinstance(version, int):
        raise CorruptRunError(f"{str(meta_path)!r} has a non-integer schema_version {version!r}; capture the run again")
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"the run at {str(meta_path).removesuffix('/' + META_FILE)!r} uses schema {version}, "
            f"written by kdviz {meta.get('kdviz_version', '?')}; "
            f"this kdviz {__version__} reads schema {SCHEMA_VERSION} at most: upgrade kdviz (pip install -U kdviz)"
        )
    return validate_meta(meta, repr(str(meta_path)))


# ---- writing --------------------------------------------------------------------------------------
