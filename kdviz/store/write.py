"""The writers: `RunWriter` streams record batches into a hidden sibling of the run and renames it into place
at commit; `GroupWriter` adds groups (attributions, history) to an existing run."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import tempfile
import threading
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

import kdviz.store.format as run_format
from kdviz import integrity, remote, temporaries
from kdviz._version import __version__
from kdviz.errors import (
    CorruptRunError,
    InputError,
    NotARunError,
    RunExistsError,
)
from kdviz.store.format import META_FILE, SCHEMA_VERSION


class _StreamedArray:
    """Appends rows to one zarr array, writing only whole chunks until ``flush`` (bounded buffer)."""

    def __init__(self, group: zarr.Group, key: str, first: np.ndarray, chunk_rows: int | None, compress: bool) -> None:
        row_shape = first.shape[1:]
        row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * first.dtype.itemsize)
        # Chunks of about run_format.CHUNK_TARGET_BYTES that always hold whole samples: a large sample (a 512-token attention map)
        # is a chunk of its own, so one sample is read alone; small ones are grouped, so writes are not per-sample I/O.
        self.chunk_rows = chunk_rows or max(1, run_format.CHUNK_TARGET_BYTES // row_bytes)
        self.array = group.create_array(
            key,
            shape=(0, *row_shape),
            chunks=(self.chunk_rows, *row_shape),
            dtype=first.dtype,
            compressors=integrity.checksummed(run_format.compressors_for(first.dtype) if compress else None),
            fill_value=0,
            config={"write_empty_chunks": True},  # skips a scan of every chunk for fill values (2× faster writes)
        )
        self.length = 0
        self.pending: list[np.ndarray] = []
        self.pending_rows = 0

    def append(self, rows: np.ndarray) -> None:
        if rows.shape[1:] != self.array.shape[1:]:
            raise CorruptRunError(
                f"rows for {self.array.path!r} have shape {rows.shape[1:]}, but earlier batches had {self.array.shape[1:]}"
            )
        self.pending.append(rows)
        self.pending_rows += len(rows)
        if self.pending_rows >= self.chunk_rows:
            self._write(whole_chunks_only=True)

    def flush(self) -> None:
        if self.pending_rows:
            self._write(whole_chunks_only=False)

    def _write(self, whole_chunks_only: bool) -> None:
        data = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending)
        count = (len(data) // self.chunk_rows) * self.chunk_rows if whole_chunks_only else len(data)
        start = self.length
        self.array.resize((start + count, *self.array.shape[1:]))
        self.array[start : start + count] = data[:count]
        self.length += count
        rest = data[count:]
        self.pending = [rest] if len(rest) else []
        self.pending_rows = len(rest)


class RunWriter:
    """Writes a run into a hidden temporary sibling and renames it into place on `commit`.

    Rows are appended a batch at a time and written by one background thread, so disk I/O overlaps the model's
    forward passes; at most ``queue_size`` batches wait, which bounds memory.
    An exception anywhere (or `abort`) deletes the temporary directory: nothing appears under the final name.
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False, queue_size: int = 2,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        self.url: str | None = None
        self.storage_options = storage_options
        if remote.is_url(path):  # written in a local temporary directory, then published by `commit`
            self.url = os.fspath(path).rstrip("/")
            remote.check_destination(self.url, storage_options, overwrite=overwrite)  # before the capture, not after
            self._staging = Path(tempfile.mkdtemp(prefix="kdviz-upload-"))
            path = self._staging / remote.url_name(self.url)
        self.path = Path(path).expanduser().absolute()
        refuse_existing(self.path, overwrite)
        self.overwrite = overwrite
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._start(self.path.with_name(f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"), queue_size)

    def _start(self, tmp_path: Path, queue_size: int) -> None:
        temporaries.remove_stale(tmp_path.parent)  # what killed processes left beside the run
        self.tmp_path = tmp_path
        self._root = zarr.open_group(store=str(self.tmp_path), mode="w", zarr_format=3)
        temporaries.claim(self.tmp_path)
        self._signals = contextlib.ExitStack()
        self._signals.enter_context(temporaries.sigterm_raises())
        self._arrays: dict[str, _StreamedArray] = {}
        self._settings: dict[str, tuple[int | None, bool]] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="kdviz-run-writer", daemon=True)
        self._thread.start()
        self._closed = False

    def configure(self, key: str, *, chunk_rows: int | None = None, compress: bool | None = None) -> None:
        """Set the chunking of ``key`` before its first rows arrive.

        Default: whole samples in ~2 MB chunks, compressed as `kdviz.store.format.compressors_for` says (Blosc LZ4
        with bit-shuffle for floats, zstd for integers).
        """
        self._settings[key] = (chunk_rows, compress)

    def append(self, key: str, rows: np.ndarray) -> None:
        """Queue rows [B, ...] for ``key``; arrays are created on first use."""
        self.append_batch({key: rows})

    def append_batch(self, records: Mapping[str, np.ndarray]) -> None:
        """Queue one batch: rows [B, ...] for each key, handed to the writer thread together."""
        self._raise_pending()
        self._queue.put({key: np.ascontiguousarray(rows) for key, rows in records.items()})

    def commit(self, meta: Mapping[str, Any], *, before_publish: Callable[[Path], None] | None = None) -> Path | str:
        """Flush every array, write ``meta.json`` and rename the run into place (or publish it to its URL, meta.json
        last); returns the final path or URL. ``before_publish`` is called with the finished run's temporary
        directory first: what it adds there (a derived result in the run's cache) arrives with the run."""
        self._finish_writes()
        written = zarr.open_group(store=str(self.tmp_path), mode="r", zarr_format=3)
        integrity.write_manifest(self.tmp_path, integrity.scan(written, directory=self.tmp_path))
        full_meta = {"schema_version": SCHEMA_VERSION, "kdviz_version": __version__, **meta}
        (self.tmp_path / META_FILE).write_text(json.dumps(full_meta, indent=1, allow_nan=False), encoding="utf-8")
        if before_publish is not None:  # a failure here leaves nothing behind: `__exit__` aborts
            before_publish(self.tmp_path)
        if self.url is not None:
            try:
                remote.upload(self.tmp_path, self.url, self.storage_options, overwrite=self.overwrite)
            finally:
                self._close()
                shutil.rmtree(self._staging, ignore_errors=True)
            return self.url
        move_into_place(self.tmp_path, self.path)
        self._close()
        return self.path

    def finish_rows(self) -> Path:
        """Write every queued row now; no rows may be appended after this. Returns the temporary directory, where
        arrays may still be added directly before `commit` (`kdviz.distributed` moves chunks there)."""
        self._finish_writes()
        return self.tmp_path

    def _finish_writes(self) -> None:
        self._stop_thread()
        self._raise_pending()
        for streamed in self._arrays.values():
            streamed.flush()

    def abort(self) -> None:
        """Drop everything written so far."""
        if self._closed:
            return
        self._stop_thread()
        shutil.rmtree(self.tmp_path, ignore_errors=True)
        self._close()
        if self.url is not None:
            shutil.rmtree(self._staging, ignore_errors=True)

    def _close(self) -> None:
        """The temporary directory is gone (renamed or removed): drop its owner record and the SIGTERM handler."""
        self._closed = True
        temporaries.release(self.tmp_path)
        self._signals.close()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._closed:
            self.abort()

    # ---- background thread ----
    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # keep draining so producers never block; the error is raised on their side
            try:
                for key, rows in item.items():
                    self._append_now(key, rows)
            except BaseException as exc:  # surfaced to the caller by _raise_pending
                self._error = exc

    def _append_now(self, key: str, rows: np.ndarray) -> None:
        streamed = self._arrays.get(key)
        if streamed is None:
            chunk_rows, compress = self._settings.get(key, (None, None))
            if compress is None:
                compress = True
            streamed = self._arrays[key] = _StreamedArray(self._root, key, rows, chunk_rows, compress)
        streamed.append(rows)

    def _stop_thread(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _raise_pending(self) -> None:
        if self._error is not None:
            raise CorruptRunError(f"writing the run failed: {self._error}") from self._error


class GroupWriter(RunWriter):
    """Adds groups of arrays to an existing run (attributions): rows stream into a hidden sibling directory, as for
    `RunWriter`, and `commit` moves each top-level group under ``<run>/<prefix>/`` in one rename.

    An older group of the same name is replaced; an exception (or `abort`) leaves the run as it was.
    """

    def __init__(self, run_path: str | os.PathLike, prefix: str, *, queue_size: int = 2, require_run: bool = True) -> None:
        if remote.is_url(run_path):
            raise InputError(f"{os.fspath(run_path)!r} is on object storage, where kdviz adds nothing to a published run; "
                             "add attributions or training history to a local run, then publish it (kdviz.remote.upload)")
        self.url = None
        self.path = Path(run_path).expanduser().absolute()
        if require_run and not (self.path / META_FILE).is_file():
            raise NotARunError(f"{str(self.path)!r} is not a kdviz run; write into a run made by kdviz.capture()")
        self.path.parent.mkdir(parents=True, exist_ok=True)  # (without require_run the run is written before `commit`)
        self.prefix = prefix.strip("/")
        self.overwrite = True
        tag = self.prefix.replace("/", "-")
        self._start(self.path.with_name(f".{self.path.name}.{tag}.tmp-{uuid.uuid4().hex[:8]}"), queue_size)

    def commit(self, attrs: Mapping[str, Mapping[str, Any]], *, run_path: str | os.PathLike | None = None) -> list[str]:  # type: ignore[override]
        """Flush, set each group's ``attrs`` and move the groups into the run (or into ``run_path``, a run written
        meanwhile, as `kdviz.train.Recorder` does); returns their keys in the run."""
        if run_path is not None:
            self.path = Path(run_path).expanduser().absolute()
        self._finish_writes()
        if not (self.path / META_FILE).is_file():
            raise NotARunError(f"no run at {str(self.path)!r} to move the groups into; capture it before committing")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, group_attrs in attrs.items():
                zarr.open_group(store=str(self.tmp_path / name), mode="a", zarr_format=3).attrs.update(dict(group_attrs))
            zarr.open_group(store=str(self.path), mode="a", zarr_format=3).require_group(self.prefix)
        keys = [f"{self.prefix}/{name}" for name in attrs]
        added = {}
        for name, key in zip(attrs, keys, strict=True):
            group = zarr.open_group(store=str(self.tmp_path / name), mode="r", zarr_format=3)
            added |= integrity.scan(group, prefix=f"{key}/", directory=self.tmp_path / name)
        for name in attrs:
            move_into_place(self.tmp_path / name, self.path / self.prefix / name)
        integrity.merge_manifest(self.path, keys, added)
        shutil.rmtree(self.tmp_path, ignore_errors=True)
        self._close()
        return keys


def refuse_existing(path: str | os.PathLike, overwrite: bool) -> None:
    """Raise `RunExistsError` when something is at ``path`` and ``overwrite`` is off: the one check before a new run
    is written there (capture, distributed capture, distillation and trainer callbacks all ask it)."""
    if not overwrite and Path(path).expanduser().exists():
        raise RunExistsError(f"a run already exists at {str(path)!r}; pass overwrite=True or choose another path")


def move_into_place(source: Path, final: Path) -> None:
    """Rename the directory ``source`` to ``final``; an existing ``final`` is first renamed aside, then deleted, so
    the old content is replaced by one rename and never half-overwritten."""
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, trash)
        os.replace(source, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(source, final)
