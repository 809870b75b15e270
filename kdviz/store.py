"""`Run`: a capture result on disk (Zarr v3 arrays + ``meta.json``), written atomically and read lazily.

Layout of ``NAME.kdviz/`` (docs/architecture.md):
  meta.json                      schema, models, layer map, class names / tokens, capture settings
  inputs/labels                  [N] or [N, T] int64
  inputs/thumbnails              [N, h, w] or [N, h, w, 3] uint8
  inputs/token_ids, attention_mask   [N, T]
  {teacher,student}/logits       [N, C] float32 (classification) or [K, T, V] (kept LM subset)
  {teacher,student}/attn/<i>     [N, H, T, T] float16, one chunk per sample
  {teacher,student}/feat/<name>  [N, ...] float32
  {teacher,student}/spatial/<name>   [N, h, w] float32, attention-transfer maps of CNN features
  {teacher,student}/tokens/<stat>    [N, T] or [N, T, k] per-token statistics of language models
  pair/tokens/<stat>             [N, T] per-token divergences between the two models
  attribution/<target>/<method>/{teacher,student}   [M, H, W] or [M, T] float32 maps, with index [M], class [M]
  history/<step>/{student,pair}/…   the student at a training step (kdviz.distill), same layout as the run's own
Only this module touches the disk.
"""

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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from kdviz import integrity, layout, remote, temporaries
from kdviz._version import __version__
from kdviz.errors import (
    CorruptRunError,
    InputError,
    MissingDataError,
    NotARunError,
    RunExistsError,
    RunNotFoundError,
    SchemaTooNewError,
)
from kdviz.meta_schema import validate_meta
from kdviz.summary import run_summary

SCHEMA_VERSION = 2  # 2: checksummed chunks and manifest.json (`kdviz.integrity`); 1 is still read
META_FILE = remote.META_FILE
READ_ERRORS = (ValueError, RuntimeError, OSError, EOFError)  # what zarr and its codecs raise for damaged bytes
CHUNK_TARGET_BYTES = 2 * 1024 * 1024


class LazyArray:
    """A read-only view of one stored array; nothing is read until it is sliced or converted."""

    def __init__(self, array: zarr.Array, key: str, run_name: str = "") -> None:
        self._array = array
        self.key = key
        self.run_name = run_name

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._array.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        try:
            return np.asarray(self._array[index])
        except CorruptRunError:
            raise
        except READ_ERRORS as exc:  # a chunk that fails its checksum, is truncated or does not decode
            raise CorruptRunError(f"array {self.key!r} of run {self.run_name!r} cannot be read: {exc}; "
                                  f"{integrity.FIX}") from exc

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = self[...]
        return data if dtype is None else data.astype(dtype)

    def read(self) -> np.ndarray:
        """Read the whole array into memory."""
        return self[...]

    def __repr__(self) -> str:
        return f"LazyArray({self.key!r}, shape={self.shape}, dtype={self.dtype})"


class RunInfo(str):
    """The readable summary of a run; a str that shows itself unquoted in a REPL or notebook."""

    def __repr__(self) -> str:
        return str(self)


