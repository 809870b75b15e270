"""Runs on object storage: any fsspec URL (``s3://bucket/runs/x.kdviz``, ``gs://…``, ``memory://…``).

A remote run has the same layout as a local one. Opening it reads ``meta.json`` (and the zarr root's ``zarr.json``
once an array is first read); arrays are read by chunk, as on disk. A run is written locally first and then
published by `upload`, which puts ``meta.json`` last: object stores have no rename, so the run becomes openable only
when every array is in place, and an upload that fails leaves no run under the name.

Credentials and endpoints come from the usual places of the filesystem (for S3: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for S3-compatible servers, or ``~/.aws``), or from
``storage_options`` passed to `kdviz.Run.open` and `kdviz.capture`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdviz.errors import CorruptRunError, InputError, NotARunError, OptionalDependencyError, RunExistsError, RunNotFoundError

META_FILE = "meta.json"  # a run's metadata, written last: its presence makes a directory or prefix a run


def is_url(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a run through fsspec (``scheme://…``) rather than on the local filesystem."""
    return "://" in os.fspath(path)


def url_name(url: str) -> str:
    """The last segment of a URL: ``s3://b/runs/x.kdviz/`` -> ``x.kdviz``."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path within it) for ``url``; a clear error when its protocol's package is missing."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    except ImportError as exc:
        raise OptionalDependencyError(f"reading {url!r} needs the fsspec package for its protocol ({exc}); for s3:// "
                                      "URLs: pip install s3fs") from exc
    except ValueError as exc:
        raise InputError(f"{url!r} is not a URL fsspec knows ({exc})") from exc


def read_meta_text(url: str, storage_options: Mapping[str, Any] | None = None) -> str:
    """The text of a remote run's ``meta.json`` (one request); errors say whether the run or only its meta is missing."""
    fs, root = filesystem(url, storage_options)
    try:
        return fs.cat_file(f"{root.rstrip('/')}/{META_FILE}").decode("utf-8")
    except FileNotFoundError:
        if fs.exists(root):
            raise NotARunError(f"{url!r} is not a kdviz run: it has no {META_FILE} (an upload that did not finish, or "
                               "not a run)") from None
        raise RunNotFoundError(f"no run at {url!r}; check the URL, or publish one with kdviz.capture(..., path={url!r})") from None
    except UnicodeDecodeError as exc:
        raise CorruptRunError(f"{url}/{META_FILE} is not text; the run is damaged, capture it again") from exc


def open_root(url: str, storage_options: Mapping[str, Any] | None = None, *, mode: str = "r", checked: bool = False) -> Any:
    """The zarr root group of a remote run; ``checked``: read through `kdviz.integrity.CheckedStore` (an absent chunk
    raises instead of reading as fill values)."""
    import zarr
    from zarr.storage import FsspecStore

    if not checked:
        return zarr.open_group(url, mode=mode, zarr_format=3, storage_options=dict(storage_options or {}))
    from kdviz.integrity import CheckedStore

    store = FsspecStore.from_url(url, storage_options=dict(storage_options or {}), read_only=True)
    return zarr.open_group(store=CheckedStore(store, url_name(url).removesuffix(".kdviz")), mode="r", zarr_format=3)


def read_text(url: str, name: str, storage_options: Mapping[str, Any] | None = None) -> str | None:
    """The text of the file ``name`` of a remote run (one request); None when it is absent."""
    fs, root = filesystem(url, storage_options)
    try:
        return fs.cat_file(f"{root.rstrip('/')}/{name}").decode("utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise CorruptRunError(f"{url}/{name} is not text; the run is damaged, capture it again") from exc


def check_destination(url: str, storage_options: Mapping[str, Any] | None = None, *, overwrite: bool = False) -> bool:
    """Whether a run is at ``url`` (to be replaced: allowed with ``overwrite`` only). Objects there that are not a run
    (a prefix of other runs, say) are refused: kdviz never deletes what it did not write."""
    fs, root = filesystem(url, storage_options)
    root = root.rstrip("/")
    if fs.exists(f"{root}/{META_FILE}"):
        if not overwrite:
            raise RunExistsError(f"a run already exists at {url!r}; pass overwrite=True or choose another path")
        return True
    if fs.exists(root) and fs.find(root):
        raise RunExistsError(f"{url!r} already holds objects and is not a kdviz run (a prefix of other runs?); kdviz "
                             f"deletes nothing there: give the run its own name, for example {url.rstrip('/')}/NAME.kdviz")
    return False


def upload(local_run: Path, url: str, storage_options: Mapping[str, Any] | None = None, *, overwrite: bool = False) -> str:
    """Publish the local run directory ``local_run`` at ``url``: every array first, ``meta.json`` last. An older run
    there is first made unopenable (its ``meta.json`` removed), then replaced. Returns ``url``."""
    fs, root = filesystem(url, storage_options)
    root = root.rstrip("/")
    meta = f"{root}/{META_FILE}"
    if check_destination(url, storage_options, overwrite=overwrite):
        fs.rm(meta)  # no longer a run from here on; then its arrays go
        fs.rm(root, recursive=True)
    files = sorted(p for p in local_run.rglob("*") if p.is_file() and p.name != META_FILE)
    try:
        if files:
            fs.put([str(p) for p in files], [f"{root}/{p.relative_to(local_run).as_posix()}" for p in files])
        fs.put_file(str(local_run / META_FILE), meta)
    except BaseException:
        if fs.exists(root):
            fs.rm(root, recursive=True)
        raise
    return url


def list_runs(url: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """``url`` itself when it is a run, else the runs (``*.kdviz``) directly under it, as URLs."""
    fs, root = filesystem(url, storage_options)
    root = root.rstrip("/")
    if fs.exists(f"{root}/{META_FILE}"):
        return [url]
    protocol = url.split("://", 1)[0]
    found = sorted(fs.glob(f"{root}/*.kdviz/{META_FILE}"))
    return [f"{protocol}://{path.rsplit('/', 1)[0]}" for path in found] or [url]
