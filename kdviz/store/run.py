"""The read model: `Run` (and `RunAtStep`, a run at a recorded training step), its model sides, stored
attributions and lazily read arrays."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.core.sync import sync as zarr_sync

from kdviz import integrity, layout, remote
from kdviz.errors import (
    CorruptRunError,
    MissingDataError,
    NotARunError,
    RunNotFoundError,
)
from kdviz.store.format import (
    META_FILE,
    READ_ERRORS,
    _open_checked,
    _parse_meta,
    _read_manifest,
    _read_meta,
)
from kdviz.summary import run_summary


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


def read_rows(arrays: Sequence[LazyArray], index: int) -> list[np.ndarray]:
    """``array[index]`` of every array, read concurrently in one round trip of zarr's event loop. One sample's
    attention digest is a row of each of 2 × L arrays; read one after another, each pays that round trip."""
    async def gather() -> list[Any]:
        return await asyncio.gather(*(array._array.async_array.getitem(index) for array in arrays))

    try:
        return [np.asarray(row) for row in zarr_sync(gather())]
    except READ_ERRORS:  # read them one by one, so that the error names the array that failed
        return [array[index] for array in arrays]


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
        """[K, H, T, T] exact attention probabilities of one layer (by index or name) for the K samples the run kept
        exact (`Run.attention_samples`; every sample in runs of schema 2 and earlier)."""
        return self._run.array(layout.attention(self.role, self._attention_index(layer)))

    def attention_summaries(self, layer: int | str) -> LazyArray:
        """[N, H, S] per-head summaries of one layer on every sample (S: ``meta.capture.attention_summaries``)."""
        return self._run.attention_digest(layout.attention_summaries(self.role, self._attention_index(layer)))

    def attention_thumbnails(self, layer: int | str) -> LazyArray:
        """[N, H, P, P] float16 attention of one layer on every sample, pooled over its real tokens into
        min(real tokens, P) bins a side (top left; rows sum to 1)."""
        return self._run.attention_digest(layout.attention_thumbnails(self.role, self._attention_index(layer)))

    def _attention_index(self, layer: int | str) -> int:
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
        return index

    def features(self, name: str) -> LazyArray:
        """[N, ...] output of one hooked module, as captured (conv maps stay [N, C, H, W])."""
        return self._named(layout.features(self.role, name), name, self.feature_names, "features")

    @property
    def pooled_names(self) -> list[str]:
        """The feature layers whose token outputs were pooled while capturing: ``features(name)`` holds their token
        mean [N, D] and ``summary_features(name)`` their summary token [N, D]."""
        return list(self.description.get("pooled_features", []))

    def summary_features(self, name: str) -> LazyArray:
        """[N, D] the summary token's output of a pooled layer (`pooled_names`): the first token (CLS) or, for causal
        language models, the last real token (the run's ``capture.summary_token``)."""
        if name not in self.pooled_names:
            raise MissingDataError(
                f"the {self.role} layer {name!r} has no stored summary token: it was captured "
                + ("token by token, so pool it from features(name)" if name in self.feature_names else "not at all")
            )
        return self._run.array(layout.summary_features(self.role, name))

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
    def attention_samples(self) -> list[int]:
        """The samples whose exact attention maps the run keeps, in the row order of ``side.attention(layer)``."""
        kept = self.meta.get("capture", {}).get("attention_samples")
        return list(range(self.n_samples)) if kept is None else [int(i) for i in kept]

    @property
    def attention_layer_divergence(self) -> LazyArray:
        """[N, L_t, L_s] per sample, KL between the head-averaged attention of every teacher and student layer."""
        return self.attention_digest(layout.ATTENTION_LAYER_DIVERGENCE)

    def attention_digest(self, key: str) -> LazyArray:
        """One array of the attention digest; a run captured before it (schema 2) is asked to be captured again."""
        if not self.has(key):
            raise MissingDataError(f"run {self.name!r} has no attention digest ({key!r}): it was captured by an earlier "
                                   "kdviz (run schema 2), which kept exact maps only; capture it again to use the attention views")
        return self.array(key)

    def attention_head_divergence(self, teacher_layer: int, student_layer: int) -> LazyArray | None:
        """[N, H_t, H_s] per sample, KL between every head of a mapped layer pair; None for a pair not in the run's
        layer map (its heads are compared on the exact maps kept)."""
        key = layout.attention_head_divergence(int(teacher_layer), int(student_layer))
        return self.array(key) if self.has(key) else None

    @property
    def thumbnails(self) -> LazyArray | None:
        """[N, h, w] or [N, h, w, 3] uint8 previews of image inputs (None for other inputs)."""
        return self.array(layout.THUMBNAILS) if self.has(layout.THUMBNAILS) else None

    @functools.cached_property
    def tokenizations(self) -> int:
        """How many tokenizations a run made from texts holds (`kdviz.capture_text`): 1 (shared), 2 (each model its
        own; the run's tokens are then the spans both share), 0 for other runs. Looked up once per opened run."""
        if not self.has(layout.TEXT_BYTES):
            return 0
        return 2 if self.has(layout.alignment("boundaries")) else 1

    def texts(self) -> list[str] | None:
        """The texts of a run made from texts, in sample order (None for other runs)."""
        if not self.has(layout.TEXT_BYTES):
            return None
        data, starts = self.array(layout.TEXT_BYTES)[:].tobytes(), self.array(layout.TEXT_STARTS)[:].tolist()
        return [data[a:b].decode("utf-8") for a, b in itertools.pairwise(starts)]

    def text_alignment(self, name: str) -> LazyArray:
        """An array of a text run's alignment (`layout.alignment`): ``teacher_offsets`` [N, P, 2], and in a
        two-tokenizer run ``student_offsets``, ``boundaries``, ``teacher_piece``, ``student_piece``,
        ``teacher_span_logprob`` and ``student_span_logprob`` [N, S]."""
        key = layout.alignment(name)
        if not self.has(key):
            raise MissingDataError(f"run {self.name!r} keeps no text alignment {name!r}; capture it with "
                                   "kdviz.capture_text (two tokenizers for the span alignment)")
        return self.array(key)

    @functools.cached_property
    def generated(self) -> bool:
        """Whether the run's samples are generated continuations (`kdviz.generate`), with ``generation/`` kept."""
        return self.has(layout.GENERATION_SAMPLES)

    def generation(self, name: str) -> LazyArray:
        """An array of a generation run's continuations (`layout.generation`), [N] or [N, L]."""
        if not self.generated:
            raise MissingDataError(f"run {self.name!r} holds no generated continuations; make one with kdviz.generate")
        return self.array(layout.generation(name))

    def generation_settings(self) -> dict[str, Any]:
        """What a generation run recorded of itself: ``unit`` ("token" or "span") and ``settings`` (the arguments of
        `kdviz.generate`); as written, unchecked (the reader checks what it uses)."""
        if not self.generated:
            raise MissingDataError(f"run {self.name!r} holds no generated continuations; make one with kdviz.generate")
        return dict(self._root[layout.GENERATION_SAMPLES].attrs)

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
        generation = self.generation_settings() if self.generated else None
        return RunInfo(run_summary(self.name, self.meta, where=str(self.path) if location else None, steps=self.steps,
                                   attributions=attributions, generation=generation))

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