class ModelSide:
    """The teacher's or the student's arrays in a run: ``logits``, ``attention(layer)``, ``features(name)``."""

    def __init__(self, run: Run, role: str) -> None:
        self._run = run
        self.role = role
        self.description: dict[str, Any] = run.meta[role]

    @property
    def name(self) -> str:
        return self.description["name"]

    @property
    def attention_layers(self) -> list[str]:
        """Names of the captured attention layers, in forward order; ``attention(i)`` reads the i-th."""
        return list(self.description.get("attention_layers", []))

    @property
    def heads(self) -> list[int]:
        return list(self.description.get("heads", []))

    @property
    def feature_names(self) -> list[str]:
        return list(self.description.get("feature_names", []))

    @property
    def token_grid(self) -> dict[str, Any] | None:
        """``{"prefix": P, "grid": [rows, cols]}`` for a vision transformer (P CLS/register tokens, then the patch
        grid in row-major order); None for text or when the layout was not recognised."""
        return self.description.get("token_grid")

    @property
    def spatial_names(self) -> list[str]:
        return list(self.description.get("spatial_names", []))

    @property
    def token_stats(self) -> list[str]:
        return list(self.description.get("token_stats", []))

    @property
    def logits(self) -> LazyArray:
        """[N, C] logits for classification, or the [K, T, V] subset kept with ``keep_full_logits``."""
        key = layout.logits(self.role)
        if not self._run.has(key):
            raise MissingDataError(
                f"this run stores no full {self.role} logits: vocabulary-sized outputs are summarised per token "
                f"while capturing (see {self.role}.token(...)); pass keep_full_logits=K to capture() to keep K samples"
            )
        return self._run.array(key)

    def attention(self, layer: int | str) -> LazyArray:
        """[N, H, T, T] attention probabilities of one layer, by index or by layer name."""
        layers = self.attention_layers
        if not layers:
            raise MissingDataError(
                f"this run has no {self.role} attentions: capture with attentions=True, and for Hugging Face "
                "models use eager attention; a plain nn.Module needs timm-style attention blocks (qkv + num_heads)"
            )
        if isinstance(layer, str):
            if layer not in layers:
                raise MissingDataError(f"no {self.role} attention layer {layer!r}; captured layers: {layers}")
            index = layers.index(layer)
        else:
            index = int(layer)
            if not -len(layers) <= index < len(layers):
                raise MissingDataError(
                    f"{self.role} attention layer {layer} is out of range: the run has {len(layers)} layers (0..{len(layers) - 1})"
                )
            index %= len(layers)
        return self._run.array(layout.attention(self.role, index))

    def features(self, name: str) -> LazyArray:
        """[N, ...] output of one hooked module, as captured (conv maps stay [N, C, H, W])."""
        return self._named(layout.features(self.role, name), name, self.feature_names, "features")

    def spatial(self, name: str) -> LazyArray:
        """[N, h, w] attention-transfer map of one CNN feature: channel mean of |A|^p, L2-normalised."""
        return self._named(layout.spatial(self.role, name), name, self.spatial_names, "spatial attention maps")

    def token(self, stat: str) -> LazyArray:
        """Per-token statistic of a language model: ``entropy``, ``true_prob``, ``topk_ids``, ``topk_probs``."""
        return self._named(layout.token_stat(self.role, stat), stat, self.token_stats, "per-token statistics")

    def _named(self, key: str, name: str, available: list[str], what: str) -> LazyArray:
        if name not in available:
            raise MissingDataError(
                f"no {self.role} {what} named {name!r}; this run has: {available or 'none'}. "
                "Pass layers=[...] (module paths or glob patterns) to capture() to record features."
            )
        return self._run.array(key)

    def __repr__(self) -> str:
        return f"<{self.role} {self.name!r}: {len(self.attention_layers)} attention layers, {len(self.feature_names)} features>"


class StoredAttribution:
    """One attribution method's results for one target in a run (written by `kdviz.attribute`).

    ``index`` [M] are the explained samples (rows of the run), ``classes`` [M] the class explained for each;
    ``maps(role)`` [M, H, W] (images, at input resolution) or [M, T] (tokens), lazy; ``heads(role)`` [M, L, H]
    per-head scores of ``attention_x_gradient``; ``delta(role)`` [M] the convergence delta of integrated gradients;
    ``attrs`` the settings (method, baseline, steps, layers, …).
    """

    def __init__(self, run: Run, target: str, method: str, group: zarr.Group) -> None:
        self._run = run
        self.target = target
        self.method = method
        self.key = f"{layout.attribution(target)}/{method}"
        self.attrs: dict[str, Any] = dict(group.attrs)
        self.index = np.asarray(group["index"][...])
        self.classes = np.asarray(group["class"][...])

    def maps(self, role: str) -> LazyArray:
        return self._run.array(f"{self.key}/{role}")

    def heads(self, role: str) -> LazyArray | None:
        """[M, L, H] per-head scores Σ A ⊙ ∂y/∂A (attention × gradient), else None."""
        return self._extra(role, "heads")

    def delta(self, role: str) -> LazyArray | None:
        """[M] integrated gradients' convergence delta Σ map − (y(x) − y(baseline)), else None."""
        return self._extra(role, "delta")

    @property
    def positions(self) -> np.ndarray | None:
        """[M] explained position of each sample for sequence outputs (language models), else None."""
        key = f"{self.key}/position"
        return self._run.array(key)[:] if self._run.has(key) else None

    def _extra(self, role: str, name: str) -> LazyArray | None:
        key = f"{self.key}/{role}_{name}"
        return self._run.array(key) if self._run.has(key) else None

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"<attribution {self.method!r} for target {self.target!r}: {len(self)} samples, maps {self.maps('teacher').shape[1:]}>"


class Run:
    """A capture result on disk or on object storage. ``Run.open`` reads only the metadata (``meta.json`` and the
    zarr root's ``zarr.json``); arrays are read lazily by slice.

    ``path`` is a `Path`, or the URL (a str) of a run on object storage (see `kdviz.remote`).
    """

    def __init__(self, path: Path | str, meta: dict[str, Any], root: zarr.Group, *,
                 storage_options: Mapping[str, Any] | None = None, manifest: Any = "lazy") -> None:
        self.path = path
        self.meta = meta
        self._root = root
        self.storage_options = dict(storage_options or {})
        self._manifest = manifest  # {key: entry}, None for a schema-1 run, "lazy" until first read (remote runs)
        self.teacher = ModelSide(self, "teacher")
        self.student = ModelSide(self, "student")

    @classmethod
    def open(cls, path: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None) -> Run:
        """Open a run directory, or a run at an fsspec URL (``s3://bucket/x.kdviz``; credentials from the environment
        or ``storage_options``); raises a `KdvizError` naming the problem when it is not a readable run."""
        if remote.is_url(path):
            url = os.fspath(path).rstrip("/")
            meta = _parse_meta(remote.read_meta_text(url, storage_options), f"{url}/{META_FILE}")
            try:
                root = remote.open_root(url, storage_options, checked=True)
            except Exception as exc:  # zarr and fsspec raise several types for a damaged or unreachable hierarchy
                raise CorruptRunError(f"the arrays of run {url!r} cannot be opened ({exc}); capture the run again") from exc
            return cls(url, meta, root, storage_options=storage_options,
                       manifest="lazy" if meta["schema_version"] >= 2 else None)
        path = Path(path).expanduser()
        if not path.exists():
            raise RunNotFoundError(f"no run at {str(path)!r}: the path does not exist; check it, or build one with kdviz.capture(...)")
        meta_path = path / META_FILE
        if not path.is_dir() or not meta_path.is_file():
            raise NotARunError(
                f"{str(path)!r} is not a kdviz run: it has no {META_FILE}; runs are directories written by kdviz.capture()"
            )
        meta = _read_meta(meta_path)
        manifest = _read_manifest(path, meta)
        try:
            root = _open_checked(path)
        except Exception as exc:  # zarr raises several types for a damaged hierarchy
            raise CorruptRunError(f"the arrays of run {str(path)!r} cannot be opened ({exc}); capture the run again") from exc
        run = cls(path, meta, root, manifest=manifest)
        run._check_lengths()
        return run

    @property
    def manifest(self) -> dict[str, dict[str, Any]] | None:
        """What the run recorded of each array at commit (`kdviz.integrity`); None for a schema-1 run."""
        if self._manifest == "lazy":
            where = f"{self.path}/{integrity.MANIFEST_FILE}"
            self._manifest = integrity.parse_manifest(remote.read_text(self.path, integrity.MANIFEST_FILE, self.storage_options), where)
            if self._manifest is None:
                raise CorruptRunError(f"run {self.name!r} has no {integrity.MANIFEST_FILE}; {integrity.FIX}")
        return self._manifest

    def _check_lengths(self) -> None:
        """The sample count in meta.json must be the length of the per-sample arrays (checked from the manifest)."""
        manifest = self.manifest
        if not manifest:
            return
        for key in (layout.LABELS, layout.TOKEN_IDS, *(layout.logits(r) for r in ("teacher", "student") if self.task == "classification")):
            entry = manifest.get(key)
            if entry is not None and entry["shape"][:1] != [self.n_samples]:
                raise CorruptRunError(f"run {self.name!r} says it holds {self.n_samples} samples, but {key!r} was written "
                                      f"with {entry['shape'][0]}; the meta.json is damaged: {integrity.FIX}")

    def check_structure(self) -> None:
        """A cheap check of the whole run (``kdviz info``): every array it wrote is there with its shape, dtype and
        chunk grid, and (local runs) every chunk file exists; nothing is read. `verify` also reads every chunk."""
        for key in self.manifest or {}:
            try:
                node = self._node(key)
            except KeyError:
                raise CorruptRunError(f"array {key!r} of run {self.name!r} is missing; {integrity.FIX}") from None
            integrity.check_array(self.name, key, node, self.manifest)
            if not self.remote:
                problems = [problem for _, problem in integrity.chunk_problems(Path(self.path) / key, node, self.manifest[key])]
                if problems:
                    raise CorruptRunError(f"array {key!r} of run {self.name!r} is damaged: {'; '.join(problems[:3])}"
                                          f"{f' (and {len(problems) - 3} more)' if len(problems) > 3 else ''}; {integrity.FIX}")

    def verify(self, *, progress: bool = True) -> list[integrity.Damage]:
        """Read every chunk once and list what is damaged (``kdviz verify``); empty for an intact run."""
        damage = integrity.verify_arrays(self._root, self.manifest, self.name, progress=progress,
                                         directory=None if self.remote else Path(self.path))
        if self.manifest is not None:
            try:
                self._check_lengths()
            except CorruptRunError as exc:
                damage.append(integrity.Damage(META_FILE, str(exc)))
        return damage

    # ---- metadata -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return remote.url_name(self.path).removesuffix(".kdviz") if self.remote else self.path.name.removesuffix(".kdviz")

    @property
    def remote(self) -> bool:
        """Whether the run is on object storage (``path`` is a URL)."""
        return isinstance(self.path, str)

    def _open_root(self, mode: str) -> zarr.Group:
        if self.remote:
            return remote.open_root(self.path, self.storage_options, mode=mode, checked=mode == "r")
        return _open_checked(self.path) if mode == "r" else zarr.open_group(store=str(self.path), mode=mode, zarr_format=3)

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def n_samples(self) -> int:
        return int(self.meta["n_samples"])

    @property
    def class_names(self) -> list[str] | None:
        return self.meta.get("class_names")

    @property
    def tokens(self) -> list[list[str]] | None:
        """Per-sample token strings, when the capture was given tokens or a tokenizer."""
        return self.meta.get("tokens")

    @property
    def layer_map(self) -> list[tuple[int, int]]:
        """(student layer, teacher layer) pairs."""
        return [(p["student"], p["teacher"]) for p in self.meta["layer_map"]["pairs"]]

    # ---- arrays ---------------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        try:
            self._node(key)
        except KeyError:
            return False
        return True

    def array(self, key: str) -> LazyArray:
        """The stored array under ``key`` (for example ``"inputs/labels"``), unread; its metadata is checked against
        what the run wrote (`kdviz.integrity.check_array`)."""
        try:
            node = self._node(key)
        except KeyError as exc:
            if self.manifest is not None and key in self.manifest:
                raise CorruptRunError(f"array {key!r} of run {self.name!r} was written but is gone; {integrity.FIX}") from exc
            raise MissingDataError(f"run {self.name!r} has no array {key!r}") from exc
        if not isinstance(node, zarr.Array):
            raise MissingDataError(f"{key!r} in run {self.name!r} is a group, not an array")
        integrity.check_array(self.name, key, node, self.manifest)
        return LazyArray(node, key, self.name)

    def _node(self, key: str) -> zarr.Array | zarr.Group:
        """The zarr node under ``key``: KeyError when absent, `CorruptRunError` when its metadata is unreadable."""
        try:
            return self._root[key]
        except KeyError:
            raise
        except Exception as exc:  # a zarr.json that is not JSON, or not valid zarr metadata
            raise CorruptRunError(f"the metadata of {key!r} in run {self.name!r} cannot be read ({exc}); {integrity.FIX}") from exc

    def array_keys(self) -> list[str]:
        """Every stored array key."""
        with warnings.catch_warnings():  # zarr notes that meta.json is not a zarr node; it is ours
            warnings.simplefilter("ignore")
            members = self._root.members(max_depth=None)
        return sorted(path for path, node in members if isinstance(node, zarr.Array))

    @property
    def labels(self) -> LazyArray:
        """[N] class indices, or [N, T] next-token ids with −100 where unlabelled."""
        return self.array(layout.LABELS)

    @property
    def has_labels(self) -> bool:
        return self.has(layout.LABELS)

    @property
    def token_ids(self) -> LazyArray | None:
        """[N, T] input token ids of a text run (None for other inputs)."""
        return self.array(layout.TOKEN_IDS) if self.has(layout.TOKEN_IDS) else None

    @property
    def attention_mask(self) -> LazyArray | None:
        """[N, T] 1 on real tokens, 0 on padding, for text runs (None for other inputs)."""
        return self.array(layout.ATTENTION_MASK) if self.has(layout.ATTENTION_MASK) else None

    @property
    def thumbnails(self) -> LazyArray | None:
        """[N, h, w] or [N, h, w, 3] uint8 previews of image inputs (None for other inputs)."""
        return self.array(layout.THUMBNAILS) if self.has(layout.THUMBNAILS) else None

    def pair_token_stat(self, stat: str) -> LazyArray:
        """[N, T] per-token divergence between the models of a language-model run: ``kl`` or ``reverse_kl`` (T = 1)."""
        key = layout.pair_token_stat(stat)
        if not self.has(key):
            raise MissingDataError(f"run {self.name!r} stores no per-token {stat!r}; language-model runs store kl and reverse_kl")
        return self.array(key)

    def read_cache(self, name: str) -> dict[str, Any] | None:
        """A derived result stored under ``cache/<name>`` by `write_cache`: its arrays plus ``attrs``; None if absent."""
        key = layout.cache(name)
        if not self.has(key):
            return None
        group = self._root[key]
        result: dict[str, Any] = {k: np.asarray(v[...]) for k, v in group.arrays()}
        result["attrs"] = dict(group.attrs)
        return result

    def write_cache(self, name: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> None:
        """Store a derived result (for example a CKA matrix) under ``cache/<name>``, replacing an older one.

        The only write to an existing run; the dashboard never calls it (it serves runs read-only).
        """
        writable = self._open_root("a")
        key = layout.cache(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if key in writable:
                del writable[key]
            group = writable.require_group(key)
            for array_name, data in arrays.items():
                group.create_array(array_name, data=np.ascontiguousarray(data), compressors=integrity.checksummed(None),
                                   config={"write_empty_chunks": True})
            group.attrs.update(dict(attrs))
        if self.manifest is not None:
            added = integrity.scan(group, prefix=f"{key}/", directory=Path(self.path) / key)
            integrity.merge_manifest(Path(self.path), [key], added)
            self._manifest = _read_manifest(Path(self.path), self.meta)  # what merge_manifest wrote, the one source
        self._root = self._open_root("r")

    def attribution_targets(self) -> dict[str, list[str]]:
        """``{target: [method, ...]}`` of the attributions stored in this run; empty when `kdviz.attribute` never ran."""
        if not self.has(layout.ATTRIBUTION):
            return {}
        found: dict[str, list[str]] = {}
        for target, group in sorted(self._root[layout.ATTRIBUTION].groups()):
            methods = sorted(name for name, _ in group.groups() if not name.startswith("."))
            if methods and not target.startswith("."):
                found[target] = methods
        return found

    def attribution(self, method: str, target: str = "teacher_pred") -> StoredAttribution:
        """The stored attributions of one method for one target (``teacher_pred``, ``label`` or ``class_<k>``)."""
        stored = self.attribution_targets()
        if method not in stored.get(target, []):
            have = ", ".join(f"{t}: {m}" for t, m in stored.items()) or "none"
            raise MissingDataError(
                f"run {self.name!r} has no {method!r} attributions for target {target!r} (stored: {have}); "
                f"compute them with kdviz.attribute(teacher, student, data, run=run, methods=[{method!r}], target=...)"
            )
        return StoredAttribution(self, target, method, self._root[f"{layout.attribution(target)}/{method}"])

    # ---- training history (kdviz.distill) -------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        """Training steps with a recorded snapshot of the student (``history/<step>/``), ascending; empty if none."""
        if not self.has(HISTORY):
            return []
        return sorted(int(name) for name, _ in self._root[HISTORY].groups() if name.isdigit())

    def step_info(self, step: int) -> dict[str, Any]:
        """What was recorded with one snapshot: step, epoch, loss components, the student's probe accuracy…"""
        key = history_key(step)
        if not self.has(key):
            raise MissingDataError(f"run {self.name!r} has no snapshot at step {step}; recorded steps: {self.steps or 'none'}")
        return dict(self._root[key].attrs)

    def at_step(self, step: int | None = None) -> Run:
        """The run as it was at a training step (default: the last one): the student's arrays come from that snapshot,
        the teacher's and the inputs are the run's own. Every view and widget that takes a run takes this too."""
        steps = self.steps
        if not steps:
            raise MissingDataError(f"run {self.name!r} has no training history; record one with kdviz.distill(..., record=path)")
        return RunAtStep(self, steps[-1] if step is None else int(step))

    def info(self, *, location: bool = True) -> RunInfo:
        """A readable summary: task, samples, both models with accuracy, layer map and capture settings (and where the
        run is stored, unless ``location=False``)."""
        attributions = {target: {method: len(self.attribution(method, target)) for method in methods}
                        for target, methods in self.attribution_targets().items()}
        return RunInfo(run_summary(self.name, self.meta, where=str(self.path) if location else None, steps=self.steps,
                                   attributions=attributions))

    def __repr__(self) -> str:
        return f"<kdviz.Run {self.name!r}: {self.task}, {self.n_samples} samples, {self.teacher.name} -> {self.student.name}>"


HISTORY = layout.HISTORY
HISTORY_ROLES = layout.SNAPSHOT_PREFIXES  # what a snapshot records; the teacher and the inputs do not change


def history_key(step: int) -> str:
    """``history/00000120``: zero-padded, so the groups list in step order."""
    return layout.snapshot(step)


class RunAtStep(Run):
    """A run seen at one training step: keys under ``student/`` and ``pair/`` resolve to ``history/<step>/``, the
    student's accuracy comes from the snapshot, and derived results are cached per step."""

    def __init__(self, base: Run, step: int) -> None:
        info = base.step_info(step)
        meta = json.loads(json.dumps(base.meta))
        for field_name in ("accuracy", "perplexity"):
            if info.get(f"student_{field_name}") is not None:
                meta["student"][field_name] = info[f"student_{field_name}"]
        super().__init__(base.path, meta, base._root, storage_options=base.storage_options, manifest=base.manifest)
        self.base = base
        self.step = int(step)
        self.prefix = history_key(step) + "/"

    def _resolve(self, key: str) -> str:
        return self.prefix + key if key.startswith(HISTORY_ROLES) else key

    def has(self, key: str) -> bool:
        return super().has(self._resolve(key))

    def array(self, key: str) -> LazyArray:
        return super().array(self._resolve(key))

    def read_cache(self, name: str) -> dict[str, Any] | None:
        return super().read_cache(f"{name}@step{self.step}")

    def write_cache(self, name: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> None:
        super().write_cache(f"{name}@step{self.step}", arrays, attrs)

    def __repr__(self) -> str:
        return f"<kdviz.Run {self.name!r} at step {self.step}: {self.task}, {self.n_samples} samples>"


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
class _StreamedArray:
    """Appends rows to one zarr array, writing only whole chunks until ``flush`` (bounded buffer)."""

    def __init__(self, group: zarr.Group, key: str, first: np.ndarray, chunk_rows: int | None, compress: bool) -> None:
        row_shape = first.shape[1:]
        row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * first.dtype.itemsize)
        # Chunks of about CHUNK_TARGET_BYTES that always hold whole samples: a large sample (a 512-token attention map)
        # is a chunk of its own, so one sample is read alone; small ones are grouped, so writes are not per-sample I/O.
        self.chunk_rows = chunk_rows or max(1, CHUNK_TARGET_BYTES // row_bytes)
        self.array = group.create_array(
            key,
            shape=(0, *row_shape),
            chunks=(self.chunk_rows, *row_shape),
            dtype=first.dtype,
            compressors=integrity.checksummed("auto" if compress else None),
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
        if self.path.exists() and not overwrite:
            raise RunExistsError(f"a run already exists at {str(self.path)!r}; pass overwrite=True or choose another path")
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

        Default: whole samples in ~2 MB chunks; zstd for integer arrays (ids, labels, thumbnails) but not for float
        activations, which barely compress and would take CPU time from the forward passes.
        """
        self._settings[key] = (chunk_rows, compress)

    def append(self, key: str, rows: np.ndarray) -> None:
        """Queue rows [B, ...] for ``key``; arrays are created on first use."""
        self.append_batch({key: rows})

    def append_batch(self, records: Mapping[str, np.ndarray]) -> None:
        """Queue one batch: rows [B, ...] for each key, handed to the writer thread together."""
        self._raise_pending()
        self._queue.put({key: np.ascontiguousarray(rows) for key, rows in records.items()})

    def commit(self, meta: Mapping[str, Any]) -> Path | str:
        """Flush every array, write ``meta.json`` and rename the run into place (or publish it to its URL, meta.json
        last); returns the final path or URL."""
        self._finish_writes()
        written = zarr.open_group(store=str(self.tmp_path), mode="r", zarr_format=3)
        integrity.write_manifest(self.tmp_path, integrity.scan(written, directory=self.tmp_path))
        full_meta = {"schema_version": SCHEMA_VERSION, "kdviz_version": __version__, **meta}
        (self.tmp_path / META_FILE).write_text(json.dumps(full_meta, indent=1, allow_nan=False), encoding="utf-8")
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
                compress = not np.issubdtype(rows.dtype, np.floating)
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


def iter_run_paths(paths: list[str | os.PathLike]) -> Iterator[Path | str]:
    """Expand directories (or object-storage prefixes) that hold several ``*.kdviz`` runs into the runs themselves."""
    for raw in paths:
        if remote.is_url(raw):
            yield from remote.list_runs(os.fspath(raw))
            continue
        path = Path(raw).expanduser()
        if path.is_dir() and not (path / META_FILE).exists() and any(path.glob(f"*.kdviz/{META_FILE}")):
            yield from sorted(p.parent for p in path.glob(f"*.kdviz/{META_FILE}"))
        else:
            yield path
